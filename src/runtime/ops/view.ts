import { IndexError, ShapeError, ValueError } from '../../errors.js';
import { gatherContiguous } from '../cpu/strided.js';
import { allocate, promote } from '../dtype.js';
import { OPS, defineOp, markMultiOutputViews, type GradResult } from '../op.js';
import { contiguousStrides, fmt, inferShape, normDim, numel, viewStrides } from '../shape.js';
import { NUMBER_ARITH } from '../size-arith.js';
import {
  catSizes,
  checkT,
  expandSizes,
  flattenDims,
  narrowStart,
  permuteDims,
  selectIndex,
  sliceBounds,
  splitSizes,
  squeezeKeeps,
  stackSizes,
  unsqueezeSizes,
} from '../shape-rules/sizes.js';
import { checkAsStrided, checkGather, checkIndexSelect, checkIndexSpecs, checkScatterSrc, parseSlice } from '../shape-rules/view.js';
import { Storage, Tensor } from '../tensor.js';
import { arange, full, zeros } from './creation.js';
import { where } from './elementwise.js';
import { dimOf, reshapeLike } from './lowering-helpers.js';
import { scatterAdd, sumTo } from './reduce.js';
import { noGrad } from '../autograd.js';

/** Shape ops. Most are views: they share the input's storage and only change shape, strides and offset. */

function aliasOf(x: Tensor, shape: readonly number[], strides: readonly number[], offset = x.offset): Tensor {
  return new Tensor(x._storage, shape, strides, offset, x.dtype);
}

function copyOf(x: Tensor, shape: readonly number[]): Tensor {
  const data = gatherContiguous(x._storage.data, x, x.dtype).slice();
  return new Tensor(new Storage(data), shape, contiguousStrides(shape), 0, x.dtype);
}

/** zeros of `shape` with `g` written into the region `region(z)` selects: the backward of slicing views. */
function embedGrad(shape: readonly number[], g: Tensor, region: (z: Tensor) => Tensor): Tensor {
  const z = zeros(shape);
  noGrad(() => region(z).copy_(g));
  return z;
}

export const view = defineOp<(input: Tensor, shape: readonly number[]) => Tensor>({
  schema: 'view(Tensor input, int[] shape)',
  view: true,
  forward(ctx, x, shape) {
    const target = inferShape('view', x.shape, shape);
    const strides = viewStrides(x.shape, x.strides, target);
    if (!strides) {
      throw new ShapeError(
        `view: shape ${fmt(target)} is not compatible with the input's size and strides (shape ${fmt(x.shape)}, ` +
          `strides ${fmt(x.strides)}); at least one dim spans across two contiguous subspaces; use reshape() instead`,
      );
    }
    ctx.shape = x.shape;
    return aliasOf(x, target, strides);
  },
  backward: (ctx, g) => [g.reshape(ctx.shape as number[])],
  lower: reshapeLike,
});

/** A view when the layout allows one, otherwise a contiguous copy (like PyTorch). */
export const reshape = defineOp<(input: Tensor, shape: readonly number[]) => Tensor>({
  schema: 'reshape(Tensor input, int[] shape)',
  view: true,
  forward(ctx, x, shape) {
    const target = inferShape('reshape', x.shape, shape);
    ctx.shape = x.shape;
    const strides = viewStrides(x.shape, x.strides, target);
    return strides ? aliasOf(x, target, strides) : copyOf(x, target);
  },
  backward: (ctx, g) => [g.reshape(ctx.shape as number[])],
  lower: reshapeLike,
});

export const flatten = defineOp<(input: Tensor, startDim?: number, endDim?: number) => Tensor>({
  schema: 'flatten(Tensor input, int startDim=0, int endDim=-1)',
  composite: true,
  forward(_ctx, x, startDim = 0, endDim = -1) {
    if (x.ndim === 0) return reshape(x, [1]);
    const [s, e] = flattenDims(x.ndim, startDim, endDim);
    const shape = [...x.shape.slice(0, s), numel(x.shape.slice(s, e + 1)), ...x.shape.slice(e + 1)];
    return reshape(x, shape);
  },
  lower: reshapeLike,
});

