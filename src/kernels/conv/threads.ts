/**
 * Runs a convolution kernel over a range of output pixels on the calling thread plus worker threads sharing
 * the GEMM's wasm memory, the way the GEMM's pool does (gemm/threads.ts): the range is cut into about 8 chunks
 * per thread, every thread claims chunks from one atomic claim word (job number << 32 | next chunk) until none
 * are left, and the caller waits only for chunks some thread claimed. A worker that wakes late finds another
 * job number on the claim word and does nothing. ThreadingPolicy keeps jobs on the caller for a while when
 * threaded ones measure slower than one thread would have been (a busy machine). The thread count is the
 * GEMM's (setGemmThreads); workers are unref'd and spin briefly after a job, then sleep in Atomics.wait.
 *
 * A job is one exported kernel call whose arguments hold the pixel range [p0, p1) at two known positions and
 * optionally a per-thread scratch block at a third: each thread calls the kernel on its chunks with its own
 * range and scratch. Only `conv` runs here: any pixel range of it is independent of the others.
 */

import { Worker } from 'node:worker_threads';
import { KilnError } from '../../errors.js';
import { getThreadCount, ThreadingPolicy } from '../gemm/threads.js';
import type { WasmModule } from '../gemm/wasm-api.js';
import type { ConvRuntime } from './runtime.js';

/** A kernel call over pixels [0, total): its arguments, where the range and the scratch go in them, and a chunk's unit. */
export interface RangeJob {
  readonly fn: 'conv';
  readonly args: number[];
  readonly p0Arg: number;
  readonly p1Arg: number;
  readonly scratchArg: number;
  readonly total: number;
  /** chunk sizes are multiples of this (the micro-kernel's rows) */
  readonly grain: number;
}

// control words (Int32 indices into the pool's control block)
const SEQ = 0;
const ERROR = 1;
const CLAIM64 = 1; // BigInt64 index: Int32 words 2–3
const DONE = 4;
const CHUNK = 5;
const TOTAL = 6;
const NARGS = 7;
const P0ARG = 8;
const P1ARG = 9;
const SCRATCHARG = 10;
const ALLOWED = 11;
const WORKER_CHUNKS = 12; // chunks of the current job done by workers
const ARGS = 16;
const MAX_ARGS = 32;
const CONTROL_BYTES = (ARGS + MAX_ARGS) * 4;
const CLOSED = -1n;
const MAX_WORKERS = 12;
/** As the GEMM pool's SPIN_MS: waking a sleeping worker costs ~0.1–0.2 ms here, so one spins this long for the next job. */
const SPIN_MS = 0.5;
/** Below this many multiply-adds ×2 a job runs on the caller alone (the GEMM's THREAD_MIN_FLOPS). */
export const CONV_THREAD_MIN_FLOPS = 1 << 23;

const CHUNK_LOOP = `
function runChunks(ctrl, claim, seq, fn, scratch, worker) {
  const ld = (i) => Atomics.load(ctrl, i);
  const chunk = ld(${CHUNK}), total = ld(${TOTAL}), nargs = ld(${NARGS});
  const p0Arg = ld(${P0ARG}), p1Arg = ld(${P1ARG}), scratchArg = ld(${SCRATCHARG});
  const args = [];
  for (let i = 0; i < nargs; i++) args.push(ld(${ARGS} + i));
  if (scratchArg >= 0) args[scratchArg] = scratch;
  const job = BigInt(seq);
  const chunks = Math.ceil(total / chunk);
  let mine = 0;
  for (;;) {
    const v = Atomics.load(claim, ${CLAIM64});
    if (v >> 32n !== job) return mine;
    const i = Number(v & 0xffffffffn);
    if (i >= chunks) return mine;
    if (Atomics.compareExchange(claim, ${CLAIM64}, v, v + 1n) !== v) continue;
    try {
      args[p0Arg] = i * chunk;
      args[p1Arg] = Math.min(total, (i + 1) * chunk);
      fn(...args);
    } catch (e) {
      Atomics.store(ctrl, ${ERROR}, 1);
    } finally {
      mine++;
      if (worker) Atomics.add(ctrl, ${WORKER_CHUNKS}, 1);
      if (Atomics.add(ctrl, ${DONE}, 1) + 1 === chunks) Atomics.notify(ctrl, ${DONE});
    }
  }
}`;

const WORKER_SOURCE = `
const { workerData } = require('node:worker_threads');
const { module, memory, control, index, scratch, spinMs } = workerData;
const { conv } = new WebAssembly.Instance(module, { env: { memory } }).exports;
const ctrl = new Int32Array(memory.buffer, control, ${CONTROL_BYTES / 4});
const claim = new BigInt64Array(memory.buffer, control, ${CONTROL_BYTES / 8});
${CHUNK_LOOP}
let seen = Atomics.load(ctrl, ${SEQ});
let spinUntil = 0;
for (;;) {
  const seq = Atomics.load(ctrl, ${SEQ});
  if (seq === seen) {
    if (performance.now() < spinUntil) continue;
    Atomics.wait(ctrl, ${SEQ}, seen);
    continue;
  }
  seen = seq;
  if (index < Atomics.load(ctrl, ${ALLOWED})) runChunks(ctrl, claim, seq, conv, scratch, true);
  spinUntil = performance.now() + spinMs;
}`;

