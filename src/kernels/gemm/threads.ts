/**
 * Runs one GEMM job on the calling thread plus worker threads that share its wasm memory.
 *
 * A job is cut into chunks (batch entry × row block × column block), and every thread claims chunks from one
 * atomic claim word until none are left, so a core that is busy with something else simply does fewer chunks.
 * The caller waits only for chunks that were claimed, never for a worker that did no work, and never at all
 * if a worker failed to start (the hand-off is described above CHUNK_LOOP). Where threading has been
 * measured slower than one thread (a busy machine), ThreadingPolicy keeps jobs on the caller for a while.
 * Workers are unref'd: a pool never keeps the process alive.
 */

import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { KilnError } from '../../errors.js';
import { allocScratch, type GemmRuntime, type ThreadScratch } from './runtime.js';
import { CONTROL_BYTES } from './wasm-heap.js';

/** A batched GEMM job; addresses and strides in bytes. */
export interface Job {
  a: number;
  ldaB: number;
  bp: number;
  panelB: number;
  c: number;
  ldcB: number;
  M: number;
  N: number;
  K: number;
  flags: number;
  biasp: number;
  batch: number;
  aBatchB: number;
  bBatchB: number;
  cBatchB: number;
}

// Control block word indices (Int32 over bytes [0, CONTROL_BYTES)).
const SEQ = 0; // the current job's number; idle workers sleep on this word
const ERROR = 1;
const CLAIM64 = 1; // BigInt64 index (Int32 words 2–3): job number << 32 | next chunk to claim
const DONE = 4; // chunks of the current job finished, by any thread
const ALLOWED = 5; // how many workers may take part in the current job
const JOINED = 6; // bit w: worker w did at least one chunk of the current job
const WORKER_CHUNKS = 7; // chunks of the current job done by workers
const PARAMS = 16;
const FIELDS: (keyof Job)[] = [
  'a',
  'ldaB',
  'bp',
  'panelB',
  'c',
  'ldcB',
  'M',
  'N',
  'K',
  'flags',
  'biasp',
  'batch',
  'aBatchB',
  'bBatchB',
  'cBatchB',
];
const GEOMETRY = PARAMS + FIELDS.length; // rowChunk, colChunk, nRow, nCol, total
const MAX_WORKERS = 12;
/** A claim word no job matches: set while the caller rewrites the parameters, so no late thread reads half of them. */
const CLOSED = -1n;

/**
 * How long a thread spins before sleeping in Atomics.wait: waking a sleeping thread took ~0.1–0.2 ms on this
 * VM, as long as a whole 64×256×256 matmul, so a worker that just finished a job spins this long for the next
 * one (back-to-back layers), and the caller spins this long for the chunks still running on workers.
 * Measured on a 784-512-512-10 MLP forward through gemm: batch 16 0.73 → 0.48 ms, batch 64 ~2.0 → ~1.8 ms.
 */
const SPIN_MS = 0.5;

/*
 * The hand-off. The caller closes the claim word, writes the job, opens the claim word for job number `seq`,
 * publishes `seq` and wakes sleeping workers; every thread then claims chunks with a compare-exchange that
 * only succeeds while the claim word still carries its job's number, and counts each finished chunk in DONE.
 * The caller waits for DONE to reach the chunk count, that is only for chunks some thread actually claimed:
 * a worker that wakes late (or is descheduled before it claims) holds nothing up, and one that wakes after
 * the caller has moved on sees another job number on the claim word and does nothing. (The previous
 * protocol, one offered/joined/done slot per worker, waited for every worker that had joined a job to report
 * back, including one that joined and was then descheduled before claiming anything.) Every control word is
 * read and written with Atomics.
 */

