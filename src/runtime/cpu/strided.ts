import { allocate, type DType, type TypedArray } from '../dtype.js';
import { numel, type Shape } from '../shape.js';

/** The storage layout of a tensor, as the CPU kernels see it. */
export interface Layout {
  readonly shape: Shape;
  readonly strides: readonly number[];
  readonly offset: number;
}

/** A typed array read through a layout: what a CPU kernel takes where the ops have a tensor. */
export interface StridedArray extends Layout {
  readonly data: TypedArray;
  readonly dtype: DType;
}

export function isContiguousLayout(l: Layout): boolean {
  let expected = 1;
  for (let i = l.shape.length - 1; i >= 0; i--) {
    const d = l.shape[i]!;
    if (d !== 1 && l.strides[i] !== expected) return false;
    expected *= d;
  }
  return true;
}

/** Storage offsets of every element of `shape` (row-major order) under `strides`, starting at `offset`. */
export function elementOffsets(shape: Shape, strides: readonly number[], offset: number): Int32Array {
  const n = numel(shape);
  const out = new Int32Array(n);
  const nd = shape.length;
  if (n === 0) return out;
  if (nd === 0) {
    out[0] = offset;
    return out;
  }
  const inner = shape[nd - 1]!;
  const innerStride = strides[nd - 1]!;
  const idx = new Array<number>(nd).fill(0);
  let base = offset;
  for (let o = 0; o < n; o += inner) {
    for (let j = 0; j < inner; j++) out[o + j] = base + j * innerStride;
    // advance the outer multi-index like an odometer
    for (let d = nd - 2; d >= 0; d--) {
      idx[d]!++;
      base += strides[d]!;
      if (idx[d]! < shape[d]!) break;
      base -= strides[d]! * shape[d]!;
      idx[d] = 0;
    }
  }
  return out;
}

/** Strides that read `shape` as if broadcast to `target` (stride 0 along broadcast dims). */
export function broadcastStrides(shape: Shape, strides: readonly number[], target: Shape): number[] {
  const out = new Array<number>(target.length).fill(0);
  const lead = target.length - shape.length;
  for (let i = 0; i < shape.length; i++) {
    out[lead + i] = shape[i] === 1 && target[lead + i] !== 1 ? 0 : strides[i]!;
  }
  return out;
}

/** A contiguous copy of the elements in `data` at `layout`, or a zero-copy subarray when already contiguous. */
export function gatherContiguous(data: TypedArray, layout: Layout, dtype: DType): TypedArray {
  const n = numel(layout.shape);
  if (isContiguousLayout(layout)) return data.subarray(layout.offset, layout.offset + n);
  const out = allocate(dtype, n);
  const offs = elementOffsets(layout.shape, layout.strides, layout.offset);
  for (let i = 0; i < n; i++) out[i] = data[offs[i]!]!;
  return out;
}
