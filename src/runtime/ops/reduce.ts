import { IndexError, ShapeError } from '../../errors.js';
import { zeros } from './creation.js';
import { reducedShape, rowsOver } from './cpu-adapters.js';
import { NUMBER_ARITH } from '../size-arith.js';
import { checkMeanDType, checkNonEmpty, checkScatterAdd, reduceDims as reduceDimsOf } from '../shape-rules/reduce.js';
import { allocate } from '../dtype.js';
import type { KValue, LowerContext } from '../lowering.js';
import { defineOp } from '../op.js';
import { fmt, normDim, numel, sameShape } from '../shape.js';
import { Tensor } from '../tensor.js';
import { dimOf, reducedDims } from './lowering-helpers.js';

/** Reductions and the normalisations built on a dim (softmax, logSoftmax). */

type Dims = number | readonly number[] | null;

/** Sum `g` down to `shape`: the backward of broadcasting. */
export function sumTo(g: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(g.shape, shape)) return g;
  const lead = g.ndim - shape.length;
  const dims: number[] = [];
  for (let d = 0; d < g.ndim; d++) {
    if (d < lead || (shape[d - lead] === 1 && g.shape[d] !== 1)) dims.push(d);
  }
  const summed = dims.length ? sum(g, dims, true) : g;
  return summed.reshape(shape);
}

/** Broadcast a reduced gradient back over the reduced dims of `shape`. */
function expandBack(g: Tensor, shape: readonly number[], dims: readonly number[], keepdim: boolean): Tensor {
  const kept = keepdim ? g : g.reshape(reducedShape(shape, dims, true));
  return kept.expand(shape);
}

function reduceDims(op: string, x: Tensor, dim: Dims): number[] {
  return reduceDimsOf(op, x.ndim, dim);
}

export const sum = defineOp<(input: Tensor, dim?: Dims, keepdim?: boolean) => Tensor>({
  schema: 'sum(Tensor input, int|int[]? dim=null, bool keepdim=false)',
  forward(ctx, x, dim = null, keepdim = false) {
    const dims = reduceDims('sum', x, dim);
    ctx.shape = x.shape;
    ctx.dims = dims;
    ctx.keepdim = keepdim;
    const { data, outer, inner } = rowsOver(x, dims);
    const dtype = x.dtype === 'float32' ? 'float32' : 'int32';
    const out = allocate(dtype, outer);
    for (let o = 0; o < outer; o++) {
      let acc = 0;
      const base = o * inner;
      for (let i = 0; i < inner; i++) acc += data[base + i]!;
      out[o] = acc;
    }
    return Tensor.fromData(out, reducedShape(x.shape, dims, keepdim), dtype);
  },
  backward(ctx, g) {
    return [expandBack(g, ctx.shape as number[], ctx.dims as number[], ctx.keepdim as boolean)];
  },
  lower(k, a) {
    const x = k.tensor(a.input);
    if (x === null) return null;
    if (k.dtype(x) !== 'float32') return { eager: `sum: of ${k.dtype(x)} values (an int32 result)` };
    return k.reduce('sum', x, reducedDims(a.dim, k.shape(x).length), a.keepdim as boolean);
  },
});

export const mean = defineOp<(input: Tensor, dim?: Dims, keepdim?: boolean) => Tensor>({
  schema: 'mean(Tensor input, int|int[]? dim=null, bool keepdim=false)',
  forward(ctx, x, dim = null, keepdim = false) {
    checkMeanDType(x.dtype);
    const dims = reduceDims('mean', x, dim);
    ctx.shape = x.shape;
    ctx.dims = dims;
    ctx.keepdim = keepdim;
    const { data, outer, inner } = rowsOver(x, dims);
    ctx.count = inner;
    const out = new Float32Array(outer);
    for (let o = 0; o < outer; o++) {
      let acc = 0;
      const base = o * inner;
      for (let i = 0; i < inner; i++) acc += data[base + i]!;
      out[o] = acc / inner;
    }
    return Tensor.fromData(out, reducedShape(x.shape, dims, keepdim), 'float32');
  },
  backward(ctx, g) {
    return [expandBack(g.div(ctx.count as number), ctx.shape as number[], ctx.dims as number[], ctx.keepdim as boolean)];
  },
  lower(k, a) {
    const x = k.tensor(a.input);
    if (x === null) return null;
    const shape = k.shape(x);
    const dims = reducedDims(a.dim, shape.length);
    return k.reduce('sum', x, dims, a.keepdim as boolean, numel(dims.map((d) => shape[d]!)));
  },
});

function nonEmpty(op: string, x: Tensor): void {
  checkNonEmpty(NUMBER_ARITH, op, x.shape);
}