// The chunk loop, as plain JS so the worker (an eval'd script, no loader) runs exactly the caller's loop.
// Returns how many chunks this thread did; `bit` is the worker's JOINED bit (0 for the caller).
const CHUNK_LOOP = `
function runChunks(ctrl, claim, seq, gemm, nr, apack, tile, bit) {
  const P = ${PARAMS}, G = ${GEOMETRY};
  const ld = (i) => Atomics.load(ctrl, i);
  const a = ld(P), ldaB = ld(P + 1), bp = ld(P + 2), panelB = ld(P + 3), c = ld(P + 4), ldcB = ld(P + 5);
  const M = ld(P + 6), N = ld(P + 7), K = ld(P + 8), flags = ld(P + 9), biasp = ld(P + 10);
  const aBatchB = ld(P + 12), bBatchB = ld(P + 13), cBatchB = ld(P + 14);
  const rowChunk = ld(G), colChunk = ld(G + 1), nRow = ld(G + 2), nCol = ld(G + 3), total = ld(G + 4);
  const job = BigInt(seq);
  let mine = 0;
  for (;;) {
    const v = Atomics.load(claim, ${CLAIM64});
    if (v >> 32n !== job) return mine; // a later job: what was read above may be half of it
    const i = Number(v & 0xffffffffn);
    if (i >= total) return mine;
    if (Atomics.compareExchange(claim, ${CLAIM64}, v, v + 1n) !== v) continue;
    try {
      const bi = (i / (nRow * nCol)) | 0;
      const rest = i - bi * nRow * nCol;
      const ri = (rest / nCol) | 0;
      const r0 = ri * rowChunk, c0 = (rest - ri * nCol) * colChunk;
      gemm(a + bi * aBatchB + r0 * ldaB, ldaB, bp + bi * bBatchB + (c0 / nr) * panelB, panelB,
        c + bi * cBatchB + r0 * ldcB + c0 * 4, ldcB, Math.min(rowChunk, M - r0), Math.min(colChunk, N - c0), K,
        flags, biasp + c0 * 4, apack, tile);
    } catch (e) {
      Atomics.store(ctrl, ${ERROR}, 1);
    } finally {
      mine++;
      if (bit !== 0) {
        Atomics.add(ctrl, ${WORKER_CHUNKS}, 1);
        if (mine === 1) Atomics.or(ctrl, ${JOINED}, bit);
      }
      if (Atomics.add(ctrl, ${DONE}, 1) + 1 === total) Atomics.notify(ctrl, ${DONE});
    }
  }
}`;

const WORKER_SOURCE = `
const { workerData } = require('node:worker_threads');
const { module, memory, index, apack, tile, nr, spinMs } = workerData;
const { gemm } = new WebAssembly.Instance(module, { env: { memory } }).exports;
const ctrl = new Int32Array(memory.buffer, 0, ${CONTROL_BYTES / 4});
const claim = new BigInt64Array(memory.buffer, 0, ${CONTROL_BYTES / 8});
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
  if (index < Atomics.load(ctrl, ${ALLOWED})) runChunks(ctrl, claim, seq, gemm, nr, apack, tile, 1 << index);
  spinUntil = performance.now() + spinMs;
}`;

type RunChunks = (
  ctrl: Int32Array,
  claim: BigInt64Array,
  seq: number,
  gemm: GemmRuntimeKernel,
  nr: number,
  apack: number,
  tile: number,
  bit: number,
) => number;
type GemmRuntimeKernel = GemmRuntime['kernels']['gemm'];

// The caller's copy of the same loop (the source above is the single definition).
const runChunks = new Function(`${CHUNK_LOOP}; return runChunks;`)() as RunChunks;

/** How many threads a job may use, counting the caller: all cores by default (capped, measured on 2). */
let threadCount = Math.min(availableParallelism(), MAX_WORKERS + 1, 4);

export function setThreadCount(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`gemm threads must be a positive integer, got ${n}`);
  threadCount = Math.min(n, MAX_WORKERS + 1);
}

export function getThreadCount(): number {
  return threadCount;
}

/**
 * Splits a job into about 8 chunks per thread, so a thread slowed by other load just takes fewer: row blocks
 * (multiples of MR) first, then NR-aligned column blocks.
 */
function geometry(job: Job, threads: number, mr: number, nr: number): [number, number, number, number, number] {
  const want = Math.max(1, Math.ceil((threads * 8) / job.batch));
  const roundUp = (x: number, m: number): number => Math.ceil(x / m) * m;
  const rowChunk = Math.min(roundUp(job.M, mr), roundUp(Math.max(Math.ceil(job.M / want), 16), mr));
  const nRow = Math.ceil(job.M / rowChunk);
  const colWant = Math.ceil(want / nRow);
  const colChunk = Math.min(roundUp(job.N, nr), roundUp(Math.max(Math.ceil(job.N / colWant), 64), nr));
  const nCol = Math.ceil(job.N / colChunk);
  return [rowChunk, colChunk, nRow, nCol, job.batch * nRow * nCol];
}

export class GemmPool {
  private readonly ctrl: Int32Array;
  private readonly claim: BigInt64Array;
  private readonly workers: Worker[] = [];
  private seq = 0;

  constructor(private readonly rt: GemmRuntime) {
    this.ctrl = new Int32Array(rt.heap.memory.buffer, 0, CONTROL_BYTES / 4);
    this.claim = new BigInt64Array(rt.heap.memory.buffer, 0, CONTROL_BYTES / 8);
  }

  /** Starts workers until there are `count` (never fewer: a worker is never stopped mid-job). */
  ensure(count: number): void {
    const { rt } = this;
    for (let w = this.workers.length; w < Math.min(count, MAX_WORKERS); w++) {
      const scratch: ThreadScratch = allocScratch(rt.heap, rt.cfg);
      const worker = new Worker(WORKER_SOURCE, {
        eval: true,
        workerData: { module: rt.module, memory: rt.heap.memory, index: w, nr: rt.cfg.nr, spinMs: SPIN_MS, ...scratch },
      });
      // A worker that dies between jobs takes no chunks, and the caller does them; nothing to handle here.
      worker.on('error', () => {});
      worker.unref();
      this.workers.push(worker);
    }
  }

