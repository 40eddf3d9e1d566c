import { elementOffsets } from '../runtime/cpu/strided.js';
import type { Layout } from './ir.js';

/**
 * The JS loops conv2d and pooling steps run on the calling thread around the wasm kernels (kernels/conv):
 * NCHW ↔ channels-last copies, a max pool over any strided input (where the input is not channels-last or
 * the engine lacks wasm SIMD), and the per-channel weight and bias of a conv with an inference batch norm
 * folded in.
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

/** Copy an NHWC `src` (from `offset`) to contiguous NCHW `out`: the inverse of toChannelsLast. */
export function fromChannelsLast(src: Float32Array, offset: number, N: number, C: number, H: number, W: number, out: Float32Array): void {
  const HW = H * W;
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const d = (n * C + c) * HW;
      const s = offset + n * HW * C + c;
      for (let p = 0; p < HW; p++) out[d + p] = src[s + p * C]!;
    }
  }
}
