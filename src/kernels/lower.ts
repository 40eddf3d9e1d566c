import { lookupAttr } from '../graph/attrs.js';
import { isGradModeNode } from '../graph/grad-mode.js';
import type { GraphModule } from '../graph/graph-module.js';
import { bindToSchema } from '../graph/normalize.js';
import { mapArg, Node, type Argument } from '../graph/node.js';
import type { DType } from '../runtime/dtype.js';
import { Module } from '../runtime/nn/module.js';
import * as nn from '../runtime/nn/index.js';
import { OPS } from '../runtime/op.js';
import { broadcastShapes, sameShape } from '../runtime/shape.js';
import { Tensor } from '../runtime/tensor.js';
import {
  isIR,
  numelOf,
  type EwOp,
  type FoldedBatchNorm,
  type IRKind,
  type IRNode,
  type Operand,
  type Pool2dAttrs,
  type ViewOp,
} from './ir.js';

/**
 * Lowering: a captured graph, with every node's value from one eager run (so shapes, dtypes and the numbers
 * that came from shapes are known), becomes kernel IR. Each call_function/call_method/call_module is
 * normalised to an op name with its arguments bound by the op's schema, then lowered by the table below;
 * a node the table does not take (or takes only for some arguments) stays opaque and runs eagerly.
 */

export type Bound = Record<string, unknown>;

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

/** Why a node stays eager when the table has no entry for it. */
const NOT_LOWERED = 'not lowered';

class Builder {
  readonly ir: IRNode[] = [];
  readonly irOf = new Map<Node, number>();
  readonly opaque = new Map<Node, string>();
  batchNorms: BatchNormExpansion[] = [];
  /** The graph node being lowered: IR nodes made now belong to it. */
  current: Node | null = null;

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

  /** The IR value of a tensor argument (a graph node, or a tensor held by a module). */
  tensor(v: unknown, path = 'tensor'): number | null {
    if (v instanceof Tensor) return this.add({ kind: 'value', source: { from: 'tensor', tensor: v, path } }, v.shape, v.dtype);
    if (v instanceof Node) return this.irOf.get(v) ?? null;
    return null;
  }

  operand(v: unknown): Operand | null {
    if (typeof v === 'number') return { value: v };
    if (typeof v === 'boolean') return { value: Number(v) };
    const id = this.tensor(v);
    return id === null ? null : { ir: id };
  }

  shapeOf(o: Operand): readonly number[] {
    return isIR(o) ? this.node(o.ir).shape : [];
  }

  ew(op: EwOp, args: readonly Operand[], dtype: DType = 'float32', attrs?: Record<string, number>): number {
    let shape: readonly number[] = [];
    for (const a of args) shape = broadcastShapes(op, shape, this.shapeOf(a));
    return this.add({ kind: 'ew', op, args, ...(attrs ? { attrs } : {}) }, shape, dtype);
  }

  view(arg: number, view: ViewOp, shape: readonly number[]): number {
    return this.add({ kind: 'view', arg, view }, shape, this.node(arg).dtype);
  }

  reshape(arg: number, shape: readonly number[]): number {
    return sameShape(this.node(arg).shape, shape) ? arg : this.view(arg, { op: 'reshape', shape }, shape);
  }

  reduce(op: 'sum' | 'max' | 'min', arg: number, dims: readonly number[], keepdim: boolean, divisor?: number): number {
    const inShape = this.node(arg).shape;
    const shape = keepdim ? inShape.map((d, i) => (dims.includes(i) ? 1 : d)) : inShape.filter((_, i) => !dims.includes(i));
    return this.add({ kind: 'reduce', op, arg, dims, keepdim, ...(divisor !== undefined ? { divisor } : {}) }, shape, 'float32');
  }

  dtypeOf(id: number): DType {
    return this.node(id).dtype;
  }
}

/** A possibly negative dim wrapped into [0, ndim) (the eager run already rejected bad dims). */
function dimOf(d: unknown, ndim: number): number {
  const n = Math.max(ndim, 1);
  const v = d as number;
  return v < 0 ? v + n : v;
}