export const permute = defineOp<(input: Tensor, dims: readonly number[]) => Tensor>({
  schema: 'permute(Tensor input, int[] dims)',
  view: true,
  forward(ctx, x, dims) {
    const d = permuteDims(x.ndim, x.shape, dims);
    const inverse = new Array<number>(d.length);
    d.forEach((v, i) => (inverse[v] = i));
    ctx.inverse = inverse;
    return aliasOf(
      x,
      d.map((v) => x.shape[v]!),
      d.map((v) => x.strides[v]!),
    );
  },
  backward: (ctx, g) => [g.permute(ctx.inverse as number[])],
  lower(k, a, out) {
    const x = k.tensor(a.input);
    if (x === null) return null;
    const nd = k.shape(x).length;
    return k.view(x, { op: 'permute', dims: (a.dims as number[]).map((d) => dimOf(d, nd)) }, out.shape);
  },
});

export const transpose = defineOp<(input: Tensor, dim0: number, dim1: number) => Tensor>({
  schema: 'transpose(Tensor input, int dim0, int dim1)',
  view: true,
  forward(ctx, x, dim0, dim1) {
    if (x.ndim === 0) return aliasOf(x, [], []);
    const a = normDim('transpose', dim0, x.ndim);
    const b = normDim('transpose', dim1, x.ndim);
    Object.assign(ctx, { a, b });
    const shape = [...x.shape];
    const strides = [...x.strides];
    [shape[a], shape[b]] = [shape[b]!, shape[a]!];
    [strides[a], strides[b]] = [strides[b]!, strides[a]!];
    return aliasOf(x, shape, strides);
  },
  backward: (ctx, g) => [g.ndim === 0 ? g : g.transpose(ctx.a as number, ctx.b as number)],
  lower(k, a, out) {
    const x = k.tensor(a.input);
    if (x === null) return null;
    const nd = k.shape(x).length;
    if (nd < 2) return x; // transposing a 0-d or 1-d tensor returns it as it is
    const dims = Array.from({ length: nd }, (_, i) => i);
    const d0 = dimOf(a.dim0, nd);
    const d1 = dimOf(a.dim1, nd);
    [dims[d0], dims[d1]] = [dims[d1]!, dims[d0]!];
    return k.view(x, { op: 'permute', dims }, out.shape);
  },
});

/** torch.t: the transpose of a matrix; 0-d and 1-d tensors come back as a view of themselves. */
export const t = defineOp<(input: Tensor) => Tensor>({
  schema: 't(Tensor input)',
  view: true,
  forward(_ctx, x) {
    checkT(x.ndim);
    if (x.ndim < 2) return aliasOf(x, x.shape, x.strides);
    return aliasOf(x, [x.shape[1]!, x.shape[0]!], [x.strides[1]!, x.strides[0]!]);
  },
  backward: (_ctx, g): GradResult[] => [t(g)],
  lower(k, a, out) {
    const x = k.tensor(a.input);
    if (x === null) return null;
    return k.shape(x).length < 2 ? x : k.view(x, { op: 'permute', dims: [1, 0] }, out.shape);
  },
});

export const unsqueeze = defineOp<(input: Tensor, dim: number) => Tensor>({
  schema: 'unsqueeze(Tensor input, int dim)',
  view: true,
  forward(ctx, x, dim) {
    const { d, shape } = unsqueezeSizes(NUMBER_ARITH, x.shape, dim);
    ctx.shape = x.shape;
    const strides = [...x.strides];
    strides.splice(d, 0, d < x.ndim ? x.strides[d]! * x.shape[d]! : 1);
    return aliasOf(x, shape, strides);
  },
  backward: (ctx, g) => [g.reshape(ctx.shape as number[])],
  lower: reshapeLike,
});

export const squeeze = defineOp<(input: Tensor, dim?: number | null) => Tensor>({
  schema: 'squeeze(Tensor input, int? dim=null)',
  view: true,
  forward(ctx, x, dim = null) {
    ctx.shape = x.shape;
    const keep = squeezeKeeps(NUMBER_ARITH, x.shape, dim);
    return aliasOf(
      x,
      x.shape.filter((_, i) => keep[i]),
      x.strides.filter((_, i) => keep[i]),
    );
  },
  backward: (ctx, g) => [g.reshape(ctx.shape as number[])],
  lower: reshapeLike,
});

