/**
 * The eager matmul kernels: C[M×N] = A[M×K] · B[K×N] over Float32Array views.
 *
 * `bmm` runs kiln's wasm SIMD GEMM (src/kernels/gemm, ~30 GFLOP/s on one core, threaded for big jobs) and
 * keeps `gemmJs` below for engines without wasm SIMD and for products too small to pay for the copies into
 * wasm memory. Numerics: the wasm kernels accumulate in float32 where `gemmJs` sums in float64, so results
 * differ from the plain-JS ones by float32 rounding (relative ~1e-6·√K); every golden value and tolerance held.
 *
 * The plain-JS kernel:
 * A is read as rows and B as columns, both contiguous along k (B is packed transposed unless it already is
 * a transposed view, as a Linear weight is). The inner kernel keeps a 4×4 tile of C in registers, so each
 * step over k loads 8 floats for 16 multiply-adds, and columns are processed in blocks whose packed B fits
 * in cache. Accumulation is in float64 (JS numbers), rounded once on store.
 */

import { bmmStrided, simdGemmWorks, type StridedMatrices } from '../../kernels/gemm/strided.js';

export interface MatrixView {
  readonly data: ArrayLike<number> & { subarray?: unknown };
  readonly offset: number;
  /** Stride between rows and between columns, in elements. */
  readonly rowStride: number;
  readonly colStride: number;
}

const COL_BLOCK = 64;

/** Pack `rows` rows of length `len` from a strided view into a dense row-major Float32Array. */
function packRows(
  src: ArrayLike<number>,
  offset: number,
  rowStride: number,
  colStride: number,
  rows: number,
  len: number,
): Float32Array {
  const out = new Float32Array(rows * len);
  for (let r = 0; r < rows; r++) {
    const base = offset + r * rowStride;
    const o = r * len;
    for (let c = 0; c < len; c++) out[o + c] = src[base + c * colStride]!;
  }
  return out;
}

function asDenseRows(v: MatrixView, rows: number, len: number, rowStride: number, colStride: number): [Float32Array, number] {
  if (colStride === 1 && rowStride === len && v.data instanceof Float32Array) return [v.data, v.offset];
  return [packRows(v.data, v.offset, rowStride, colStride, rows, len), 0];
}

/** C (row-major, M×N, written from `cOff`) = A · B, in plain JS. */
export function gemmJs(a: MatrixView, b: MatrixView, M: number, N: number, K: number, c: Float32Array, cOff = 0): void {
  // A as M rows of K; B^T as N rows of K.
  const [A, ao] = asDenseRows(a, M, K, a.rowStride, a.colStride);
  const [B, bo] = asDenseRows(b, N, K, b.colStride, b.rowStride);
  const M4 = M - (M % 4);
  for (let j0 = 0; j0 < N; j0 += COL_BLOCK) {
    const j1 = Math.min(N, j0 + COL_BLOCK);
    const j4 = j0 + ((j1 - j0) - ((j1 - j0) % 4));
    for (let i = 0; i < M4; i += 4) {
      const a0 = ao + i * K;
      const a1 = a0 + K;
      const a2 = a1 + K;
      const a3 = a2 + K;
      for (let j = j0; j < j4; j += 4) {
        const b0 = bo + j * K;
        const b1 = b0 + K;
        const b2 = b1 + K;
        const b3 = b2 + K;
        let c00 = 0, c01 = 0, c02 = 0, c03 = 0;
        let c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        let c20 = 0, c21 = 0, c22 = 0, c23 = 0;
        let c30 = 0, c31 = 0, c32 = 0, c33 = 0;
        for (let k = 0; k < K; k++) {
          const x0 = A[a0 + k]!, x1 = A[a1 + k]!, x2 = A[a2 + k]!, x3 = A[a3 + k]!;
          const y0 = B[b0 + k]!, y1 = B[b1 + k]!, y2 = B[b2 + k]!, y3 = B[b3 + k]!;
          c00 += x0 * y0; c01 += x0 * y1; c02 += x0 * y2; c03 += x0 * y3;
          c10 += x1 * y0; c11 += x1 * y1; c12 += x1 * y2; c13 += x1 * y3;
          c20 += x2 * y0; c21 += x2 * y1; c22 += x2 * y2; c23 += x2 * y3;
          c30 += x3 * y0; c31 += x3 * y1; c32 += x3 * y2; c33 += x3 * y3;
        }
        let o = cOff + i * N + j;
        c[o] = c00; c[o + 1] = c01; c[o + 2] = c02; c[o + 3] = c03;
        o += N;
        c[o] = c10; c[o + 1] = c11; c[o + 2] = c12; c[o + 3] = c13;
        o += N;
        c[o] = c20; c[o + 1] = c21; c[o + 2] = c22; c[o + 3] = c23;
        o += N;
        c[o] = c30; c[o + 1] = c31; c[o + 2] = c32; c[o + 3] = c33;
      }
      for (let r = i; r < i + 4; r++) for (let j = j4; j < j1; j++) c[cOff + r * N + j] = dot(A, ao + r * K, B, bo + j * K, K);
    }
    for (let r = M4; r < M; r++) for (let j = j0; j < j1; j++) c[cOff + r * N + j] = dot(A, ao + r * K, B, bo + j * K, K);
  }
}