type Lowering = (b: Builder, a: Bound, out: Tensor) => number | null;

const unary =
  (op: EwOp): Lowering =>
  (b, a) => {
    const x = b.operand(a.input);
    return x ? b.ew(op, [x]) : null;
  };

const binary =
  (op: EwOp): Lowering =>
  (b, a) => {
    const x = b.operand(a.input);
    const y = b.operand(a.other ?? a.exponent);
    if (!x || !y) return null;
    const alpha = a.alpha as number | undefined;
    return b.ew(op, [x, y], 'float32', alpha !== undefined && alpha !== 1 ? { alpha } : undefined);
  };

const compare =
  (op: EwOp): Lowering =>
  (b, a) => {
    const x = b.operand(a.input);
    const y = b.operand(a.other);
    return x && y ? b.ew(op, [x, y], 'bool') : null;
  };

/** A view op whose result shape is the eager result's: reshape-like ones just take that shape. */
const reshapeLike: Lowering = (b, a, out) => {
  const x = b.tensor(a.input);
  return x === null ? null : b.reshape(x, out.shape);
};

function reduceDims(dim: unknown, ndim: number): number[] {
  if (dim === null || dim === undefined || (Array.isArray(dim) && dim.length === 0)) return Array.from({ length: ndim }, (_, i) => i);
  const list = typeof dim === 'number' ? [dim] : (dim as number[]);
  return list.map((d) => dimOf(d, ndim)).sort((x, y) => x - y);
}

function softmaxIR(b: Builder, x: number, dim: number, log: boolean): number {
  const m = b.reduce('max', x, [dim], true);
  const s = b.reduce('sum', b.ew('exp', [{ ir: b.ew('sub', [{ ir: x }, { ir: m }]) }]), [dim], true);
  const shifted = b.ew('sub', [{ ir: x }, { ir: m }]);
  if (log) return b.ew('sub', [{ ir: shifted }, { ir: b.ew('log', [{ ir: s }]) }]);
  return b.ew('div', [{ ir: b.ew('exp', [{ ir: shifted }]) }, { ir: s }]);
}

/** (x - mean) / sqrt(var + eps) · w + b, in the order kiln's eager layerNorm and batchNorm compute it. */
function normalizeIR(b: Builder, x: number, mean: number, variance: number, eps: number, w: number | null, bias: number | null): number {
  const centered = b.ew('sub', [{ ir: x }, { ir: mean }]);
  const denom = b.ew('sqrt', [{ ir: b.ew('add', [{ ir: variance }, { value: eps }]) }]);
  let y = b.ew('div', [{ ir: centered }, { ir: denom }]);
  if (w !== null) y = b.ew('mul', [{ ir: y }, { ir: w }]);
  if (bias !== null) y = b.ew('add', [{ ir: y }, { ir: bias }]);
  return y;
}

function pair(v: unknown): [number, number] {
  if (typeof v === 'number') return [v, v];
  const p = v as number[];
  return [p[0]!, p[1] ?? p[0]!];
}

