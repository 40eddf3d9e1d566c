/**
 * JS drivers of the wasm convolution and pooling kernels (conv-kernel.ts), on channels-last data: an input
 * [N, H, W, C] and a result [N·OH·OW, O] (NHWC), both Float32Arrays. Operands that live in the GEMM's wasm
 * memory are used in place, others are staged there for the call; results are written in place when `out`
 * lives there, else copied out.
 *
 * - conv2dForward: the indirect GEMM with the bias (and a folded batch norm) and ReLU in its store;
 * - conv2dInputGrad: rows = g · W per group on the GEMM (a few thousand pixels a round), then col2im;
 * - conv2dWeightGrad: dWᵀ = Σ_p in[window]ᵀ g[p] on the wgrad kernel, then permuted to [O, C/groups, kh, kw];
 * - conv2dBiasGrad: column sums of g;
 * - maxPool2d, avgPool2d and their backward.
 * The eager kernels (runtime/ops/conv.ts, pool.ts) are the reference these are tested against.
 */

import { ValueError } from '../../errors.js';
import type { Window2d } from '../../runtime/cpu/conv.js';
import { gemm } from '../gemm/index.js';
import { PackedB, packB } from '../gemm/packed-b.js';
import { FLAG_BIAS, FLAG_RELU } from '../gemm/simd-kernel.js';
import { getConvRuntime } from './runtime.js';
import { runRange } from './threads.js';
import { runWinograd, winogradApplies, WinogradWeight } from './winograd.js';
import { avgDivisors, windowTable } from './window.js';

/** A convolution's shape: N images of C channels, O output channels in `groups` groups, window `g`. */
export interface ConvShape {
  readonly N: number;
  readonly C: number;
  readonly O: number;
  readonly groups: number;
  readonly g: Window2d;
}

/** Pixels of the input-gradient rows per GEMM + col2im round, at most this many floats of rows (2 MiB). */
const ROWS_CHUNK = 1 << 19;
/** Pixels per weight-gradient block: its slice of g (block × O floats) stays in L1. */
const WGRAD_BLOCK = 256;

/** The conv kernel's edge tile, one per thread. */
const TILE_BYTES = (cfg: { mr: number; nr: number }): number => cfg.mr * cfg.nr * 4;

type Scratch = { take(bytes: number): number; releaseAll(): void };

function check(op: string, what: string, a: Float32Array, want: number): void {
  if (a.length < want) throw new ValueError(`${op}: ${what} has ${a.length} elements, needs ${want}`);
}

function checkShape(op: string, s: ConvShape): void {
  const { N, C, O, groups, g } = s;
  const dims = { N, C, O, groups, ...g };
  for (const [k, v] of Object.entries(dims)) {
    if (!Number.isInteger(v) || v < (k === 'ph' || k === 'pw' ? 0 : 1)) {
      throw new ValueError(`${op}: ${k} must be a ${k === 'ph' || k === 'pw' ? 'non-negative' : 'positive'} integer, got ${v}`);
    }
  }
  if (C % groups !== 0 || O % groups !== 0) throw new ValueError(`${op}: groups=${groups} must divide C=${C} and O=${O}`);
}

/** The address of `x` in wasm memory: itself when it lives there, else a staged copy (or zeros). */
function place(s: Scratch, x: Float32Array | null, length: number): number {
  const { heap } = getConvRuntime().gemm;
  if (x && heap.owns(x)) return x.byteOffset;
  const addr = s.take(length * 4);
  if (x) heap.f32.set(x.subarray(0, length), addr >> 2);
  else heap.f32.fill(0, addr >> 2, (addr >> 2) + length);
  return addr;
}

/** Runs `fill(address)` on `out` in place when it lives in wasm memory, else on a scratch block copied out after. */
function into(s: Scratch, out: Float32Array, length: number, zero: boolean, fill: (addr: number) => void): void {
  const { heap } = getConvRuntime().gemm;
  const inPlace = heap.owns(out);
  const addr = inPlace ? out.byteOffset : s.take(length * 4);
  if (zero) heap.f32.fill(0, addr >> 2, (addr >> 2) + length);
  fill(addr);
  if (!inPlace) out.set(heap.view(addr, length));
}

function withScratch<T>(fn: (s: Scratch) => T): T {
  const s = getConvRuntime().gemm.heap.scratch();
  try {
    return fn(s);
  } finally {
    s.releaseAll();
  }
}

/**
 * A conv weight packed for conv2dForward: per group, [kh·kw·C/groups, O/groups] in the GEMM's NR-column
 * panels, from a weight laid out [O, kh, kw, C/groups] (convWeights' channels-last order).
 */
