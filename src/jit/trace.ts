import { KilnError } from '../errors.js';
import { getitem } from '../graph/builtins.js';
import { GradModeRegions } from '../graph/grad-mode.js';
import { Graph } from '../graph/graph.js';
import { GraphModule } from '../graph/graph-module.js';
import { Node, nodesIn, targetName, type Argument, type FunctionTarget, type Kwargs } from '../graph/node.js';
import { isKilnFrame, userStackFrame } from '../graph/source-lines.js';
import { userFrame } from '../graph/tracer.js';
import { noGrad } from '../runtime/autograd.js';
import { rngState, setRngState } from '../runtime/random.js';
import { setTraceDispatch, type TraceDispatch } from '../runtime/dispatch.js';
import { Module } from '../runtime/nn/module.js';
import { OPS } from '../runtime/op.js';
import { tensor } from '../runtime/ops/creation.js';
import { expand, indexSelect, viewScatter, type ViewStep } from '../runtime/ops/view.js';
import { isPlainObject } from '../runtime/plain-object.js';
import { sameShape } from '../runtime/shape.js';
import { Tensor } from '../runtime/tensor.js';
import { boundParts } from './bound-method.js';
import { argumentName, assignedName, framePosition, parameterNames } from './names.js';
import { decidesControlFlow } from './shape-branches.js';
import {
  divides,
  fitSamples,
  formatShapes,
  graphLeaves,
  graphSkeleton,
  independentSizes,
  shapeMismatch,
  symbolicGraph,
  type ShapeSample,
  type ShapeSpec,
} from './shape-fit.js';
import { TracingError, flatten, flattenAs, unflatten, type Structure } from './structure.js';

/**
 * Runtime tracing (torch.jit.trace): run the function or module once on example inputs and record every op
 * it actually executed into a kiln FX graph. Ops are recorded as call_function nodes of the op table (leaf
 * modules and hooks are inlined), parameters and buffers as get_attr by path, other tensors as constants.
 * Control flow is whatever the example took; reading a tensor's values freezes them (a TracerWarning).
 */

/** The trace checker found a difference between invocations, or between the trace and eager code. */
export class TracingCheckError extends KilnError {}

export interface TraceOptions {
  /** Re-trace on `checkInputs` (default: the example inputs) and compare graphs and outputs. Default true. */
  checkTrace?: boolean;
  /** Argument lists to check with; for `traceModule`, objects of argument lists by method (`{ forward: [...] }`). */
  checkInputs?: unknown[][] | Record<string, unknown[]>[];
  /** Refuse dict outputs (their structure might depend on the inputs). Default true. */
  strict?: boolean;
  /** Tolerance of the output check. */
  checkTolerance?: number;
}

const SHAPE_BRANCH_WARNING =
  'Comparing a shape might cause the trace to be incorrect. The trace follows the branch taken at these shapes; kiln traces the program again at each new shape while it is in memory, and a saved trace only runs at the shapes it was traced at.';

const VALUE_WARNING =
  "Converting a tensor to a JavaScript value might cause the trace to be incorrect. We can't record the data flow of JavaScript values, so this value will be treated as a constant in the future. This means that the trace might not generalize to other inputs!";

/** One trace: the graph, the tensors it reads by path or as constants, and the warnings it gave. */
class JitTracer implements TraceDispatch {
  readonly symbolic = false;
  readonly recordsEveryOp = true;
  /** A runtime trace records the forward only: a custom-gradient function stays one call, keeping its backward. */
  readonly customFunctions = 'opaque';
  readonly graph = new Graph();
  readonly constants = new Map<string, Tensor>();
  readonly warnings: string[] = [];
  /** Where user code read the shape of a traced value: numbers from there may be baked into the graph. */
  readonly shapeReads: string[] = [];
  /** Whether one of those reads decides a branch (a comparison, an `if` test): the trace follows one path. */
  shapeBranches = false;
  private readonly readSites = new Set<string>();
  private readonly nodes = new WeakMap<Tensor, Node>();
  private readonly attrNodes = new Map<string, Node>();
  private readonly paths = new Map<Tensor, string>();
  private readonly constantNames = new Map<Tensor, string>();
  private readonly warnedSites = new Set<string>();
  /** Inputs and weights an in-place op wrote (the traced program writes them back). */
  readonly written = new Set<Tensor>();
  /** The latest value recorded from a line that assigns a variable: it gets that name once the line is done. */
  private pendingName: { line: string; site: string; node: Node; name: string } | undefined;
  /** Where the user called trace (or the traced program): ops of kiln's own layers have no user frame nearer than that. */
  private readonly callerSite = sitePosition(userStackFrame());
  /** `noGrad`/`withGradMode` regions the traced code is inside, recorded as `_set_grad_enabled` nodes around its ops. */
  private readonly gradRegions = new GradModeRegions(() => this.graph);

  /** `quiet`: collect warnings without emitting them (the checker's re-traces would repeat them). */
  constructor(
    readonly root: Module,
    private readonly quiet = false,
  ) {
    for (const [p, t] of [...root.namedParameters(), ...root.namedBuffers()]) if (!this.paths.has(t)) this.paths.set(t, p);
  }

  placeholder(name: string, t: Tensor): Node {
    const node = this.graph.placeholder(name);
    this.nodes.set(t, node);
    return node;
  }

  /** The input node `t` stands for, if it is still that. */
  nodeOf(t: Tensor): Node | undefined {
    return this.nodes.get(t);
  }

  isTraced(x: unknown): boolean {
    return x instanceof Tensor && (this.nodes.has(x) || this.paths.has(x));
  }

