import type { FxTracer, ShapeTracking } from '../aot/fx-tracer.js';
import { sym_add, sym_mul, sym_size } from '../graph/builtins.js';
import { setTraceDispatch } from '../runtime/dispatch.js';
import { ExportError } from './errors.js';
import { _assert_range, sym_item } from './data-dependent.js';
import { checkValueRange } from './input-checks.js';
import { ExportCondition } from './condition.js';
import { linearCoefficients, linearInOne, sym } from './symbolic/expr.js';
import { userFrame } from '../graph/tracer.js';
import { codeFrameAt } from '../compile/compiled-callable.js';
import { isKilnFrame } from '../graph/source-lines.js';
import type { GraphModule } from '../graph/graph-module.js';
import { Node as GraphNode, type Argument, type FunctionTarget, type Node } from '../graph/node.js';
import type { DType } from '../runtime/dtype.js';
import { isPlainObject } from '../runtime/plain-object.js';
import { withShapeRecorder, type ShapeRecorder } from '../runtime/shape-recording.js';
import type { SizeArith } from '../runtime/size-arith.js';
import { inferMeta, isOpName, type OpMeta, type TensorMeta } from '../runtime/shape-rules/index.js';
import { Tensor } from '../runtime/tensor.js';
import { shapeRecorder, SymSize, type ShapeEnv, type Size } from './symbolic/shape-env.js';

/**
 * Export's symbolic sizes while the program is traced: every traced tensor's sizes as the env knows them
 * (symbols for dynamic dims), propagated op by op through the op table's shape rules, whose size comparisons
 * become the env's guards (`x + y` on `[s0]` and `[s1]` records `s0 == s1`). The plugin's shape helpers read
 * these sizes through the ShapeRecorder, so `if (x.shape[0] <= 6)` in rewritten code records `s0 <= 6`.
 * Op kernels run on the example sizes (`concrete`), and the integers the graph holds are generalised after
 * tracing by tracing again at other sizes (export-program.ts).
 */
export class SymbolicShapes implements ShapeTracking {
  private readonly sizes = new WeakMap<Tensor, readonly Size[]>();
  /** Ops whose rule could not follow the call (it threw, or disagreed with the kernel): their outputs stay static. */
  readonly unfollowed: string[] = [];
  private readonly quiet: SizeArith<Size>;
  /** The tracer and the user's traced tensors with their sizes (for sym_size nodes), once tracing starts. */
  private tracer: FxTracer | undefined;
  private inputs: readonly (readonly [Tensor, readonly Size[]])[] = [];
  /** Data-dependent symbols: the value each had while tracing (kernels need one) and the node computing it. */
  private readonly unbacked = new Map<string, { value: number; node: Node }>();
  private readonly symbolNodes = new Map<string, Node>();

  constructor(
    readonly env: ShapeEnv,
    /** strict export: a dynamic size read where the plugin did not record it is an error, not checked by tracing again. */
    private readonly strict = false,
  ) {
    this.quiet = quietArith(env, (a) => this.value(a));
  }

