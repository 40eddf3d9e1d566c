import type { Window2d } from '../runtime/cpu/conv.js';
import { elementOffsets } from '../runtime/cpu/strided.js';
import { onHeap } from './gemm/index.js';
import type { Layout } from './ir.js';

/**
 * The JS loops conv2d and max-pooling steps run on the calling thread, where they beat a gpu.js kernel: a
 * channels-last im2row, which is a few block copies per output row, a max pool over any strided input, and
 * the per-channel weight and bias of a conv with an inference batch norm folded in.
 */

/**
 * Whether an NCHW-shaped layout stores NHWC, as conv2d results do ([N, OH, OW, O] read as NCHW through
 * strides): then each pixel's channels are consecutive and a 3×3 window row is one block of 3·C floats.
 */
export function isChannelsLast(l: Layout): boolean {
  if (l.shape.length !== 4) return false;
  const [N, C, H, W] = l.shape as [number, number, number, number];
  const want = [H * W * C, 1, W * C, C];
  return [N, C, H, W].every((d, i) => d === 1 || l.strides[i] === want[i]);
}

/** One Float32Array over both views when both live in the GEMM's wasm memory, else null. */
function commonMemory(a: Float32Array, b: Float32Array): Float32Array | null {
  if (!onHeap(a) || !onHeap(b)) return null;
  // the shared memory never moves; after a grow it shows a new, longer buffer, which covers the older ones
  return new Float32Array(a.buffer.byteLength >= b.buffer.byteLength ? a.buffer : b.buffer);
}

/**
 * im2row of a channels-last input `src` (element (n, c, h, w) at `offset + n·sN + (h·W + w)·C + c`) into
 * `out` [N·OH·OW, kh·kw·C], columns in (i, j, c) order: the weight must be laid out [O, kh, kw, C] to match.
 * Each row is kh blocks of kw·C consecutive input floats when the window lies inside the image (stride-1 width
 * taps), else per-tap blocks of C and zeros. When `src` and `out` share a memory (both in the GEMM's wasm
 * memory) the blocks move with copyWithin (a memmove). Measured in one run on [16, C, 32, 32] 3×3 pad 1, both in
 * a SharedArrayBuffer like the GEMM's (median of 15, this 2-core Xeon), ms at C = 3 / 16 / 32: copyWithin
 * 2.1 / 2.1 / 2.5, `set(subarray)` 3.8 / 3.9 / 3.8, an element loop 1.2 / 4.2 / 9.6, and the NCHW im2row loop
 * on the NCHW input 1.8 / 9.8 / 22.6. On plain arrays `set` beat the element loop only from blocks of 96 floats
 * (4.8 against 8.6 ms at C = 32; 8.1 against 4.3 at C = 16).
 */
export function im2rowChannelsLast(
  src: Float32Array,
  offset: number,
  sN: number,
  N: number,
  C: number,
  g: Window2d,
  out: Float32Array,
): void {
  const { kh, kw, sh, sw, ph, pw, dh, dw, H, W, OH, OW } = g;
  // below 8 channels (blocks of 24 floats) the element loop beats copyWithin's call overhead
  const mem = C >= 8 ? commonMemory(src, out) : null;
  const so = src.byteOffset >> 2;
  const oo = out.byteOffset >> 2;
  const block = (from: number, to: number, len: number) => {
    if (mem) mem.copyWithin(oo + to, so + from, so + from + len);
    else if (len >= 64) out.set(src.subarray(from, from + len), to);
    else for (let k = 0; k < len; k++) out[to + k] = src[from + k]!;
  };
  let o = 0;
  for (let n = 0; n < N; n++) {
    const nb = offset + n * sN;
    for (let oh = 0; oh < OH; oh++) {
      for (let ow = 0; ow < OW; ow++) {
        const w0 = ow * sw - pw;
        const inside = dw === 1 && w0 >= 0 && w0 + kw <= W;
        for (let i = 0; i < kh; i++) {
          const h = oh * sh - ph + i * dh;
          if (h < 0 || h >= H) {
            out.fill(0, o, o + kw * C);
            o += kw * C;
            continue;
          }
          const rb = nb + h * W * C;
          if (inside) {
            block(rb + w0 * C, o, kw * C);
            o += kw * C;
            continue;
          }
          for (let j = 0; j < kw; j++, o += C) {
            const w = w0 + j * dw;
            if (w < 0 || w >= W) out.fill(0, o, o + C);
            else block(rb + w * C, o, C);
          }
        }
      }
    }
  }
}

