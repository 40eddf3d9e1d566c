import { AutogradError, DTypeError, KilnError, ShapeError, ValueError } from '../errors.js';
import { GradNode, SavedTensors, isGradEnabled, withGradMode } from './autograd.js';
import { activeTrace, hasTraced, setTraceDispatch } from './dispatch.js';
import { isEager, type Eager, type Lowering } from './lowering.js';
import { isPlainObject } from './plain-object.js';
import { fmt, sameShape } from './shape.js';
import { Tensor } from './tensor.js';
import { describe } from './validate.js';

/**
 * The op table. Every op is defined once by `defineOp`: a PyTorch-style schema (argument names, types,
 * defaults), its eager forward kernel and its gradient rule. Eager calls, autograd, and later the graph
 * IR (printing, normalising, serialising) all read the same definition.
 */

export type ParamType =
  | 'Tensor'
  | 'Tensor?'
  | 'Tensor[]'
  | 'Scalar'
  | 'Scalar?'
  | 'Tensor|Scalar'
  | 'int'
  | 'int?'
  | 'int[]'
  | 'int[]?'
  | 'int|int[]'
  | 'int|int[]?'
  | 'int|int[]|str'
  | 'bool'
  | 'str'
  | 'str?'
  | 'dtype?'
  | 'any';

export interface Param {
  readonly name: string;
  readonly type: ParamType;
  /** Present when the parameter may be left out; `undefined` for optional ones without a value. */
  readonly hasDefault: boolean;
  readonly default: unknown;
}

export interface Schema {
  readonly name: string;
  readonly params: readonly Param[];
  readonly text: string;
}

type AnyFn = (...args: never[]) => unknown;

/** State an op's forward keeps for its backward. Tensors go through `save` so in-place writes are caught. */
export class OpContext {
  readonly saved: SavedTensors;
  /** Free-form values the forward computed for the backward (shapes, indices, …). */
  [key: string]: unknown;
  constructor(op: string) {
    this.saved = new SavedTensors(op);
  }
  save<T extends Tensor>(t: T): T {
    this.saved.save(t);
    return t;
  }
}

export type GradResult = Tensor | null | undefined | readonly (Tensor | null | undefined)[];

export interface OpSpec<F extends AnyFn> {
  readonly schema: string;
  readonly forward: (ctx: OpContext, ...args: Parameters<F>) => ReturnType<F>;
  /** Gradients for each parameter (an array for `Tensor[]` parameters), given the output's gradient. */
  readonly backward?: (ctx: OpContext, grad: Tensor) => readonly GradResult[];
  /** The output aliases the first input's storage (transpose, narrow, …). */
  readonly view?: boolean;
  /**
   * The forward is written with other ops and records them on the tape itself (layerNorm, stack, …),
   * so the op needs no gradient rule of its own.
   */
  readonly composite?: boolean;
  /**
   * How the kernels backend computes the op: a lowering to kernel IR, or `{ eager: 'why' }` when it runs
   * through this forward inside compiled programs (`explain` prints the reason). Required, so that a new op
   * states one or the other.
   */
  readonly lower: Lowering | Eager;
}

/** Every leading run of a parameter list: `[]`, `[a]`, `[a, b]`, … (optional parameters included). */
type Prefixes<P extends readonly unknown[]> = number extends P['length']
  ? P // not a fixed-length list: nothing to enumerate
  : P extends readonly [infer H, ...infer T]
    ? [] | [H, ...Prefixes<T>]
    : P extends readonly [(infer H)?, ...infer T]
      ? [] | [H, ...Prefixes<T>]
      : [];

/** PyTorch's keyword arguments: the remaining parameters by name, e.g. `{ stride: 2, padding: 1 }`. */
export type OpOptions = Readonly<Record<string, unknown>>;

/**
 * The options object of an op whose parameters are named `Names` (its schema's order, from
 * ./ops/param-names.ts): each parameter by name, typed as the op's signature `F` types it. Exact, so a
 * misspelt option fails `tsc` as it fails at run time.
 */
export type OptionsOf<F extends AnyFn, Names extends readonly string[]> = {
  readonly [I in keyof Names & `${number}` as Names[I] & string]?: I extends keyof Parameters<F> ? Parameters<F>[I] : never;
};

/** The op also takes some positional arguments followed by an options object (checked at run time by name). */
type WithOptions<F extends AnyFn, O> = (...args: [...Prefixes<Parameters<F>>, O]) => ReturnType<F>;

/** Type-only key carrying an op's signature, so its options can be typed from it after the fact (see ./ops/typed.ts). */
declare const signature: unique symbol;