const LOWERINGS: Record<string, Lowering> = {
  add: binary('add'),
  sub: binary('sub'),
  mul: binary('mul'),
  div: binary('div'),
  pow: binary('pow'),
  neg: unary('neg'),
  exp: unary('exp'),
  log: unary('log'),
  sqrt: unary('sqrt'),
  abs: unary('abs'),
  tanh: unary('tanh'),
  sigmoid: unary('sigmoid'),
  relu: unary('relu'),
  clone: unary('identity'),
  eq: compare('eq'),
  ne: compare('ne'),
  lt: compare('lt'),
  le: compare('le'),
  gt: compare('gt'),
  ge: compare('ge'),
  gelu: (b, a) => {
    const x = b.operand(a.input);
    return x ? b.ew(a.approximate === 'tanh' ? 'geluTanh' : 'gelu', [x]) : null;
  },
  clamp: (b, a) => {
    const x = b.operand(a.input);
    const attrs: Record<string, number> = {};
    if (typeof a.min === 'number') attrs.min = a.min;
    if (typeof a.max === 'number') attrs.max = a.max;
    return x ? b.ew('clamp', [x], 'float32', attrs) : null;
  },
  where: (b, a) => {
    const c = b.operand(a.condition);
    const x = b.operand(a.input);
    const y = b.operand(a.other);
    return c && x && y ? b.ew('where', [c, x, y]) : null;
  },
  toDType: (b, a) => {
    const x = b.operand(a.input);
    if (!x || (a.dtype !== 'float32' && a.dtype !== 'bool')) return null;
    return b.ew(a.dtype === 'bool' ? 'toBool' : 'identity', [x]);
  },
  dropout: (b, a) => {
    if (a.training === true && a.p !== 0) return null; // random: eager
    const x = b.operand(a.input);
    return x ? b.ew('identity', [x]) : null;
  },
  view: reshapeLike,
  reshape: reshapeLike,
  flatten: reshapeLike,
  squeeze: reshapeLike,
  unsqueeze: reshapeLike,
  detach: (b, a) => b.tensor(a.input),
  permute: (b, a, out) => {
    const x = b.tensor(a.input);
    if (x === null) return null;
    const nd = b.node(x).shape.length;
    return b.view(x, { op: 'permute', dims: (a.dims as number[]).map((d) => dimOf(d, nd)) }, out.shape);
  },
  transpose: (b, a, out) => {
    const x = b.tensor(a.input);
    if (x === null) return null;
    const nd = b.node(x).shape.length;
    if (nd === 0) return x;
    const dims = Array.from({ length: nd }, (_, i) => i);
    const d0 = dimOf(a.dim0, nd);
    const d1 = dimOf(a.dim1, nd);
    [dims[d0], dims[d1]] = [dims[d1]!, dims[d0]!];
    return b.view(x, { op: 'permute', dims }, out.shape);
  },
  expand: (b, a, out) => {
    const x = b.tensor(a.input);
    return x === null ? null : b.view(x, { op: 'expand', shape: out.shape }, out.shape);
  },
  select: (b, a, out) => {
    const x = b.tensor(a.input);
    if (x === null) return null;
    const shape = b.node(x).shape;
    const dim = dimOf(a.dim, shape.length);
    const i = a.index as number;
    return b.view(x, { op: 'select', dim, index: i < 0 ? i + shape[dim]! : i }, out.shape);
  },
  narrow: (b, a, out) => {
    const x = b.tensor(a.input);
    if (x === null) return null;
    const shape = b.node(x).shape;
    const dim = dimOf(a.dim, shape.length);
    const s = (a.start as number) < 0 ? (a.start as number) + shape[dim]! : (a.start as number);
    return b.view(x, { op: 'slice', dim, start: s, end: s + (a.length as number), step: 1 }, out.shape);
  },
  slice: (b, a, out) => {
    const x = b.tensor(a.input);
    if (x === null) return null;
    const shape = b.node(x).shape;
    const dim = dimOf(a.dim, shape.length);
    const n = shape[dim]!;
    const clampIdx = (v: number) => Math.min(Math.max(v < 0 ? v + n : v, 0), n);
    const start = a.start === null ? 0 : clampIdx(a.start as number);
    const end = Math.max(start, a.end === null ? n : clampIdx(a.end as number));
    return b.view(x, { op: 'slice', dim, start, end, step: a.step as number }, out.shape);
  },
  sum: (b, a) => {
    const x = b.tensor(a.input);
    if (x === null || b.dtypeOf(x) !== 'float32') return null;
    return b.reduce('sum', x, reduceDims(a.dim, b.node(x).shape.length), a.keepdim as boolean);
  },
  mean: (b, a) => {
    const x = b.tensor(a.input);
    if (x === null) return null;
    const shape = b.node(x).shape;
    const dims = reduceDims(a.dim, shape.length);
    return b.reduce('sum', x, dims, a.keepdim as boolean, numelOf(dims.map((d) => shape[d]!)));
  },
  amax: (b, a) => {
    const x = b.tensor(a.input);
    return x === null ? null : b.reduce('max', x, reduceDims(null, b.node(x).shape.length), false);
  },
  amin: (b, a) => {
    const x = b.tensor(a.input);
    return x === null ? null : b.reduce('min', x, reduceDims(null, b.node(x).shape.length), false);
  },
  softmax: (b, a) => {
    const x = b.tensor(a.input);
    return x === null ? null : softmaxIR(b, x, dimOf(a.dim, b.node(x).shape.length), false);
  },
  logSoftmax: (b, a) => {
    const x = b.tensor(a.input);
    return x === null ? null : softmaxIR(b, x, dimOf(a.dim, b.node(x).shape.length), true);
  },
  layerNorm: (b, a) => {
    const x = b.tensor(a.input);
    if (x === null) return null;
    const shape = b.node(x).shape;
    const ns = typeof a.normalizedShape === 'number' ? [a.normalizedShape] : (a.normalizedShape as number[]);
    const dims = ns.map((_, i) => shape.length - ns.length + i);
    const count = numelOf(ns);
    const mean = b.reduce('sum', x, dims, true, count);
    const c = b.ew('sub', [{ ir: x }, { ir: mean }]);
    const variance = b.reduce('sum', b.ew('mul', [{ ir: c }, { ir: c }]), dims, true, count);
    return normalizeIR(b, x, mean, variance, a.eps as number, b.tensor(a.weight), b.tensor(a.bias));
  },
  batchNorm: (b, a) => {
    const first = b.ir.length;
    const x = b.tensor(a.input);
    const rm = b.tensor(a.runningMean);
    const rv = b.tensor(a.runningVar);
    if (x === null || rm === null || rv === null || a.training === true) return null; // batch statistics: eager
    const shape = b.node(x).shape;
    if (shape.length < 2) return null;
    const bshape = shape.map((s, i) => (i === 1 ? s : 1));
    const per = (id: number | null) => (id === null ? null : b.reshape(id, bshape));
    const weight = b.tensor(a.weight);
    const bias = b.tensor(a.bias);
    const eps = a.eps as number;
    const out = normalizeIR(b, x, per(rm)!, per(rv)!, eps, per(weight), per(bias));
    const members = Array.from({ length: out + 1 - first }, (_, i) => first + i);
    const perChannel = (id: number | null) => id === null || sameShape(b.node(id).shape, [shape[1]!]);
    if (perChannel(rm) && perChannel(rv) && perChannel(weight) && perChannel(bias)) {
      b.batchNorms.push({ x, out, members, mean: rm, variance: rv, weight, bias, eps });
    }
    return out;
  },
  matmul: (b, a) => {
    const x = b.tensor(a.input);
    const y = b.tensor(a.other);
    return x === null || y === null ? null : matmulIR(b, x, y, false, null);
  },
  linear: (b, a) => {
    const x = b.tensor(a.input);
    const w = b.tensor(a.weight);
    if (x === null || w === null || b.node(w).shape.length !== 2) return null;
    return matmulIR(b, x, w, true, a.bias === null || a.bias === undefined ? null : b.tensor(a.bias));
  },
  conv2d: (b, a, out) => {
    const x = b.tensor(a.input);
    const w = b.tensor(a.weight);
    if (x === null || w === null || a.groups !== 1 || b.node(x).shape.length !== 4) return null;
    const [, , kh, kw] = b.node(w).shape as [number, number, number, number];
    const dilation = pair(a.dilation);
    let padding: [number, number];
    if (a.padding === 'valid') padding = [0, 0];
    else if (a.padding === 'same') {
      // An odd total pads one more after than before (PyTorch); these kernels pad symmetrically, so it runs eagerly.
      if ((dilation[0] * (kh - 1)) % 2 !== 0 || (dilation[1] * (kw - 1)) % 2 !== 0) return null;
      padding = [(dilation[0] * (kh - 1)) / 2, (dilation[1] * (kw - 1)) / 2];
    } else padding = pair(a.padding);
    const bias = a.bias === null || a.bias === undefined ? null : b.tensor(a.bias);
    return b.add(
      { kind: 'conv2d', x, w, bias, bn: null, relu: false, attrs: { stride: pair(a.stride), padding, dilation } },
      out.shape,
      'float32',
    );
  },
  embedding: (b, a, out) => {
    const index = b.tensor(a.input);
    const table = b.tensor(a.weight);
    if (index === null || table === null || b.dtypeOf(index) !== 'int32' || b.dtypeOf(table) !== 'float32') return null;
    return b.add({ kind: 'gather', table, index }, out.shape, 'float32');
  },
  maxPool2d: (b, a, out) => pool2dIR(b, a, out, 'max'),
  avgPool2d: (b, a, out) => pool2dIR(b, a, out, 'avg'),
};