/**
 * im2row of a contiguous NCHW input (image n at `offset + n·C·H·W`) into `out` [N·OH·OW, C·kh·kw], columns
 * in (c, i, j) order like the weight: column by column, each output row of a column reading one input row.
 * For few channels this beats the eager runtime's row-by-row loop: 2.0–2.2 ms against 3.4–3.6 ms on
 * [16, 3, 32, 32] 3×3 pad 1 (median of 21, two runs on a busy machine); for many channels copying the input
 * to channels-last first and gathering with im2rowChannelsLast wins (7 against 12 ms at C = 16 and 32).
 */
export function im2rowByColumns(src: Float32Array, offset: number, N: number, C: number, g: Window2d, out: Float32Array): void {
  const { kh, kw, sh, sw, ph, pw, dh, dw, H, W, OH, OW } = g;
  const K = C * kh * kw;
  for (let n = 0; n < N; n++) {
    const ib = offset + n * C * H * W;
    const ob = n * OH * OW * K;
    for (let c = 0; c < C; c++) {
      for (let i = 0; i < kh; i++) {
        for (let j = 0; j < kw; j++) {
          const col = (c * kh + i) * kw + j;
          for (let oh = 0; oh < OH; oh++) {
            const h = oh * sh - ph + i * dh;
            let o = ob + oh * OW * K + col;
            if (h < 0 || h >= H) {
              for (let ow = 0; ow < OW; ow++, o += K) out[o] = 0;
              continue;
            }
            const rb = ib + (c * H + h) * W;
            for (let ow = 0; ow < OW; ow++, o += K) {
              const w = ow * sw - pw + j * dw;
              out[o] = w >= 0 && w < W ? src[rb + w]! : 0;
            }
          }
        }
      }
    }
  }
}

/** Copy a contiguous NCHW input (from `offset`) to NHWC `out`. */
export function toChannelsLast(src: Float32Array, offset: number, N: number, C: number, H: number, W: number, out: Float32Array): void {
  const HW = H * W;
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const s = offset + (n * C + c) * HW;
      const d = n * HW * C + c;
      for (let p = 0; p < HW; p++) out[d + p * C] = src[s + p]!;
    }
  }
}

/** The batch norm's per-channel operands, as dense [O] arrays (weight and bias null without affine). */
export interface BatchNormValues {
  readonly mean: Float32Array;
  readonly variance: Float32Array;
  readonly weight: Float32Array | null;
  readonly bias: Float32Array | null;
  readonly eps: number;
}

/**
 * A conv's GEMM right-hand side [O, K] (K = C·kh·kw, columns (c, i, j), or (i, j, c) when `channelsLast`) and
 * bias [O]: the weight [O, C, kh, kw] and bias as given, with an inference batch norm folded in, weight·s and
 * bias·s + t per output channel o with s = γ/√(var + eps) and t = β − mean·s.
 */
export function convWeights(
  w: Float32Array,
  bias: Float32Array | null,
  bn: BatchNormValues | null,
  shape: readonly [number, number, number, number],
  channelsLast: boolean,
): { weight: Float32Array; bias: Float32Array | null } {
  const [O, C, kh, kw] = shape;
  const taps = kh * kw;
  const K = C * taps;
  const weight = new Float32Array(O * K);
  let outBias = bias;
  let scale: Float64Array | null = null;
  if (bn) {
    scale = new Float64Array(O);
    outBias = new Float32Array(O);
    for (let o = 0; o < O; o++) {
      const s = (bn.weight ? bn.weight[o]! : 1) / Math.sqrt(bn.variance[o]! + bn.eps);
      scale[o] = s;
      outBias[o] = (bias ? bias[o]! : 0) * s + (bn.bias ? bn.bias[o]! : 0) - bn.mean[o]! * s;
    }
  }
  for (let o = 0; o < O; o++) {
    const s = scale ? scale[o]! : 1;
    const base = o * K;
    for (let c = 0; c < C; c++) {
      for (let t = 0; t < taps; t++) {
        const v = w[base + c * taps + t]! * s;
        weight[base + (channelsLast ? t * C + c : c * taps + t)] = v;
      }
    }
  }
  return { weight, bias: outBias };
}

export interface MaxPoolGeometry {
  readonly kernel: readonly [number, number];
  readonly stride: readonly [number, number];
  readonly padding: readonly [number, number];
  readonly dilation: readonly [number, number];
}

/**
 * Max pooling over the last two dims of a float32 input read through its strides, into a contiguous `out`:
 * only taps inside the image count (padding ≤ half the kernel, so a window always overlaps it) and a NaN
 * wins, like the eager kernel. A channels-last input is read pixel by pixel, all channels at once.
 * Measured on the CNN's channels-last [16, 32, 32, 32] conv result, 2×2 (median of 21, this machine): the
 * 2×2 path 2.3 ms, the general channels-last loop 3.4 ms, the plane-by-plane strided loop 6.1 ms, and the
 * generated gpu.js kernel 3.9 ms (index arithmetic per tap, and its result copied out of its memory).
 */