/** An op; `O` is its options object, left loose by `defineOp` and made exact by ./ops/typed.ts. */
export type Op<F extends AnyFn, O = OpOptions> = F &
  WithOptions<F, O> & {
    /** Never present at run time: the op's signature, for the types. */
    readonly [signature]?: F;
    readonly opName: string;
    readonly schema: Schema;
    /** The spec's `lower`: its kernel lowering, or why it runs eagerly. */
    readonly lower: Lowering | Eager;
    /** Written with other ops that record their own gradients: tracers that build joint graphs trace into it. */
    readonly composite: boolean;
    /**
     * Run the op itself, not handing the call to the active tracer: a tracer calls this for the ops it
     * records. A composite op's body still dispatches its inner ops, so a tracer can trace into it.
     */
    readonly invoke: (args: readonly unknown[], kwargs?: Readonly<Record<string, unknown>>) => ReturnType<F>;
    /** Call with positional args and keyword args by parameter name, as a graph node stores them. */
    readonly callWith: (args: readonly unknown[], kwargs?: Readonly<Record<string, unknown>>) => ReturnType<F>;
  };

export const OPS = new Map<string, Op<AnyFn>>();

export function parseSchema(text: string): Schema {
  const m = /^(\w+)\((.*)\)$/.exec(text.trim());
  if (!m) throw new KilnError(`bad op schema: ${text}`);
  const params: Param[] = [];
  for (const part of splitTopLevel(m[2]!)) {
    const pm = /^(\S+)\s+(\w+)(?:=(.*))?$/.exec(part.trim());
    if (!pm) throw new KilnError(`bad parameter '${part}' in op schema: ${text}`);
    const type = pm[1] as ParamType;
    const hasDefault = pm[3] !== undefined || type.endsWith('?');
    params.push({ name: pm[2]!, type, hasDefault, default: pm[3] === undefined ? undefined : JSON.parse(pm[3]) });
  }
  return { name: m[1]!, params, text };
}

function splitTopLevel(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '[') depth++;
    if (ch === ']') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  if (cur.trim()) out.push(cur);
  return out;
}

function checkArg(op: string, p: Param, v: unknown): void {
  const bad = (what: string) =>
    new (p.type.startsWith('Tensor') && !(v instanceof Tensor) ? DTypeError : ValueError)(
      `${op}: argument '${p.name}' must be ${what}, got ${describe(v)}`,
    );
  const optional = p.type.endsWith('?');
  if (optional && (v === undefined || v === null)) return;
  const isInt = (x: unknown) => typeof x === 'number' && Number.isInteger(x);
  switch (p.type) {
    case 'Tensor':
    case 'Tensor?':
      if (!(v instanceof Tensor)) throw bad('a Tensor');
      return;
    case 'Tensor[]':
      if (!Array.isArray(v) || !v.every((t) => t instanceof Tensor)) throw bad('an array of Tensors');
      return;
    case 'Scalar':
    case 'Scalar?':
      if (typeof v !== 'number' && typeof v !== 'boolean') throw bad('a number');
      return;
    case 'Tensor|Scalar':
      if (!(v instanceof Tensor) && typeof v !== 'number' && typeof v !== 'boolean') throw bad('a Tensor or a number');
      return;
    case 'int':
    case 'int?':
      if (!isInt(v)) throw bad('an integer');
      return;
    case 'int[]':
    case 'int[]?':
      if (!Array.isArray(v) || !v.every(isInt)) throw bad('an array of integers');
      return;
    case 'int|int[]':
    case 'int|int[]?':
      if (!isInt(v) && !(Array.isArray(v) && v.every(isInt))) throw bad('an integer or an array of integers');
      return;
    case 'int|int[]|str':
      if (!isInt(v) && typeof v !== 'string' && !(Array.isArray(v) && v.every(isInt))) {
        throw bad('an integer, an array of integers or a string');
      }
      return;
    case 'bool':
      if (typeof v !== 'boolean') throw bad('a boolean');
      return;
    case 'str':
    case 'str?':
      if (typeof v !== 'string') throw bad('a string');
      return;
    case 'dtype?':
      if (v !== 'float32' && v !== 'int32' && v !== 'bool') throw bad("one of 'float32', 'int32', 'bool'");
      return;
    case 'any':
      return;
    default:
      p.type satisfies never;
  }
}

