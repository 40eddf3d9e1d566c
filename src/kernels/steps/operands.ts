import type { Storage, Tensor } from '../../runtime/tensor.js';
import { disposePacked, packB, simdGemmAvailable, type PackedB } from '../matmul.js';

/** GEMM operands from tensors: dense float32 views, and weights packed once per version. */

/** Packed GEMM right-hand sides of weights, kept until the weight changes (optimizer steps bump the version). */
const packedWeights = new WeakMap<Storage, { version: number; key: string; packed: PackedB }>();

export function packedWeight(t: Tensor, K: number, N: number, transposed: boolean): PackedB {
  const key = `${t.offset}:${K}x${N}:${transposed}:${simdGemmAvailable()}`;
  const hit = packedWeights.get(t._storage);
  if (hit && hit.version === t._storage.version && hit.key === key) return hit.packed;
  if (hit) disposePacked(hit.packed);
  const packed = packB(denseData(t), K, N, { transposed });
  packedWeights.set(t._storage, { version: t._storage.version, key, packed });
  return packed;
}

/** The elements of `t` in row-major order, without copying when it is contiguous float32. */
export function denseData(t: Tensor): Float32Array {
  if (t.isContiguous() && t._storage.data instanceof Float32Array) return t._storage.data.subarray(t.offset, t.offset + t.numel());
  return t.contiguous().data() as Float32Array;
}