  shapeRead(t: Tensor): void {
    if (!this.strict || !(this.sizes.get(t) ?? []).some((d) => d instanceof SymSize)) return;
    // the reader: the first frame that is not the getter, this hook or a native function; kiln's own code
    // (its layers, Tensor's accessors, the exporter) reads for its caller and is checked by the shape rules
    const frames = (new Error().stack ?? '').split('\n').slice(1);
    const reader = frames.find(
      (f) => !/[\\/](runtime[\\/]tensor|aot[\\/]fx-tracer|export[\\/]symbolic-trace)\.[jt]s|\(<anonymous>\)|\(node:|at <anonymous>/.test(f),
    );
    if (!reader || isKilnFrame(reader)) return;
    const frame = reader.trim();
    const loc = /\(?((?:file:\/\/)?[^()]+):(\d+):(\d+)\)?$/.exec(frame);
    const path = loc ? `${loc[1]!.replace(/^file:\/\//, '')}:${loc[2]}:${loc[3]}` : frame;
    const codeFrame = loc ? codeFrameAt(path) : '';
    throw new ExportError(
      `exportProgram (strict): code that kiln/plugin did not rewrite reads the shape of a tensor with dynamic sizes ` +
        `[${(this.sizes.get(t) ?? []).join(', ')}] at ${path.replace(/^at /, '')}, so what it computes from them cannot be recorded` +
        (codeFrame ? `\n${codeFrame}\n` : '. ') +
        'Build that code with kiln/plugin (its shape reads become symbolic), or export with { strict: false } to check it by tracing again at other sizes',
    );
  }

  /** Follow `tracer`'s recording; `inputs` are the user's traced tensors with their sizes. */
  attach(tracer: FxTracer, inputs: readonly (readonly [Tensor, readonly Size[]])[]): void {
    this.tracer = tracer;
    this.inputs = inputs;
    tracer.shapes = this;
    for (const [t, s] of inputs) this.sizes.set(t, s);
  }

  sizesOf(t: Tensor): readonly Size[] | undefined {
    return this.sizes.get(t);
  }

  /** A size's value while tracing: its hint, with data-dependent symbols at the values they had. */
  value(a: Size): number {
    if (typeof a === 'number') return a;
    const values = new Map<string, number>();
    for (const s of a.expr.freeSymbols()) values.set(s, this.unbacked.get(s)?.value ?? this.env.symbol(s).hint!);
    return a.expr.evaluate(values);
  }

  /** A recorder for the plugin's helpers; comparisons they make are located at the user's line. */
  recorder(): ShapeRecorder<Size> {
    const env = this.env;
    const arith = envArith(
      env,
      (k, a, b) => {
        env.loc = userFrame().trim().replace(/^at /, '') || undefined;
        return env[k](a, b);
      },
      (a) => this.value(a),
    );
    return {
      ...shapeRecorder(env, (t) => this.sizes.get(t) ?? [...t.shape]),
      arith,
      item: (t) => this.item(t),
      predicate: (op, a, b) => new ExportCondition(this, op, a as Size, b as Size),
      assertRange: (v, lower, upper) => this.assertRange(v, lower, upper),
    };
  }

  /** A saved range assertion traced again: the range narrowed and one `_assert_range` node, as it was. */
  private assertRange(v: Size, lower: number | null, upper: number | null): void {
    const value = this.value(v);
    checkValueRange(value, lower ?? -Infinity, upper ?? Infinity);
    const lin = typeof v === 'number' ? undefined : linearInOne(v.expr);
    if (!lin || lin.a !== 1 || lin.b !== 0)
      throw new ExportError(`exportProgram: a range assertion on ${String(v)}, which is not one data-dependent value`);
    this.env.constrainRange(lin.symbol, lower ?? -Infinity, upper ?? Infinity);
    const node = this.graph.callFunction(_assert_range as unknown as FunctionTarget, [this.nodeOf(v), lower, upper]);
    node.meta.rangeOf = lin.symbol;
  }

  /** `t.item()` used as a size: a data-dependent symbol `u<n>`, computed in the graph by `sym_item`. */
  private item(t: Tensor): Size | undefined {
    const tracer = this.tracer;
    if (!tracer || t.numel() !== 1) return undefined;
    const value = untraced(() => t.item()) as number;
    if (!Number.isInteger(value)) return undefined; // not a size: item() reads it (and the tracer refuses)
    const u = this.env.createUnbacked(`item() ${userFrame().trim() || ''}`.trim());
    const name = [...u.expr.freeSymbols()][0]!;
    const node = tracer.graph.callFunction(sym_item as unknown as FunctionTarget, [tracer.tensorNode(t)]);
    node.meta.unbacked = name;
    this.unbacked.set(name, { value, node });
    return u;
  }

  /** The graph value of a size: a number, or arithmetic on sym_size and sym_item nodes. */
  nodeOf(a: Size): Argument {
    if (typeof a === 'number') return a;
    const lin = linearCoefficients(a.expr);
    if (!lin)
      throw new ExportError(
        `exportProgram: the size ${a.expr.toString()} is not linear in the sizes it uses, so the graph cannot compute it`,
      );
    const graph = this.tracer!.graph;
    let acc: Argument | undefined;
    for (const [s, k] of lin.coeffs) {
      let term: Argument = this.symbolNode(s);
      if (k !== 1) term = graph.callFunction(sym_mul as unknown as FunctionTarget, [term, k]);
      acc = acc === undefined ? term : graph.callFunction(sym_add as unknown as FunctionTarget, [acc, term]);
    }
    if (lin.constant !== 0) acc = graph.callFunction(sym_add as unknown as FunctionTarget, [acc ?? 0, lin.constant]);
    return acc ?? 0;
  }

  private symbolNode(s: string): Node {
    const u = this.unbacked.get(s);
    if (u) return u.node;
    let n = this.symbolNodes.get(s);
    if (n) return n;
    for (const [t, sizes] of this.inputs) {
      const d = sizes.findIndex((v) => v instanceof SymSize && v.expr.equals(sym(s)));
      if (d < 0) continue;
      const tracer = this.tracer!;
      n = tracer.graph.callFunction(sym_size as unknown as FunctionTarget, [tracer.tensorNode(t), d]);
      this.symbolNodes.set(s, n);
      return n;
    }
    throw new ExportError(`exportProgram: no input dim is ${this.env.debugName(s)} alone, so the graph cannot compute it`);
  }

  concrete(x: unknown): unknown {
    return mapSizes(x, (v) => this.value(v));
  }

  /** As the graph records them: data-dependent sizes as their nodes; other sizes as values (fitted later). */
  graphArgs(x: unknown): unknown {
    return mapSizes(x, (v) => (this.isDataDependent(v) ? this.nodeOf(v) : this.value(v)));
  }

  private isDataDependent(v: SymSize): boolean {
    return [...v.expr.freeSymbols()].some((s) => this.unbacked.has(s));
  }

  holdsDataDependent(x: unknown): boolean {
    if (x instanceof SymSize) return this.isDataDependent(x);
    if (Array.isArray(x)) return x.some((v) => this.holdsDataDependent(v));
    if (isPlainObject(x)) return Object.values(x).some((v) => this.holdsDataDependent(v));
    return false;
  }

  /** Whether `s` is a data-dependent symbol of this trace. */
  isUnbacked(s: string): boolean {
    return this.unbacked.has(s);
  }

  get graph(): FxTracer['graph'] {
    return this.tracer!.graph;
  }

  recorded(
    target: FunctionTarget,
    args: readonly unknown[],
    kwargs: Readonly<Record<string, unknown>> | undefined,
    out: unknown,
    _node: Node,
  ): void {
    const name = (target as { opName?: string }).opName;
    if (name === undefined || !isOpName(name)) return this.static(out, name ?? target.name);
    let meta: OpMeta<Size>;
    try {
      // quiet: the guards of the ops are recorded by propagateGraph over the generalised graph, where every
      // integer that follows the inputs is arithmetic on them (here a size read outside the plugin is a number)
      meta = inferMeta(
        this.quiet,
        name,
        args.map((a) => this.metaOf(a)),
        kwargs ? (this.metaOf(kwargs) as Record<string, unknown>) : undefined,
      );
    } catch {
      return this.static(out, name);
    }
    const outs = Array.isArray(out) ? out : [out];
    const metas = (Array.isArray(meta) ? meta : [meta]) as readonly (TensorMeta<Size> | null)[];
    outs.forEach((o, i) => {
      if (!(o instanceof Tensor)) return;
      const m = metas[i];
      if (!m || m.shape.length !== o.shape.length || m.shape.some((d, j) => this.value(d) !== o.shape[j])) {
        this.unfollowed.push(name);
        return;
      }
      this.sizes.set(o, m.shape);
    });
  }

  private static(out: unknown, name: string): void {
    // the output's sizes stay the example's: any symbol in them is lost, which the retrace at other sizes catches
    if (out instanceof Tensor || Array.isArray(out)) this.unfollowed.push(name);
  }

  /** A tensor as its meta (symbolic sizes where known), inside arrays and objects too. */
  private metaOf(a: unknown): unknown {
    if (a instanceof Tensor) return { shape: this.sizes.get(a) ?? [...a.shape], dtype: a.dtype };
    if (Array.isArray(a)) return a.map((v) => this.metaOf(v));
    if (isPlainObject(a)) return Object.fromEntries(Object.entries(a).map(([k, v]) => [k, this.metaOf(v)]));
    return a;
  }
}

/** `x` with every symbolic size inside it (arrays and plain objects too) replaced by `leaf(size)`; untouched parts are kept as they are. */
function mapSizes(x: unknown, leaf: (v: SymSize) => unknown): unknown {
  if (x instanceof SymSize) return leaf(x);
  if (Array.isArray(x)) return x.some(hasSymbolic) ? x.map((v) => mapSizes(v, leaf)) : x;
  if (isPlainObject(x) && Object.values(x).some(hasSymbolic))
    return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, mapSizes(v, leaf)]));
  return x;
}

