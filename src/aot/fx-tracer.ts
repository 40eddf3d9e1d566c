import { AotError } from './errors.js';
import { getitem } from '../graph/builtins.js';
import { Graph } from '../graph/graph.js';
import type { Node, Argument, FunctionTarget, Kwargs } from '../graph/node.js';
import { userFrame } from '../graph/tracer.js';
import { setTraceDispatch, type TraceDispatch } from '../runtime/dispatch.js';
import { OPS, type Op } from '../runtime/op.js';
import { viewScatter, type ViewStep } from '../runtime/ops/view.js';
import { isPlainObject } from '../runtime/plain-object.js';
import type { Module } from '../runtime/nn/module.js';
import { Tensor } from '../runtime/tensor.js';
import { findDecomposition, KEEP_OP, type Decompositions } from './decompositions.js';
import { FUNCTIONAL_RULES } from './functional-rules.js';

/**
 * The dispatch-level tracer behind makeFx and the joint graphs of AOT autograd (PyTorch's proxy tensor mode
 * with functionalisation). It runs the program on real tensors and records every op-table call into a graph
 * of `call_function` nodes. Composite ops and ops with a decomposition are traced into; every other op runs
 * as one node. The graph is functional: an in-place write rebinds the written tensor to the out-of-place
 * result, a write through a view gives the view's base a new value (`viewScatter` over the chain of view ops
 * that made the view), and later reads of any view of that base are regenerated from the new value.
 */

type AnyOp = Op<(...args: never[]) => unknown>;

/** What export adds to the tracer to follow symbolic sizes (src/export/symbolic-trace.ts). */
export interface ShapeTracking {
  /** The arguments with every symbolic size replaced by its example value, as the op's kernel needs them. */
  concrete(x: unknown): unknown;
  /** The arguments as the graph records them (a data-dependent size as the node that computes it). */
  graphArgs(x: unknown): unknown;
  /** Whether the arguments hold a data-dependent size: the op is recorded whole, its body would see a number. */
  holdsDataDependent(x: unknown): boolean;
  /** Code read a traced tensor's `shape` (not through the plugin's helpers). */
  shapeRead?(t: Tensor): void;
  /** An op call was recorded as `node`: its arguments as the program passed them, and its result. */
  recorded(
    target: FunctionTarget,
    args: readonly unknown[],
    kwargs: Readonly<Record<string, unknown>> | undefined,
    out: unknown,
    node: Node,
  ): void;
}

/** How a tensor the tracer knows was made from a base tensor by view ops only. */
interface ViewOf {
  readonly base: Tensor;
  readonly chain: readonly ViewStep[];
  /** The base's write count when this view's node was last made: a newer write makes it stale. */
  seen: number;
}

export class FxTracer implements TraceDispatch {
  readonly symbolic = false;
  readonly recordsEveryOp = true;
  readonly graph = new Graph();
  /** Closed-over tensors by their get_attr names, and (control flow) the subgraphs `cond` and `map` call. */
  readonly constants = new Map<string, Tensor | Module>();
  private readonly nodes = new Map<Tensor, Node>();
  private readonly views = new Map<Tensor, ViewOf>();
  /** Functional writes into each base tensor (directly or through one of its views). */
  private readonly writes = new Map<Tensor, number>();
  private readonly constantNames = new Map<Tensor, string>();
  /** Set while the backward runs: a tensor first met then was made outside the op table by a gradient rule. */
  inBackward = false;
  /** Export's symbolic sizes: op arguments lose their symbolic sizes before running, and each recorded op is reported. */
  shapes: ShapeTracking | undefined;
  private currentOp = '';

  constructor(
    readonly decompositions: Decompositions | undefined,
    /** Names the API in errors: 'makeFx', 'aotFunction', … */
    readonly what: string,
    /**
     * Gradients are wanted (a joint graph, or a call under grad mode): a tensor that requires grad must be an
     * input, or its gradient would be lost.
     */
    private readonly joint = false,
  ) {}

  placeholder(name: string, t: Tensor): Node {
    const node = this.graph.placeholder(name);
    setMeta(node, t);
    this.nodes.set(t, node);
    return node;
  }

  isTraced(x: unknown): boolean {
    return x instanceof Tensor && this.nodes.has(x);
  }

  /** The tensors the program closed over (read through get_attr), by their attribute names: what a subgraph lifts. */
  closedOver(): Map<string, Tensor> {
    return new Map([...this.constantNames].map(([t, name]) => [name, t]));
  }