function pool2dIR(b: Builder, a: Bound, out: Tensor, kind: 'max' | 'avg'): number | null {
  const x = b.tensor(a.input);
  if (x === null || b.dtypeOf(x) !== 'float32') return null;
  const kernel = pair(a.kernelSize);
  const stride =
    a.stride === null || a.stride === undefined || (Array.isArray(a.stride) && a.stride.length === 0) ? kernel : pair(a.stride);
  const attrs: Pool2dAttrs = {
    kind,
    kernel,
    stride,
    padding: pair(a.padding ?? 0),
    dilation: pair(a.dilation ?? 1),
    countIncludePad: (a.countIncludePad as boolean | undefined) ?? true,
    divisorOverride: (a.divisorOverride as number | null | undefined) ?? null,
  };
  return b.add({ kind: 'pool2d', x, attrs }, out.shape, 'float32');
}

/** matmul of x [..., M, K] and y ([K, N], [N, K] when `yTransposed`, or batched like x). 1-D operands stay eager. */
function matmulIR(b: Builder, x: number, y: number, yTransposed: boolean, bias: number | null): number | null {
  const xs = b.node(x).shape;
  const ys = b.node(y).shape;
  if (b.dtypeOf(x) !== 'float32' || b.dtypeOf(y) !== 'float32' || xs.length < 2 || ys.length < 2) return null;
  if (ys.length > 2 && (yTransposed || !sameShape(xs.slice(0, -2), ys.slice(0, -2)))) return null;
  const N = yTransposed ? ys[0]! : ys[ys.length - 1]!;
  if (bias !== null && !sameShape(b.node(bias).shape, [N])) return null;
  return b.add({ kind: 'matmul', a: x, b: y, bTransposed: yTransposed, bias, relu: false }, [...xs.slice(0, -1), N], 'float32');
}

