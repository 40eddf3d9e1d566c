/**
 * The convolution and pooling kernels (conv-kernel.ts), instantiated once per process on the GEMM's shared
 * wasm memory, so they read activations the GEMM wrote and write where the GEMM reads, with no copies.
 */

import { getRuntime, type GemmRuntime } from '../gemm/runtime.js';
import { wasm, type WasmModule } from '../gemm/wasm-api.js';
import { buildConvModule } from './conv-kernel.js';

export interface ConvExports {
  conv(
    inBase: number,
    zero: number,
    ind: number,
    taps: number,
    C: number,
    bp: number,
    panelB: number,
    out: number,
    ldcB: number,
    p0: number,
    p1: number,
    N: number,
    flags: number,
    biasp: number,
    scratch: number,
  ): void;
  col2im(rows: number, ldrB: number, ind: number, taps: number, C: number, dx: number, p0: number, p1: number): void;
  wgrad(
    inBase: number,
    ind: number,
    taps: number,
    C: number,
    g: number,
    ldgB: number,
    P: number,
    dw: number,
    ldwB: number,
    Npad: number,
    block: number,
  ): void;
  maxPool(
    inBase: number,
    ind: number,
    taps: number,
    C: number,
    out: number,
    PL: number,
    nB: number,
    pB: number,
    cB: number,
    p0: number,
    p1: number,
  ): void;
  avgPool(
    inBase: number,
    ind: number,
    taps: number,
    C: number,
    out: number,
    PL: number,
    nB: number,
    pB: number,
    cB: number,
    p0: number,
    p1: number,
    div: number,
  ): void;
  maxPoolBackward(inBase: number, ind: number, taps: number, C: number, g: number, ldgB: number, gx: number, p0: number, p1: number): void;
  winoInput(
    inBase: number,
    zero: number,
    H: number,
    W: number,
    C: number,
    ph: number,
    pw: number,
    TH: number,
    TW: number,
    t0: number,
    t1: number,
    V: number,
    planeB: number,
  ): void;
  winoOutput(
    M: number,
    planeB: number,
    O: number,
    OH: number,
    OW: number,
    TH: number,
    TW: number,
    t0: number,
    t1: number,
    out: number,
    biasp: number,
    flags: number,
  ): void;
  avgPoolBackward(ind: number, taps: number, C: number, g: number, ldgB: number, div: number, gx: number, p0: number, p1: number): void;
}

export interface ConvRuntime {
  readonly gemm: GemmRuntime;
  /** The compiled module, which worker threads instantiate on the same memory (threads.ts). */
  readonly module: WasmModule;
  readonly kernels: ConvExports;
}

let runtime: ConvRuntime | undefined;

export function getConvRuntime(): ConvRuntime {
  if (runtime) return runtime;
  const gemm = getRuntime();
  const module = new wasm.Module(buildConvModule(gemm.cfg));
  const instance = new wasm.Instance(module, { env: { memory: gemm.heap.memory } });
  runtime = { gemm, module, kernels: instance.exports as unknown as ConvExports };
  return runtime;
}
