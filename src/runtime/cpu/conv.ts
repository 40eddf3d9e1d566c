import { NUMBER_ARITH } from '../size-arith.js';
import { windowSize } from '../shape-rules/sizes.js';

/** Geometry shared by convolution and pooling over two spatial dims. */
export interface Window2d {
  readonly kh: number;
  readonly kw: number;
  readonly sh: number;
  readonly sw: number;
  readonly ph: number;
  readonly pw: number;
  readonly dh: number;
  readonly dw: number;
  readonly H: number;
  readonly W: number;
  readonly OH: number;
  readonly OW: number;
}

/**
 * im2row: for one image's channels [c0, c0+C) (a group), row l = output position (oh, ow) holds the
 * C·kh·kw input values under the window (0 where it falls in the padding). The result is [OH·OW, C·kh·kw]
 * row-major, i.e. already the transposed right operand the matmul kernel wants.
 */
/** The window of a 2-d convolution or pooling from its [h, w] pairs and the input and output sizes. */
export function window2d(
  kernel: readonly [number, number],
  stride: readonly [number, number],
  padding: readonly [number, number],
  dilation: readonly [number, number],
  [H, W]: readonly [number, number],
  [OH, OW]: readonly [number, number],
): Window2d {
  return {
    kh: kernel[0],
    kw: kernel[1],
    sh: stride[0],
    sw: stride[1],
    ph: padding[0],
    pw: padding[1],
    dh: dilation[0],
    dw: dilation[1],
    H,
    W,
    OH,
    OW,
  };
}

export function im2row(src: Float32Array, base: number, C: number, g: Window2d, out: Float32Array): void {
  const { kh, kw, sh, sw, ph, pw, dh, dw, H, W, OH, OW } = g;
  const K = C * kh * kw;
  let l = 0;
  for (let oh = 0; oh < OH; oh++) {
    for (let ow = 0; ow < OW; ow++, l++) {
      let o = l * K;
      for (let c = 0; c < C; c++) {
        const cb = base + c * H * W;
        for (let i = 0; i < kh; i++) {
          const h = oh * sh - ph + i * dh;
          const rowOk = h >= 0 && h < H;
          const rb = cb + h * W;
          for (let j = 0; j < kw; j++, o++) {
            const w = ow * sw - pw + j * dw;
            out[o] = rowOk && w >= 0 && w < W ? src[rb + w]! : 0;
          }
        }
      }
    }
  }
}

/** The adjoint of im2row: add each row's window values back into the image gradient. */
export function row2imAdd(rows: Float32Array, C: number, g: Window2d, dst: Float32Array, base: number): void {
  const { kh, kw, sh, sw, ph, pw, dh, dw, H, W, OH, OW } = g;
  const K = C * kh * kw;
  let l = 0;
  for (let oh = 0; oh < OH; oh++) {
    for (let ow = 0; ow < OW; ow++, l++) {
      let o = l * K;
      for (let c = 0; c < C; c++) {
        const cb = base + c * H * W;
        for (let i = 0; i < kh; i++) {
          const h = oh * sh - ph + i * dh;
          const rowOk = h >= 0 && h < H;
          for (let j = 0; j < kw; j++, o++) {
            const w = ow * sw - pw + j * dw;
            if (rowOk && w >= 0 && w < W) dst[cb + h * W + w] += rows[o]!;
          }
        }
      }
    }
  }
}

/** Output length of a sliding window over `size` (PyTorch's formula, including ceil mode's last-window rule). */
export function windowOut(size: number, k: number, s: number, p: number, d: number, ceil: boolean): number {
  return windowSize(NUMBER_ARITH, size, k, s, p, d, ceil);
}