/** Index of the extreme element of each row; NaN wins, first occurrence on ties (PyTorch's rule). */
function extremeRows(x: Tensor, dims: number[], better: (a: number, b: number) => boolean) {
  const { data, outer, inner } = rowsOver(x, dims);
  const values = allocate(x.dtype, outer);
  const indices = new Int32Array(outer);
  for (let o = 0; o < outer; o++) {
    const base = o * inner;
    let best = data[base]!;
    let at = 0;
    for (let i = 1; i < inner && !Number.isNaN(best); i++) {
      const v = data[base + i]!;
      if (better(v, best) || Number.isNaN(v)) {
        best = v;
        at = i;
      }
    }
    values[o] = best;
    indices[o] = at;
  }
  return { values, indices };
}

function allReduce(name: 'amax' | 'amin', better: (a: number, b: number) => boolean) {
  return defineOp<(input: Tensor) => Tensor>({
    schema: `${name}(Tensor input)`,
    forward(ctx, x) {
      nonEmpty(name, x);
      const { values } = extremeRows(x, reduceDims(name, x, null), better);
      const out = Tensor.fromData(values, [], x.dtype);
      ctx.x = ctx.save(x);
      ctx.out = out;
      return out;
    },
    backward(ctx, g) {
      // ties share the gradient evenly, as PyTorch does for the all-reduce max/min
      const x = ctx.x as Tensor;
      const mask = x.eq(ctx.out as Tensor).float();
      return [mask.mul(g.div(mask.sum()))];
    },
    lower(k, a) {
      const x = k.tensor(a.input);
      return x === null ? null : k.reduce(name === 'amax' ? 'max' : 'min', x, reducedDims(null, k.shape(x).length), false);
    },
  });
}

export const amax = allReduce('amax', (a, b) => a > b);
export const amin = allReduce('amin', (a, b) => a < b);

function dimReduce(name: string, better: (a: number, b: number) => boolean) {
  return defineOp<(input: Tensor, dim: number, keepdim?: boolean) => [Tensor, Tensor]>({
    schema: `${name}(Tensor input, int dim, bool keepdim=false)`,
    forward(ctx, x, dim, keepdim = false) {
      nonEmpty(name, x);
      const d = normDim(name, dim, x.ndim);
      const { values, indices } = extremeRows(x, [d], better);
      const shape = reducedShape(x.shape, [d], keepdim);
      const idx = Tensor.fromData(indices, shape, 'int32');
      Object.assign(ctx, { shape: x.shape, dim: d, keepdim, idx });
      return [Tensor.fromData(values, shape, x.dtype), idx];
    },
    backward(ctx, g) {
      // PyTorch's value_selecting_reduction_backward: the gradient goes to the selected element of each row
      const d = ctx.dim as number;
      const keep = (t: Tensor) => (ctx.keepdim ? t : t.unsqueeze(d));
      return [scatterAdd(zeros(ctx.shape as number[]), d, keep(ctx.idx as Tensor), keep(g))];
    },
    lower: { eager: `${name}: returns (values, indices), and the kernels compute no indices` },
  });
}

export const maxDim = dimReduce('max', (a, b) => a > b);
export const minDim = dimReduce('min', (a, b) => a < b);

export const argmax = defineOp<(input: Tensor, dim?: number | null, keepdim?: boolean) => Tensor>({
  schema: 'argmax(Tensor input, int? dim=null, bool keepdim=false)',
  forward(_ctx, x, dim = null, keepdim = false) {
    nonEmpty('argmax', x);
    if (dim === null) {
      const { indices } = extremeRows(x, reduceDims('argmax', x, null), (a, b) => a > b);
      return Tensor.fromData(indices, keepdim ? x.shape.map(() => 1) : [], 'int32');
    }
    const d = normDim('argmax', dim, x.ndim);
    const { indices } = extremeRows(x, [d], (a, b) => a > b);
    return Tensor.fromData(indices, reducedShape(x.shape, [d], keepdim), 'int32');
  },
  lower: { eager: 'argmax: an int32 result (the kernels compute float32 and bool values)' },
});

/**
 * PyTorch's scatter_add: a copy of `input` with each element of `src` added at the position of the matching
 * element of `index`, whose coordinate along `dim` is replaced by the index value. The backward of gather and
 * of max/min along a dim (`zeros(shape).scatterAdd(dim, indices, grad)`, as PyTorch's gather_backward).
 */