/**
 * PyTorch's `as_strided`: a view of `input`'s storage with the given sizes, strides and storage offset (absolute,
 * as in PyTorch). AOT autograd uses it to rebuild inputs that share memory from one synthetic base.
 */
export const asStrided = defineOp<(input: Tensor, size: readonly number[], stride: readonly number[], storageOffset?: number) => Tensor>({
  schema: 'asStrided(Tensor input, int[] size, int[] stride, int storageOffset=0)',
  view: true,
  forward(ctx, x, size, stride, storageOffset = 0) {
    checkAsStrided(NUMBER_ARITH, size, stride, storageOffset);
    const last = storageOffset + size.reduce((a, n, d) => a + (n > 0 ? (n - 1) * stride[d]! : 0), 0);
    if (numel(size) > 0 && last >= x._storage.data.length) {
      throw new IndexError(
        `asStrided: size ${fmt(size)}, stride ${fmt(stride)} and offset ${storageOffset} reach element ${last}, past the storage's ${x._storage.data.length}`,
      );
    }
    Object.assign(ctx, { inShape: x.shape, inStrides: x.strides, inOffset: x.offset, size, stride, storageOffset });
    return new Tensor(x._storage, size, stride, storageOffset, x.dtype);
  },
  backward(ctx, g): GradResult[] {
    const { inShape, inStrides, inOffset, size, stride, storageOffset } = ctx as unknown as Record<string, number[]> & {
      inOffset: number;
      storageOffset: number;
    };
    return [
      asStridedBackward(
        g,
        { shape: inShape, strides: inStrides, offset: inOffset },
        { shape: size, strides: stride, offset: storageOffset },
      ),
    ];
  },
  lower: { eager: 'asStrided: an arbitrary strided view of the storage' },
});

interface Geometry {
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  readonly offset: number;
}

/** The elements of storage a tensor of this geometry needs (PyTorch's _min_storage_size). */
function minStorageSize({ shape, strides, offset }: Geometry): number {
  if (shape.some((n) => n === 0)) return offset;
  return shape.reduce((a, n, d) => a + (n - 1) * strides[d]!, offset + 1);
}

/** Whether two elements of this geometry may share a storage slot (PyTorch's _maybe_overlapping_memory). */
function maybeOverlapping({ shape, strides }: Geometry): boolean {
  if (shape.includes(0)) return false;
  const dims = shape.map((_, d) => d).filter((d) => shape[d]! > 1);
  dims.sort((a, b) => strides[a]! - strides[b]!);
  let reach = 0;
  for (const d of dims) {
    if (strides[d]! <= reach) return true;
    reach += strides[d]! * (shape[d]! - 1);
  }
  return false;
}

/**
 * PyTorch's as_strided_backward, with op-table calls only (so a joint graph can record it): the gradient is
 * added, slot by slot, into zeros standing for the storage both geometries cover (scatterAdd over the slots the
 * output read, which sums an expanded or overlapping output's repeats), divided by how often the input's
 * geometry sees each slot when it overlaps itself, and read back with the input's geometry.
 */
function asStridedBackward(g: Tensor, input: Geometry, output: Geometry): Tensor {
  const shared = Math.min(input.offset, output.offset);
  const inp = { ...input, offset: input.offset - shared };
  const out = { ...output, offset: output.offset - shared };
  const n = Math.max(minStorageSize(inp), minStorageSize(out));
  const slots = arange(n);
  const slotsOf = (geo: Geometry) => reshape(asStrided(slots, geo.shape, geo.strides, geo.offset), [-1]);
  let storage = scatterAdd(zeros([n]), 0, slotsOf(out), reshape(g, [-1]));
  if (maybeOverlapping(inp)) {
    const seen = slotsOf(inp);
    storage = storage.div(scatterAdd(zeros([n]), 0, seen, full([seen.shape[0]!], 1)));
  }
  return asStrided(storage, inp.shape, inp.strides, inp.offset);
}

export const expand = defineOp<(input: Tensor, shape: readonly number[]) => Tensor>({
  schema: 'expand(Tensor input, int[] shape)',
  view: true,
  forward(ctx, x, shape) {
    ctx.shape = x.shape;
    const lead = shape.length - x.ndim;
    const { shape: outShape, broadcast } = expandSizes(NUMBER_ARITH, x.shape, shape);
    const strides = broadcast.map((b, i) => (b ? 0 : x.strides[i - lead]!));
    return aliasOf(x, outShape, strides);
  },
  backward: (ctx, g) => [sumTo(g, ctx.shape as number[])],
  lower(k, a, out) {
    const x = k.tensor(a.input);
    return x === null ? null : k.view(x, { op: 'expand', shape: out.shape }, out.shape);
  },
});