  callOp(op: (...args: never[]) => unknown, args: readonly unknown[], kwargs: Readonly<Record<string, unknown>> | undefined): unknown {
    const prev = setTraceDispatch(null); // the op's own inner ops are not recorded
    let out: unknown;
    try {
      out = (op as (...a: unknown[]) => unknown)(...args, ...(kwargs ? [kwargs] : []));
    } finally {
      setTraceDispatch(prev);
    }
    this.gradRegions.flush();
    const node = this.graph.callFunction(
      op as unknown as FunctionTarget,
      args.map((a) => this.arg(a)),
      (kwargs ? this.arg(kwargs) : {}) as Kwargs,
    );
    this.bind(out, node);
    this.nameAfterSource(node);
    return out;
  }

  /**
   * Values keep the user's variable names (PyTorch records them from Python's frames): a node recorded from a
   * line `const h = …` is named `h` once that line is done. The last op of a line computes what it assigns
   * (`f(g(x))` calls f last); the same call site again (a loop) starts a new value.
   */
  private nameAfterSource(node: Node): void {
    const frame = userStackFrame();
    const at = frame ? framePosition(frame) : undefined;
    if (!at) return;
    const line = `${at.file}:${at.line}`;
    const site = `${line}:${at.column}`;
    if (site === this.callerSite) return;
    const name = assignedName(at.file, at.line, at.column);
    if (this.pendingName && (site === this.pendingName.site || (name && line !== this.pendingName.line))) this.commitName();
    if (name) this.pendingName = { line, site, node, name };
  }

  /** Give the pending value its variable's name. */
  commitName(): void {
    const p = this.pendingName;
    this.pendingName = undefined;
    if (p && !p.node.erased && (p.node.op === 'call_function' || p.node.op === 'call_method')) this.graph.renameNode(p.node, p.name);
  }

  /** Autograd's protective copy before an in-place op is the same value: no node. */
  sameValue(from: unknown, to: unknown): void {
    if (from instanceof Tensor && to instanceof Tensor && this.isTraced(from)) this.nodes.set(to, this.tensorNode(from));
  }

  /** `x.float()` on a float tensor, `contiguous()` on contiguous data, `detach_()`: recorded, so the trace generalises. */
  skippedOp(self: unknown, op: ((...args: never[]) => unknown) | string, args: readonly unknown[], inPlace = false): unknown {
    if (!(self instanceof Tensor) || !this.isTraced(self)) return undefined;
    // kiln's own layers casting defensively are not the user's op (their casts that do something are recorded as ops)
    const frames = (new Error().stack ?? '').split('\n').slice(2);
    const caller = frames.find((f) => !/[\\/](jit[\\/]trace|runtime[\\/]tensor(-methods)?)\.[jt]s/.test(f));
    if (!caller || isKilnFrame(caller)) return undefined;
    this.gradRegions.flush();
    const argNodes = args.map((a) => this.arg(a));
    const node =
      typeof op === 'string' ? this.graph.callMethod(op, argNodes) : this.graph.callFunction(op as unknown as FunctionTarget, argNodes);
    this.nameAfterSource(node);
    if (inPlace) {
      this.nodes.set(self, node);
      return self;
    }
    // A value of its own for the recorded result: a view of `self` (eagerly the method returns `self` itself).
    const prev = setTraceDispatch(null);
    let alias: Tensor;
    try {
      alias = expand(self, [...self.shape]);
    } finally {
      setTraceDispatch(prev);
    }
    this.nodes.set(alias, node);
    return alias;
  }

