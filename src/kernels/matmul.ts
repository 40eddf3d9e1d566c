import { KilnError } from '../errors.js';
import { getKernelBackend } from './backend.js';
import { getKernel } from './cache.js';
import * as simd from './gemm/index.js';

/**
 * The GEMM kiln's matmul, linear and conv2d lowerings call: kiln's own wasm SIMD GEMM from ./gemm (a 4×8
 * register tile over packed B panels, bias and relu fused into its store, ~30 GFLOP/s on one core of this
 * machine at 512³ where gpu.js's generated wasm reaches 1–2). When wasm SIMD cannot run, the same calls
 * fall back to a gpu.js kernel on the active kernel backend.
 *
 * The gpu.js fallback computes four rows of C per cell (one column, `[c0, c1, c2, c3]`), so each value of B
 * it loads serves four multiply-adds; the 2-D output keeps a row block uniform across SIMD lanes. Measured
 * on this machine it runs at 1.3–1.7 GFLOP/s (64×784·784×512 and 512³), about the eager runtime's blocked JS
 * matmul (1.1–1.9), where a one-output-per-cell kernel manages 0.6–0.8.
 */

export type Activation = 'none' | 'relu';

export interface GemmOptions {
  /** B is given as [N, K] (a Linear weight is [out, in]) instead of [K, N]. Not used with a packed B. */
  bTransposed?: boolean;
  /** Length N, added to every row before the activation. */
  bias?: Float32Array;
  activation?: Activation;
  /** Where to write the M×N result; a new array when absent. */
  out?: Float32Array;
}

/** B [K, N] in the gpu.js fallback's layout (row-major [K, N]). */
class FallbackPackedB {
  constructor(
    readonly K: number,
    readonly N: number,
    readonly data: Float32Array,
  ) {}
}

/** A weight packed once for the GEMM that will read it. */
export type PackedB = simd.PackedB | FallbackPackedB;

let simdWorks: boolean | undefined;

/** Force the gpu.js fallback (false) or probe again (undefined); for tests of the fallback. */
export function useSimdGemm(flag: boolean | undefined): void {
  simdWorks = flag === false ? false : undefined;
}

/** Whether kiln's wasm SIMD GEMM runs here (it needs WebAssembly with SIMD). */
export function simdGemmAvailable(): boolean {
  if (simdWorks === undefined) {
    try {
      simd.gemm(new Float32Array([2]), new Float32Array([3]), 1, 1, 1);
      simdWorks = true;
    } catch {
      simdWorks = false;
    }
  }
  return simdWorks;
}

export function isPacked(b: unknown): b is PackedB {
  return b instanceof simd.PackedB || b instanceof FallbackPackedB;
}

/** Give a packed weight's memory back now (wasm memory for the SIMD GEMM). */
export function disposePacked(b: PackedB): void {
  if (b instanceof simd.PackedB) b.dispose();
}

/** A buffer the GEMM writes without copying out (wasm memory when the SIMD GEMM runs), and its release. */
export function gemmBuffer(length: number): { data: Float32Array; free: () => void } {
  if (simdGemmAvailable()) {
    const data = simd.heapAlloc(length);
    return { data, free: () => simd.heapFree(data) };
  }
  return { data: new Float32Array(length), free: () => {} };
}

/** Pack B ([K, N], or [N, K] when `transposed`) once, for a weight used on every call. */
export function packB(b: Float32Array, K: number, N: number, opts: { transposed?: boolean } = {}): PackedB {
  if (simdGemmAvailable()) return simd.packB(b, K, N, opts);
  return new FallbackPackedB(K, N, opts.transposed ? transposeB(b, K, N) : b.slice(0, K * N));
}

/** [N, K] → [K, N]. */
function transposeB(b: Float32Array, K: number, N: number): Float32Array {
  const out = new Float32Array(K * N);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) out[k * N + n] = b[n * K + k]!;
  return out;
}