/** Standard layers without hooks, as (op, bound arguments). */
function moduleCall(m: Module, args: readonly unknown[]): [string, Bound] | null {
  if (m.hasForwardHooks() || args.length !== 1) return null;
  const input = args[0];
  if (m instanceof nn.Linear) return ['linear', { input, weight: m.weight, bias: m.bias }];
  if (m instanceof nn.Embedding) return ['embedding', { input, weight: m.weight, paddingIdx: m.paddingIdx }];
  if (m instanceof nn.ReLU) return ['relu', { input }];
  if (m instanceof nn.GELU) return ['gelu', { input, approximate: m.approximate }];
  if (m instanceof nn.Sigmoid) return ['sigmoid', { input }];
  if (m instanceof nn.Tanh) return ['tanh', { input }];
  if (m instanceof nn.Softmax) return ['softmax', { input, dim: m.dim }];
  if (m instanceof nn.Flatten) return ['flatten', { input }];
  if (m instanceof nn.Identity) return ['detach', { input }];
  if (m instanceof nn.Dropout) return ['dropout', { input, p: m.p, training: m.training }];
  if (m instanceof nn.LayerNorm)
    return ['layerNorm', { input, normalizedShape: m.normalizedShape, weight: m.weight, bias: m.bias, eps: m.eps }];
  if ((m instanceof nn.BatchNorm1d || m instanceof nn.BatchNorm2d) && !m.training && m.running_mean && m.running_var) {
    return [
      'batchNorm',
      { input, runningMean: m.running_mean, runningVar: m.running_var, weight: m.weight, bias: m.bias, training: false, eps: m.eps },
    ];
  }
  if (m instanceof nn.Conv2d) {
    return [
      'conv2d',
      { input, weight: m.weight, bias: m.bias, stride: m.stride, padding: m.padding, dilation: m.dilation, groups: m.groups },
    ];
  }
  if (m instanceof nn.MaxPool2d) {
    return ['maxPool2d', { input, kernelSize: m.kernelSize, stride: m.stride, padding: m.padding, dilation: m.dilation }];
  }
  if (m instanceof nn.AvgPool2d) {
    return [
      'avgPool2d',
      {
        input,
        kernelSize: m.kernelSize,
        stride: m.stride,
        padding: m.padding,
        countIncludePad: m.countIncludePad,
        divisorOverride: m.divisorOverride,
      },
    ];
  }
  return null;
}

