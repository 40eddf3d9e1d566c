import { lookupAttr } from '../graph/attrs.js';
import { isGradModeNode } from '../graph/grad-mode.js';
import type { GraphModule } from '../graph/graph-module.js';
import { bindToSchema } from '../graph/normalize.js';
import { mapArg, Node, type Argument } from '../graph/node.js';
import type { DType } from '../runtime/dtype.js';
import {
  isEager,
  type BatchNormOperands,
  type Conv2dAttrs,
  type Eager,
  type KOperand,
  type KValue,
  type KView,
  type LayerForm,
  type LowerContext,
  type Lowering,
  type Pool2dAttrs,
  type Prim,
} from '../runtime/lowering.js';
import { Module } from '../runtime/nn/module.js';
import { OPS, splitOptions, type Schema } from '../runtime/op.js';
import { broadcastShapes, sameShape } from '../runtime/shape.js';
import { Tensor } from '../runtime/tensor.js';
import { isIR, type FoldedBatchNorm, type IRKind, type IRNode, type Operand } from './ir.js';
import { methodAlias } from './method-aliases.js';

/**
 * Lowering: a captured graph, with every node's value from one eager run (so shapes, dtypes and the numbers
 * that came from shapes are known), becomes kernel IR. Each call_function/call_method/call_module is
 * normalised to an op of the table with its arguments bound by the op's schema (a standard layer by the op
 * call it declares, a tensor method by its op or alias), then lowered by the op's own `lower` field through
 * the `LowerContext` the Builder implements. An op that declares `{ eager }`, or a lowering that answers so
 * for these arguments, leaves the node opaque: it runs eagerly and the plan (and `explain`) print why.
 */

export interface Lowered {
  readonly ir: IRNode[];
  /** The IR node holding each graph node's value (tensor-valued nodes; opaque nodes too). */
  readonly irOf: Map<Node, number>;
  /** Graph nodes that run through the eager runtime, with the reason. */
  readonly opaque: Map<Node, string>;
  /** Inference batch norms, which partition folds into the conv2d producing their input where it may. */
  readonly batchNorms: readonly BatchNormExpansion[];
}

/** An inference batch norm lowered to element-wise IR, and what a conv2d needs to take it in instead. */
export interface BatchNormExpansion extends FoldedBatchNorm {
  /** Its input. */
  readonly x: number;
  /** Its result. */
  readonly out: number;
  /** Every IR node its lowering made (operand values, views, element-wise steps), `out` last. */
  readonly members: readonly number[];
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** Primitives whose result is bool (0/1); the rest compute float32. */
const BOOL_PRIMS: ReadonlySet<Prim> = new Set<Prim>(['eq', 'ne', 'lt', 'le', 'gt', 'ge', 'toBool']);

class Builder implements LowerContext {
  readonly ir: IRNode[] = [];
  readonly irOf = new Map<Node, number>();
  readonly opaque = new Map<Node, string>();
  batchNorms: BatchNormExpansion[] = [];
  /** The graph node being lowered: IR nodes made now belong to it. */
  current: Node | null = null;
  /** The first IR id the current node's lowering made. */
  start = 0;

  constructor(
    readonly gm: GraphModule,
    readonly values: ReadonlyMap<Node, unknown>,
  ) {}

  add(kind: IRKind, shape: readonly number[], dtype: DType, isOriginValue = false): number {
    const id = this.ir.length;
    this.ir.push({ ...kind, id, shape: [...shape], dtype, origin: this.current, isOriginValue } as IRNode);
    return id;
  }

  node(id: number): IRNode {
    return this.ir[id]!;
  }

  tensor(v: unknown): KValue | null {
    if (v instanceof Tensor)
      return { ir: this.add({ kind: 'value', source: { from: 'tensor', tensor: v, path: 'tensor' } }, v.shape, v.dtype) };
    if (v instanceof Node) {
      const id = this.irOf.get(v);
      return id === undefined ? null : { ir: id };
    }
    return null;
  }

  operand(v: unknown): KOperand | null {
    if (typeof v === 'number') return v;
    if (typeof v === 'boolean') return Number(v);
    return this.tensor(v);
  }

  shape(x: KValue): readonly number[] {
    return this.node(x.ir).shape;
  }

  dtype(x: KValue): DType {
    return this.node(x.ir).dtype;
  }