/** Elements start, start+step, … < end along `dim`, as a view (Python's `x[start:end:step]`). */
export const slice = defineOp<(input: Tensor, dim: number, start?: number | null, end?: number | null, step?: number) => Tensor>({
  schema: 'slice(Tensor input, int dim=0, int? start=null, int? end=null, int step=1)',
  view: true,
  forward(ctx, x, dim, start = null, end = null, step = 1) {
    const d = normDim('slice', dim, x.ndim);
    const { start: s, end: e, length } = sliceBounds(NUMBER_ARITH, x.shape[d]!, start, end, step);
    Object.assign(ctx, { shape: x.shape, d, s, e, step });
    const shape = [...x.shape];
    const strides = [...x.strides];
    shape[d] = length;
    strides[d] = x.strides[d]! * step;
    return aliasOf(x, shape, strides, x.offset + s * x.strides[d]!);
  },
  backward(ctx, g): GradResult[] {
    const { d, s, e, step } = ctx as unknown as { d: number; s: number; e: number; step: number };
    return [embedGrad(ctx.shape as number[], g, (z): Tensor => slice(z, d, s, e, step))];
  },
  lower(k, a, out) {
    const x = k.tensor(a.input);
    if (x === null) return null;
    const shape = k.shape(x);
    const dim = dimOf(a.dim, shape.length);
    const n = shape[dim]!;
    const clampIdx = (v: number) => Math.min(Math.max(v < 0 ? v + n : v, 0), n);
    const start = a.start === null ? 0 : clampIdx(a.start as number);
    const end = Math.max(start, a.end === null ? n : clampIdx(a.end as number));
    return k.view(x, { op: 'slice', dim, start, end, step: a.step as number }, out.shape);
  },
});

export const narrow = defineOp<(input: Tensor, dim: number, start: number, length: number) => Tensor>({
  schema: 'narrow(Tensor input, int dim, int start, int length)',
  composite: true,
  forward(_ctx, x, dim, start, length) {
    const d = normDim('narrow', dim, x.ndim);
    const s = narrowStart(NUMBER_ARITH, x.shape, d, start, length);
    return slice(x, d, s, s + length, 1);
  },
  lower(k, a, out) {
    const x = k.tensor(a.input);
    if (x === null) return null;
    const shape = k.shape(x);
    const dim = dimOf(a.dim, shape.length);
    const s = (a.start as number) < 0 ? (a.start as number) + shape[dim]! : (a.start as number);
    return k.view(x, { op: 'slice', dim, start: s, end: s + (a.length as number), step: 1 }, out.shape);
  },
});

/** torch.split: pieces of `splitSize` along `dim` (the last may be shorter), or pieces of the listed sizes. */
export const split = defineOp<(input: Tensor, splitSize: number | number[], dim?: number) => Tensor[]>({
  schema: 'split(Tensor input, int|int[] splitSize, int dim=0)',
  composite: true,
  forward(_ctx, x, splitSize, dim = 0) {
    const d = normDim('split', dim, x.ndim);
    const sizes = splitSizes(NUMBER_ARITH, x.shape, d, splitSize);
    let start = 0;
    const pieces = sizes.map((k) => {
      const piece = narrow(x, d, start, k);
      start += k;
      return piece;
    });
    markMultiOutputViews(pieces, 'splitBackward');
    return pieces;
  },
  lower: { eager: 'split: returns a list of tensors (its readers index it eagerly)' },
});

/** torch.unbind: every slice along `dim` as a view (`select(input, dim, i)`), the gradient flowing through each. */
export const unbind = defineOp<(input: Tensor, dim?: number) => Tensor[]>({
  schema: 'unbind(Tensor input, int dim=0)',
  composite: true,
  forward(_ctx, x, dim = 0) {
    if (x.ndim === 0) throw new IndexError('unbind: dimension specified as 0 but tensor has no dimensions');
    const d = normDim('unbind', dim, x.ndim);
    const views = Array.from({ length: x.shape[d]! }, (_, i) => select(x, d, i));
    markMultiOutputViews(views, 'unbindBackward');
    return views;
  },
  lower: { eager: 'unbind: returns a list of tensors (its readers index it eagerly)' },
});