  get size(): number {
    return this.workers.length;
  }

  /** Whether the workers are offered jobs, or the caller runs them alone for a while (see ThreadingPolicy). */
  readonly policy = new ThreadingPolicy();

  /** How many workers did part of the last job (for tests: the caller may well finish before any wakes). */
  lastJoined = 0;
  /** How many of the last job's chunks workers did, and how many it had (for the bench). */
  lastWorkerChunks = 0;
  lastChunks = 0;

  /** The last job ran on the caller alone (the policy held the workers back): no worker took part. */
  noteSolo(): void {
    this.lastJoined = 0;
    this.lastWorkerChunks = 0;
    this.lastChunks = 0;
  }

  /** Runs `job` on the caller (with `scratch`) and whichever workers wake in time; returns when every chunk is done. */
  run(job: Job, scratch: ThreadScratch, threads: number): void {
    const { ctrl, claim, rt } = this;
    const used = Math.min(threads - 1, this.workers.length);
    Atomics.store(claim, CLAIM64, CLOSED);
    FIELDS.forEach((f, i) => Atomics.store(ctrl, PARAMS + i, job[f]));
    const geo = geometry(job, used + 1, rt.cfg.mr, rt.cfg.nr);
    geo.forEach((v, i) => Atomics.store(ctrl, GEOMETRY + i, v));
    for (const word of [DONE, ERROR, JOINED, WORKER_CHUNKS]) Atomics.store(ctrl, word, 0);
    Atomics.store(ctrl, ALLOWED, used);
    const seq = (this.seq = this.seq >= 0x7fffffff ? 1 : this.seq + 1);
    Atomics.store(claim, CLAIM64, BigInt(seq) << 32n);
    Atomics.store(ctrl, SEQ, seq);
    if (used > 0) Atomics.notify(ctrl, SEQ);
    const t0 = performance.now();
    const mine = runChunks(ctrl, claim, seq, rt.kernels.gemm, rt.cfg.nr, scratch.apack, scratch.tile, 0);
    const t1 = performance.now();
    // Only chunks a worker claimed can still be running: spin briefly for them, then sleep.
    const total = geo[4];
    const spinUntil = t1 + SPIN_MS;
    for (let done = Atomics.load(ctrl, DONE); done < total; done = Atomics.load(ctrl, DONE)) {
      if (performance.now() > spinUntil) Atomics.wait(ctrl, DONE, done);
    }
    if (mine < total) this.policy.record(t1 - t0, performance.now() - t0, mine, total);
    this.lastJoined = popcount(Atomics.load(ctrl, JOINED));
    this.lastWorkerChunks = Atomics.load(ctrl, WORKER_CHUNKS);
    this.lastChunks = total;
    if (Atomics.load(ctrl, ERROR) !== 0) throw new KilnError('gemm: a thread failed while running its part of the matmul');
  }
}

/**
 * Keeps threading from making jobs slower than one thread would. On a machine whose other core is busy, a
 * worker can be descheduled while it holds a chunk, and the caller then waits for it longer than doing the
 * whole job alone would have taken (measured here under load: the caller spent as long waiting for the
 * worker's last chunks as computing). After each threaded job the caller compares the job's time with its
 * estimate of running it alone (its own chunks' time × all chunks ÷ its chunks); when the running average
 * says threading lost, the next SOLO_JOBS jobs run on the caller alone, then the workers are tried again.
 */
export class ThreadingPolicy {
  static readonly SOLO_JOBS = 64;
  /** Exponential average of (threaded job time ÷ estimated time alone); 0 when nothing is measured yet. */
  private slowdown = 0;
  private soloLeft = 0;

  /** Whether the next big job should be offered to the workers. */
  offer(): boolean {
    if (this.soloLeft === 0) return true;
    this.soloLeft--;
    return false;
  }

  /** A threaded job: the caller's own chunks took `callerMs`, the whole job `jobMs`; it did `mine` of `total` chunks. */
  record(callerMs: number, jobMs: number, mine: number, total: number): void {
    if (mine <= 0 || mine >= total || !(callerMs > 0)) return;
    const ratio = jobMs / ((callerMs * total) / mine);
    this.slowdown = this.slowdown === 0 ? ratio : 0.75 * this.slowdown + 0.25 * ratio;
    if (this.slowdown > 1) {
      this.soloLeft = ThreadingPolicy.SOLO_JOBS;
      this.slowdown = 0;
    }
  }
}

function popcount(x: number): number {
  let n = 0;
  for (let v = x >>> 0; v !== 0; v &= v - 1) n++;
  return n;
}