/** Tensor methods whose op differs from the method (name or argument order). */
function methodCall(name: string, args: readonly unknown[], out: unknown): [string, Bound] | null {
  const [self, ...rest] = args;
  switch (name) {
    case 'where':
      return ['where', { condition: rest[0], input: self, other: rest[1] }];
    case 'max':
    case 'min':
      return rest.length === 0 ? [name === 'max' ? 'amax' : 'amin', { input: self }] : null;
    case 't':
      return ['transpose', { input: self, dim0: 0, dim1: 1 }];
    case 'float':
      return ['toDType', { input: self, dtype: 'float32' }];
    case 'bool':
      return ['toDType', { input: self, dtype: 'bool' }];
    case 'to':
      return ['toDType', { input: self, dtype: rest[0] }];
    case 'contiguous':
      return ['clone', { input: self }];
    case 'detach':
      return ['detach', { input: self }];
    case 'expandAs':
      return out instanceof Tensor ? ['expand', { input: self }] : null;
    default:
      return null;
  }
}

/** Bind `args`/`kwargs` by `op`'s schema, or null when they do not fit it. */
function bindOp(opName: string, args: readonly unknown[], kwargs: Record<string, unknown>): [string, Bound] | null {
  const op = OPS.get(opName);
  if (!op) return null;
  const bound = bindToSchema(op.schema.params, args, kwargs);
  return bound ? [opName, bound] : null;
}

/** The node as (op name, arguments by parameter name), with non-tensor node arguments replaced by their values. */
function normalise(b: Builder, node: Node): [string, Bound] | null {
  const resolve = (a: unknown): unknown =>
    mapArg(a as Argument, (n) => {
      const v = b.values.get(n);
      return v instanceof Tensor ? n : v;
    });
  const args = resolve(node.args) as unknown[];
  const kwargs = resolve(node.kwargs) as Record<string, unknown>;
  const out = b.values.get(node);
  switch (node.op) {
    case 'call_function': {
      const name = typeof node.target === 'function' ? node.target.opName : undefined;
      return name && OPS.get(name) === node.target ? bindOp(name, args, kwargs) : null;
    }
    case 'call_method': {
      const name = node.target as string;
      return methodCall(name, args, out) ?? (OPS.has(name) ? bindOp(name, args, kwargs) : null);
    }
    case 'call_module': {
      const m = lookupAttr(b.gm, node.target as string);
      return m instanceof Module && Object.keys(kwargs).length === 0 ? moduleCall(m, args) : null;
    }
    default:
      return null;
  }
}

/** Why `node` (whose eager result is `out`) cannot be lowered, before looking at its op. */
function unsupportedValue(out: unknown): string | null {
  if (!(out instanceof Tensor)) return 'its result is not a tensor';
  if (out.dtype === 'int32') return 'int32 result';
  return null;
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
    const bad = unsupportedValue(out);
    if (bad) {
      opaque(bad);
      continue;
    }
    const call = normalise(b, node);
    const lowering = call ? LOWERINGS[call[0]] : undefined;
    const mark = b.ir.length;
    const id = lowering ? lowering(b, call![1], out as Tensor) : null;
    if (id === null || !sameShape(b.node(id).shape, (out as Tensor).shape)) {
      b.ir.length = mark; // drop a half-built expansion
      b.batchNorms = b.batchNorms.filter((bn) => bn.out < mark);
      opaque(lowering ? 'not lowered for these arguments' : NOT_LOWERED);
      continue;
    }
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