export const select = defineOp<(input: Tensor, dim: number, index: number) => Tensor>({
  schema: 'select(Tensor input, int dim, int index)',
  view: true,
  forward(ctx, x, dim, index) {
    const { d, i } = selectIndex(NUMBER_ARITH, x.shape, dim, index);
    Object.assign(ctx, { shape: x.shape, d, i });
    return aliasOf(
      x,
      x.shape.filter((_, k) => k !== d),
      x.strides.filter((_, k) => k !== d),
      x.offset + i * x.strides[d]!,
    );
  },
  backward(ctx, g): GradResult[] {
    return [embedGrad(ctx.shape as number[], g, (z): Tensor => select(z, ctx.d as number, ctx.i as number))];
  },
  lower(k, a, out) {
    const x = k.tensor(a.input);
    if (x === null) return null;
    const shape = k.shape(x);
    const dim = dimOf(a.dim, shape.length);
    const i = a.index as number;
    return k.view(x, { op: 'select', dim, index: i < 0 ? i + shape[dim]! : i }, out.shape);
  },
});

/** `view(out)` of a copy of `input` overwritten with `src`, which must have the view's shape exactly (PyTorch's *_scatter rule). */
function scatterInto(op: string, x: Tensor, src: Tensor, view: (t: Tensor) => Tensor): Tensor {
  const out = x.clone();
  const region = view(out);
  checkScatterSrc(NUMBER_ARITH, op, x, src, region);
  region.copy_(src);
  return out;
}

/**
 * PyTorch's slice_scatter: a copy of `input` whose slice `input[start:end:step]` along `dim` is `src`. Out of
 * place and differentiable in both (functionalisation writes an in-place write through a slice as this).
 */
export const sliceScatter = defineOp<
  (input: Tensor, src: Tensor, dim?: number, start?: number | null, end?: number | null, step?: number) => Tensor
>({
  schema: 'sliceScatter(Tensor input, Tensor src, int dim=0, int? start=null, int? end=null, int step=1)',
  forward(ctx, x, src, dim = 0, start = null, end = null, step = 1) {
    if (x.ndim === 0) throw new IndexError('sliceScatter: cannot slice a 0-d tensor');
    Object.assign(ctx, { dim, start, end, step, srcShape: src.shape });
    return scatterInto('sliceScatter', x, src, (t) => slice(t, dim, start, end, step));
  },
  backward(ctx, g): GradResult[] {
    const { dim, start, end, step } = ctx as unknown as { dim: number; start: number | null; end: number | null; step: number };
    return [sliceScatter(g, zeros(ctx.srcShape as number[]), dim, start, end, step), slice(g, dim, start, end, step)];
  },
  lower: { eager: 'sliceScatter: no kernel writes a slice of a copy yet' },
});

/** PyTorch's select_scatter: a copy of `input` whose entry `index` along `dim` is `src` (one dim fewer). */
export const selectScatter = defineOp<(input: Tensor, src: Tensor, dim: number, index: number) => Tensor>({
  schema: 'selectScatter(Tensor input, Tensor src, int dim, int index)',
  forward(ctx, x, src, dim, index) {
    Object.assign(ctx, { dim, index, srcShape: src.shape });
    return scatterInto('selectScatter', x, src, (t) => select(t, dim, index));
  },
  backward(ctx, g): GradResult[] {
    const { dim, index } = ctx as unknown as { dim: number; index: number };
    return [selectScatter(g, zeros(ctx.srcShape as number[]), dim, index), select(g, dim, index)];
  },
  lower: { eager: 'selectScatter: no kernel writes a slice of a copy yet' },
});