function gemmSource(M: number, K: number, N: number, bias: boolean, relu: boolean): string {
  const last = M - 1;
  const rows = [0, 1, 2, 3].map((j) => `const r${j} = Math.min(y + ${j}, ${last}) * ${K};`);
  const epilogue = [0, 1, 2, 3].map((j) => {
    let e = `s${j}`;
    if (bias) e = `(${e} + bv)`;
    if (relu) e = `Math.max(${e}, 0.0)`;
    return e;
  });
  return [
    `function(a, b${bias ? ', bias' : ''}) {`,
    '  const x = this.thread.x;',
    '  const y = this.thread.y * 4;',
    ...rows.map((r) => `  ${r}`),
    '  let s0 = 0.0;',
    '  let s1 = 0.0;',
    '  let s2 = 0.0;',
    '  let s3 = 0.0;',
    `  for (let k = 0; k < ${K}; k++) {`,
    `    const bk = b[k * ${N} + x];`,
    '    s0 += a[r0 + k] * bk;',
    '    s1 += a[r1 + k] * bk;',
    '    s2 += a[r2 + k] * bk;',
    '    s3 += a[r3 + k] * bk;',
    '  }',
    ...(bias ? ['  const bv = bias[x];'] : []),
    `  return [${epilogue.join(', ')}];`,
    '}',
  ].join('\n');
}

/** The flat data behind a kernel's `Array(4)` output (webasm hands back subarrays of one buffer). */
function flatten4(result: unknown, cells: number): Float32Array {
  if (result instanceof Float32Array) return result;
  const rows = result as ArrayLike<ArrayLike<Float32Array>>;
  const first = rows[0]![0]!;
  if (first.buffer.byteLength >= cells * 16 && first.byteOffset === 0) return new Float32Array(first.buffer, 0, cells * 4);
  const out = new Float32Array(cells * 4);
  let o = 0;
  for (let y = 0; y < rows.length; y++) {
    const row = rows[y]!;
    for (let x = 0; x < row.length; x++) {
      out.set(row[x]!, o);
      o += 4;
    }
  }
  return out;
}

/** out[M×N] = a[M×K] · b (+ bias per column) (then relu). `a` is row-major and dense. */
export function gemm(a: Float32Array, b: Float32Array | PackedB, M: number, K: number, N: number, opts: GemmOptions = {}): Float32Array {
  if (b instanceof FallbackPackedB || !simdGemmAvailable()) {
    if (b instanceof simd.PackedB) throw new KilnError('gemm: a B packed for the SIMD GEMM reached the gpu.js fallback');
    return gemmGpuJs(a, b, M, K, N, opts);
  }
  return simd.gemm(a, b, M, K, N, opts);
}

/** The gpu.js fallback of `gemm`. */
function gemmGpuJs(a: Float32Array, b: Float32Array | FallbackPackedB, M: number, K: number, N: number, opts: GemmOptions): Float32Array {
  const out = opts.out ?? new Float32Array(M * N);
  if (M === 0 || N === 0) return out;
  if (K === 0) {
    for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) out[i * N + j] = opts.bias ? opts.bias[j]! : 0;
    return out;
  }
  const bk = b instanceof FallbackPackedB ? b.data : opts.bTransposed ? transposeB(b, K, N) : b;
  const relu = opts.activation === 'relu';
  const blocks = Math.ceil(M / 4);
  const source = gemmSource(M, K, N, !!opts.bias, relu);
  const kernel = getKernel(
    getKernelBackend(),
    { source, output: [N, blocks], components: 4, maxLoop: K },
    `${a.length},${bk.length},${opts.bias?.length ?? 0}`,
  );
  const raw = flatten4(opts.bias ? kernel(a, bk, opts.bias) : kernel(a, bk), N * blocks);
  // cell (x, y4) holds rows 4·y4 … 4·y4+3 of column x
  for (let y4 = 0; y4 < blocks; y4++) {
    const rowsHere = Math.min(4, M - y4 * 4);
    for (let x = 0; x < N; x++) {
      const src = (y4 * N + x) * 4;
      for (let j = 0; j < rowsHere; j++) out[(y4 * 4 + j) * N + x] = raw[src + j]!;
    }
  }
  return out;
}