  shapeRead(t: unknown): void {
    if (!(t instanceof Tensor) || !this.nodes.has(t)) return; // parameter shapes do not change with the inputs
    // Tensor's own accessors (size(), numel(), ndim) and methods (t(), contiguous()) read for their caller; kiln's layers only check shapes.
    const frames = (new Error().stack ?? '').split('\n').slice(1);
    const reader = frames.find((f) => !/[\\/](jit[\\/]trace|runtime[\\/]tensor(-methods)?)\.[jt]s/.test(f));
    if (!reader || isKilnFrame(reader)) return;
    if (!this.readSites.has(reader)) {
      this.readSites.add(reader);
      if (decidesControlFlow(reader)) {
        this.shapeBranches = true;
        this.warn('shape', SHAPE_BRANCH_WARNING);
      }
    }
    const site = reader.trim().replace(/:(\d+):\d+\)?$/, (_, line: string) => `:${line}${reader.trim().endsWith(')') ? ')' : ''}`);
    if (!this.shapeReads.includes(site)) this.shapeReads.push(site); // one entry per source line
  }

  valueRead(t: unknown, what: string): void {
    if (t instanceof Tensor && this.isTraced(t)) this.warn(what, VALUE_WARNING);
  }

  /** One TracerWarning per kind and source line, in program order. */
  private warn(what: string, text: string): void {
    const site = userFrame().trim();
    const key = `${what} ${site}`;
    if (this.warnedSites.has(key)) return;
    this.warnedSites.add(key);
    const msg = `${what}: ${text}${site ? `\n    ${site}` : ''}`;
    this.warnings.push(msg);
    if (!this.quiet) process.emitWarning(msg, 'TracerWarning');
  }

  derived(from: unknown, to: unknown, method: string): void {
    if (!(from instanceof Tensor && to instanceof Tensor && this.isTraced(from))) return;
    this.gradRegions.flush();
    const node = this.graph.callMethod(method, [this.tensorNode(from)]);
    this.nodes.set(to, node);
    this.nameAfterSource(node);
  }

  gradModeRegion(enabled: boolean): () => void {
    return this.gradRegions.enter(enabled);
  }

  /** Nodes whose result differs run to run (dropout while training), for the checker's warning. */
  nondeterministic(): Node[] {
    const name = (n: Node) => targetName(n.target);
    return this.graph.nodes.filter(
      (n) =>
        n.op === 'call_function' &&
        ((name(n) === 'dropout' && n.args[2] === true && n.args[1] !== 0) || name(n) === 'rand' || name(n) === 'randn'),
    );
  }

  /**
   * An in-place op is recorded as its out-of-place computation: `self` now stands for that result. A write
   * through a view also gives its base a new value, recorded as `viewScatter` over the chain of view ops that
   * made the view. Inputs and weights written so are written back by the traced program after its graph, as
   * eagerly; a write through a view the graph cannot retrace is recorded on the view only (a TracerWarning).
   */
  wroteInPlace(self: unknown, result: unknown, name: string): void {
    if (!(self instanceof Tensor) || !(result instanceof Tensor) || !this.nodes.has(result)) return;
    const viewNode = this.nodes.get(self) ?? (this.paths.has(self) ? this.tensorNode(self) : undefined);
    const resultNode = this.nodes.get(result)!;
    this.nodes.set(self, resultNode);
    this.written.add(self);
    const base = self._base;
    if (!base || !this.isTraced(base)) return;
    const baseNode = this.tensorNode(base);
    const chain = viewNode ? viewChain(viewNode, baseNode) : undefined;
    if (chain) {
      this.nodes.set(
        base,
        this.graph.callFunction(viewScatter as unknown as FunctionTarget, [baseNode, resultNode, chain as unknown as Argument]),
      );
      this.written.add(base);
      return;
    }
    this.warn(
      `${name}`,
      'Writing in place into a view the trace cannot follow might cause the trace to be incorrect: the write is recorded on the view only, and later reads of the viewed tensor (and the tensor itself after the call) keep the value from before the write',
    );
  }

  /** Record that `out` (a tensor, or an array / values-indices pair of them) is what `node` computes. */
  private bind(out: unknown, node: Node): void {
    if (out instanceof Tensor) {
      this.nodes.set(out, node);
      return;
    }
    if (Array.isArray(out)) {
      out.forEach((o, i) => o instanceof Tensor && this.nodes.set(o, this.graph.callFunction(getitem as FunctionTarget, [node, i])));
    }
  }

  /** A value met in an op call, as a graph argument. */
  arg(a: unknown): Argument {
    if (a instanceof Tensor) return this.tensorNode(a);
    if (Array.isArray(a)) return a.map((x) => this.arg(x));
    if (isPlainObject(a)) return Object.fromEntries(Object.entries(a).map(([k, v]) => [k, this.arg(v)]));
    return a as Argument;
  }

  tensorNode(t: Tensor): Node {
    const n = this.nodes.get(t);
    if (n) return n;
    const path = this.paths.get(t) ?? this.constantPath(t);
    let attr = this.attrNodes.get(path);
    if (!attr) this.attrNodes.set(path, (attr = this.graph.getAttr(path)));
    return attr;
  }

  private constantPath(t: Tensor): string {
    if (t.requiresGrad) {
      throw new TracingError(
        `Cannot insert a Tensor that requires grad as a constant. Consider making it a parameter or input, or detaching the gradient${userFrame()}`,
      );
    }
    let name = this.constantNames.get(t);
    if (!name) {
      name = `_tensor_constant${this.constantNames.size}`;
      this.constantNames.set(t, name);
      this.constants.set(name, t);
    }
    return name;
  }
}

/** `file:line:col` of a stack frame, if it has one. */
function sitePosition(frame: string | undefined): string | undefined {
  const at = frame ? framePosition(frame) : undefined;
  return at ? `${at.file}:${at.line}:${at.column}` : undefined;
}

/** The view ops (name, arguments, options) that lead from `base` to `view` in the graph, if that is all they are. */
function viewChain(view: Node, base: Node): ViewStep[] | undefined {
  const chain: ViewStep[] = [];
  for (let n = view; n !== base;) {
    const op = n.op === 'call_function' ? OPS.get(targetName(n.target)) : undefined;
    const [input, ...rest] = n.args;
    if (!op || op !== n.target || !(input instanceof Node) || nodesIn(rest).length || nodesIn(n.kwargs).length) return undefined;
    chain.unshift([op.opName, rest, n.kwargs] as unknown as ViewStep);
    n = input;
  }
  return chain;
}

/** What one traced method needs at run time: its graph module and the structure of its inputs and outputs. */
export interface TracedMethod {
  readonly gm: GraphModule;
  /** Nodes that give different results run to run: the checker warns and does not compare outputs. */
  readonly nondeterministic?: readonly string[];
  readonly inputs: Structure;
  readonly outputs: Structure;
  readonly warnings: readonly string[];
  /** Present when user code read traced shapes: which input shapes the graph is valid for. */
  readonly shapes?: ShapeSpec;
  /** The first trace's graph, which refits start from (in memory only). */
  readonly base?: GraphModule;
  /**
   * Inputs (by position in the flat input list) and weights (by path) the program writes in place: the graph
   * returns their new values after the outputs, in this order, and the traced program writes them back.
   */
  readonly inputWrites?: readonly number[];
  readonly stateWrites?: readonly string[];
}

function inputError(where: string, v: unknown): never {
  const type = v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
  throw new TracingError(
    `Type '${type}' cannot be traced (${where}). Only Tensors and (possibly nested) arrays and objects of Tensors can be traced`,
  );
}

function outputError(where: string): never {
  throw new TracingError(
    `Only tensors, arrays of tensors, or objects of tensors can be output from traced functions (${where} is not a tensor)`,
  );
}

/**
 * The tensor the trace runs with in place of an input that is already a graph value (passed twice, or a weight
 * of the traced module): one value per occurrence, as PyTorch gives each input its own graph value. It shares
 * the storage, so in-place writes still land where they do eagerly.
 */
function aliasOf(t: Tensor): Tensor {
  const prev = setTraceDispatch(null);
  try {
    if (t.requiresGrad && !t.isLeaf) return expand(t, [...t.shape]);
    const a = t.detach();
    return t.requiresGrad ? a.requiresGrad_(true) : a;
  } finally {
    setTraceDispatch(prev);
  }
}