export const gather = defineOp<(input: Tensor, dim: number, index: Tensor) => Tensor>({
  schema: 'gather(Tensor input, int dim, Tensor index)',
  forward(ctx, x, dim, index) {
    const d = checkGather(NUMBER_ARITH, x, dim, index);
    const idx = index.contiguous().data();
    const out = allocate(x.dtype, idx.length);
    const src = x._storage.data;
    const pos = new Array<number>(index.ndim).fill(0);
    const n = x.shape[d]!;
    for (let i = 0; i < idx.length; i++) {
      const j = idx[i]!;
      if (j < 0 || j >= n) throw new IndexError(`gather: index ${j} is out of bounds for dim ${d} with size ${n}`);
      let off = x.offset;
      for (let k = 0; k < pos.length; k++) off += (k === d ? j : pos[k]!) * x.strides[k]!;
      out[i] = src[off]!;
      for (let k = pos.length - 1; k >= 0; k--) {
        if (++pos[k]! < index.shape[k]!) break;
        pos[k] = 0;
      }
    }
    Object.assign(ctx, { shape: x.shape, d });
    ctx.index = ctx.save(index);
    return Tensor.fromData(out, index.shape, x.dtype);
  },
  // PyTorch's gather_backward: zeros(shape).scatter_add(dim, index, grad)
  backward: (ctx, g) => [scatterAdd(zeros(ctx.shape as number[]), ctx.d as number, ctx.index as Tensor, g)],
  lower: { eager: 'gather: no kernel for gathering along a dim by an index tensor yet' },
});

/** Rows (along `dim`) picked by a 1-D int32 index; the backward adds into the picked rows. */
export const indexSelect = defineOp<(input: Tensor, dim: number, index: Tensor) => Tensor>({
  schema: 'indexSelect(Tensor input, int dim, Tensor index)',
  forward(ctx, x, dim, index) {
    const d = checkIndexSelect(x, dim, index);
    const n = x.shape[d]!;
    const idx = index.contiguous().data();
    for (const j of idx) {
      if (j < -n || j >= n) throw new IndexError(`indexSelect: index ${j} is out of bounds for dim ${d} with size ${n}`);
    }
    const wrapped = Int32Array.from(idx, (j) => (j < 0 ? j + n : j));
    const shape = [...x.shape];
    shape[d] = wrapped.length;
    const expanded = Tensor.fromData(wrapped, [wrapped.length], 'int32')
      .reshape(shape.map((s, k) => (k === d ? s : 1)))
      .expand(shape);
    Object.assign(ctx, { shape: x.shape, d, n, outShape: shape });
    ctx.index = ctx.save(index);
    return gather(x, d, expanded.contiguous());
  },
  backward(ctx, g) {
    // PyTorch's index_select_backward (an index_add into zeros), from the index input with op-table calls:
    // negative indices wrapped, then laid along `dim` and broadcast over the others
    const { d, n } = ctx as unknown as { d: number; n: number };
    const outShape = ctx.outShape as number[];
    const index = ctx.index as Tensor;
    const wrapped = where(index.lt(0), index.add(n), index);
    const laid = wrapped.reshape(outShape.map((s, k) => (k === d ? s : 1))).expand(outShape);
    return [scatterAdd(zeros(ctx.shape as number[]), d, laid.contiguous(), g)];
  },
  lower: { eager: 'indexSelect: no kernel for selecting by an index tensor yet' },
});

export const cat = defineOp<(tensors: readonly Tensor[], dim?: number) => Tensor>({
  schema: 'cat(Tensor[] tensors, int dim=0)',
  forward(ctx, tensors, dim = 0) {
    const { d, shape } = catSizes(
      NUMBER_ARITH,
      tensors.map((t) => t.shape),
      dim,
    );
    const dtype = tensors.map((t) => t.dtype).reduce(promote);
    const out = zeros(shape, { dtype });
    let at = 0;
    const sizes = tensors.map((t) => t.shape[d]!);
    for (const t of tensors) {
      slice(out, d, at, at + t.shape[d]!).copy_(t);
      at += t.shape[d]!;
    }
    out._storage.version = 0;
    Object.assign(ctx, { d, sizes });
    return out;
  },
  backward(ctx, g) {
    const sizes = ctx.sizes as number[];
    let at = 0;
    return [
      sizes.map((n) => {
        const part = slice(g, ctx.d as number, at, at + n);
        at += n;
        return part;
      }),
    ];
  },
  lower: { eager: 'cat: no concatenation kernel yet (the kernels compute one output per group)' },
});

