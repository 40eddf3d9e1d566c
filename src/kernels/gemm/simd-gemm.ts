/**
 * kiln's own wasm SIMD GEMM, driven from JS: check the arguments, bring the operands into wasm memory (or use
 * them in place when they already live there), pack B unless it comes packed, run the kernels on this thread
 * and the pool's workers, and copy the result out unless `out` is itself a view on wasm memory.
 */

import { ValueError } from '../../errors.js';
import { checkGemm, type Checked, type GemmOptions } from './check.js';
import { fillEmptyProduct } from './reference.js';
import { packedBytes, packFrom, PackedB } from './packed-b.js';
import { getRuntime, type GemmRuntime } from './runtime.js';
import { FLAG_BIAS, FLAG_RELU } from './simd-kernel.js';
import { GemmPool, getThreadCount, type Job } from './threads.js';

/**
 * Below this many flops a job runs on the calling thread alone. Measured here: 64×256×256 (8.4 MFLOP, ~0.27 ms
 * on one thread) ran 1.6–2× faster on two, while 16–32×256×256 (2–4 MFLOP) gained nothing: waking a worker and
 * splitting the work cost about what the second core saves.
 */
const THREAD_MIN_FLOPS = 1 << 23;

let pool: GemmPool | undefined;

function poolFor(rt: GemmRuntime, threads: number): GemmPool | undefined {
  if (threads <= 1) return undefined;
  pool ??= new GemmPool(rt);
  pool.ensure(threads - 1);
  return pool;
}

function overlaps(x: ArrayBufferView, y: ArrayBufferView): boolean {
  return x.byteOffset < y.byteOffset + y.byteLength && y.byteOffset < x.byteOffset + x.byteLength;
}

function run(
  op: string,
  a: Float32Array,
  b: Float32Array | PackedB,
  batch: number,
  M: number,
  K: number,
  N: number,
  opts: GemmOptions,
  chk: Checked,
): Float32Array {
  const out = opts.out ?? new Float32Array(batch * M * N);
  if (out.length === 0) return out;
  if (K === 0) {
    fillEmptyProduct(out, batch * M, N, chk);
    return out;
  }
  // One B for all batch entries: the batch is just more rows of A.
  if (chk.bBroadcast && batch > 1) {
    M *= batch;
    batch = 1;
  }
  const rt = getRuntime();
  const { heap, cfg } = rt;
  const scratch = heap.scratch();
  const temp = scratch.take;
  const place = (x: Float32Array): number => {
    if (heap.owns(x)) return x.byteOffset;
    const addr = temp(x.byteLength);
    heap.f32.set(x, addr >> 2);
    return addr;
  };
  try {
    const outInPlace = heap.owns(out);
    // b and bias are copied (packed, padded) before the kernels run; a is read in place while C is written.
    if (outInPlace && heap.owns(a) && overlaps(out, a)) {
      throw new ValueError(`${op}: out overlaps a in wasm memory; the result would overwrite rows of a still to be read`);
    }
    const aAddr = place(a);
    let bp: number;
    let bBatchB = 0;
    if (b instanceof PackedB) {
      bp = b.address(op);
    } else {
      const count = chk.bBroadcast ? 1 : batch;
      const per = packedBytes(rt, K, N);
      bp = temp(per * count);
      for (let i = 0; i < count; i++) packFrom(rt, b.subarray(i * K * N, (i + 1) * K * N), K, N, opts.bTransposed ?? false, bp + i * per);
      bBatchB = count > 1 ? per : 0;
    }
    let biasp = 0;
    if (chk.bias) {
      // Padded to whole NR panels: the right-edge tile reads a full NR-wide bias vector.
      biasp = temp(Math.ceil(N / cfg.nr) * cfg.nr * 4);
      heap.f32.fill(0, biasp >> 2, (biasp >> 2) + Math.ceil(N / cfg.nr) * cfg.nr);
      heap.f32.set(chk.bias, biasp >> 2);
    }
    const c = outInPlace ? out.byteOffset : temp(out.byteLength);
    const job: Job = {
      a: aAddr,
      ldaB: K * 4,
      bp,
      panelB: K * cfg.nr * 4,
      c,
      ldcB: N * 4,
      M,
      N,
      K,
      flags: (chk.bias ? FLAG_BIAS : 0) | (chk.relu ? FLAG_RELU : 0),
      biasp,
      batch,
      aBatchB: M * K * 4,
      bBatchB,
      cBatchB: M * N * 4,
    };
    executeJob(rt, job);
    if (!outInPlace) out.set(heap.view(c, out.length));
  } finally {
    scratch.releaseAll();
  }
  return out;
}

/** Runs a job whose operands are already in wasm memory: on this thread and the pool's workers when it is big enough. */
export function executeJob(rt: GemmRuntime, job: Job): void {
  const { batch, M, N, K } = job;
  const threads = 2 * batch * M * N * K >= THREAD_MIN_FLOPS ? getThreadCount() : 1;
  const workers = poolFor(rt, threads);
  if (workers?.policy.offer()) {
    workers.run(job, rt.scratch, threads);
    return;
  }
  workers?.noteSolo();
  for (let i = 0; i < batch; i++) {
    rt.kernels.gemm(
      job.a + i * job.aBatchB,
      job.ldaB,
      job.bp + i * job.bBatchB,
      job.panelB,
      job.c + i * job.cBatchB,
      job.ldcB,
      M,
      N,
      K,
      job.flags,
      job.biasp,
      rt.scratch.apack,
      rt.scratch.tile,
    );
  }
}

/** @internal How many worker threads joined the last threaded job (0 when none did or none was offered). */
export function lastJobWorkers(): number {
  return pool?.lastJoined ?? 0;
}

/** @internal The last threaded job's chunk count and how many of its chunks worker threads did (for the bench). */
export function lastJobChunks(): { chunks: number; byWorkers: number } {
  return { chunks: pool?.lastChunks ?? 0, byWorkers: pool?.lastWorkerChunks ?? 0 };
}

/** out[M×N] = a[M×K] @ b[K×N] (+ bias per column) (then ReLU), on kiln's wasm SIMD kernels. */
export function gemmSimd(
  a: Float32Array,
  b: Float32Array | PackedB,
  M: number,
  K: number,
  N: number,
  opts: GemmOptions = {},
): Float32Array {
  const chk = checkGemm('gemm', a, b, M, K, N, opts);
  return run('gemm', a, b, 1, M, K, N, opts, chk);
}

/** out[batch, M, N] = a[batch, M, K] @ b[batch, K, N], b broadcast when it holds one [K, N] matrix (or is packed). */
export function bmmSimd(
  a: Float32Array,
  b: Float32Array | PackedB,
  batch: number,
  M: number,
  K: number,
  N: number,
  opts: GemmOptions = {},
): Float32Array {
  const chk = checkGemm('bmm', a, b, M, K, N, opts, batch);
  return run('bmm', a, b, batch, M, K, N, opts, chk);
}
