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

/** Rows per block of the transposing copy in placeRows: a block's reads stay in cache while its columns are written. */
const ROW_BLOCK = 32;

/**
 * A 2-D float32 GEMM left operand `t` [M, K] as dense rows: its own data when contiguous, else copied in one
 * pass into `scratch()` (wasm memory, where the GEMM reads it in place): row by row when its rows are
 * contiguous, else (a transposed view `t(g)`: rows run down g's columns) in blocks of rows. With `rowSums`, also
 * writes Σ_k t[i, k] for each row i, accumulated in float64 while the row is in cache (a bias gradient
 * `sum(g, [0])` of t = gᵀ, fused into the pass that reads g anyway).
 */
export function placeRows(t: Tensor, scratch: () => Float32Array, rowSums?: Float32Array): Float32Array {
  const [M, K] = t.shape as [number, number];
  const src = t._storage.data as Float32Array;
  let rows: Float32Array;
  if (t.isContiguous()) {
    rows = src.subarray(t.offset, t.offset + M * K);
    if (rowSums) sumRows(rows, 0, M, K, rowSums);
    return rows;
  }
  rows = scratch();
  const [si, sk] = t.strides as [number, number];
  for (let i0 = 0; i0 < M; i0 += ROW_BLOCK) {
    const i1 = Math.min(M, i0 + ROW_BLOCK);
    if (sk === 1) {
      for (let i = i0; i < i1; i++) rows.set(src.subarray(t.offset + i * si, t.offset + i * si + K), i * K);
    } else {
      for (let k = 0; k < K; k++) {
        const col = t.offset + k * sk;
        for (let i = i0; i < i1; i++) rows[i * K + k] = src[col + i * si]!;
      }
    }
    if (rowSums) sumRows(rows, i0, i1, K, rowSums);
  }
  return rows;
}

/** rowSums[i] = Σ_k rows[i·K + k] for rows i0 ≤ i < i1, accumulated in float64. */
function sumRows(rows: Float32Array, i0: number, i1: number, K: number, rowSums: Float32Array): void {
  for (let i = i0; i < i1; i++) {
    let s = 0;
    for (let k = i * K; k < (i + 1) * K; k++) s += rows[k]!;
    rowSums[i] = s;
  }
}