/** Graph input names: the parameter each tensor is passed as (`x`, or `x_0`, `x_1` inside a structure), else `input_i`. */
function inputNames(inputs: readonly unknown[], params: readonly (string | undefined)[], count: number): string[] {
  const names: string[] = [];
  inputs.forEach((arg, i) => {
    const n = flatten(arg, 'input', () => undefined as never).tensors.length;
    const param = argumentName(params, i);
    for (let k = 0; k < n; k++) names.push(param ? (n === 1 && arg instanceof Tensor ? param : `${param}_${k}`) : '');
  });
  return names.map((n, i) => n || (count === 1 ? 'input' : `input_${i}`));
}

/** Record one call of `fn` (with `this` = `root`) on `inputs`; `params` are the names of its parameters. */
function record(
  root: Module,
  fn: (...a: unknown[]) => unknown,
  inputs: unknown[],
  strict: boolean,
  name: string,
  quiet = false,
  params: readonly (string | undefined)[] = [],
): TracedMethod {
  if (!Array.isArray(inputs)) throw new TracingError(`trace: exampleInputs must be an array of the arguments, got ${typeof inputs}`);
  const { structure: inStructure, tensors: given } = flatten(inputs, 'input', inputError);
  const tracer = new JitTracer(root, quiet);
  const names = inputNames(inputs, params, given.length);
  const inTensors: Tensor[] = [];
  const placeholders: Node[] = [];
  for (const [i, t] of given.entries()) {
    const own = tracer.isTraced(t) ? aliasOf(t) : t;
    inTensors.push(own);
    placeholders.push(tracer.placeholder(names[i]!, own));
  }
  const args = inTensors.some((t, i) => t !== given[i]) ? (unflatten(inStructure, inTensors) as unknown[]) : inputs;
  const prev = setTraceDispatch(tracer);
  let result: unknown;
  try {
    result = fn.apply(root, args);
  } finally {
    setTraceDispatch(prev);
  }
  if (strict && isPlainObject(result)) {
    throw new TracingError(
      "Encountering a dict at the output of the tracer might cause the trace to be incorrect, this is only valid if the container structure does not change based on the module's inputs. Consider using a constant container instead (e.g. an array). If you absolutely need this and know the side effects, pass strict: false to trace() to allow this behavior.",
    );
  }
  const { structure: outStructure, tensors: outTensors } = flatten(result, 'output', outputError);
  tracer.commitName();
  // In-place writes to inputs and weights: their new values come after the outputs, and are written back.
  const inputWrites = inTensors.flatMap((t, i) => (tracer.written.has(t) && tracer.nodeOf(t) !== placeholders[i] ? [i] : []));
  const stateWrites = [...root.namedParameters(), ...root.namedBuffers()].filter(([, t]) => tracer.written.has(t));
  tracer.graph.output([
    ...outTensors.map((t) => tracer.tensorNode(t)),
    ...inputWrites.map((i) => tracer.tensorNode(inTensors[i]!)),
    ...stateWrites.map(([, t]) => tracer.tensorNode(t)),
  ]);
  const gm = new GraphModule(root, tracer.graph, name, tracer.constants);
  const nondeterministic = tracer.nondeterministic().map((n) => n.format());
  const sample: ShapeSample = { shapes: inTensors.map((t) => t.shape), leaves: graphLeaves(tracer.graph) };
  const shapes = tracer.shapeReads.length
    ? { reads: tracer.shapeReads, branches: tracer.shapeBranches, samples: [sample], exprs: [], guards: [] }
    : undefined;
  return {
    gm,
    base: gm,
    inputs: inStructure,
    outputs: outStructure,
    warnings: tracer.warnings,
    nondeterministic,
    shapes,
    ...(inputWrites.length ? { inputWrites } : {}),
    ...(stateWrites.length ? { stateWrites: stateWrites.map(([p]) => p) } : {}),
  };
}

/** The traced graph's shape: its nodes with integers blanked, and the shapes of the constants it holds. */
function skeleton(gm: GraphModule): string {
  return graphSkeleton(gm.graph, (path) => {
    const t = (gm as unknown as Record<string, unknown>)[path];
    return t instanceof Tensor && path.startsWith('_tensor_constant') ? `[${t.shape.join(',')}]` : '';
  });
}

/**
 * Make `method` also cover `again`, a trace of the same program at other input shapes: the numbers that
 * changed become shape arithmetic on the inputs. Returns the reason when the traces did different things.
 */
function generalise(
  method: TracedMethod,
  again: TracedMethod,
  name: string,
  /** The program traced again at other input shapes (undefined when that trace threw). */
  retraceAt?: (shapes: readonly (readonly number[])[]) => TracedMethod | undefined,
): TracedMethod | string {
  const base = method.base ?? method.gm;
  const spec = method.shapes ?? again.shapes;
  const differ = () => `Graphs differed across invocations!\n${graphDiff(base.graph.toString(), again.gm.graph.toString())}`;
  if (!spec) return base.graph.toString() === again.gm.graph.toString() ? method : differ(); // no shape was read
  if (skeleton(base) !== skeleton(again.gm)) return differ();
  const reads = [...new Set([...(method.shapes?.reads ?? []), ...(again.shapes?.reads ?? [])])];
  const sample = again.shapes!.samples[0]!;
  const seen = spec.samples.find((s) => JSON.stringify(s.shapes) === JSON.stringify(sample.shapes));
  if (seen) return JSON.stringify(seen.leaves) === JSON.stringify(sample.leaves) ? method : differ(); // same shapes again
  const samples = [...spec.samples, sample];
  const fit = fitSamples(samples);
  if (!fit.ok) return fit.why;
  const inputs = base.graph.nodes.filter((n) => n.op === 'placeholder');
  const gm = fit.exprs.length ? new GraphModule(base, symbolicGraph(base.graph, fit.exprs, inputs), name) : base;
  const branches = Boolean(method.shapes?.branches || again.shapes?.branches);
  const fitted = { reads, branches, samples, exprs: fit.exprs, guards: fit.guards };
  const shapes = confirmed(method.shapes, fitted, base, retraceAt);
  return { ...method, gm: shapes === fitted ? gm : confirmedGraph(base, shapes, inputs, name), base, shapes };
}

