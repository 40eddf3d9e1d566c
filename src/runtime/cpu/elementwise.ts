import { allocate, castValue, type DType } from '../dtype.js';
import { broadcastShapes, numel, sameShape } from '../shape.js';
import { Tensor } from '../tensor.js';
import { broadcastStrides, elementOffsets, gatherContiguous, isContiguousLayout } from './strided.js';

/** Storage offsets that read `t` broadcast to `shape`, or null when its elements are already in order. */
function readOffsets(t: Tensor, shape: readonly number[]): Int32Array | null {
  if (sameShape(t.shape, shape) && isContiguousLayout(t)) return null;
  return elementOffsets(shape, broadcastStrides(t.shape, t.strides, shape), t.offset);
}

function needsCast(dtype: DType): boolean {
  return dtype !== 'float32';
}

/** out[i] = fn(x[i]) into a new contiguous tensor of `dtype`. */
export function map1(x: Tensor, dtype: DType, fn: (a: number) => number): Tensor {
  const src = gatherContiguous(x._storage.data, x, x.dtype);
  const out = allocate(dtype, src.length);
  if (needsCast(dtype)) for (let i = 0; i < src.length; i++) out[i] = castValue(dtype, fn(src[i]!));
  else for (let i = 0; i < src.length; i++) out[i] = fn(src[i]!);
  return Tensor.fromData(out, x.shape, dtype);
}

/** out = fn(a, b) with PyTorch broadcasting, into a new contiguous tensor of `dtype`. */
export function map2(op: string, a: Tensor, b: Tensor, dtype: DType, fn: (x: number, y: number) => number): Tensor {
  const shape = sameShape(a.shape, b.shape) ? a.shape : broadcastShapes(op, a.shape, b.shape);
  const n = numel(shape);
  const out = allocate(dtype, n);
  const da = a._storage.data;
  const db = b._storage.data;
  const oa = readOffsets(a, shape);
  const ob = readOffsets(b, shape);
  const cast = needsCast(dtype);
  if (!oa && !ob) {
    const sa = a.offset;
    const sb = b.offset;
    if (cast) for (let i = 0; i < n; i++) out[i] = castValue(dtype, fn(da[sa + i]!, db[sb + i]!));
    else for (let i = 0; i < n; i++) out[i] = fn(da[sa + i]!, db[sb + i]!);
  } else if (b.numel() === 1 && !oa) {
    // tensor ∘ scalar: the common case for `x.mul(2)`
    const sa = a.offset;
    const y = db[b.offset]!;
    if (cast) for (let i = 0; i < n; i++) out[i] = castValue(dtype, fn(da[sa + i]!, y));
    else for (let i = 0; i < n; i++) out[i] = fn(da[sa + i]!, y);
  } else {
    const ia = oa ?? identity(n, a.offset);
    const ib = ob ?? identity(n, b.offset);
    if (cast) for (let i = 0; i < n; i++) out[i] = castValue(dtype, fn(da[ia[i]!]!, db[ib[i]!]!));
    else for (let i = 0; i < n; i++) out[i] = fn(da[ia[i]!]!, db[ib[i]!]!);
  }
  return Tensor.fromData(out, shape, dtype);
}

/** out = fn(a, b, c) with broadcasting over all three (where, lerp-like ops). */
export function map3(op: string, a: Tensor, b: Tensor, c: Tensor, dtype: DType, fn: (x: number, y: number, z: number) => number): Tensor {
  const shape = broadcastShapes(op, broadcastShapes(op, a.shape, b.shape), c.shape);
  const n = numel(shape);
  const out = allocate(dtype, n);
  const ia = readOffsets(a, shape) ?? identity(n, a.offset);
  const ib = readOffsets(b, shape) ?? identity(n, b.offset);
  const ic = readOffsets(c, shape) ?? identity(n, c.offset);
  const da = a._storage.data;
  const db = b._storage.data;
  const dc = c._storage.data;
  for (let i = 0; i < n; i++) out[i] = castValue(dtype, fn(da[ia[i]!]!, db[ib[i]!]!, dc[ic[i]!]!));
  return Tensor.fromData(out, shape, dtype);
}

function identity(n: number, offset: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = offset + i;
  return out;
}