function hasSymbolic(x: unknown): boolean {
  if (x instanceof SymSize) return true;
  if (Array.isArray(x)) return x.some(hasSymbolic);
  if (isPlainObject(x)) return Object.values(x).some(hasSymbolic);
  return false;
}

/** Run `f` (which traces with `shapes` on its tracer) with the recorder the plugin's helpers answer through. */
export function withSymbolicShapes<T>(shapes: SymbolicShapes, f: () => T): T {
  return withShapeRecorder(shapes.recorder() as ShapeRecorder, f);
}

/** The env's arithmetic with comparisons decided on the values while tracing and recorded nowhere. */
function quietArith(env: ShapeEnv, value: (a: Size) => number): SizeArith<Size> {
  return envArith(env, (k, a, b) => (k === 'eq' ? value(a) === value(b) : k === 'lt' ? value(a) < value(b) : value(a) <= value(b)), value);
}

/**
 * The env's arithmetic with comparisons and example values supplied: recorded and located (the plugin's
 * helpers), recorded (propagateGraph) or decided on the traced values and recorded nowhere (the in-trace rules).
 */
function envArith(
  env: ShapeEnv,
  compare: (k: 'eq' | 'lt' | 'le', a: Size, b: Size) => boolean,
  hint: (a: Size) => number,
): SizeArith<Size> {
  return {
    lit: (n) => env.lit(n),
    add: (a, b) => env.add(a, b),
    sub: (a, b) => env.sub(a, b),
    mul: (a, b) => env.mul(a, b),
    floorDiv: (a, b) => env.floorDiv(a, b),
    mod: (a, b) => env.mod(a, b),
    eq: (a, b) => compare('eq', a, b),
    lt: (a, b) => compare('lt', a, b),
    le: (a, b) => compare('le', a, b),
    hint,
    constant: (a) => env.constant(a),
  };
}