/**
 * `fitted`, confirmed by one more trace at input sizes moved independently of each other: the samples so far
 * may keep dims in an affine relation (checkInputs made by adding one to every size), so a number that is no
 * function of the shapes (`ceil(n / 2)`) can fit as another dim's `d - 1` on all of them. In memory every new
 * shape is traced again anyway; a saved trace only has the spec, so a fit that cannot be confirmed (that trace
 * failed, did other ops, or the fit fails there) marks the spec `unconfirmed`: it then runs at traced shapes only.
 */
function confirmed(
  previous: ShapeSpec | undefined,
  fitted: ShapeSpec,
  base: GraphModule,
  retraceAt: ((shapes: readonly (readonly number[])[]) => TracedMethod | undefined) | undefined,
): ShapeSpec {
  if (fitted.branches) return fitted; // it runs at traced shapes only: nothing to confirm
  const wasConfirmed = previous && previous.samples.length > 1 && !previous.unconfirmed;
  if (wasConfirmed && JSON.stringify(previous.exprs) === JSON.stringify(fitted.exprs)) return fitted;
  const first = fitted.samples[0]!.shapes;
  const varied = (i: number, d: number) => fitted.samples.some((s) => s.shapes[i]![d] !== first[i]![d]);
  const independent = independentSizes(
    first,
    (_v, d, i) => varied(i, d),
    fitted.samples.map((s) => s.shapes),
  );
  const unconfirmed = { ...fitted, unconfirmed: true };
  // Also the numbers that stayed put so far (max(n, 5)) must stay put there, or follow a fit. A fit that
  // divides needs a second such sample (see `divides`).
  const samples = [...fitted.samples];
  let exprs = fitted.exprs;
  let guards = fitted.guards;
  for (const variant of [0, 1] as const) {
    if (variant === 1 && !divides(exprs)) break;
    const at = variant
      ? independentSizes(
          first,
          (_v, d, i) => varied(i, d),
          samples.map((s) => s.shapes),
          1,
        )
      : independent;
    const again = retraceAt?.(at);
    if (!again?.shapes || skeleton(again.gm) !== skeleton(base)) return unconfirmed;
    samples.push(again.shapes.samples[0]!);
    const fit = fitSamples(samples);
    if (!fit.ok) return unconfirmed;
    [exprs, guards] = [fit.exprs, fit.guards];
  }
  return { ...fitted, samples, exprs, guards };
}

/** The graph for a spec `confirmed` changed: refitted on the extra sample, or the fits it keeps. */
function confirmedGraph(base: GraphModule, spec: ShapeSpec, inputs: readonly Node[], name: string): GraphModule {
  return spec.exprs.length ? new GraphModule(base, symbolicGraph(base.graph, spec.exprs, inputs), name) : base;
}

/** `args` with every input tensor replaced by one of the given shape (its values repeated), for a confirming trace. */
function withShapes(structure: Structure, args: unknown[], shapes: readonly (readonly number[])[]): unknown[] {
  const tensors = flattenAs(structure, args, 'input').map((t, i) => resizedLike(t, shapes[i]!));
  return unflatten(structure, tensors) as unknown[];
}

function resizedLike(t: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(t.shape, shape)) return t;
  return noGrad(() => {
    const flat = t.detach().reshape([-1]);
    const n = shape.reduce((a, b) => a * b, 1);
    const have = flat.shape[0]!;
    const index = tensor(
      Array.from({ length: n }, (_, i) => i % have),
      { dtype: 'int32' },
    );
    const values = have ? indexSelect(flat, 0, index) : flat;
    const out = values.reshape([...shape]).contiguous();
    return t.requiresGrad ? out.requiresGrad_(true) : out;
  });
}

/** A traced program: call it like the original; `graph` and `code` show what was recorded. */
export class TracedModule extends Module {
  declare readonly methods: Map<string, TracedMethod>;
  /** Write the traced program (graphs, weights, input/output structure) to `path`; installed by serialize.ts. */
  declare save: (path: string) => void;
  /** Set when traced from a function (its name): `load` then gives back a function. */
  declare fromFunction: string | undefined;
  /** Per method, how to trace it again at other shapes (in memory only; a loaded trace has none). */
  declare readonly retracers: Map<string, (args: unknown[]) => TracedMethod>;
  /** `method [shapes]` already traced again and found to give the same program. */
  declare readonly verifiedShapes: Set<string>;

  constructor(methods: Map<string, TracedMethod>) {
    super();
    Object.defineProperty(this, 'methods', { value: methods, enumerable: false });
    Object.defineProperty(this, 'fromFunction', { value: undefined, writable: true, enumerable: false });
    Object.defineProperty(this, 'retracers', { value: new Map(), enumerable: false });
    Object.defineProperty(this, 'verifiedShapes', { value: new Set(), enumerable: false });
    const main = methods.get('forward') ?? [...methods.values()][0]!;
    // The weights live once, under the original paths (shared by all methods' graphs).
    for (const [name, child] of main.gm.namedChildren()) (this as unknown as Record<string, unknown>)[name] = child;
    for (const [name, t] of main.gm.namedBuffers('', false)) this.registerBuffer(name, t);
    for (const [name, p] of main.gm.namedParameters('', false)) (this as unknown as Record<string, unknown>)[name] = p;
    for (const [method] of methods) {
      if (method === 'forward') continue;
      Object.defineProperty(this, method, { value: (...args: unknown[]) => this.runMethod(method, args), enumerable: false });
    }
  }

