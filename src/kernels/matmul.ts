import { getKernelBackend } from './backend.js';
import * as simd from './gemm/index.js';

/**
 * The GEMM kiln's matmul, linear and conv2d lowerings call, as a thin adapter over ./gemm: kiln's own wasm
 * SIMD GEMM (a 4×8 register tile over packed B panels, bias and relu fused into its store, ~30 GFLOP/s on one
 * core of this machine at 512³ where gpu.js's generated wasm reaches 1–2). When wasm SIMD cannot run, the
 * same calls fall back to ./gemm's `gemmGpuJs` (the 4-rows-per-thread gpu.js kernel) on the active kernel
 * backend, so the fallback follows `setKernelBackend` like every other generated kernel.
 */

/** B in the gpu.js fallback's layout: the weight as given ([K, N], or [N, K] when `transposed`), copied once. */
class FallbackPackedB {
  constructor(
    readonly K: number,
    readonly N: number,
    readonly data: Float32Array,
    readonly transposed: boolean,
  ) {}
}

/** A weight packed once for the GEMM that will read it. */
export type PackedB = simd.PackedB | FallbackPackedB;

let simdWorks: boolean | undefined;

/** Force the gpu.js fallback (false) or probe again (undefined); for tests of the fallback. */
export function useSimdGemm(flag: boolean | undefined): void {
  simdWorks = flag === false ? false : undefined;
}

/** Whether kiln's wasm SIMD GEMM runs here (it needs WebAssembly with SIMD). */
export function simdGemmAvailable(): boolean {
  if (simdWorks === undefined) {
    try {
      simd.gemm(new Float32Array([2]), new Float32Array([3]), 1, 1, 1);
      simdWorks = true;
    } catch {
      simdWorks = false;
    }
  }
  return simdWorks;
}

export function isPacked(b: unknown): b is PackedB {
  return b instanceof simd.PackedB || b instanceof FallbackPackedB;
}

/** Give a packed weight's memory back now (wasm memory for the SIMD GEMM). */
export function disposePacked(b: PackedB): void {
  if (b instanceof simd.PackedB) b.dispose();
}

/** A buffer the GEMM writes without copying out (wasm memory when the SIMD GEMM runs), and its release. */
export function gemmBuffer(length: number): { data: Float32Array; free: () => void } {
  if (simdGemmAvailable()) {
    const data = simd.heapAlloc(length);
    return { data, free: () => simd.heapFree(data) };
  }
  return { data: new Float32Array(length), free: () => {} };
}

/** Pack B ([K, N], or [N, K] when `transposed`) once, for a weight used on every call. */
export function packB(b: Float32Array, K: number, N: number, opts: { transposed?: boolean } = {}): PackedB {
  if (simdGemmAvailable()) return simd.packB(b, K, N, opts);
  return new FallbackPackedB(K, N, b.slice(0, K * N), opts.transposed ?? false);
}

/** out[M×N] = a[M×K] · b (+ bias per column) (then relu). `a` is row-major and dense. */
export function gemm(
  a: Float32Array,
  b: Float32Array | PackedB,
  M: number,
  K: number,
  N: number,
  opts: simd.GemmOptions = {},
): Float32Array {
  if (b instanceof FallbackPackedB) {
    return simd.gemmGpuJs(a, b.data, M, K, N, { ...opts, bTransposed: b.transposed, mode: getKernelBackend() });
  }
  // gemmGpuJs reads a B packed for the SIMD GEMM too (unpacked from wasm memory)
  if (!simdGemmAvailable()) return simd.gemmGpuJs(a, b, M, K, N, { ...opts, mode: getKernelBackend() });
  return simd.gemm(a, b, M, K, N, opts);
}
