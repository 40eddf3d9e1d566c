/**
 * Runs one GEMM job on the calling thread plus worker threads that share its wasm memory.
 *
 * A job is cut into chunks (batch entry × row block × column block), and every thread claims chunks from one
 * atomic counter until none are left, so a core that is busy with something else simply does fewer chunks.
 * Each worker owns a slot word in the control block: the caller offers the job (1), a worker that wakes in time
 * joins (2) and reports done (3); a worker that has not woken by the time the caller ran out of chunks is
 * closed out (back to 0), so the caller never waits on a worker that did no work, and never waits at all if a
 * worker failed to start. Workers are unref'd: a pool never keeps the process alive.
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
const NEXT = 0;
const ERROR = 1;
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
const SLOTS = 64; // one 64-byte line per worker slot
const MAX_WORKERS = (CONTROL_BYTES / 4 - SLOTS) / 16;

/**
 * How long a thread spins on its control word before sleeping in Atomics.wait: waking a sleeping thread took
 * ~0.1–0.2 ms on this VM, as long as a whole 64×256×256 matmul, so a worker that just finished a job spins
 * this long for the next one (back-to-back layers), and the caller spins this long for the worker's last chunk.
 * Measured on a 784-512-512-10 MLP forward through gemm: batch 16 0.73 → 0.48 ms, batch 64 ~2.0 → ~1.8 ms.
 */
const SPIN_MS = 0.5;

const OFFERED = 1;
const JOINED = 2;
const DONE = 3;

// The chunk loop, as plain JS so the worker (an eval'd script, no loader) runs exactly the caller's loop.
const CHUNK_LOOP = `
function runChunks(ctrl, gemm, nr, apack, tile) {
  const P = ${PARAMS}, G = ${GEOMETRY};
  const a = ctrl[P], ldaB = ctrl[P + 1], bp = ctrl[P + 2], panelB = ctrl[P + 3], c = ctrl[P + 4], ldcB = ctrl[P + 5];
  const M = ctrl[P + 6], N = ctrl[P + 7], K = ctrl[P + 8], flags = ctrl[P + 9], biasp = ctrl[P + 10];
  const aBatchB = ctrl[P + 12], bBatchB = ctrl[P + 13], cBatchB = ctrl[P + 14];
  const rowChunk = ctrl[G], colChunk = ctrl[G + 1], nRow = ctrl[G + 2], nCol = ctrl[G + 3], total = ctrl[G + 4];
  for (;;) {
    const i = Atomics.add(ctrl, ${NEXT}, 1);
    if (i >= total) return;
    const bi = (i / (nRow * nCol)) | 0;
    const rest = i - bi * nRow * nCol;
    const ri = (rest / nCol) | 0;
    const r0 = ri * rowChunk, c0 = (rest - ri * nCol) * colChunk;
    gemm(a + bi * aBatchB + r0 * ldaB, ldaB, bp + bi * bBatchB + (c0 / nr) * panelB, panelB,
      c + bi * cBatchB + r0 * ldcB + c0 * 4, ldcB, Math.min(rowChunk, M - r0), Math.min(colChunk, N - c0), K,
      flags, biasp + c0 * 4, apack, tile);
  }
}`;

const WORKER_SOURCE = `
const { workerData } = require('node:worker_threads');
const { module, memory, slot, apack, tile, nr, spinMs } = workerData;
const { gemm } = new WebAssembly.Instance(module, { env: { memory } }).exports;
const ctrl = new Int32Array(memory.buffer, 0, ${CONTROL_BYTES / 4});
${CHUNK_LOOP}
let spinUntil = 0;
for (;;) {
  const state = Atomics.load(ctrl, slot);
  if (state !== ${OFFERED}) {
    if (performance.now() < spinUntil) continue;
    Atomics.wait(ctrl, slot, state);
    continue;
  }
  if (Atomics.compareExchange(ctrl, slot, ${OFFERED}, ${JOINED}) !== ${OFFERED}) continue;
  try { runChunks(ctrl, gemm, nr, apack, tile); }
  catch (e) { Atomics.store(ctrl, ${ERROR}, 1); }
  finally {
    Atomics.store(ctrl, slot, ${DONE});
    Atomics.notify(ctrl, slot);
    spinUntil = performance.now() + spinMs;
  }
}`;

type RunChunks = (ctrl: Int32Array, gemm: GemmRuntimeKernel, nr: number, apack: number, tile: number) => void;
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
  private readonly workers: Worker[] = [];

  constructor(private readonly rt: GemmRuntime) {
    this.ctrl = new Int32Array(rt.heap.memory.buffer, 0, CONTROL_BYTES / 4);
  }

  /** Starts workers until there are `count` (never fewer: a worker is never stopped mid-job). */
  ensure(count: number): void {
    const { rt } = this;
    for (let w = this.workers.length; w < Math.min(count, MAX_WORKERS); w++) {
      const scratch: ThreadScratch = allocScratch(rt.heap, rt.cfg);
      const worker = new Worker(WORKER_SOURCE, {
        eval: true,
        workerData: { module: rt.module, memory: rt.heap.memory, slot: SLOTS + 16 * w, nr: rt.cfg.nr, spinMs: SPIN_MS, ...scratch },
      });
      // A worker that dies leaves its slot unjoined, and the caller does its chunks; nothing to handle here.
      worker.on('error', () => {});
      worker.unref();
      this.workers.push(worker);
    }
  }

  get size(): number {
    return this.workers.length;
  }

  /** How many workers took part in the last job (for tests: the caller may well finish before any wakes). */
  lastJoined = 0;

  /** Runs `job` on the caller (with `scratch`) and whichever workers join; returns when every chunk is done. */
  run(job: Job, scratch: ThreadScratch, threads: number): void {
    const { ctrl, rt } = this;
    const used = Math.min(threads - 1, this.workers.length);
    FIELDS.forEach((f, i) => (ctrl[PARAMS + i] = job[f]));
    const geo = geometry(job, used + 1, rt.cfg.mr, rt.cfg.nr);
    geo.forEach((v, i) => (ctrl[GEOMETRY + i] = v));
    Atomics.store(ctrl, NEXT, 0);
    Atomics.store(ctrl, ERROR, 0);
    for (let w = 0; w < used; w++) {
      Atomics.store(ctrl, SLOTS + 16 * w, OFFERED);
      Atomics.notify(ctrl, SLOTS + 16 * w, 1);
    }
    runChunks(ctrl, rt.kernels.gemm, rt.cfg.nr, scratch.apack, scratch.tile);
    this.lastJoined = 0;
    for (let w = 0; w < used; w++) {
      const slot = SLOTS + 16 * w;
      if (Atomics.compareExchange(ctrl, slot, OFFERED, 0) === OFFERED) continue;
      this.lastJoined++;
      // The worker is on its last chunk: spin a little before sleeping (a futex wake costs ~0.1 ms here).
      const spinUntil = performance.now() + SPIN_MS;
      while (Atomics.load(ctrl, slot) !== DONE) if (performance.now() > spinUntil) Atomics.wait(ctrl, slot, JOINED);
      Atomics.store(ctrl, slot, 0);
    }
    if (ctrl[ERROR] !== 0) throw new KilnError('gemm: a worker thread failed while running its part of the matmul');
  }
}
