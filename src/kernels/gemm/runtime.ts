/**
 * The instantiated SIMD GEMM kernels: one module, compiled once per process on first use, on the one shared
 * heap. Worker threads instantiate the same compiled module on the same memory (see threads.ts).
 */

import { buildGemmModule, scratchBytes, type KernelConfig } from './simd-kernel.js';
import { wasm, type WasmModule } from './wasm-api.js';
import { WasmHeap } from './wasm-heap.js';

/**
 * The tile and blocking, measured on this project's 2-core Xeon (Node 20, wasm SIMD without FMA): a 4×8 tile
 * with no K unrolling ran the 512 matmul at ~32 GFLOP/s on one core, ahead of 3×16 (27), 4×12 and 6×8 (24–26,
 * TurboFan spills past 15 live xmm registers) and every unrolled variant (TurboFan hoists all loads of an
 * unrolled step to the top of the loop body, so U=2/4 spill: 21–25). The K/M blocks barely mattered (±1
 * GFLOP/s at 256–1024); 256/64 keeps a packed A block at 64 KiB, well inside L2.
 * Where the engine has relaxed SIMD (Node 22; Node 20 behind --experimental-wasm-relaxed-simd) the kernel uses
 * f32x4.relaxed_madd, which V8 lowers to vfmadd231ps: under the flag the same tile's best runs reached 36–40
 * GFLOP/s against 31–33 for mul + add, though medians on this shared machine were too noisy to separate.
 */
export const KERNEL_CONFIG: KernelConfig = { mr: 4, nr: 8, unroll: 1, kc: 256, mc: 64, relaxed: false };

export interface GemmExports {
  gemm(
    a: number,
    ldaB: number,
    bp: number,
    panelB: number,
    c: number,
    ldcB: number,
    M: number,
    N: number,
    K: number,
    flags: number,
    biasp: number,
    apack: number,
    scratch: number,
  ): void;
  packA(src: number, ldaB: number, mc: number, kc: number, dst: number): void;
  packB(src: number, skB: number, sjB: number, K: number, N: number, dst: number): void;
}

export interface ThreadScratch {
  readonly apack: number;
  readonly tile: number;
}

export interface GemmRuntime {
  readonly cfg: KernelConfig;
  readonly heap: WasmHeap;
  readonly module: WasmModule;
  readonly kernels: GemmExports;
  /** The calling thread's packed-A block and edge tile. */
  readonly scratch: ThreadScratch;
}

/** Whether this engine validates relaxed SIMD (Node 22+; Node 20 only behind --experimental-wasm-relaxed-simd). */
export function hasRelaxedSimd(): boolean {
  try {
    return wasm.validate(buildGemmModule({ ...KERNEL_CONFIG, relaxed: true }));
  } catch {
    return false;
  }
}

let runtime: GemmRuntime | undefined;

export function allocScratch(heap: WasmHeap, cfg: KernelConfig): ThreadScratch {
  const bytes = scratchBytes(cfg);
  return { apack: heap.alloc(bytes.apack), tile: heap.alloc(bytes.tile) };
}

/** Bytes of wasm memory the GEMM holds (its heap only grows), or 0 before its first use; does not start it. */
export function gemmHeapBytes(): number {
  return runtime?.heap.memory.buffer.byteLength ?? 0;
}

export function getRuntime(): GemmRuntime {
  if (runtime) return runtime;
  const cfg = { ...KERNEL_CONFIG, relaxed: hasRelaxedSimd() };
  const heap = new WasmHeap();
  const module = new wasm.Module(buildGemmModule(cfg));
  const instance = new wasm.Instance(module, { env: { memory: heap.memory } });
  runtime = { cfg, heap, module, kernels: instance.exports as unknown as GemmExports, scratch: allocScratch(heap, cfg) };
  return runtime;
}