export class PackedConvWeight {
  readonly groups: PackedB[];
  constructor(
    weight: Float32Array,
    readonly O: number,
    readonly K: number,
    groups: number,
  ) {
    const Og = O / groups;
    check('packConvWeight', 'weight', weight, O * K);
    this.groups = Array.from({ length: groups }, (_, i) =>
      packB(weight.subarray(i * Og * K, (i + 1) * Og * K), K, Og, { transposed: true }),
    );
  }
  dispose(): void {
    for (const p of this.groups) p.dispose();
  }
}

/**
 * out[p, o] = bias[o] + Σ in[window(p)] · w[o] (then ReLU) for channels-last `x` [N, H, W, C]; `weight` packed
 * from [O, kh, kw, C/groups] (or a PackedB of it for groups = 1), or a WinogradWeight for the convs
 * winogradApplies to (Winograd F(2×2, 3×3), winograd.ts).
 */
export function conv2dForward(
  x: Float32Array,
  weight: PackedConvWeight | PackedB | WinogradWeight,
  bias: Float32Array | null,
  shape: ConvShape,
  out: Float32Array,
  relu = false,
): Float32Array {
  checkShape('conv2dForward', shape);
  const { N, C, O, groups, g } = shape;
  const Cg = C / groups;
  const Og = O / groups;
  const taps = g.kh * g.kw;
  const P = N * g.OH * g.OW;
  if (weight instanceof WinogradWeight && !winogradApplies(shape)) {
    throw new ValueError('conv2dForward: a Winograd weight takes 3×3, stride-1, undilated, ungrouped convs of channels in multiples of 4');
  }
  const packs = weight instanceof WinogradWeight ? [] : weight instanceof PackedB ? [weight] : weight.groups;
  if (!(weight instanceof WinogradWeight) && (packs.length !== groups || packs.some((p) => p.K !== taps * Cg || p.N !== Og))) {
    throw new ValueError(`conv2dForward: the packed weight is not [${groups} × ${taps * Cg}, ${Og}] for this convolution`);
  }
  check('conv2dForward', 'x', x, N * g.H * g.W * C);
  check('conv2dForward', 'out', out, P * O);
  if (bias) check('conv2dForward', 'bias', bias, O);
  const rt = getConvRuntime();
  const { cfg } = rt.gemm;
  return withScratch((s) => {
    const xAddr = place(s, x, N * g.H * g.W * C);
    const zero = place(s, null, Cg);
    const ind = windowTable(N, C, g);
    // the bias per group, padded to whole NR panels (the edge tile reads a full NR-wide vector)
    const padded = Math.ceil(Og / cfg.nr) * cfg.nr;
    const biasAddr = bias ? place(s, null, padded * groups) : 0;
    if (bias) for (let i = 0; i < groups; i++) rt.gemm.heap.f32.set(bias.subarray(i * Og, (i + 1) * Og), (biasAddr >> 2) + i * padded);
    const tile = s.take(TILE_BYTES(cfg));
    const flags = (bias ? FLAG_BIAS : 0) | (relu ? FLAG_RELU : 0);
    into(s, out, P * O, false, (o) => {
      if (weight instanceof WinogradWeight) return runWinograd(xAddr, weight, biasAddr, shape, o, relu, s.take, zero);
      for (let i = 0; i < groups; i++) {
        const pb = packs[i]!;
        const args = [
          xAddr + i * Cg * 4,
          zero,
          ind,
          taps,
          Cg,
          pb.address('conv2dForward'),
          pb.panelBytes,
          o + i * Og * 4,
          O * 4,
          0,
          P,
          Og,
          flags,
          biasAddr + i * padded * 4,
          tile,
        ];
        const job = { fn: 'conv' as const, args, p0Arg: 9, p1Arg: 10, scratchArg: 14, total: P, grain: cfg.mr };
        runRange(rt, job, 2 * P * taps * Cg * Og, tile, TILE_BYTES(cfg));
      }
    });
    return out;
  });
}

/**
 * The input gradient [N, H, W, C] (channels-last) of a convolution from its output gradient `gOut` [P, O]
 * (NHWC) and its weight [O, C/groups, kh, kw] as stored (PyTorch's layout).
 */
