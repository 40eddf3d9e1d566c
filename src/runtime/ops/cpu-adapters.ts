import * as cpu from '../cpu/elementwise.js';
import { rowsOver as cpuRowsOver } from '../cpu/reduce.js';
import type { StridedArray } from '../cpu/strided.js';
import type { DType, TypedArray } from '../dtype.js';
import { Tensor } from '../tensor.js';

/**
 * The ops' side of the raw CPU kernels: a tensor is handed to a kernel as its storage array and layout, and
 * the kernel's contiguous result comes back as a new tensor. The kernels themselves know nothing of Tensor.
 */

export { reducedShape } from '../cpu/reduce.js';

/** `t`'s storage and layout, as a CPU kernel reads it. */
export function strided(t: Tensor): StridedArray {
  return { data: t._storage.data, shape: t.shape, strides: t.strides, offset: t.offset, dtype: t.dtype };
}

/** out[i] = fn(x[i]) into a new contiguous tensor of `dtype`. */
export function map1(x: Tensor, dtype: DType, fn: (a: number) => number): Tensor {
  const s = strided(x);
  return Tensor.fromData(cpu.map1(s, dtype, fn), s.shape, dtype);
}

/** out = fn(a, b) with PyTorch broadcasting, into a new contiguous tensor of `dtype`. */
export function map2(op: string, a: Tensor, b: Tensor, dtype: DType, fn: (x: number, y: number) => number): Tensor {
  const { data, shape } = cpu.map2(op, strided(a), strided(b), dtype, fn);
  return Tensor.fromData(data, shape, dtype);
}

/** out = fn(a, b, c) with broadcasting over all three (where, lerp-like ops). */
export function map3(op: string, a: Tensor, b: Tensor, c: Tensor, dtype: DType, fn: (x: number, y: number, z: number) => number): Tensor {
  const { data, shape } = cpu.map3(op, strided(a), strided(b), strided(c), dtype, fn);
  return Tensor.fromData(data, shape, dtype);
}

/** `x` laid out as `outer` rows of the `inner` elements that reduce into one output (see cpu/reduce.ts). */
export function rowsOver(x: Tensor, dims: readonly number[]): { data: TypedArray; outer: number; inner: number } {
  return cpuRowsOver(strided(x), dims);
}
