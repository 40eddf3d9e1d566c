/**
 * Indirection tables of the convolution and pooling kernels (conv-kernel.ts): for output pixel p = (n, oh, ow)
 * and window tap t = (i, j), entry p·taps + t is the byte offset from the input's base of the channels-last
 * pixel (n, oh·sh − ph + i·dh, ow·sw − pw + j·dw), C floats apart, or −1 where that pixel is in the padding.
 * A table depends on the geometry only, so it is built once (in JS, N·OH·OW·kh·kw entries: 147k for a 3×3 conv
 * over [16, C, 32, 32]) and kept in wasm memory; a few recent ones are cached, and a call looks its table up
 * each time, so an evicted one is simply built again.
 */

import type { Window2d } from '../../runtime/cpu/conv.js';
import { getRuntime } from '../gemm/runtime.js';

/** Tables kept at once (each a few hundred KiB for the bench's convolutions). */
const CACHED = 16;
const tables = new Map<string, number>();

function cached(key: string, bytes: number, fill: (view: Int32Array | Float32Array) => void, float: boolean): number {
  const hit = tables.get(key);
  if (hit !== undefined) {
    tables.delete(key);
    tables.set(key, hit); // most recent last
    return hit;
  }
  const { heap } = getRuntime();
  if (tables.size >= CACHED) {
    const [oldKey, oldAddr] = tables.entries().next().value as [string, number];
    tables.delete(oldKey);
    heap.release(oldAddr);
  }
  const addr = heap.alloc(Math.max(bytes, 4));
  const buf = heap.memory.buffer;
  fill(float ? new Float32Array(buf, addr, bytes >> 2) : new Int32Array(buf, addr, bytes >> 2));
  tables.set(key, addr);
  return addr;
}

const geoKey = (N: number, C: number, g: Window2d) =>
  [N, C, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.H, g.W, g.OH, g.OW].join(',');

/** The wasm address of the table for N images of C channels (channels-last) under window `g`. */
export function windowTable(N: number, C: number, g: Window2d): number {
  const { kh, kw, sh, sw, ph, pw, dh, dw, H, W, OH, OW } = g;
  const taps = kh * kw;
  return cached(
    `w:${geoKey(N, C, g)}`,
    N * OH * OW * taps * 4,
    (t) => {
      let e = 0;
      for (let n = 0; n < N; n++) {
        for (let oh = 0; oh < OH; oh++) {
          for (let ow = 0; ow < OW; ow++) {
            for (let i = 0; i < kh; i++) {
              const h = oh * sh - ph + i * dh;
              for (let j = 0; j < kw; j++, e++) {
                const w = ow * sw - pw + j * dw;
                t[e] = h >= 0 && h < H && w >= 0 && w < W ? ((n * H + h) * W + w) * C * 4 : -1;
              }
            }
          }
        }
      }
    },
    false,
  );
}

/** Average pooling's divisor per output pixel (N·OH·OW floats), by PyTorch's rules as the eager kernel applies them. */
export function avgDivisors(N: number, g: Window2d, countIncludePad: boolean, divisorOverride: number | null): number {
  const { kh, kw, sh, sw, ph, pw, H, W, OH, OW } = g;
  return cached(
    `d:${geoKey(N, 0, g)}:${String(countIncludePad)}:${String(divisorOverride)}`,
    N * OH * OW * 4,
    (d) => {
      let e = 0;
      for (let n = 0; n < N; n++) {
        for (let oh = 0; oh < OH; oh++) {
          for (let ow = 0; ow < OW; ow++, e++) {
            const h0 = oh * sh - ph;
            const w0 = ow * sw - pw;
            const h1 = Math.min(h0 + kh, H + ph);
            const w1 = Math.min(w0 + kw, W + pw);
            const clipped = (Math.min(h1, H) - Math.max(h0, 0)) * (Math.min(w1, W) - Math.max(w0, 0));
            d[e] = divisorOverride ?? (countIncludePad ? (h1 - h0) * (w1 - w0) : clipped);
          }
        }
      }
    },
    true,
  );
}
