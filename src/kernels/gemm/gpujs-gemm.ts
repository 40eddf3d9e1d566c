/**
 * GEMM as gpu.js `webasm` kernels, kept beside kiln's own wasm SIMD kernel so the two can be measured side by
 * side (bench/gemm.mts). Kernel sources are generated as strings with every size and the epilogue baked in:
 * gpu.js bakes sizes into its wasm anyway, and strings keep TypeScript's emit out of what gpu.js parses.
 *
 * Why "4 rows per thread" is the best layout here: gpu.js vectorizes across 4 neighbouring threads (thread.x
 * in the lanes); a read indexed by thread.x is a 4-lane gather (index math, 4 scalar loads, 3 lane inserts),
 * while a read that only depends on thread.y and the loop is one scalar load splatted to all lanes. So each
 * thread takes 4 rows (an Array(4) return, the widest gpu.js has) and thread.x a column: per k, one gather of
 * B feeds 4 rows of A (splats) and 16 multiply-adds across the lanes; A is packed [M/4][K][4] so the 4 row
 * values sit together, and K is unrolled by 4.
 */

import type { IKernelRunShortcut } from 'gpu.js';
import type { KernelBackendName } from '../backend.js';
import { getKernel, type KernelSpec } from '../cache.js';
import type { Checked, GemmOptions } from './check.js';
import { PackedB, unpackB } from './packed-b.js';
import { beginGemm } from './reference.js';

export interface GpuJsGemmOptions extends GemmOptions {
  /**
   * The gpu.js mode the kernel runs on: 'webasm' (the default, what the side-by-side measures), or any mode
   * `setKernelBackend` accepts; kiln's fallback GEMM (matmul.ts) passes the active kernel backend.
   */
  mode?: KernelBackendName;
}

/**
 * The compiled kernel for `source` over `output` cells: kiln's shared kernel cache (cache.ts), so these
 * kernels are compiled once per mode, shape and epilogue, counted with every other kernel, and created on
 * the same gpu.js instance per mode.
 */
function kernelFor(opts: GpuJsGemmOptions, spec: KernelSpec, args: readonly (Float32Array | undefined)[]): IKernelRunShortcut {
  return getKernel(opts.mode ?? 'webasm', spec, args.map((a) => a?.length ?? 0).join(','));
}

/** The epilogue lines for accumulators `names` at column `x`. */
function epilogue(names: string[], chk: Checked): string {
  const lines: string[] = [];
  if (chk.bias) lines.push(`const bv = bias[x];`, ...names.map((s) => `${s} += bv;`));
  if (chk.relu) lines.push(...names.map((s) => `${s} = Math.max(${s}, 0);`));
  return lines.join('\n');
}

interface Prepared {
  b: Float32Array;
  transposed: boolean;
}

function prepareB(b: Float32Array | PackedB, opts: GemmOptions): Prepared {
  return b instanceof PackedB ? { b: unpackB(b, 'gemm'), transposed: false } : { b, transposed: opts.bTransposed ?? false };
}

function bIndex(k: string, K: number, N: number, transposed: boolean): string {
  return transposed ? `x * ${K} + (${k})` : `(${k}) * ${N} + x`;
}

/** The textbook gpu.js matmul: one output per thread, a gather of B per k. */
export function gemmGpuJsNaive(
  a: Float32Array,
  b: Float32Array | PackedB,
  M: number,
  K: number,
  N: number,
  opts: GpuJsGemmOptions = {},
): Float32Array {
  const { chk, out, done } = beginGemm(a, b, M, K, N, opts);
  if (done) return out;
  const { b: B, transposed } = prepareB(b, opts);
  const source = `function (a, b${chk.bias ? ', bias' : ''}) {
    const x = this.thread.x;
    const ao = this.thread.y * ${K};
    let s = 0;
    for (let k = 0; k < ${K}; k++) {
      s += a[ao + k] * b[${bIndex('k', K, N, transposed)}];
    }
    ${epilogue(['s'], chk)}
    return s;
  }`;
  const kernel = kernelFor(opts, { source, output: [N, M], maxLoop: K }, [a, B, chk.bias]);
  const rows = (chk.bias ? kernel(a, B, chk.bias) : kernel(a, B)) as Float32Array[];
  for (let i = 0; i < M; i++) out.set(rows[i]!, i * N);
  return out;
}

/** K steps per loop iteration: 1→2→4→8 measured 1.9, 2.3, 2.3, 2.5 GFLOP/s at 512 (wasm time alone, 2.0–2.5). */
const UNROLL = 4;