  /** The recorded graph of `forward` (or of the only traced method). */
  get graph(): Graph {
    return this.main().gm.graph;
  }

  get code(): string {
    return this.main().gm.code;
  }

  private main(): TracedMethod {
    return this.methods.get('forward') ?? [...this.methods.values()][0]!;
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  override forward(...args: any[]): any {
    return this.runMethod(this.methods.has('forward') ? 'forward' : [...this.methods.keys()][0]!, args);
  }

  runMethod(name: string, args: unknown[]): unknown {
    let m = this.methods.get(name)!;
    const flat = flattenAs(m.inputs, args, 'input');
    if (m.shapes)
      m = this.checkShapes(
        name,
        m,
        args,
        flat.map((t) => t.shape),
      );
    const out = m.gm.forward(...flat) as Tensor[];
    return unflatten(m.outputs, this.writeBack(m, flat, out));
  }

  /** Write the new values of the inputs and weights the program wrote in place; returns the outputs proper. */
  writeBack(m: TracedMethod, inputs: readonly Tensor[], out: readonly Tensor[]): Tensor[] {
    const inputWrites = m.inputWrites ?? [];
    const stateWrites = m.stateWrites ?? [];
    const n = out.length - inputWrites.length - stateWrites.length;
    inputWrites.forEach((i, k) => inputs[i]!.copy_(out[n + k]!));
    if (stateWrites.length) {
      const state = new Map<string, Tensor>([...this.namedParameters(), ...this.namedBuffers()]);
      noGrad(() =>
        stateWrites.forEach((path, k) => {
          const target = state.get(path);
          if (!target) throw new TracingError(`${this.constructor.name}: the traced program writes '${path}', which it no longer has`);
          target.copy_(out[n + inputWrites.length + k]!);
        }),
      );
    }
    // An output that is an input written in place is that input, as eagerly (`x.mul_(2); return x` returns x).
    const results = out.slice(0, n);
    if (inputWrites.length) {
      const nodes = (m.gm.graph.outputNode?.args[0] ?? []) as unknown[];
      results.forEach((_, j) => {
        const k = inputWrites.findIndex((_i, w) => nodes[n + w] === nodes[j]);
        if (k >= 0) results[j] = inputs[inputWrites[k]!]!;
      });
    }
    return results;
  }

  /**
   * The program read shapes when traced, so its graph may hold numbers, or follow branches, that came from
   * them. In memory, each new input shape is traced once more: the numbers that changed become shape
   * arithmetic, and a program that did different things is an error (a comparison of shapes cannot be
   * recorded). A loaded trace can only check the dims it saw vary and the guards between its fits.
   */
  private checkShapes(name: string, m: TracedMethod, args: unknown[], shapes: readonly (readonly number[])[]): TracedMethod {
    const where = `${this.fromFunction ?? this.constructor.name}.${name}`;
    const retrace = this.retracers.get(name);
    if (!retrace) {
      const mismatch = shapeMismatch(m.shapes!, shapes);
      if (!mismatch) return m;
      const sites = m.shapes!.reads;
      const reads =
        sites
          .slice(0, 4)
          .map((r) => `\n    ${r}`)
          .join('') + (sites.length > 4 ? `\n    … and ${sites.length - 4} more` : '');
      throw new TracingError(
        `${where}: ${mismatch}. The program read tensor shapes when it was traced, so numbers in its graph may come from them:${reads}\nTrace it with checkInputs of other shapes (kiln then records the shape arithmetic) and save it again.`,
      );
    }
    const key = `${name} ${JSON.stringify(shapes)}`;
    if (this.verifiedShapes.has(key)) return m;
    // Shapes the program was traced at need no second look (and running it again would repeat its side effects).
    if (m.shapes!.samples.some((s) => s.shapes.every((x, i) => sameShape(x, shapes[i]!)))) return m;
    // Nor do shapes a confirmed fit covers: the user's code runs again only where the program cannot be reused.
    const spec = m.shapes!;
    if (!spec.branches && !spec.unconfirmed && spec.samples.length > 1 && !shapeMismatch(spec, shapes)) return m;
    // Tracing again runs the user's code on copies of the inputs, and leaves the random generator as it was.
    const again = (a: unknown[]) => keepingRng(() => retrace(cloneInputs(a)));
    const next = generalise(m, again(args), name, (at) => attempt(() => again(withShapes(m.inputs, args, at))));
    if (typeof next === 'string') {
      const mismatch = shapeMismatch(m.shapes!, shapes);
      const traced = formatShapes(m.shapes!.samples[0]!.shapes);
      throw new TracingError(
        `${where}: ${mismatch ?? `traced again at input shapes ${formatShapes(shapes)} (first traced at ${traced})`}, and tracing it again at these shapes does not give the same program: ${next}`,
      );
    }
    if (this.verifiedShapes.size > 256) this.verifiedShapes.clear(); // a bound, not a cache policy: re-checks are cheap
    this.verifiedShapes.add(key);
    this.methods.set(name, next);
    return next;
  }
}

/**
 * Re-trace on each of `checkInputs` and compare, as PyTorch's trace checker does: every run gets its own
 * copy of the inputs (the program may write into them); graphs that differ are a TracingCheckError (after
 * kiln's shape generalisation), and so are constant tensors whose values differ between the two traces; an
 * output of the traced program that differs from the function's is a TracerWarning, also when the trace
 * has nondeterministic nodes (the warning says so first). Returns the method, generalised over the shapes seen.
 */
function check(
  root: Module,
  fn: (...a: unknown[]) => unknown,
  traced: TracedMethod,
  checkInputs: unknown[][],
  options: TraceOptions,
  name: string,
  params: readonly (string | undefined)[] = [],
): TracedMethod {
  const tol = options.checkTolerance ?? 1e-5;
  const expected = traced.gm.graph.toString();
  const random = traced.nondeterministic ?? [];
  const retrace = (args: unknown[]) => keepingRng(() => record(root, fn, args, options.strict ?? true, name, true, params));
  if (random.length) {
    process.emitWarning(
      `Trace had nondeterministic nodes. Did you forget to call .eval() on your model? Nodes:\n${random.map((n) => `\t${n}`).join('\n')}\nThis may cause errors in trace checking. To disable trace checking, pass checkTrace: false to trace()`,
      'TracerWarning',
    );
  }
  for (const inputs of checkInputs) {
    if (!Array.isArray(inputs))
      throw new TracingError(`trace: each of checkInputs must be an array of the arguments, got ${typeof inputs}`);
    const again = retrace(cloneInputs(inputs));
    const sameGraph = again.gm.graph.toString() === expected;
    if (!sameGraph || traced.shapes) {
      const retraceAt = (at: readonly (readonly number[])[]) => attempt(() => retrace(withShapes(traced.inputs, cloneInputs(inputs), at)));
      const next = generalise(traced, again, name, retraceAt);
      if (typeof next === 'string') throw new TracingCheckError(next);
      traced = next;
    }
    // Constants of one shape in both traces must hold the same values (at other shapes they may be other constants).
    const differing = differingConstant(traced.base ?? traced.gm, again.gm, sameGraph);
    if (differing) {
      throw new TracingCheckError(
        `Tensor-valued Constant nodes differed in value across invocations. This often indicates that the tracer has encountered untraceable code.\n\tNode:\n\t\t${differing}\nTensor values read with item(), toArray() or data() become constants of the trace.`,
      );
    }
    const fromTrace = runGraph(traced, flattenAs(traced.inputs, cloneInputs(inputs), 'input'));
    const eager = flatten(
      noGrad(() => fn.apply(root, cloneInputs(inputs))),
      'output',
      outputError,
    ).tensors;
    fromTrace.forEach((t, i) => {
      const problem = eager[i] ? outputDifference(t, eager[i], tol) : 'the Python function has no such output';
      if (problem) {
        process.emitWarning(
          `Output nr ${i + 1}. of the traced function does not match the corresponding output of the Python function. Detailed error:\n${problem}`,
          'TracerWarning',
        );
      }
    });
  }
  return traced;
}

/** Run a method's graph on flat inputs: its outputs proper (the values written back in place come after them). */
function runGraph(m: TracedMethod, flat: readonly Tensor[]): Tensor[] {
  const out = m.gm.forward(...flat) as Tensor[];
  return out.slice(0, out.length - (m.inputWrites?.length ?? 0) - (m.stateWrites?.length ?? 0));
}

/** A copy of every tensor in `args` (same structure), as PyTorch's checker clones its inputs for each run. */
function cloneInputs(args: unknown[]): unknown[] {
  const { structure, tensors } = flatten(args, 'input', inputError);
  const copies = tensors.map((t) => {
    const c = noGrad(() => t.detach().clone());
    return t.requiresGrad ? c.requiresGrad_(true) : c;
  });
  return unflatten(structure, copies) as unknown[];
}

/** Why output `t` of the trace does not match `e` of the function, or undefined when it does. */
function outputDifference(t: Tensor, e: Tensor, tol: number): string | undefined {
  if (!sameShape(t.shape, e.shape)) return `shapes differ: [${t.shape.join(', ')}] (traced) vs [${e.shape.join(', ')}] (Python function)`;
  if (t.dtype !== e.dtype) return `dtypes differ: ${t.dtype} (traced) vs ${e.dtype} (Python function)`;
  const a = t.data();
  const b = e.data();
  let worst = 0;
  let at = -1;
  for (let i = 0; i < a.length; i++) {
    const x = Number(a[i]);
    const y = Number(b[i]);
    if (Number.isNaN(x) && Number.isNaN(y)) continue;
    const d = Math.abs(x - y);
    if (!(d <= tol * Math.max(1, Math.abs(y))) && !(d <= worst)) [worst, at] = [Number.isNaN(d) ? Infinity : d, i];
  }
  if (at < 0) return undefined;
  return `Tensor-likes are not close! Greatest absolute difference: ${worst} at flat index ${at} (tolerance ${tol}); ${a.length} elements`;
}

/** The first constant tensor the two traces hold with different values, if any (its node as printed); `shapes`: a different shape counts. */
function differingConstant(a: GraphModule, b: GraphModule, shapes: boolean): string | undefined {
  for (const node of a.graph.nodes) {
    if (node.op !== 'get_attr' || typeof node.target !== 'string' || !node.target.startsWith('_tensor_constant')) continue;
    const x = (a as unknown as Record<string, unknown>)[node.target];
    const y = (b as unknown as Record<string, unknown>)[node.target];
    if (!(x instanceof Tensor) || !(y instanceof Tensor)) continue;
    if (!sameShape(x.shape, y.shape) || x.dtype !== y.dtype) {
      if (shapes) return node.format();
      continue;
    }
    if (outputDifference(x, y, 0)) return node.format();
  }
  return undefined;
}

/** Run `f` and put the random generator back as it was: tracing again consumes no random numbers. */
function keepingRng<T>(f: () => T): T {
  const state = rngState();
  try {
    return f();
  } finally {
    setRngState(state);
  }
}

/** `f()`, or undefined when it throws (a confirming trace at sizes the program does not accept). */
function attempt<T>(f: () => T): T | undefined {
  try {
    return f();
  } catch {
    return undefined;
  }
}

/** A line diff of two graph printouts: `-` first trace, `+` second. */
function graphDiff(a: string, b: string): string {
  const x = a.split('\n');
  const y = b.split('\n');
  const out: string[] = [];
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    if (x[i] === y[i]) out.push(`  ${x[i]}`);
    else {
      if (x[i] !== undefined) out.push(`- ${x[i]}`);
      if (y[i] !== undefined) out.push(`+ ${y[i]}`);
    }
  }
  return out.join('\n');
}

