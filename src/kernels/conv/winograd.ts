/**
 * Winograd F(2×2, 3×3) convolution for 3×3, stride-1, undilated, ungrouped convs over channels-last inputs
 * whose channel counts are multiples of 4 (XNNPACK and oneDNN take this route for such convs too). Per round of
 * tiles: the input transform (wasm SIMD, winograd-kernel.ts) writes 16 matrices V [tiles, C], the GEMM's
 * batched job multiplies each by its transformed weight U [C, O] (packed once per weight, threaded like any
 * GEMM job), and the output transform adds the bias, applies ReLU and writes the NHWC result.
 */

import { ValueError } from '../../errors.js';
import { packedBytes, packInto } from '../gemm/packed-b.js';
import { FLAG_BIAS, FLAG_RELU } from '../gemm/simd-kernel.js';
import type { ConvShape } from './conv-wasm.js';
import { getConvRuntime } from './runtime.js';
import { windowTable } from './window.js';

/** F(2×2, 3×3)'s weight transform G (4×3). */
const G = [
  [1, 0, 0],
  [0.5, 0.5, 0.5],
  [0.5, -0.5, 0.5],
  [0, 0, 1],
];

/** Floats of V (or M) per round: 16 matrices of a round's tiles, 1 MiB, so a round's operands stay in L2. */
const ROUND_FLOATS = 1 << 18;

let calls = 0;

/** @internal How many convolutions have run the Winograd path in this process (for tests). */
export function winogradCallCount(): number {
  return calls;
}

/** Whether a conv of this shape takes the Winograd path. */
export function winogradApplies(s: ConvShape): boolean {
  const { g } = s;
  return (
    s.groups === 1 &&
    g.kh === 3 &&
    g.kw === 3 &&
    g.sh === 1 &&
    g.sw === 1 &&
    g.dh === 1 &&
    g.dw === 1 &&
    s.C % 4 === 0 &&
    s.O % 4 === 0 &&
    g.OH === g.H + 2 * g.ph - 2 &&
    g.OW === g.W + 2 * g.pw - 2
  );
}

// A WinogradWeight nobody can reach any more gives its wasm memory back (as PackedB does); dispose() does it now.
const registry = new FinalizationRegistry<number>((addr) => getConvRuntime().gemm.heap.release(addr));

/** A 3×3 conv weight transformed to the 16 matrices U = G g Gᵀ [C, O] and packed for the GEMM, in wasm memory. */
export class WinogradWeight {
  private addr: number;
  /** bytes per packed U */
  readonly perBytes: number;
  /** bytes between NR-column panels of one packed U */
  readonly panelBytes: number;

  /** From a weight [O, 3, 3, C] (convWeights' channels-last order). */
  constructor(
    weight: Float32Array,
    readonly O: number,
    readonly C: number,
  ) {
    if (weight.length < O * 9 * C) throw new ValueError(`winogradWeight: weight has ${weight.length} elements, needs ${O * 9 * C}`);
    const rt = getConvRuntime().gemm;
    const u = new Float32Array(16 * C * O);
    const tmp = new Float64Array(12);
    for (let o = 0; o < O; o++) {
      for (let c = 0; c < C; c++) {
        // G g: 4×3
        for (let i = 0; i < 4; i++)
          for (let b = 0; b < 3; b++) {
            let v = 0;
            for (let a = 0; a < 3; a++) v += G[i]![a]! * weight[((o * 3 + a) * 3 + b) * C + c]!;
            tmp[i * 3 + b] = v;
          }
        // (G g) Gᵀ: 4×4, U_ij[c][o]
        for (let i = 0; i < 4; i++)
          for (let j = 0; j < 4; j++) {
            let v = 0;
            for (let b = 0; b < 3; b++) v += tmp[i * 3 + b]! * G[j]![b]!;
            u[((i * 4 + j) * C + c) * O + o] = v;
          }
      }
    }
    this.perBytes = packedBytes(rt, C, O);
    this.panelBytes = C * rt.cfg.nr * 4;
    this.addr = rt.heap.alloc(16 * this.perBytes);
    registry.register(this, this.addr, this);
    const stage = rt.heap.alloc(u.byteLength);
    try {
      rt.heap.f32.set(u, stage >> 2);
      for (let k = 0; k < 16; k++) packInto(rt, stage + k * C * O * 4, C, O, false, this.addr + k * this.perBytes);
    } finally {
      rt.heap.release(stage);
    }
  }

  address(op: string): number {
    if (this.addr < 0) throw new ValueError(`${op}: the Winograd weight [${this.O}, ${this.C}, 3, 3] was disposed`);
    return this.addr;
  }

  dispose(): void {
    if (this.addr < 0) return;
    registry.unregister(this);
    getConvRuntime().gemm.heap.release(this.addr);
    this.addr = -1;
  }
}

/**
 * The Winograd convolution of channels-last `x` [N, H, W, C] into `out` [N·OH·OW, O] (NHWC): the same result as
 * conv2dForward up to rounding, for a shape winogradApplies to. Addresses: `x`, `out`, `bias`, `zero` (C zero
 * floats) and `tile` scratch are in wasm memory already (conv-wasm.ts places them).
 */
export function runWinograd(
  xAddr: number,
  w: WinogradWeight,
  biasAddr: number,
  shape: ConvShape,
  outAddr: number,
  relu: boolean,
  take: (bytes: number) => number,
  zero: number,
): void {
  const { N, C, O, g } = shape;
  if (w.C !== C || w.O !== O)
    throw new ValueError(`conv2dForward: the Winograd weight is [${w.O}, ${w.C}, 3, 3], the conv wants [${O}, ${C}, 3, 3]`);
  const rt = getConvRuntime();
  calls++;
  const TH = Math.ceil(g.OH / 2);
  const TW = Math.ceil(g.OW / 2);
  const tiles = N * TH * TW;
  const T = Math.max(1, Math.min(tiles, Math.floor(ROUND_FLOATS / (16 * Math.max(C, O)))));
  const V = take(16 * T * C * 4);
  const M = take(16 * T * O * 4);
  const tile = take(rt.gemm.cfg.mr * rt.gemm.cfg.nr * 4);
  // a 1×1 window over one row of T pixels: entry q is q·C·4, the byte offset of tile q's row of V
  const rows = windowTable(1, C, { kh: 1, kw: 1, sh: 1, sw: 1, ph: 0, pw: 0, dh: 1, dw: 1, H: 1, W: T, OH: 1, OW: T });
  const flags = (biasAddr ? FLAG_BIAS : 0) | (relu ? FLAG_RELU : 0);
  const bp = w.address('conv2dForward');
  for (let t0 = 0; t0 < tiles; t0 += T) {
    const t1 = Math.min(tiles, t0 + T);
    rt.kernels.winoInput(xAddr, zero, g.H, g.W, C, g.ph, g.pw, TH, TW, t0, t1, V, T * C * 4);
    // the 16 products V_ij U_ij on the conv kernel as 1×1 convs: each tile's row read in place (no A packing)
    for (let k = 0; k < 16; k++) {
      rt.kernels.conv(
        V + k * T * C * 4,
        zero,
        rows,
        1,
        C,
        bp + k * w.perBytes,
        w.panelBytes,
        M + k * T * O * 4,
        O * 4,
        0,
        t1 - t0,
        O,
        0,
        0,
        tile,
      );
    }
    rt.kernels.winoOutput(M, T * O * 4, O, g.OH, g.OW, TH, TW, t0, t1, outAddr, biasAddr, flags);
  }
}
