/**
 * The plain-JS GEMM every other variant is checked and benchmarked against: the textbook i-k-j triple loop,
 * accumulating each output row in float64 and rounding once on store.
 */

import { checkGemm, type Checked, type GemmOptions } from './check.js';
import { PackedB, unpackB } from './packed-b.js';

/** out = relu?(bias) per row, or zeros: the product when K is 0 (an empty sum). */
export function fillEmptyProduct(out: Float32Array, rows: number, N: number, chk: Checked): void {
  if (!chk.bias) {
    out.fill(0);
    return;
  }
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < N; j++) out[r * N + j] = chk.relu ? Math.max(chk.bias[j]!, 0) : chk.bias[j]!;
  }
}

/**
 * The common start of a GEMM entry point: the checked arguments, the output (given or new), and whether the
 * product is empty (M, N or K zero), in which case `out` already holds the bias (or zeros).
 */
export function beginGemm(
  a: Float32Array,
  b: Float32Array | PackedB,
  M: number,
  K: number,
  N: number,
  opts: GemmOptions,
): { chk: Checked; out: Float32Array; done: boolean } {
  const chk = checkGemm('gemm', a, b, M, K, N, opts);
  const out = opts.out ?? new Float32Array(M * N);
  const done = M === 0 || N === 0 || K === 0;
  if (done) fillEmptyProduct(out, M, N, chk);
  return { chk, out, done };
}

export function gemmReference(
  a: Float32Array,
  b: Float32Array | PackedB,
  M: number,
  K: number,
  N: number,
  opts: GemmOptions = {},
): Float32Array {
  const { chk, out, done } = beginGemm(a, b, M, K, N, opts);
  if (done) return out;
  const transposed = b instanceof PackedB ? false : (opts.bTransposed ?? false);
  const B = b instanceof PackedB ? unpackB(b, 'gemm') : b;
  const row = new Float64Array(N);
  for (let i = 0; i < M; i++) {
    if (chk.bias) for (let j = 0; j < N; j++) row[j] = chk.bias[j]!;
    else row.fill(0);
    for (let k = 0; k < K; k++) {
      const x = a[i * K + k]!;
      if (transposed) for (let j = 0; j < N; j++) row[j] += x * B[j * K + k]!;
      else for (let j = 0; j < N; j++) row[j] += x * B[k * N + j]!;
    }
    for (let j = 0; j < N; j++) out[i * N + j] = chk.relu ? Math.max(row[j]!, 0) : row[j]!;
  }
  return out;
}