type AnyFn = (...args: never[]) => unknown;

/** A traced function: call it like the original; `graph`, `code`, `save(path)` as on a TracedModule (`module`). */
export interface TracedFunction {
  (...args: unknown[]): unknown;
  readonly module: TracedModule;
  readonly graph: Graph;
  readonly code: string;
  forward(...args: unknown[]): unknown;
  save(path: string): void;
}

/** Wrap a TracedModule traced from a function as a callable. */
export function asTracedFunction(tm: TracedModule, name = 'traced'): TracedFunction {
  const f = (...args: unknown[]) => tm.forward(...args);
  Object.defineProperties(f, {
    name: { value: name },
    module: { value: tm },
    graph: { get: () => tm.graph },
    code: { get: () => tm.code },
    forward: { value: f },
    save: { value: (path: string) => tm.save(path) },
  });
  return f as TracedFunction;
}

/** torch.jit.trace: record what `fnOrModule` does on `exampleInputs` (an array of its arguments). */
export function trace(fnOrModule: Module, exampleInputs: unknown[], options?: TraceOptions): TracedModule;
export function trace(fnOrModule: AnyFn, exampleInputs: unknown[], options?: TraceOptions): TracedFunction;
export function trace(fnOrModule: Module | AnyFn, exampleInputs: unknown[], options: TraceOptions = {}): TracedModule | TracedFunction {
  if (fnOrModule instanceof Module) return traceModule(fnOrModule, { forward: exampleInputs }, options);
  if (typeof fnOrModule !== 'function') throw new TracingError('trace: expected an nn.Module or a function');
  // A module's bound forward traces the module (PyTorch: trace(m.forward) is trace(m)); its other methods need traceModule.
  const bound = boundParts(fnOrModule);
  if (bound?.self instanceof Module) {
    if (fnOrModule.name === 'bound forward' && bound.target === bound.self.forward) {
      return traceModule(bound.self, { forward: exampleInputs }, options);
    }
    throw new TracingError(
      `trace doesn't support compiling individual module's functions.\nPlease use traceModule (${fnOrModule.name.slice(6)} of ${bound.self.constructor.name})`,
    );
  }
  if (/^(bound )?forward$/.test(fnOrModule.name)) {
    throw new TracingError(
      "trace doesn't support compiling individual module's functions.\nPlease use traceModule, or trace the module's forward bound to it (m.forward.bind(m))",
    );
  }
  const root = new Module();
  const fn = fnOrModule as unknown as (...a: unknown[]) => unknown;
  const name = fnOrModule.name || 'traced';
  const params = parameterNames(fnOrModule);
  const call = (...a: unknown[]) => fn(...a);
  let method = record(root, call, exampleInputs, options.strict ?? true, name, false, params);
  if (options.checkTrace ?? true) {
    method = check(root, call, method, (options.checkInputs as unknown[][] | undefined) ?? [exampleInputs], options, name, params);
  }
  const tm = new TracedModule(new Map([['forward', method]]));
  tm.retracers.set('forward', (args) => record(root, call, args, options.strict ?? true, name, true, params));
  tm.fromFunction = name;
  return asTracedFunction(tm, tm.fromFunction);
}