/** A rows4 call ready to run: the kernel, its arguments, and how to lay its result out into `out`. */
interface Rows4Call {
  run(): unknown;
  finish(rows: Float32Array[][]): Float32Array;
}

function prepareRows4(
  a: Float32Array,
  b: Float32Array | PackedB,
  M: number,
  K: number,
  N: number,
  opts: GpuJsGemmOptions,
  threaded: boolean,
): Rows4Call | Float32Array {
  const { chk, out, done } = beginGemm(a, b, M, K, N, opts);
  if (done) return out;
  const { b: B, transposed } = prepareB(b, opts);
  const quads = Math.ceil(M / 4);
  // A → [⌈M/4⌉][K][4], zero rows past M.
  const ap = new Float32Array(quads * K * 4);
  for (let i = 0; i < M; i++) {
    const q = (i >> 2) * K * 4 + (i & 3);
    for (let k = 0; k < K; k++) ap[q + k * 4] = a[i * K + k]!;
  }
  const body = K - (K % UNROLL);
  // One k step per name: the B gather `y…` and the 4 rows' multiply-adds reading packed A at offset `o`.
  const loads = (k: string[]): string => k.map((kk, j) => `const y${j} = b[${bIndex(kk, K, N, transposed)}];`).join('\n');
  const sums = (k: string[], o: (j: number) => string): string =>
    [0, 1, 2, 3].map((r) => `s${r} += ${k.map((_, j) => `a[${o(j)} + ${r}] * y${j}`).join(' + ')};`).join('\n');
  const steps = Array.from({ length: UNROLL }, (_, j) => `k + ${j}`);
  const tail = Array.from({ length: K - body }, (_, j) => String(body + j));
  const source = `function (a, b${chk.bias ? ', bias' : ''}) {
    const x = this.thread.x;
    const ao = this.thread.y * ${K * 4};
    let s0 = 0; let s1 = 0; let s2 = 0; let s3 = 0;
    for (let k = 0; k < ${body}; k += ${UNROLL}) {
      ${loads(steps)}
      const o = ao + k * 4;
      ${sums(steps, (j) => `o + ${4 * j}`)}
    }
    ${tail.length ? `${loads(tail)}\n${sums(tail, (j) => `ao + ${4 * (body + j)}`)}` : ''}
    ${epilogue(['s0', 's1', 's2', 's3'], chk)}
    return [s0, s1, s2, s3];
  }`;
  // asyncMode is gpu.js's threaded contract: a Promise, the cells split over its worker pool.
  const spec = { source, output: [N, quads], components: 4, maxLoop: K, asyncMode: threaded } as const;
  const kernel = kernelFor(opts, spec, [ap, B, chk.bias]);
  return {
    run: () => (chk.bias ? kernel(ap, B, chk.bias) : kernel(ap, B)),
    finish(rows) {
      // Cells are stored [quad][column][4 rows]; gpu.js hands them back as subarrays of one flat array
      // (read per cell instead should a fallback backend ever return separate arrays).
      const first = rows[0]![0]!;
      const contiguous = first.byteOffset === 0 && first.buffer.byteLength >= quads * N * 16;
      const flat = contiguous ? new Float32Array(first.buffer, 0, quads * N * 4) : undefined;
      for (let q = 0; q < quads; q++) {
        for (let r = 0; r < 4 && q * 4 + r < M; r++) {
          const o = (q * 4 + r) * N;
          if (flat) for (let x = 0; x < N; x++) out[o + x] = flat[(q * N + x) * 4 + r]!;
          else for (let x = 0; x < N; x++) out[o + x] = rows[q]![x]![r]!;
        }
      }
      return out;
    },
  };
}

/** The fastest gpu.js formulation found (see the file comment): 4 rows per thread, packed A, K unrolled by 4. */
export function gemmGpuJs(
  a: Float32Array,
  b: Float32Array | PackedB,
  M: number,
  K: number,
  N: number,
  opts: GpuJsGemmOptions = {},
): Float32Array {
  const call = prepareRows4(a, b, M, K, N, opts, false);
  return call instanceof Float32Array ? call : call.finish(call.run() as Float32Array[][]);
}

/** gemmGpuJs under gpu.js's async contract, which splits the kernel over gpu.js's own worker threads (webasm). */
export async function gemmGpuJsThreaded(
  a: Float32Array,
  b: Float32Array | PackedB,
  M: number,
  K: number,
  N: number,
  opts: GpuJsGemmOptions = {},
): Promise<Float32Array> {
  const call = prepareRows4(a, b, M, K, N, opts, true);
  return call instanceof Float32Array ? call : call.finish((await call.run()) as Float32Array[][]);
}
