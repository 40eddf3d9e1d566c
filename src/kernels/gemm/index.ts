/**
 * The matmul micro-kernel of kiln's 'kernels' backend: out[M×N] = a[M×K] @ b[K×N] (+ bias per column) (then
 * ReLU), with the epilogue fused into the kernel's store so a Linear+bias+ReLU is one call.
 *
 * `gemm` is kiln's own wasm SIMD kernel (simd-kernel.ts), not gpu.js. Measured side by side in one run of
 * bench/gemm.mts on this project's 2-core Xeon (Node 20), 512×512×512 float32, GFLOP/s, median of 10
 * interleaved rounds:
 *   plain JS 0.77 · kiln eager (JS, 4×4 tile) 2.9 · gpu.js webasm naive 0.96 · best gpu.js webasm (4 rows per
 *   thread) 2.3, with gpu.js's worker threads 2.6 · kiln wasm SIMD 1 thread 28.2 copying / 31.4 packed B in
 *   place · 2 threads 41.9 / 48.8 · tfjs-wasm (XNNPACK, 1 thread on Node) 22.4 · jax-js wasm 18.7 (its
 *   2-worker mode 13.5) · onnxruntime-node (native MLAS, 2 threads) 132.
 * gpu.js's generated wasm gathers every thread.x-indexed read lane by lane and holds one output per lane, so
 * its best matmul stays an order of magnitude behind a register-blocked kernel. The issue lets kiln emit its
 * own wasm for such a hot micro-kernel; the gpu.js variants stay exported for the comparison. The second thread
 * pays off when a core is free (1.55× at 512) and measured no slower when other jobs held the other core
 * (chunks are claimed, not assigned), so gemm uses every core by default (setGemmThreads(1) turns it off), and
 * threads.ts's ThreadingPolicy runs jobs on one thread for a while when threaded ones measure slower.
 * The eager runtime (src/runtime/cpu/matmul.ts) calls ./strided.js directly, not this index, which loads gpu.js.
 */

import type { GemmOptions } from './check.js';
import type { PackedB } from './packed-b.js';
import { bmmSimd, gemmSimd } from './simd-gemm.js';

export type { Activation, GemmOptions } from './check.js';
export { PackedB, packB } from './packed-b.js';
export { heapAlloc, heapFree, onHeap } from './heap-views.js';
export { getThreadCount as getGemmThreads, setThreadCount as setGemmThreads } from './threads.js';
export { gemmHeapBytes } from './runtime.js';
export { gemmSimd, bmmSimd } from './simd-gemm.js';
export { gemmGpuJs, gemmGpuJsNaive, gemmGpuJsThreaded, type GpuJsGemmOptions } from './gpujs-gemm.js';
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