  prim(p: Prim, ...args: KOperand[]): KValue {
    const operands: Operand[] = args.map((a) => (typeof a === 'number' ? { value: a } : a));
    let shape: readonly number[] = [];
    for (const a of operands) shape = broadcastShapes(p, shape, isIR(a) ? this.node(a.ir).shape : []);
    return { ir: this.add({ kind: 'ew', op: p, args: operands }, shape, BOOL_PRIMS.has(p) ? 'bool' : 'float32') };
  }

  view(x: KValue, view: KView, shape: readonly number[]): KValue {
    if (view.op === 'reshape' && sameShape(this.shape(x), shape)) return x;
    return { ir: this.add({ kind: 'view', arg: x.ir, view }, shape, this.dtype(x)) };
  }

  reduce(op: 'sum' | 'max' | 'min', x: KValue, dims: readonly number[], keepdim: boolean, divisor?: number): KValue {
    const inShape = this.shape(x);
    const shape = keepdim ? inShape.map((d, i) => (dims.includes(i) ? 1 : d)) : inShape.filter((_, i) => !dims.includes(i));
    return {
      ir: this.add({ kind: 'reduce', op, arg: x.ir, dims, keepdim, ...(divisor !== undefined ? { divisor } : {}) }, shape, 'float32'),
    };
  }

  /** matmul of x [..., M, K] and y ([K, N], [N, K] when `yTransposed`, or batched like x). */
  matmul(x: KValue, y: KValue, yTransposed: boolean, bias: KValue | null): KValue | Eager {
    const xs = this.shape(x);
    const ys = this.shape(y);
    if (this.dtype(x) !== 'float32' || this.dtype(y) !== 'float32') return { eager: 'matmul: operands other than float32' };
    if (xs.length < 2 || ys.length < 2) return { eager: 'matmul: a 1-d operand (the GEMM takes matrices)' };
    if (ys.length > 2 && (yTransposed || !sameShape(xs.slice(0, -2), ys.slice(0, -2)))) {
      return { eager: 'matmul: batch dims that broadcast (the GEMM takes equal batch dims or a 2-d right operand)' };
    }
    const N = yTransposed ? ys[0]! : ys[ys.length - 1]!;
    if (bias !== null && !sameShape(this.shape(bias), [N])) return { eager: 'linear: a bias that is not [out]' };
    const kind: IRKind = { kind: 'matmul', a: x.ir, b: y.ir, bTransposed: yTransposed, bias: bias?.ir ?? null, relu: false };
    return { ir: this.add(kind, [...xs.slice(0, -1), N], 'float32') };
  }

  conv2d(x: KValue, w: KValue, bias: KValue | null, attrs: Conv2dAttrs, shape: readonly number[]): KValue {
    return { ir: this.add({ kind: 'conv2d', x: x.ir, w: w.ir, bias: bias?.ir ?? null, bn: null, relu: false, attrs }, shape, 'float32') };
  }

  pool2d(x: KValue, attrs: Pool2dAttrs, shape: readonly number[]): KValue {
    return { ir: this.add({ kind: 'pool2d', x: x.ir, attrs }, shape, 'float32') };
  }

  gather(table: KValue, index: KValue, shape: readonly number[]): KValue {
    return { ir: this.add({ kind: 'gather', table: table.ir, index: index.ir }, shape, 'float32') };
  }