export const stack = defineOp<(tensors: readonly Tensor[], dim?: number) => Tensor>({
  schema: 'stack(Tensor[] tensors, int dim=0)',
  composite: true,
  forward(_ctx, tensors, dim = 0) {
    stackSizes(
      NUMBER_ARITH,
      tensors.map((t) => t.shape),
      dim,
    );
    const d = normDim('stack', dim, tensors[0]!.ndim + 1);
    return cat(
      tensors.map((t) => unsqueeze(t, d)),
      d,
    );
  },
  lower: { eager: 'stack: no concatenation kernel yet (the kernels compute one output per group)' },
});

/** One entry of `x.index([...])`: an integer, a slice (`'1:3'`, `'::2'`, `{ start, end, step }`), `null` (new axis), `'...'` or an index tensor. */
export type IndexSpec = number | string | null | { start?: number; end?: number; step?: number } | Tensor;

/** Python-style basic indexing plus one 1-D int32 index tensor or bool mask. */
export const index = defineOp<(input: Tensor, slices: IndexSpec | readonly IndexSpec[]) => Tensor>({
  schema: 'index(Tensor input, any slices)',
  composite: true,
  forward(_ctx, x, slices) {
    const specs = Array.isArray(slices) ? (slices as readonly IndexSpec[]) : [slices as IndexSpec];
    const consuming = checkIndexSpecs(x.ndim, specs);
    let out = x;
    let dim = 0;
    let tensorIndices = 0;
    for (const spec of specs) {
      if (spec === '...') dim += x.ndim - consuming;
      else if (spec === null) out = unsqueeze(out, dim++);
      else if (typeof spec === 'number') {
        if (!Number.isInteger(spec)) throw new IndexError(`index: ${spec} is not an integer index`);
        out = select(out, dim, spec);
      } else if (typeof spec === 'string') {
        const { start, end, step } = parseSlice(spec);
        out = slice(out, dim++, start, end, step);
      } else if (spec instanceof Tensor) {
        if (++tensorIndices > 1) throw new IndexError('index: only one tensor index is supported');
        let idx = spec;
        if (idx.dtype === 'bool') {
          if (idx.ndim !== 1 || idx.shape[0] !== out.shape[dim]) {
            throw new IndexError(`index: the mask ${fmt(idx.shape)} does not match dim ${dim} of size ${out.shape[dim]}`);
          }
          const mask = idx.data();
          const picked = Int32Array.from(mask.keys()).filter((i) => mask[i]);
          idx = Tensor.fromData(picked, [picked.length], 'int32');
        }
        out = indexSelect(out, dim++, idx);
      } else if (typeof spec === 'object') {
        out = slice(out, dim++, spec.start ?? null, spec.end ?? null, spec.step ?? 1);
      } else {
        throw new IndexError(`index: unsupported index ${String(spec)}`);
      }
    }
    return out;
  },
  lower: { eager: 'index: mixed integer, slice and tensor indexing runs eagerly' },
});

/** One step of a view chain: a view op's name, its arguments after the input, and its options. */
export type ViewStep = readonly [op: string, args: readonly unknown[], kwargs: Readonly<Record<string, unknown>>];

/**
 * `input` with `src` written into the view that `chain` (view ops applied in order) selects, as a new tensor:
 * the functional form of `x.narrow(1, 0, 2).copy_(src)`, which a runtime trace records for an in-place write
 * through a view (PyTorch's functionalisation uses `slice_scatter` and friends the same way). Composite: the
 * clone, the views and the in-place copy carry the gradient.
 */
export const viewScatter = defineOp<(input: Tensor, src: Tensor, chain: readonly ViewStep[]) => Tensor>({
  schema: 'viewScatter(Tensor input, Tensor src, any chain)',
  composite: true,
  forward(_ctx, x, src, chain) {
    const out = x.clone();
    let v = out;
    for (const step of chain) {
      const [name, args, kwargs] = step;
      const op = OPS.get(name);
      if (!op) throw new ValueError(`viewScatter: '${name}' is not an op (chain ${JSON.stringify(chain)})`);
      v = op.callWith([v, ...args], kwargs) as Tensor;
    }
    if (v._storage !== out._storage)
      throw new ValueError(`viewScatter: the chain ${JSON.stringify(chain)} does not give a view of the input`);
    v.copy_(src);
    return out;
  },
  lower: { eager: 'viewScatter: writes through a chain of views (an in-place write replayed on a copy)' },
});