/** Fill defaults, take keyword args by name and check every argument against the schema. */
export function bindArgs(schema: Schema, args: readonly unknown[], kwargs?: Readonly<Record<string, unknown>>): unknown[] {
  const { name, params } = schema;
  if (args.length > params.length) {
    throw new ValueError(`${name}: takes at most ${params.length} arguments (${schema.text}), got ${args.length}`);
  }
  const out = params.map((_p, i) => (i < args.length ? args[i] : undefined));
  for (const [k, v] of Object.entries(kwargs ?? {})) {
    const i = params.findIndex((p) => p.name === k);
    if (i < 0) {
      throw new ValueError(`${name}: unexpected option '${k}' (expected one of ${params.map((p) => p.name).join(', ')})`);
    }
    if (i < args.length && args[i] !== undefined) throw new ValueError(`${name}: '${k}' was given twice`);
    out[i] = v;
  }
  params.forEach((p, i) => {
    if (out[i] === undefined) {
      if (!p.hasDefault) throw new ValueError(`${name}: missing required argument '${p.name}' (${schema.text})`);
      out[i] = structuredClone(p.default);
    }
    checkArg(name, p, out[i]);
  });
  return out;
}

/** Split a call's arguments into positional ones and a trailing options object (PyTorch's keyword args). */
export function splitOptions(schema: Schema, raw: readonly unknown[]): [readonly unknown[], Record<string, unknown> | undefined] {
  const last = raw[raw.length - 1];
  if (raw.length > 0 && isPlainObject(last) && schema.params[raw.length - 1]?.type !== 'any') {
    return [raw.slice(0, -1), last];
  }
  return [raw, undefined];
}

function edgeOf(t: Tensor): GradNode | null {
  return t.gradFn ?? (t.requiresGrad ? t._gradAccumulator() : null);
}

export function defineOp<F extends AnyFn>(spec: OpSpec<F>): Op<F> {
  const schema = parseSchema(spec.schema);
  const { name, params } = schema;
  if (typeof spec.lower !== 'function' && !(isEager(spec.lower) && spec.lower.eager.trim() !== '')) {
    throw new KilnError(`defineOp ${name}: 'lower' must be a lowering or { eager: 'why it runs eagerly' }, got ${describe(spec.lower)}`);
  }
  const tensorParams = params.map((p) => p.type === 'Tensor' || p.type === 'Tensor?' || p.type === 'Tensor|Scalar');
  const listParams = params.map((p) => p.type === 'Tensor[]');

  const run = (args: unknown[]): ReturnType<F> => {
    // Differentiable inputs, flattened (a Tensor[] parameter contributes each of its tensors).
    const inputs: (Tensor | null)[] = [];
    let needsGrad = false;
    args.forEach((a, i) => {
      if (listParams[i]) for (const t of a as Tensor[]) inputs.push(t);
      else inputs.push(tensorParams[i] && a instanceof Tensor ? a : null);
    });
    if (spec.backward && isGradEnabled()) needsGrad = inputs.some((t) => t?.requiresGrad);
    const ctx = new OpContext(name);
    if (spec.composite) return spec.forward(ctx, ...(args as Parameters<F>));
    const out = withGradMode(false, () => spec.forward(ctx, ...(args as Parameters<F>)));
    const primary = (Array.isArray(out) ? out[0] : out) as Tensor;
    if (spec.view) markView(primary, args[0] as Tensor, (base) => (op as unknown as (...a: unknown[]) => Tensor)(base, ...args.slice(1)));
    if (needsGrad && primary.dtype === 'float32') {
      const shapes = inputs.map((t) => t?.shape);
      const backward = spec.backward!;
      primary.gradFn = new GradNode(
        `${name}Backward`,
        inputs.map((t) => (t ? edgeOf(t) : null)),
        (g) => {
          ctx.saved.check();
          const grads = backward(ctx, g).flatMap((x) => (Array.isArray(x) ? x : [x])) as (Tensor | null | undefined)[];
          grads.forEach((gi, i) => {
            const want = shapes[i];
            if (gi && want && !sameShape(gi.shape, want)) {
              throw new AutogradError(`${name}Backward: gradient for input ${i} has shape ${fmt(gi.shape)}, expected ${fmt(want)}`);
            }
          });
          return grads;
        },
      );
    }
    return out;
  };

  const op = ((...raw: unknown[]) => {
    const [args, kwargs] = splitOptions(schema, raw);
    if (activeTrace && hasTraced(activeTrace, raw)) return activeTrace.callOp(op, args, kwargs);
    return run(bindArgs(schema, args, kwargs));
  }) as unknown as Op<F>;
  Object.defineProperty(op, 'name', { value: name });
  Object.assign(op, {
    opName: name,
    schema,
    lower: spec.lower,
    composite: spec.composite === true,
    invoke: (args: readonly unknown[], kwargs?: Readonly<Record<string, unknown>>) => run(bindArgs(schema, args, kwargs)),
    callWith: (args: readonly unknown[], kwargs?: Readonly<Record<string, unknown>>) =>
      activeTrace && hasTraced(activeTrace, [args, kwargs]) ? activeTrace.callOp(op, args, kwargs) : run(bindArgs(schema, args, kwargs)),
  });
  OPS.set(name, op as Op<AnyFn>);
  return op;
}