function dot(A: Float32Array, a: number, B: Float32Array, b: number, K: number): number {
  let s = 0;
  for (let k = 0; k < K; k++) s += A[a + k]! * B[b + k]!;
  return s;
}

/** Batched operands: entry i's matrix starts at `offsets[i]`; a single offset is shared by every entry. */
export type BatchView = StridedMatrices;

/**
 * Below this many multiply-adds per matrix the plain-JS kernel is faster: the wasm path's fixed cost (copies
 * into wasm memory, packing, ~7–10 µs a call) dominates tiny products. Measured side by side on this machine,
 * n×n×n: n=16 wasm 8.6 µs / JS 5.5 µs, n=20 6.9 / 8.4, n=32 10.7 / 25.7, n=48 19 / 238.
 */
const WASM_MIN_MACS = 8192;

let forced: boolean | undefined;

/** @internal Force the wasm GEMM (true, where it runs), the plain-JS one (false), or the size rule (undefined). */
export function useWasmGemm(flag: boolean | undefined): void {
  forced = flag;
}

/**
 * The most wasm memory one eager product may stage (its A, packed B and C): the GEMM's memory is capped at
 * 2 GiB and never shrinks, so a product bigger than this runs on the plain-JS kernel instead of failing.
 */
const WASM_MAX_BYTES = 1 << 30;

function wasmFor(a: BatchView, b: BatchView, batch: number, M: number, N: number, K: number): boolean {
  if (forced === false || !simdGemmWorks()) return false;
  const bytes = 4 * (a.offsets.length * M * K + b.offsets.length * K * (N + 8) + batch * M * N);
  if (bytes > WASM_MAX_BYTES) return false;
  return forced === true || M * N * K >= WASM_MIN_MACS;
}

/** out[cOff + (i·M + r)·N + c] = (A_i · B_i)[r, c] for every batch entry i < `batch`. */
export function bmm(a: BatchView, b: BatchView, batch: number, M: number, N: number, K: number, out: Float32Array, cOff = 0): void {
  if (batch === 0 || M === 0 || N === 0) return;
  if (K === 0) {
    out.fill(0, cOff, cOff + batch * M * N);
    return;
  }
  if (wasmFor(a, b, batch, M, N, K)) {
    bmmStrided(a, b, batch, M, K, N, out, cOff);
    return;
  }
  const at = (x: BatchView, i: number): MatrixView => ({
    data: x.data,
    offset: x.offsets[x.offsets.length === 1 ? 0 : i]!,
    rowStride: x.rowStride,
    colStride: x.colStride,
  });
  for (let i = 0; i < batch; i++) gemmJs(at(a, i), at(b, i), M, N, K, out, cOff + i * M * N);
}

/** C (row-major, M×N, written from `cOff`) = A · B, on whichever kernel `bmm` picks. */
export function gemm(a: MatrixView, b: MatrixView, M: number, N: number, K: number, c: Float32Array, cOff = 0): void {
  if (!(a.data instanceof Float32Array) || !(b.data instanceof Float32Array)) {
    gemmJs(a, b, M, N, K, c, cOff);
    return;
  }
  const one = (x: MatrixView): BatchView => ({ data: x.data as Float32Array, offsets: [x.offset], rowStride: x.rowStride, colStride: x.colStride });
  bmm(one(a), one(b), 1, M, N, K, c, cOff);
}