const SYM_OPS: Readonly<Record<string, (env: ShapeEnv, a: Size, b: Size) => Size>> = {
  sym_add: (env, a, b) => env.add(a, b),
  sym_sub: (env, a, b) => env.sub(a, b),
  sym_mul: (env, a, b) => env.mul(a, b),
  sym_floordiv: (env, a, b) => env.floorDiv(a, env.constant(b) ?? NaN),
  sym_mod: (env, a, b) => env.mod(a, env.constant(b) ?? NaN),
};

/**
 * The op table's shape rules run over `gm`'s nodes with `env` (PyTorch's fake-tensor propagation): each
 * size comparison a rule makes is recorded as a guard, so `x + y` on `[s0]` and `[s1]` records `s0 == s1`.
 * `inputs` gives each placeholder's sizes.
 */
export function propagateGraph(gm: GraphModule, shapes: SymbolicShapes, inputs: readonly (readonly Size[])[]): void {
  const env = shapes.env;
  // comparisons recorded as guards; a data-dependent size's example value is the one it had while tracing
  const arith = envArith(
    env,
    (k, a, b) => env[k](a, b),
    (a) => shapes.value(a),
  );

  const sizes = new Map<Node, unknown>();
  let p = 0;
  const value = (a: unknown): unknown => {
    if (a instanceof GraphNode) return sizes.get(a);
    if (Array.isArray(a)) return a.map(value);
    if (isPlainObject(a)) return Object.fromEntries(Object.entries(a).map(([k, v]) => [k, value(v)]));
    return a;
  };
  const tensorMeta = (n: Node) => n.meta.tensorMeta as { shape: number[]; dtype: DType } | undefined;
  for (const n of gm.graph.nodes) {
    if (n.op === 'placeholder') {
      const meta = tensorMeta(n);
      sizes.set(n, { shape: inputs[p++] ?? meta?.shape ?? [], dtype: meta?.dtype ?? 'float32' });
      continue;
    }
    if (n.op !== 'call_function') {
      const meta = tensorMeta(n);
      if (meta) sizes.set(n, { shape: meta.shape, dtype: meta.dtype });
      continue;
    }
    const target = n.target as { opName?: string; name: string };
    env.loc = target.opName ?? target.name;
    if (target.name === 'sym_item') {
      sizes.set(n, env.size(sym(n.meta.unbacked as string)));
    } else if (target.name === 'sym_size') {
      const [t, d] = n.args as [Node, number];
      sizes.set(n, (sizes.get(t) as { shape: Size[] } | undefined)?.shape[d]);
    } else if (SYM_OPS[target.name]) {
      const [a, b] = value(n.args) as [Size, Size];
      sizes.set(n, SYM_OPS[target.name]!(env, a, b));
    } else if (target.name === 'getitem') {
      const [o, i] = n.args as [Node, number];
      const outs = sizes.get(o);
      sizes.set(n, Array.isArray(outs) ? outs[i] : undefined);
    } else if (target.opName !== undefined && isOpName(target.opName)) {
      sizes.set(n, inferMeta(arith, target.opName, value(n.args) as unknown[], value(n.kwargs) as Record<string, unknown>));
    } else {
      const meta = tensorMeta(n);
      if (meta) sizes.set(n, { shape: meta.shape, dtype: meta.dtype });
    }
  }
}

/** `f` run with no tracer active (reading a value the trace must not see). */
function untraced<T>(f: () => T): T {
  const prev = setTraceDispatch(null);
  try {
    return f();
  } finally {
    setTraceDispatch(prev);
  }
}