/** A copy of `self` for autograd to save: kiln's own, so a runtime trace records no op for it (PyTorch's traces hold no such clone). */
function protectiveClone(self: Tensor): Tensor {
  const trace = activeTrace;
  if (!trace?.sameValue) return self.clone();
  setTraceDispatch(null);
  try {
    const copy = self.clone();
    trace.sameValue(self, copy);
    return copy;
  } finally {
    setTraceDispatch(trace);
  }
}

/** Remember how `view` was made from its base so in-place writes through it can be differentiated. */
export function markView(view: Tensor, input: Tensor, replay: (base: Tensor) => Tensor): void {
  if (view._storage !== input._storage) return; // the op had to copy (e.g. reshape of strided data)
  const parentReplay = input._viewReplay;
  view._base = input._base ?? input;
  view._viewReplay = parentReplay ? (b) => replay(parentReplay(b)) : replay;
}

/** Views made by a function that returns several views of one input (unbind, split): the function's tape name. */
const multiOutputViews = new WeakMap<Tensor, { readonly fn: string; readonly index: number }>();

/**
 * Mark `views` as the outputs of `fn`, a function that returns several views of its input. As in PyTorch,
 * writing one in place while it requires grad is an error: the write would have to rebase the history of
 * every sibling view, which a single gradient node per output cannot express.
 */
export function markMultiOutputViews(views: readonly Tensor[], fn: string, firstIndex = 0): void {
  views.forEach((v, i) => multiOutputViews.set(v, { fn, index: firstIndex + i }));
}

/** The function that made `t` as one of several views (see markMultiOutputViews), if any. */
export function multiOutputViewOf(t: Tensor): { readonly fn: string; readonly index: number } | undefined {
  return multiOutputViews.get(t);
}

/**
 * Run an in-place op: compute the out-of-place result, write it into `self`'s storage, and rebase the
 * autograd history of `self` (and of its base, when `self` is a view) onto the result.
 */
export function applyInplace(name: string, self: Tensor, compute: (src: Tensor) => Tensor, other?: unknown): Tensor {
  const recording = isGradEnabled();
  if (recording && self.requiresGrad && self.isLeaf) {
    throw new AutogradError(`${name}: a leaf tensor that requires grad is being used in an in-place operation`);
  }
  const base = self._base;
  const multi = recording && self.requiresGrad ? multiOutputViews.get(self) : undefined;
  if (multi) {
    throw new AutogradError(
      `Output ${multi.index} of ${multi.fn} is a view and is being modified inplace. This view is the output of a function that returns ` +
        `multiple views. Such functions do not allow the output views to be modified inplace. You should replace the inplace ` +
        `operation by an out-of-place one (${name}).`,
    );
  }
  if (recording && base && base.requiresGrad && base.isLeaf) {
    throw new AutogradError(`${name}: a view of a leaf tensor that requires grad is being used in an in-place operation`);
  }
  // The out-of-place rule may save `self` for its gradient (its own, or `other`'s: mul_ saves self for
  // other's gradient); give it a copy that the write cannot clobber, as PyTorch saves `original_self`.
  const otherNeedsGrad = other instanceof Tensor && other.requiresGrad;
  const src = recording && (self.requiresGrad || otherNeedsGrad) ? protectiveClone(self) : self;
  const result = compute(src);
  if (!sameShape(result.shape, self.shape)) {
    throw new ShapeError(`${name}: output with shape ${fmt(self.shape)} doesn't match the broadcast shape ${fmt(result.shape)}`);
  }
  if (result.dtype === 'float32' && self.dtype !== 'float32') {
    throw new DTypeError(`${name}: result type float32 can't be cast to the in-place output type ${self.dtype}`);
  }
  self._writeFrom(result);
  activeTrace?.wroteInPlace?.(self, result, name);
  if (!recording) return self;
  const track = result.requiresGrad || self.requiresGrad || (base?.requiresGrad ?? false);
  if (!track) return self;
  const resultEdge = result.gradFn ?? new GradNode(`${name}Backward`, [], () => []);
  if (!base) {
    self.gradFn = resultEdge;
    return self;
  }
  const replay = self._viewReplay!;
  base.gradFn = new GradNode('CopySlices', [edgeOf(base), resultEdge], (g) => {
    const gBase = g.clone();
    const region = replay(gBase);
    const gRegion = region.clone();
    region.fill_(0);
    return [gBase, gRegion];
  });
  self.gradFn = replay(base).gradFn;
  return self;
}
