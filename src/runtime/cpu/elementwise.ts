import { allocate, castValue, type DType, type TypedArray } from '../dtype.js';
import { broadcastShapes, numel, sameShape, type Shape } from '../shape.js';
import { broadcastStrides, elementOffsets, gatherContiguous, isContiguousLayout, type StridedArray } from './strided.js';

/** The contiguous result of an element-wise kernel and the (broadcast) shape it has. */
export interface MapResult {
  readonly data: TypedArray;
  readonly shape: Shape;
}

/** Storage offsets that read `t` broadcast to `shape`, or null when its elements are already in order. */
function readOffsets(t: StridedArray, shape: Shape): Int32Array | null {
  if (sameShape(t.shape, shape) && isContiguousLayout(t)) return null;
  return elementOffsets(shape, broadcastStrides(t.shape, t.strides, shape), t.offset);
}

function needsCast(dtype: DType): boolean {
  return dtype !== 'float32';
}

/** out[i] = fn(x[i]) into a new contiguous array of `dtype` (x's shape). */
export function map1(x: StridedArray, dtype: DType, fn: (a: number) => number): TypedArray {
  const src = gatherContiguous(x.data, x, x.dtype);
  const out = allocate(dtype, src.length);
  if (needsCast(dtype)) for (let i = 0; i < src.length; i++) out[i] = castValue(dtype, fn(src[i]!));
  else for (let i = 0; i < src.length; i++) out[i] = fn(src[i]!);
  return out;
}

/** out = fn(a, b) with PyTorch broadcasting, into a new contiguous array of `dtype`. */
export function map2(op: string, a: StridedArray, b: StridedArray, dtype: DType, fn: (x: number, y: number) => number): MapResult {
  const shape = sameShape(a.shape, b.shape) ? a.shape : broadcastShapes(op, a.shape, b.shape);
  const n = numel(shape);
  const out = allocate(dtype, n);
  const da = a.data;
  const db = b.data;
  const oa = readOffsets(a, shape);
  const ob = readOffsets(b, shape);
  const cast = needsCast(dtype);
  if (!oa && !ob) {
    const sa = a.offset;
    const sb = b.offset;
    if (cast) for (let i = 0; i < n; i++) out[i] = castValue(dtype, fn(da[sa + i]!, db[sb + i]!));
    else for (let i = 0; i < n; i++) out[i] = fn(da[sa + i]!, db[sb + i]!);
  } else if (numel(b.shape) === 1 && !oa) {
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
  return { data: out, shape };
}

/** out = fn(a, b, c) with broadcasting over all three (where, lerp-like ops). */
export function map3(
  op: string,
  a: StridedArray,
  b: StridedArray,
  c: StridedArray,
  dtype: DType,
  fn: (x: number, y: number, z: number) => number,
): MapResult {
  const shape = broadcastShapes(op, broadcastShapes(op, a.shape, b.shape), c.shape);
  const n = numel(shape);
  const out = allocate(dtype, n);
  const ia = readOffsets(a, shape) ?? identity(n, a.offset);
  const ib = readOffsets(b, shape) ?? identity(n, b.offset);
  const ic = readOffsets(c, shape) ?? identity(n, c.offset);
  const da = a.data;
  const db = b.data;
  const dc = c.data;
  for (let i = 0; i < n; i++) out[i] = castValue(dtype, fn(da[ia[i]!]!, db[ib[i]!]!, dc[ic[i]!]!));
  return { data: out, shape };
}

function identity(n: number, offset: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = offset + i;
  return out;
}