export function conv2dInputGrad(gOut: Float32Array, weight: Float32Array, shape: ConvShape, out: Float32Array): Float32Array {
  checkShape('conv2dInputGrad', shape);
  const { N, C, O, groups, g } = shape;
  const Cg = C / groups;
  const Og = O / groups;
  const taps = g.kh * g.kw;
  const K = taps * Cg;
  const P = N * g.OH * g.OW;
  check('conv2dInputGrad', 'gOut', gOut, P * O);
  check('conv2dInputGrad', 'weight', weight, O * K);
  check('conv2dInputGrad', 'out', out, N * g.H * g.W * C);
  const rt = getConvRuntime();
  const { heap } = rt.gemm;
  // per group, W_g as the GEMM's B [Og, K] with columns (t, c): the order col2im scatters rows in
  const wg = Array.from({ length: groups }, (_, gi) => {
    const b = new Float32Array(Og * K);
    for (let o = 0; o < Og; o++) {
      const src = (gi * Og + o) * K;
      for (let c = 0; c < Cg; c++) for (let t = 0; t < taps; t++) b[o * K + t * Cg + c] = weight[src + c * taps + t]!;
    }
    return b;
  });
  return withScratch((s) => {
    const ind = windowTable(N, C, g);
    const chunk = Math.max(1, Math.min(P, Math.floor(ROWS_CHUNK / K)));
    const rowsAddr = s.take(chunk * K * 4);
    const gAddr = groups === 1 ? place(s, gOut, P * O) : s.take(chunk * Og * 4);
    into(s, out, N * g.H * g.W * C, true, (dx) => {
      for (let gi = 0; gi < groups; gi++) {
        for (let p0 = 0; p0 < P; p0 += chunk) {
          const n = Math.min(chunk, P - p0);
          let a: Float32Array;
          if (groups === 1) a = heap.view(gAddr + p0 * O * 4, n * O);
          else {
            a = heap.view(gAddr, n * Og);
            for (let p = 0; p < n; p++) a.set(gOut.subarray((p0 + p) * O + gi * Og, (p0 + p) * O + (gi + 1) * Og), p * Og);
          }
          gemm(a, wg[gi]!, n, Og, K, { out: heap.view(rowsAddr, n * K) });
          rt.kernels.col2im(rowsAddr, K * 4, ind, taps, Cg, dx + gi * Cg * 4, p0, p0 + n);
        }
      }
    });
    return out;
  });
}

/** The weight gradient [O, C/groups, kh, kw] of a convolution over channels-last `x` with output gradient `gOut` [P, O]. */
export function conv2dWeightGrad(x: Float32Array, gOut: Float32Array, shape: ConvShape): Float32Array {
  checkShape('conv2dWeightGrad', shape);
  const { N, C, O, groups, g } = shape;
  const Cg = C / groups;
  const Og = O / groups;
  const taps = g.kh * g.kw;
  const K = taps * Cg;
  const P = N * g.OH * g.OW;
  check('conv2dWeightGrad', 'x', x, N * g.H * g.W * C);
  check('conv2dWeightGrad', 'gOut', gOut, P * O);
  const rt = getConvRuntime();
  const { heap, cfg } = rt.gemm;
  const Npad = Math.ceil(Og / cfg.nr) * cfg.nr;
  const dW = new Float32Array(O * K);
  withScratch((s) => {
    const xAddr = place(s, x, N * g.H * g.W * C);
    const ind = windowTable(N, C, g);
    const inPlace = groups === 1 && Npad === O;
    const gAddr = inPlace ? place(s, gOut, P * O) : s.take(P * Npad * 4);
    const dwT = s.take(K * Npad * 4);
    const f32 = heap.f32;
    for (let gi = 0; gi < groups; gi++) {
      if (!inPlace) {
        const gb = gAddr >> 2;
        f32.fill(0, gb, gb + P * Npad);
        for (let p = 0; p < P; p++) f32.set(gOut.subarray(p * O + gi * Og, p * O + (gi + 1) * Og), gb + p * Npad);
      }
      rt.kernels.wgrad(xAddr + gi * Cg * 4, ind, taps, Cg, gAddr, Npad * 4, P, dwT, Npad * 4, Npad, WGRAD_BLOCK);
      const t32 = heap.view(dwT, K * Npad);
      for (let o = 0; o < Og; o++) {
        const dst = (gi * Og + o) * K;
        for (let c = 0; c < Cg; c++) for (let t = 0; t < taps; t++) dW[dst + c * taps + t] = t32[(t * Cg + c) * Npad + o]!;
      }
    }
  });
  return dW;
}

/** The bias gradient [O]: column sums of `gOut` [P, O], accumulated in float64 like the eager reduction. */
export function conv2dBiasGrad(gOut: Float32Array, P: number, O: number): Float32Array {
  check('conv2dBiasGrad', 'gOut', gOut, P * O);
  const acc = new Float64Array(O);
  for (let p = 0; p < P; p++) {
    const b = p * O;
    for (let o = 0; o < O; o++) acc[o] += gOut[b + o]!;
  }
  return Float32Array.from(acc);
}

/** A pooling's shape: N images of C channels under window `g` (avg: dilation 1). */
export interface PoolShape {
  readonly N: number;
  readonly C: number;
  readonly g: Window2d;
}