  /** A tensor the program closes over that it wrote in place: a side effect the graph would drop. */
  writtenConstant(): Tensor | undefined {
    return [...this.constantNames.keys()].find((t) => this.wasWritten(t));
  }

  /** Whether `t` was written in place while traced (directly or through a view of it). */
  wasWritten(t: Tensor): boolean {
    return (this.writes.get(t) ?? 0) > 0;
  }

  /** How many functional writes `t` has had (directly or through a view of it). */
  writeCount(t: Tensor): number {
    return this.writes.get(t) ?? 0;
  }

  /** The base and view chain of `t`, when it is a view the tracer saw being made. */
  viewOf(t: Tensor): { base: Tensor; chain: readonly ViewStep[] } | undefined {
    return this.views.get(t);
  }

  callOp(
    op: (...args: never[]) => unknown,
    symArgs: readonly unknown[],
    symKwargs: Readonly<Record<string, unknown>> | undefined,
  ): unknown {
    const o = op as unknown as Partial<AnyOp> & ((...a: unknown[]) => unknown);
    const args = this.shapes ? (this.shapes.concrete(symArgs) as readonly unknown[]) : symArgs;
    const kwargs = this.shapes && symKwargs ? (this.shapes.concrete(symKwargs) as Readonly<Record<string, unknown>>) : symKwargs;
    const rule = o.opName ? FUNCTIONAL_RULES.get(o.opName) : undefined;
    const decomposition =
      rule && (rule.applies as (...a: unknown[]) => boolean)(...args)
        ? rule.run
        : o.opName
          ? findDecomposition(this.decompositions, o as AnyOp)
          : undefined;
    // A data-dependent size reaches a composite body as a plain number: record such a call as one node instead.
    const whole = this.shapes !== undefined && this.shapes.holdsDataDependent([symArgs, symKwargs]);
    // A decomposition or a composite body runs with this tracer active, so its inner ops are what gets recorded.
    if (decomposition && !whole) {
      const out = decomposition(...args, ...(kwargs ? [kwargs] : []));
      if (out !== KEEP_OP) return out;
    }
    if (o.composite && !whole) return o.invoke!(args, kwargs);
    const before = this.tracedVersions([args, kwargs]);
    const prev = setTraceDispatch(null);
    let out: unknown;
    try {
      out = o.invoke ? o.invoke(args, kwargs) : o(...args, ...(kwargs ? [kwargs] : []));
    } finally {
      setTraceDispatch(prev);
    }
    for (const [t, version] of before) {
      if (t._storage.version !== version && out !== t) {
        throw new AotError(
          `${this.what}: '${o.opName ?? o.name}' writes its ${t.dtype} [${t.shape.join(', ')}] argument in place inside its kernel, ` +
            'and kiln/aot has no functional form of it, so the graph would lose the write',
        );
      }
    }
    const self = args[0];
    const metadataInplace = o.opName?.endsWith('_') && out === self && self instanceof Tensor;
    // t_(), unsqueeze_(), transpose_(): the tensor now stands for the functional op's result.
    const target = metadataInplace ? functionalTwin(o as AnyOp) : (op as unknown as FunctionTarget);
    this.currentOp = o.opName ?? o.name;
    const recordArgs = this.shapes ? (this.shapes.graphArgs(symArgs) as readonly unknown[]) : args;
    const recordKwargs = this.shapes && symKwargs ? (this.shapes.graphArgs(symKwargs) as Readonly<Record<string, unknown>>) : kwargs;
    const node = this.graph.callFunction(
      target,
      recordArgs.map((a) => this.arg(a)),
      (recordKwargs ? this.arg(recordKwargs) : {}) as Kwargs,
    );
    if (metadataInplace) {
      this.nodes.set(self, node);
      setMeta(node, self);
      this.views.delete(self);
      this.shapes?.recorded(target, symArgs, symKwargs, out, node);
      return out;
    }
    this.bind(out, node);
    this.shapes?.recorded(target, symArgs, symKwargs, out, node);
    if (out instanceof Tensor && self instanceof Tensor && o.opName) this.noteView(out, self, o.opName, args.slice(1), kwargs);
    return out;
  }

  /** The storage versions of the traced tensors among `x`, to catch an op that writes one in its kernel. */
  private tracedVersions(x: unknown, out = new Map<Tensor, number>()): Map<Tensor, number> {
    if (x instanceof Tensor) {
      if (this.nodes.has(x)) out.set(x, x._storage.version);
    } else if (Array.isArray(x)) x.forEach((v) => this.tracedVersions(v, out));
    else if (isPlainObject(x)) Object.values(x).forEach((v) => this.tracedVersions(v, out));
    return out;
  }