type RunChunks = (
  ctrl: Int32Array,
  claim: BigInt64Array,
  seq: number,
  fn: (...args: number[]) => void,
  scratch: number,
  worker: boolean,
) => number;
const runChunks = new Function(`${CHUNK_LOOP}; return runChunks;`)() as RunChunks;

class ConvPool {
  private readonly control: number;
  private readonly ctrl: Int32Array;
  private readonly claim: BigInt64Array;
  private readonly workers: Worker[] = [];
  private seq = 0;
  readonly policy = new ThreadingPolicy();

  constructor(
    private readonly rt: ConvRuntime,
    private readonly module: WasmModule,
    private readonly scratchBytes: number,
  ) {
    const { heap } = rt.gemm;
    this.control = heap.alloc(CONTROL_BYTES);
    // 8-byte aligned (the allocator aligns to 64), so the claim word is a valid BigInt64 slot
    this.ctrl = new Int32Array(heap.memory.buffer, this.control, CONTROL_BYTES / 4);
    this.claim = new BigInt64Array(heap.memory.buffer, this.control, CONTROL_BYTES / 8);
    this.ctrl.fill(0);
  }

  ensure(count: number): void {
    const { heap } = this.rt.gemm;
    for (let w = this.workers.length; w < Math.min(count, MAX_WORKERS); w++) {
      const worker = new Worker(WORKER_SOURCE, {
        eval: true,
        workerData: {
          module: this.module,
          memory: heap.memory,
          control: this.control,
          index: w,
          scratch: heap.alloc(this.scratchBytes),
          spinMs: SPIN_MS,
        },
      });
      worker.on('error', () => {}); // a dead worker claims no chunks; the caller does them
      worker.unref();
      this.workers.push(worker);
    }
  }

  /** Runs `job` on the caller (with `scratch`) and whichever workers wake in time. */
  run(job: RangeJob, scratch: number, threads: number): void {
    const { ctrl, claim } = this;
    if (job.args.length > MAX_ARGS) throw new KilnError(`conv threads: ${job.fn} has ${job.args.length} arguments, more than ${MAX_ARGS}`);
    const used = Math.min(threads - 1, this.workers.length);
    const want = Math.max(1, (used + 1) * 8);
    const chunk = Math.max(job.grain, Math.ceil(job.total / want / job.grain) * job.grain);
    const chunks = Math.ceil(job.total / chunk);
    Atomics.store(claim, CLAIM64, CLOSED);
    job.args.forEach((v, i) => Atomics.store(ctrl, ARGS + i, v));
    const words: [number, number][] = [
      [CHUNK, chunk],
      [TOTAL, job.total],
      [NARGS, job.args.length],
      [P0ARG, job.p0Arg],
      [P1ARG, job.p1Arg],
      [SCRATCHARG, job.scratchArg],
      [DONE, 0],
      [WORKER_CHUNKS, 0],
      [ERROR, 0],
      [ALLOWED, used],
    ];
    for (const [i, v] of words) Atomics.store(ctrl, i, v);
    const seq = (this.seq = this.seq >= 0x7fffffff ? 1 : this.seq + 1);
    Atomics.store(claim, CLAIM64, BigInt(seq) << 32n);
    Atomics.store(ctrl, SEQ, seq);
    if (used > 0) Atomics.notify(ctrl, SEQ);
    const t0 = performance.now();
    const mine = runChunks(ctrl, claim, seq, this.rt.kernels[job.fn] as (...args: number[]) => void, scratch, false);
    const t1 = performance.now();
    const spinUntil = t1 + SPIN_MS;
    for (let done = Atomics.load(ctrl, DONE); done < chunks; done = Atomics.load(ctrl, DONE)) {
      if (performance.now() > spinUntil) Atomics.wait(ctrl, DONE, done);
    }
    lastChunks = { chunks, byWorkers: Atomics.load(ctrl, WORKER_CHUNKS) };
    if (mine < chunks) this.policy.record(t1 - t0, performance.now() - t0, mine, chunks);
    if (Atomics.load(ctrl, ERROR) !== 0) throw new KilnError(`${job.fn}: a thread failed while running its part of the convolution`);
  }
}

let pool: ConvPool | undefined;
let lastChunks = { chunks: 0, byWorkers: 0 };

/** @internal The last conv job's chunk count and how many of them worker threads did (0 and 0 when it ran on the caller alone). */
export function lastConvJobChunks(): { chunks: number; byWorkers: number } {
  return lastChunks;
}

/**
 * Runs `job` over its pixels: on this thread alone when `flops` is small, one thread is asked for, or the
 * policy holds the workers back; else with the pool's workers. `scratch` is this thread's scratch block.
 */
export function runRange(rt: ConvRuntime, job: RangeJob, flops: number, scratch: number, scratchBytes: number): void {
  const threads = flops >= CONV_THREAD_MIN_FLOPS ? getThreadCount() : 1;
  if (threads > 1) {
    pool ??= new ConvPool(rt, rt.module, scratchBytes);
    pool.ensure(threads - 1);
    if (pool.policy.offer()) {
      pool.run(job, scratch, threads);
      return;
    }
  }
  lastChunks = { chunks: 0, byWorkers: 0 };
  const args = [...job.args];
  args[job.p0Arg] = 0;
  args[job.p1Arg] = job.total;
  if (job.scratchArg >= 0) args[job.scratchArg] = scratch;
  (rt.kernels[job.fn] as (...a: number[]) => void)(...args);
}