  /** (x - mean) / sqrt(var + eps) · w + b per channel (dim 1), in the order kiln's eager batchNorm computes it. */
  batchNorm(x: KValue, bn: BatchNormOperands): KValue {
    const shape = this.shape(x);
    const bshape = shape.map((s, i) => (i === 1 ? s : 1));
    const per = (v: KValue) => this.view(v, { op: 'reshape', shape: bshape }, bshape);
    let y = this.prim('div', this.prim('sub', x, per(bn.mean)), this.prim('sqrt', this.prim('add', per(bn.variance), bn.eps)));
    if (bn.weight !== null) y = this.prim('mul', y, per(bn.weight));
    if (bn.bias !== null) y = this.prim('add', y, per(bn.bias));
    const perChannel = (v: KValue | null) => v === null || sameShape(this.shape(v), [shape[1]!]);
    if (perChannel(bn.mean) && perChannel(bn.variance) && perChannel(bn.weight) && perChannel(bn.bias)) {
      const members = Array.from({ length: y.ir + 1 - this.start }, (_, i) => this.start + i);
      const id = (v: KValue | null) => v?.ir ?? null;
      this.batchNorms.push({
        x: x.ir,
        out: y.ir,
        members,
        mean: bn.mean.ir,
        variance: bn.variance.ir,
        weight: id(bn.weight),
        bias: id(bn.bias),
        eps: bn.eps,
      });
    }
    return y;
  }
}

/** A node as the op it calls: the op's lowering (or eager reason), its name, and its arguments by parameter name. */
interface OpCall {
  readonly name: string;
  readonly lower: Lowering | Eager;
  readonly args: Readonly<Record<string, unknown>>;
}

/** A node that is its argument's value (nn.Identity, `x.detach()`), with that argument. */
interface Passthrough {
  readonly identity: unknown;
}

type Normalised = OpCall | Passthrough | Eager;

/**
 * Bind `args`/`kwargs` by `op`'s schema as an eager call does: a trailing options object among `args` holds
 * keyword arguments (a traced `x.add(y, { alpha: 2 })` keeps it positional), and undefined takes the default.
 */
function bindOp(
  op: { readonly opName: string; readonly lower: Lowering | Eager; readonly schema: Schema },
  args: readonly unknown[],
  kwargs: Readonly<Record<string, unknown>>,
): Normalised {
  const [positional, options] = splitOptions(op.schema, args);
  const bound = bindToSchema(op.schema.params, [...positional], { ...kwargs, ...options });
  // an argument passed as undefined takes its default, as in the eager call (`x.add(y)` traces alpha as undefined)
  for (const p of op.schema.params) if (bound && bound[p.name] === undefined && p.hasDefault) bound[p.name] = structuredClone(p.default);
  return bound ? { name: op.opName, lower: op.lower, args: bound } : { eager: `${op.opName}: its arguments do not fit its schema` };
}

/** A standard layer's call as its declared form (`functional()` beside its forward); hooks keep a layer opaque. */
function layerCall(m: Module, args: readonly unknown[], kwargs: Record<string, unknown>): Normalised {
  const name = m.constructor.name;
  if (m.hasForwardHooks()) return { eager: `${name}: has forward hooks, which run with its eager forward` };
  const functional = (m as { functional?: (...a: unknown[]) => LayerForm }).functional;
  if (typeof functional !== 'function') return { eager: `${name}: not a standard layer (no functional form)` };
  if (!declaresItsForward(m)) return { eager: `${name}: its forward is not the one its functional form describes` };
  if (Object.keys(kwargs).length > 0) return { eager: `${name}: called with keyword arguments` };
  const form = functional.apply(m, [...args]);
  if (isEager(form)) return { name, lower: form, args: {} }; // declared by the layer, like an op's
  if ('identity' in form) return form;
  const op = OPS.get(form.op.opName);
  return op ? bindOp(op, form.args, {}) : { eager: `${name}: calls '${form.op.opName}', which is not in the op table` };
}

/**
 * Whether `m`'s forward is the one declared beside its `functional`: the class that defines the forward it runs
 * also defines `functional` (a subclass, or an instance, that overrides forward gets no form it did not write).
 */
function declaresItsForward(m: Module): boolean {
  if (Object.hasOwn(m, 'forward')) return false;
  for (let p: object | null = Object.getPrototypeOf(m); p && p !== Module.prototype; p = Object.getPrototypeOf(p)) {
    if (Object.hasOwn(p, 'forward')) return Object.hasOwn(p, 'functional');
  }
  return false;
}

/** The node as the op it calls, with non-tensor node arguments replaced by their values. */
function normalise(b: Builder, node: Node): Normalised {
  const resolve = (a: unknown): unknown =>
    mapArg(a as Argument, (n) => {
      const v = b.values.get(n);
      return v instanceof Tensor ? n : v;
    });
  const args = resolve(node.args) as unknown[];
  const kwargs = resolve(node.kwargs) as Record<string, unknown>;
  switch (node.op) {
    case 'call_function': {
      const name = typeof node.target === 'function' ? node.target.opName : undefined;
      const op = name === undefined ? undefined : OPS.get(name);
      return op && op === node.target ? bindOp(op, args, kwargs) : { eager: 'a function outside the op table' };
    }
    case 'call_method': {
      const name = node.target as string;
      const [self, ...rest] = args;
      const alias = methodAlias(name, self, rest, b.values.get(node));
      if (alias) return 'op' in alias ? bindOp(alias.op, [], alias.args) : alias;
      const op = OPS.get(name);
      return op ? bindOp(op, args, kwargs) : { eager: `tensor method '${name}' has no op in the table` };
    }
    case 'call_module': {
      const m = lookupAttr(b.gm, node.target as string);
      return m instanceof Module ? layerCall(m, args, kwargs) : { eager: `'${String(node.target)}' is not a module` };
    }
    default:
      return { eager: `a ${node.op} node` };
  }
}

/** Why `node` (whose eager result is `out`) cannot be lowered, before looking at its op. */
function unsupportedValue(out: unknown): string | null {
  if (!(out instanceof Tensor)) return 'its result is not a tensor';
  if (out.dtype === 'int32') return 'int32 result';
  return null;
}

/** The eager reason a call's op or layer declares (`{ eager }`), whatever the arguments; it comes before other reasons. */
function declaredEager(call: Normalised): Eager | null {
  return 'lower' in call && isEager(call.lower) ? call.lower : null;
}

/** The lowering of a normalised call: its IR value, or why it stays eager. */
function lowerCall(b: Builder, call: Normalised, out: Tensor): KValue | Eager {
  if (isEager(call)) return call;
  if ('identity' in call) return b.tensor(call.identity) ?? { eager: 'its input is not a tensor the kernels hold' };
  if (isEager(call.lower)) return call.lower;
  const v = call.lower(b, call.args, out);
  return v ?? { eager: `${call.name}: an argument is not a tensor the kernels hold` };
}

/** Lower every node of `gm`, given each node's value from an eager run. */
export function lowerGraph(gm: GraphModule, values: ReadonlyMap<Node, unknown>): Lowered {
  const b = new Builder(gm, values);
  for (const node of gm.graph.nodes) {
    b.current = node;
    const out = values.get(node);
    const opaque = (reason: string) => {
      b.opaque.set(node, reason);
      const t = out instanceof Tensor ? out : null;
      b.irOf.set(node, b.add({ kind: 'value', source: { from: 'node', node } }, t?.shape ?? [], t?.dtype ?? 'float32', true));
    };
    switch (node.op) {
      case 'placeholder':
        b.irOf.set(node, b.add({ kind: 'value', source: { from: 'node', node } }, tensorShape(out), tensorDType(out), true));
        continue;
      case 'get_attr': {
        const v = lookupAttr(gm, node.target as string);
        if (v instanceof Tensor) {
          b.irOf.set(
            node,
            b.add({ kind: 'value', source: { from: 'tensor', tensor: v, path: node.target as string } }, v.shape, v.dtype, true),
          );
        }
        continue;
      }
      case 'output':
        continue;
    }
    if (isGradModeNode(node)) {
      opaque('switches grad mode'); // an eager step, in graph order
      continue;
    }
    const call = normalise(b, node);
    const declared = declaredEager(call);
    const bad = declared ? null : unsupportedValue(out);
    if (bad) {
      opaque(bad);
      continue;
    }
    const mark = (b.start = b.ir.length);
    const result = declared ?? lowerCall(b, call, out as Tensor);
    const wrongShape = !isEager(result) && !sameShape(b.node(result.ir).shape, (out as Tensor).shape);
    if (isEager(result) || wrongShape) {
      b.ir.length = mark; // drop a half-built expansion
      b.batchNorms = b.batchNorms.filter((bn) => bn.out < mark);
      opaque(`not lowered: ${isEager(result) ? result.eager : 'its lowering gave another shape than the eager result'}`);
      continue;
    }
    let id = result.ir;
    // A bool result computed by float primitives (bool + bool, -bool) must be cast, not relabelled: relabelling
    // stored a 2 or a -1 in a bool tensor where eager holds 1.
    if ((out as Tensor).dtype === 'bool' && b.node(id).dtype !== 'bool') id = b.prim('toBool', { ir: id }).ir;
    const n = b.node(id) as Mutable<IRNode>;
    if (n.origin === node) {
      n.isOriginValue = true;
      n.dtype = (out as Tensor).dtype;
    }
    b.irOf.set(node, id);
  }
  b.current = null;
  return { ir: b.ir, irOf: b.irOf, opaque: b.opaque, batchNorms: b.batchNorms };
}

function tensorShape(v: unknown): readonly number[] {
  return v instanceof Tensor ? v.shape : [];
}

function tensorDType(v: unknown): DType {
  return v instanceof Tensor ? v.dtype : 'float32';
}
