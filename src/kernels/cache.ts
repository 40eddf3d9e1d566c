import type { IGPUKernelSettings, IKernelRunShortcut } from 'gpu.js';
import { gpuFor, type KernelBackendName } from './backend.js';

/**
 * Compiled gpu.js kernels, shared by every compiled program in the process. A kernel's source already bakes
 * in the shapes, strides and dtypes it was generated for, so the source text (plus the output size, the
 * argument sizes and the mode) identifies it: two graphs, or two calls, that need the same kernel compile it once.
 */

export interface KernelSpec {
  /** The kernel function's source, `function(a0, a1, …) { … }`. */
  readonly source: string;
  /** gpu.js output dims: `[cells]` for kernels over a flat output, `[x, y]` where rows must stay SIMD-uniform. */
  readonly output: readonly number[];
  /** Components per output cell: 1, or 4 when the kernel returns `[v0, v1, v2, v3]`. */
  readonly components?: 1 | 4;
  /** The longest loop in the kernel (gpu.js refuses loops past `loopMaxIterations`). */
  readonly maxLoop?: number;
  /** Small lookup tables the source reads as `this.constants.name[i]`. */
  readonly constants?: Readonly<Record<string, Float32Array>>;
  /** gpu.js's async contract: calls return a Promise and webasm splits the cells over its worker pool. */
  readonly asyncMode?: boolean;
}

export interface KernelCacheStats {
  /** gpu.js kernels created (each one a source translation and a wasm/JS/GL compile). */
  compiled: number;
  /** Lookups answered from the cache. */
  hits: number;
  /** Kernel plans built (one per compiled graph and input signature). */
  plans: number;
}

const cache = new Map<string, IKernelRunShortcut>();
const stats: KernelCacheStats = { compiled: 0, hits: 0, plans: 0 };

/** Counters since the process started (or since `resetKernelCache`). */
export function kernelCacheStats(): KernelCacheStats {
  return { ...stats };
}

/** Forget every compiled kernel and zero the counters. */
export function resetKernelCache(): void {
  cache.clear();
  stats.compiled = 0;
  stats.hits = 0;
  stats.plans = 0;
}

export function countPlan(): void {
  stats.plans++;
}

/** The kernel for `spec` on `mode`, compiled on first use. Argument sizes are fixed by the caller's key. */
export function getKernel(mode: KernelBackendName, spec: KernelSpec, argKey: string): IKernelRunShortcut {
  const key = `${mode}${spec.asyncMode ? ' async' : ''}|${spec.output.join('x')}x${spec.components ?? 1}|${argKey}|${spec.source}`;
  const hit = cache.get(key);
  if (hit) {
    stats.hits++;
    return hit;
  }
  const settings = {
    output: [...spec.output],
    // gpu.js refuses loops longer than this; kernels loop over known extents (a reduction's length, K)
    loopMaxIterations: Math.max(1000, spec.maxLoop ?? 0),
    constants: spec.constants ?? {},
    precision: 'single',
    tactic: 'precision',
    ...(spec.components === 4 ? { returnType: 'Array(4)' } : {}),
    ...(spec.asyncMode ? { asyncMode: true } : {}),
  };
  const kernel = gpuFor(mode).createKernel(spec.source, settings as IGPUKernelSettings);
  stats.compiled++;
  cache.set(key, kernel);
  return kernel;
}