export const scatterAdd = defineOp<(input: Tensor, dim: number, index: Tensor, src: Tensor) => Tensor>({
  schema: 'scatterAdd(Tensor input, int dim, Tensor index, Tensor src)',
  forward(ctx, x, dim, index, src) {
    const d = checkScatterAdd(NUMBER_ARITH, x, dim, index, src);
    if (src.requiresGrad && !sameShape(index.shape, src.shape)) {
      throw new ShapeError(
        `scatterAdd: the gradient of src needs index and src of one shape, got ${fmt(index.shape)} and ${fmt(src.shape)}`,
      );
    }
    ctx.d = d;
    ctx.index = ctx.save(index);
    const out = x.contiguous().clone();
    const data = out._storage.data;
    const idx = index.contiguous().data();
    const strides = x.shape.map((_, k) => numel(x.shape.slice(k + 1)));
    const pos = new Array<number>(index.ndim).fill(0);
    const n = x.ndim === 0 ? 1 : x.shape[d]!;
    for (let i = 0; i < idx.length; i++) {
      const j = idx[i]!;
      if (j < 0 || j >= n) throw new IndexError(`scatterAdd: index ${j} is out of bounds for dim ${d} with size ${n}`);
      let off = 0;
      let srcOff = src.offset;
      for (let k = 0; k < pos.length; k++) {
        off += (k === d ? j : pos[k]!) * strides[k]!;
        srcOff += pos[k]! * src.strides[k]!;
      }
      data[off] += src._storage.data[srcOff]!;
      for (let k = pos.length - 1; k >= 0; k--) {
        if (++pos[k]! < index.shape[k]!) break;
        pos[k] = 0;
      }
    }
    return out;
  },
  backward(ctx, g) {
    return [g, null, null, g.gather(ctx.d as number, ctx.index as Tensor)];
  },
  lower: { eager: 'scatterAdd: no kernel for scattering along a dim by an index tensor yet' },
});

/** Apply `fn` to every 1-D slice along `dim` (moved last), giving a float32 tensor of x's shape. */
function alongDim(x: Tensor, dim: number, fn: (src: ArrayLike<number>, base: number, out: Float32Array, n: number) => void): Tensor {
  const { data, outer, inner } = rowsOver(x, [dim]);
  const out = new Float32Array(outer * inner);
  for (let o = 0; o < outer; o++) fn(data, o * inner, out, inner);
  const moved = [...x.shape.filter((_, i) => i !== dim), x.shape[dim]!];
  const t = Tensor.fromData(out, moved, 'float32');
  if (dim === x.ndim - 1 || x.ndim === 0) return t.reshape(x.shape);
  // move the last dim back to `dim`
  const perm: number[] = [];
  for (let i = 0, j = 0; i < x.ndim; i++) perm.push(i === dim ? x.ndim - 1 : j++);
  return t.permute(perm).contiguous();
}

function softmaxRow(src: ArrayLike<number>, base: number, out: Float32Array, n: number, log: boolean): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, src[base + i]!);
  let total = 0;
  for (let i = 0; i < n; i++) total += Math.exp(src[base + i]! - max);
  if (log) {
    const lse = Math.log(total);
    for (let i = 0; i < n; i++) out[base + i] = src[base + i]! - max - lse;
  } else {
    for (let i = 0; i < n; i++) out[base + i] = Math.exp(src[base + i]! - max) / total;
  }
}

/** exp(x - max) / sum(exp(x - max)) along `dim` (minus log of the sum for logSoftmax), as the row kernel computes it. */
function softmaxIR(k: LowerContext, x: KValue, dim: number, log: boolean): KValue {
  const m = k.reduce('max', x, [dim], true);
  const s = k.reduce('sum', k.prim('exp', k.prim('sub', x, m)), [dim], true);
  const shifted = k.prim('sub', x, m);
  return log ? k.prim('sub', shifted, k.prim('log', s)) : k.prim('div', k.prim('exp', shifted), s);
}

/** softmax and logSoftmax share the stable row kernel; only the output form and the gradient differ. */
function softmaxOp(name: 'softmax' | 'logSoftmax', grad: (y: Tensor, g: Tensor, dim: number) => Tensor) {
  const log = name === 'logSoftmax';
  return defineOp<(input: Tensor, dim: number) => Tensor>({
    schema: `${name}(Tensor input, int dim)`,
    forward(ctx, x, dim) {
      const d = normDim(name, dim, x.ndim);
      const y = alongDim(x, d, (s, b, o, n) => softmaxRow(s, b, o, n, log));
      ctx.y = ctx.save(y);
      ctx.dim = d;
      return y;
    },
    backward: (ctx, g) => [grad(ctx.y as Tensor, g, ctx.dim as number)],
    lower(k, a) {
      const x = k.tensor(a.input);
      return x === null ? null : softmaxIR(k, x, dimOf(a.dim, k.shape(x).length), log);
    },
  });
}

export const softmax = softmaxOp('softmax', (y, g, dim) => {
  const gy = g.mul(y);
  return gy.sub(y.mul(gy.sum(dim, true)));
});

export const logSoftmax = softmaxOp('logSoftmax', (y, g, dim) => g.sub(y.exp().mul(g.sum(dim, true))));