function checkPool(op: string, s: PoolShape): void {
  checkShape(op, { N: s.N, C: s.C, O: s.C, groups: 1, g: s.g });
  const { kh, kw, ph, pw } = s.g;
  if (2 * ph > kh || 2 * pw > kw) throw new ValueError(`${op}: padding ${ph}, ${pw} must be at most half the kernel ${kh}×${kw}`);
}

/**
 * Max pooling of channels-last `x` [N, H, W, C] into `out`, channels-last [N·OH·OW, C] or with `nchw` [N, C,
 * OH, OW]: valid taps only, NaN wins, as eager.
 */
export function maxPool2d(x: Float32Array, shape: PoolShape, out: Float32Array, nchw = false): Float32Array {
  return pool('maxPool2d', x, shape, out, null, nchw);
}

/** Average pooling of channels-last `x` into `out` (channels-last, or NCHW with `nchw`), divisors by PyTorch's rules. */
export function avgPool2d(
  x: Float32Array,
  shape: PoolShape,
  out: Float32Array,
  countIncludePad: boolean,
  divisorOverride: number | null,
  nchw = false,
): Float32Array {
  return pool('avgPool2d', x, shape, out, { countIncludePad, divisorOverride }, nchw);
}

function pool(
  op: string,
  x: Float32Array,
  shape: PoolShape,
  out: Float32Array,
  avg: { countIncludePad: boolean; divisorOverride: number | null } | null,
  nchw: boolean,
): Float32Array {
  checkPool(op, shape);
  const { N, C, g } = shape;
  const P = N * g.OH * g.OW;
  check(op, 'x', x, N * g.H * g.W * C);
  check(op, 'out', out, P * C);
  const rt = getConvRuntime();
  return withScratch((s) => {
    const xAddr = place(s, x, N * g.H * g.W * C);
    const ind = windowTable(N, C, g);
    const PL = g.OH * g.OW;
    // where pixel p's channels go: ⌊p / PL⌋·nB + (p mod PL)·pB + c·cB
    const [nB, pB, cB] = nchw ? [C * PL * 4, 4, PL * 4] : [PL * C * 4, C * 4, 4];
    const taps = g.kh * g.kw;
    into(s, out, P * C, false, (o) => {
      if (avg)
        rt.kernels.avgPool(xAddr, ind, taps, C, o, PL, nB, pB, cB, 0, P, avgDivisors(N, g, avg.countIncludePad, avg.divisorOverride));
      else rt.kernels.maxPool(xAddr, ind, taps, C, o, PL, nB, pB, cB, 0, P);
    });
    return out;
  });
}

/** The input gradient [N, H, W, C] of max pooling from `gOut` [N·OH·OW, C]: each window's eager winner takes its gradient. */
export function maxPool2dBackward(x: Float32Array, gOut: Float32Array, shape: PoolShape, out: Float32Array): Float32Array {
  checkPool('maxPool2dBackward', shape);
  const { N, C, g } = shape;
  const P = N * g.OH * g.OW;
  const size = N * g.H * g.W * C;
  check('maxPool2dBackward', 'x', x, size);
  check('maxPool2dBackward', 'gOut', gOut, P * C);
  check('maxPool2dBackward', 'out', out, size);
  const rt = getConvRuntime();
  return withScratch((s) => {
    const xAddr = place(s, x, size);
    const gAddr = place(s, gOut, P * C);
    const ind = windowTable(N, C, g);
    into(s, out, size, true, (gx) => rt.kernels.maxPoolBackward(xAddr, ind, g.kh * g.kw, C, gAddr, C * 4, gx, 0, P));
    return out;
  });
}

/** The input gradient [N, H, W, C] of average pooling from `gOut` [N·OH·OW, C]. */
export function avgPool2dBackward(
  gOut: Float32Array,
  shape: PoolShape,
  out: Float32Array,
  countIncludePad: boolean,
  divisorOverride: number | null,
): Float32Array {
  checkPool('avgPool2dBackward', shape);
  const { N, C, g } = shape;
  const P = N * g.OH * g.OW;
  const size = N * g.H * g.W * C;
  check('avgPool2dBackward', 'gOut', gOut, P * C);
  check('avgPool2dBackward', 'out', out, size);
  const rt = getConvRuntime();
  return withScratch((s) => {
    const gAddr = place(s, gOut, P * C);
    const ind = windowTable(N, C, g);
    const div = avgDivisors(N, g, countIncludePad, divisorOverride);
    into(s, out, size, true, (gx) => rt.kernels.avgPoolBackward(ind, g.kh * g.kw, C, gAddr, C * 4, div, gx, 0, P));
    return out;
  });
}