  shapeRead(t: unknown): void {
    if (this.shapes?.shapeRead && t instanceof Tensor) this.shapes.shapeRead(t);
  }

  /** Reading values would bake them into the graph: refuse rather than give wrong results at other inputs. */
  valueRead(t: unknown, what: string): void {
    if (!(t instanceof Tensor) || !this.isTraced(t)) return;
    throw new AotError(
      `${this.what}: the traced program reads the values of a tensor (${what})${userFrame()}; a graph cannot depend on tensor values. ` +
        'Compute with tensor ops instead, or call it outside the compiled function',
    );
  }

  derived(from: unknown, to: unknown): void {
    if (!(from instanceof Tensor && to instanceof Tensor && this.isTraced(from))) return;
    // detach(): the same value in the graph; autograd is the tape's business, recorded separately.
    this.nodes.set(to, this.tensorNode(from));
    const view = this.views.get(from);
    if (view) this.views.set(to, { ...view });
    else if (to._storage === from._storage) this.views.set(to, { base: from, chain: [], seen: this.writes.get(from) ?? 0 });
  }

  /** `t_()` and friends: the tensor now stands for the view op's result (functional), as its own base. */
  metadataMutated(self: unknown, view: unknown, name: string): void {
    if (!(self instanceof Tensor) || !(view instanceof Tensor) || !this.nodes.has(view)) return;
    const node = this.nodes.get(view)!;
    this.nodes.set(self, node);
    const opName = (node.target as { opName?: string }).opName ?? name.slice(0, -1);
    const step: ViewStep = [opName, node.args.slice(1) as readonly unknown[], {}];
    // A view of something else stays one (writes through it still reach its base), one view op further.
    const own = this.views.get(self);
    if (own && own.base !== self) this.views.set(self, { ...own, chain: [...own.chain, step] });
    else this.views.delete(self);
    // Views taken of `self` before the change were made from its old layout: undo the change first.
    for (const [v, info] of this.views) {
      if (info.base === self && v !== self) this.views.set(v, { ...info, chain: [inverseMetadataStep(step), ...info.chain] });
    }
    const ops = this.metadataOps.get(self) ?? [];
    ops.push([name, node.args.slice(1) as readonly unknown[]]);
    this.metadataOps.set(self, ops);
  }

  /** The in-place metadata ops applied to each tensor while traced, to replay on the caller's tensor. */
  readonly metadataOps = new Map<Tensor, [method: string, args: readonly unknown[]][]>();

  wroteInPlace(self: unknown, result: unknown): void {
    if (!(self instanceof Tensor) || !(result instanceof Tensor)) return;
    const resultNode = this.tensorNode(result);
    const view = this.views.get(self);
    if (!view) {
      this.nodes.set(self, resultNode);
      this.bump(self);
      return;
    }
    const baseNode = this.tensorNode(view.base);
    const scattered =
      view.chain.length === 0
        ? resultNode
        : this.graph.callFunction(viewScatter as unknown as FunctionTarget, [baseNode, resultNode, view.chain as unknown as Argument]);
    if (scattered !== resultNode) setMeta(scattered, view.base);
    this.nodes.set(view.base, scattered);
    view.seen = this.bump(view.base);
    this.nodes.set(self, resultNode);
  }

  private bump(base: Tensor): number {
    const n = (this.writes.get(base) ?? 0) + 1;
    this.writes.set(base, n);
    return n;
  }

  /** Remember that `out` is a view of `input` (same storage) made by `opName`, so writes can flow to its base. */
  private noteView(
    out: Tensor,
    input: Tensor,
    opName: string,
    rest: readonly unknown[],
    kwargs: Readonly<Record<string, unknown>> | undefined,
  ): void {
    if (out._storage !== input._storage || containsTensor(rest) || containsTensor(kwargs)) return;
    const step: ViewStep = [opName, rest, kwargs ?? {}];
    const parent = this.views.get(input);
    const base = parent ? parent.base : input;
    this.views.set(out, { base, chain: parent ? [...parent.chain, step] : [step], seen: this.writes.get(base) ?? 0 });
  }

  /** Record that `out` (a tensor, or an array of them) is what `node` computes. */
  bind(out: unknown, node: Node): void {
    if (out instanceof Tensor) {
      this.nodes.set(out, node);
      setMeta(node, out);
      return;
    }
    if (Array.isArray(out)) {
      out.forEach((o, i) => {
        if (!(o instanceof Tensor)) return;
        const item = this.graph.callFunction(getitem as FunctionTarget, [node, i]);
        setMeta(item, o);
        this.nodes.set(o, item);
      });
    }
  }