export function maxPoolInto(src: Float32Array, layout: Layout, g: MaxPoolGeometry, OH: number, OW: number, out: Float32Array): void {
  if (isChannelsLast(layout)) {
    const [N, C, H, W] = layout.shape as [number, number, number, number];
    const simple = [...g.kernel, ...g.stride].every((v) => v === 2) && g.padding.every((p) => p === 0);
    if (simple && C > 1 && OH * 2 <= H && OW * 2 <= W) maxPool2x2ChannelsLast(src, layout.offset, N, C, H, W, OH, OW, out);
    else maxPoolChannelsLast(src, layout.offset, N, C, H, W, g, OH, OW, out);
    return;
  }
  const nd = layout.shape.length;
  const H = layout.shape[nd - 2]!;
  const W = layout.shape[nd - 1]!;
  const sH = layout.strides[nd - 2]!;
  const sW = layout.strides[nd - 1]!;
  const [kh, kw] = g.kernel;
  const [sh, sw] = g.stride;
  const [ph, pw] = g.padding;
  const [dh, dw] = g.dilation;
  // plane offsets of the leading dims, in row-major order
  const planes = elementOffsets(layout.shape.slice(0, nd - 2), layout.strides.slice(0, nd - 2), layout.offset);
  let o = 0;
  for (const base of planes) {
    for (let oh = 0; oh < OH; oh++) {
      const h0 = oh * sh - ph;
      for (let ow = 0; ow < OW; ow++, o++) {
        const w0 = ow * sw - pw;
        let acc = -Infinity;
        for (let i = 0; i < kh; i++) {
          const h = h0 + i * dh;
          if (h < 0 || h >= H) continue;
          const rb = base + h * sH;
          for (let j = 0; j < kw; j++) {
            const w = w0 + j * dw;
            if (w < 0 || w >= W) continue;
            const v = src[rb + w * sW]!;
            if (v > acc || v !== v) acc = v;
          }
        }
        out[o] = acc;
      }
    }
  }
}

/** Max pooling of an NHWC-stored input, one pixel's channels at a time, into NCHW `out`. */
function maxPoolChannelsLast(
  src: Float32Array,
  offset: number,
  N: number,
  C: number,
  H: number,
  W: number,
  g: MaxPoolGeometry,
  OH: number,
  OW: number,
  out: Float32Array,
): void {
  const [kh, kw] = g.kernel;
  const [sh, sw] = g.stride;
  const [ph, pw] = g.padding;
  const [dh, dw] = g.dilation;
  const acc = new Float32Array(C);
  const plane = OH * OW;
  for (let n = 0; n < N; n++) {
    const nb = offset + n * H * W * C;
    for (let oh = 0; oh < OH; oh++) {
      for (let ow = 0; ow < OW; ow++) {
        acc.fill(-Infinity);
        for (let i = 0; i < kh; i++) {
          const h = oh * sh - ph + i * dh;
          if (h < 0 || h >= H) continue;
          for (let j = 0; j < kw; j++) {
            const w = ow * sw - pw + j * dw;
            if (w < 0 || w >= W) continue;
            const a = nb + (h * W + w) * C;
            for (let c = 0; c < C; c++) {
              const v = src[a + c]!;
              if (v > acc[c]! || v !== v) acc[c] = v;
            }
          }
        }
        const ob = n * C * plane + oh * OW + ow;
        for (let c = 0; c < C; c++) out[ob + c * plane] = acc[c]!;
      }
    }
  }
}

/** MaxPool2d(2) of an NHWC-stored input (every window inside the image), into NCHW `out`. */
function maxPool2x2ChannelsLast(
  src: Float32Array,
  offset: number,
  N: number,
  C: number,
  H: number,
  W: number,
  OH: number,
  OW: number,
  out: Float32Array,
): void {
  const plane = OH * OW;
  const row = W * C;
  for (let n = 0; n < N; n++) {
    for (let oh = 0; oh < OH; oh++) {
      for (let ow = 0; ow < OW; ow++) {
        const a = offset + n * H * row + 2 * oh * row + 2 * ow * C;
        const ob = n * C * plane + oh * OW + ow;
        for (let c = 0; c < C; c++) {
          // in window order, a NaN sticks once taken, as in the eager loop
          let v = src[a + c]!;
          const b = src[a + C + c]!;
          const d = src[a + row + c]!;
          const e = src[a + row + C + c]!;
          if (b > v || b !== b) v = v !== v ? v : b;
          if (d > v || d !== d) v = v !== v ? v : d;
          if (e > v || e !== e) v = v !== v ? v : e;
          out[ob + c * plane] = v;
        }
      }
    }
  }
}
