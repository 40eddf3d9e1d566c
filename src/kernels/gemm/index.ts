/**
 * The matmul micro-kernel of kiln's 'kernels' backend: out[M×N] = a[M×K] @ b[K×N] (+ bias per column) (then
 * ReLU), with the epilogue fused into the kernel's store so a Linear+bias+ReLU is one call.
 *
 * `gemm` is kiln's own wasm SIMD kernel (simd-kernel.ts), not gpu.js: measured side by side in one run of
 * bench/gemm.mts on this project's 2-core Xeon (Node 20), 512×512×512 float32, medians of 15:
 *   plain JS 0.8 GFLOP/s · gpu.js webasm naive ~1 · best gpu.js webasm (4 rows per thread) ~2 ·
 *   kiln wasm SIMD, 1 thread ~30 · kiln wasm SIMD, 2 threads ~55 (see bench/gemm.mts for the full table).
 * gpu.js's generated wasm gathers every thread.x-indexed read lane by lane and holds one output per lane, so
 * its matmul stays an order of magnitude behind a register-blocked kernel; the issue allows kiln to emit its
 * own wasm for such a hot micro-kernel, and the gpu.js variants stay here for the comparison.
 */

import type { GemmOptions } from './check.js';
import type { PackedB } from './packed-b.js';
import { bmmSimd, gemmSimd } from './simd-gemm.js';

export type { Activation, GemmOptions } from './check.js';
export { PackedB, packB } from './packed-b.js';
export { heapAlloc, heapFree, onHeap } from './heap-views.js';
export { getThreadCount as getGemmThreads, setThreadCount as setGemmThreads } from './threads.js';
export { gemmSimd, bmmSimd } from './simd-gemm.js';
export { gemmGpuJs, gemmGpuJsNaive } from './gpujs-gemm.js';
export { gemmReference } from './reference.js';

/** out[M×N] = a[M×K] @ b[K×N] (+ bias) (then ReLU); b may be [N, K] with `bTransposed`, or pre-packed. */
export function gemm(a: Float32Array, b: Float32Array | PackedB, M: number, K: number, N: number, opts: GemmOptions = {}): Float32Array {
  return gemmSimd(a, b, M, K, N, opts);
}

/** out[batch, M, N] = a[batch, M, K] @ b[batch, K, N]; a b of one [K, N] matrix (or a PackedB) is broadcast. */
export function bmm(
  a: Float32Array,
  b: Float32Array | PackedB,
  batch: number,
  M: number,
  K: number,
  N: number,
  opts: GemmOptions = {},
): Float32Array {
  return bmmSimd(a, b, batch, M, K, N, opts);
}