  /** A value met in an op call, as a graph argument. */
  arg(a: unknown): Argument {
    if (a instanceof Tensor) return this.tensorNode(a);
    if (Array.isArray(a)) return a.map((x) => this.arg(x));
    if (isPlainObject(a)) return Object.fromEntries(Object.entries(a).map(([k, v]) => [k, this.arg(v)]));
    return a as Argument;
  }

  /** The node that holds `t`'s current value: regenerated from its base when the base was written since. */
  tensorNode(t: Tensor): Node {
    const view = this.views.get(t);
    if (view && view.seen !== (this.writes.get(view.base) ?? 0)) return this.regenerate(t, view);
    const n = this.nodes.get(t);
    if (n) return n;
    return this.constant(t);
  }

  private regenerate(t: Tensor, view: ViewOf): Node {
    let node = this.tensorNode(view.base);
    let value = view.base;
    const prev = setTraceDispatch(null);
    try {
      for (const [name, rest, kwargs] of view.chain) {
        const op = OPS.get(name)!;
        value = op.callWith([value, ...rest], kwargs) as Tensor;
        node = this.graph.callFunction(op as unknown as FunctionTarget, [node, ...(rest as Argument[])], kwargs as Kwargs);
        setMeta(node, value);
      }
    } finally {
      setTraceDispatch(prev);
    }
    view.seen = this.writes.get(view.base) ?? 0;
    this.nodes.set(t, node);
    return node;
  }

  private constant(t: Tensor): Node {
    if (this.inBackward) {
      throw new AotError(
        `${this.what}: a gradient rule is not traceable: '${this.currentOp}' got a ${t.dtype} [${t.shape.join(', ')}] tensor that no op made ` +
          '(a gradient rule computed it outside the op table), so the backward cannot be recorded as a graph',
      );
    }
    if (t.requiresGrad && this.joint) {
      throw new AotError(
        `${this.what}: the traced program uses a tensor that requires grad but is not an input (shape [${t.shape.join(', ')}])${userFrame()}. ` +
          'Pass it as an argument (or make it a parameter of the module) so its gradient can be computed',
      );
    }
    let name = this.constantNames.get(t);
    if (!name) {
      // PyTorch's names: closed-over parameters are `_param_constant0…`, other tensors `_tensor_constant0…`.
      const kind = t.requiresGrad ? '_param_constant' : '_tensor_constant';
      name = `${kind}${[...this.constantNames.values()].filter((n) => n.startsWith(kind)).length}`;
      this.constantNames.set(t, name);
      // The tensor itself, as PyTorch's constants are: later changes to it (an optimizer step) are seen.
      const prev = setTraceDispatch(null);
      try {
        this.constants.set(name, t.detach());
      } finally {
        setTraceDispatch(prev);
      }
    }
    const node = this.graph.getAttr(name);
    setMeta(node, t);
    this.nodes.set(t, node);
    return node;
  }
}

/** `t_` → `t`: the out-of-place op a metadata-mutating in-place op stands for in a functional graph. */
function functionalTwin(op: AnyOp): FunctionTarget {
  const twin = OPS.get(op.opName.slice(0, -1));
  if (!twin) throw new AotError(`functionalisation: the in-place op '${op.opName}' has no out-of-place op '${op.opName.slice(0, -1)}'`);
  return twin as unknown as FunctionTarget;
}

/** The view op that undoes a metadata view op: t and transpose undo themselves, unsqueeze(d) is undone by squeeze(d). */
function inverseMetadataStep([name, args]: ViewStep): ViewStep {
  if (name === 't' || name === 'transpose') return [name, args, {}];
  if (name === 'unsqueeze') return ['squeeze', args, {}];
  throw new AotError(`functionalisation: no inverse is known for the metadata op '${name}', so views taken before it cannot be rebuilt`);
}

function containsTensor(x: unknown): boolean {
  if (x instanceof Tensor) return true;
  if (Array.isArray(x)) return x.some(containsTensor);
  if (isPlainObject(x)) return Object.values(x).some(containsTensor);
  return false;
}

/** `node.meta.tensorMeta` from the real value the node computed. */
export function setMeta(node: Node, t: Tensor): void {
  node.meta.tensorMeta = { shape: [...t.shape], dtype: t.dtype, requiresGrad: t.requiresGrad };
}