/** torch.jit.trace_module: trace several methods of `module`, each on its own example inputs. */
export function traceModule(module: Module, inputs: Record<string, unknown[]>, options: TraceOptions = {}): TracedModule {
  if (!(module instanceof Module)) throw new TracingError('traceModule: expected an nn.Module');
  const methods = new Map<string, TracedMethod>();
  const retracers = new Map<string, (args: unknown[]) => TracedMethod>();
  for (const [name, example] of Object.entries(inputs)) {
    const fn = (module as unknown as Record<string, unknown>)[name];
    if (typeof fn !== 'function') throw new TracingError(`traceModule: ${module.constructor.name} has no method '${name}'`);
    const call =
      name === 'forward'
        ? (...a: unknown[]) => (module.call as (...x: unknown[]) => unknown).apply(module, a) // hooks run (and are recorded)
        : (fn as (...a: unknown[]) => unknown);
    const className = module.constructor.name;
    const params = parameterNames(fn as (...a: never[]) => unknown);
    let method = record(module, call, example, options.strict ?? true, className, false, params);
    if (options.checkTrace ?? true)
      method = check(module, call, method, checkInputsFor(options, name, example), options, className, params);
    methods.set(name, method);
    retracers.set(name, (args: unknown[]) => record(module, call, args, options.strict ?? true, className, true, params));
  }
  if (methods.size === 0) throw new TracingError('traceModule: give at least one method and its inputs');
  const tm = new TracedModule(methods);
  for (const [name, r] of retracers) tm.retracers.set(name, r);
  return tm;
}

/**
 * The check inputs of one method: `checkInputs` holds argument lists (one method), or objects of argument
 * lists by method name (`[{ forward: [x], features: [x] }]`, PyTorch's trace_module check_inputs).
 */
function checkInputsFor(options: TraceOptions, method: string, example: unknown[]): unknown[][] {
  const given = options.checkInputs;
  if (!given) return [example];
  return given.map((entry, i) => {
    if (Array.isArray(entry)) return entry;
    if (isPlainObject(entry)) {
      const args = (entry as Record<string, unknown[]>)[method];
      if (!Array.isArray(args)) {
        throw new TracingError(
          `traceModule: checkInputs[${i}] has no argument list for method '${method}' (it has ${Object.keys(entry).join(', ') || 'none'})`,
        );
      }
      return args;
    }
    throw new TracingError(`traceModule: checkInputs[${i}] must be an argument list or an object of them by method, got ${typeof entry}`);
  });
}

export { TracingError };
