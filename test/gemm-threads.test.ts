import test from 'ava';
import { bmm, gemm, gemmReference, getGemmThreads, setGemmThreads, type GemmOptions } from '../src/kernels/gemm/index.js';
import { lastJobChunks, lastJobWorkers } from '../src/kernels/gemm/simd-gemm.js';
import { bmmStrided } from '../src/kernels/gemm/strided.js';
import { ThreadingPolicy } from '../src/kernels/gemm/threads.js';

/**
 * The threaded GEMM called back to back, with nothing between the calls: every job's result must be the one
 * a single thread computes (bit for bit: each chunk runs the same kernel on the same data), for many
 * consecutive jobs of different sizes, so a worker that wakes for one job while the caller has moved on to
 * the next (other sizes, other addresses) can never run a chunk with the wrong job's parameters.
 */

function random(n: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  });
}

interface Job {
  run: () => Float32Array;
  M: number;
  K: number;
  N: number;
}

/** Jobs above and below the threading threshold, square and ragged, plain, transposed, epilogue, batched. */
function jobs(): Job[] {
  const sizes: [number, number, number][] = [
    [256, 256, 256],
    [64, 256, 256],
    [150, 130, 250],
    [8, 8, 8],
    [300, 64, 129],
    [33, 517, 61],
    [128, 1, 512],
    [200, 200, 200],
  ];
  const out: Job[] = [];
  sizes.forEach(([M, K, N], i) => {
    const a = random(M * K, 10 + i);
    const b = random(K * N, 20 + i);
    const opts: GemmOptions = i % 2 ? { bias: random(N, 30 + i), activation: 'relu' } : { bTransposed: i % 4 === 2 };
    out.push({ run: () => gemm(a, b, M, K, N, opts), M, K, N });
  });
  const [ba, bb] = [random(5 * 60 * 140, 40), random(5 * 140 * 90, 41)];
  out.push({ run: () => bmm(ba, bb, 5, 60, 140, 90), M: 60, K: 140, N: 90 });
  // The eager runtime's entry: a transposed A (strided copy) and a transposed B (packed from [N, K]).
  const [sa, sb] = [random(180 * 160, 50), random(120 * 180, 51)];
  out.push({
    run: () => {
      const c = new Float32Array(160 * 120);
      bmmStrided(
        { data: sa, offsets: [0], rowStride: 1, colStride: 160 },
        { data: sb, offsets: [0], rowStride: 1, colStride: 180 },
        1,
        160,
        180,
        120,
        c,
      );
      return c;
    },
    M: 160,
    K: 180,
    N: 120,
  });
  return out;
}

test('back-to-back threaded GEMM calls of different sizes give the single-thread result every time', (t) => {
  const threads = getGemmThreads();
  const list = jobs();
  try {
    setGemmThreads(1);
    const want = list.map((j) => j.run());
    setGemmThreads(2);
    let byWorkers = 0;
    let joined = 0;
    // 40 passes over the list, no pause: each job follows the previous one immediately.
    for (let pass = 0; pass < 40; pass++) {
      for (let i = 0; i < list.length; i++) {
        const got = list[i]!.run();
        const w = want[i]!;
        let same = got.length === w.length;
        for (let k = 0; same && k < w.length; k++) same = Object.is(got[k], w[k]);
        if (!same) {
          const { M, K, N } = list[i]!;
          t.fail(`pass ${pass}, job ${i} (${M}×${K}×${N}): the threaded result differs from the single-thread one`);
          return;
        }
        byWorkers += lastJobChunks().byWorkers;
        joined = Math.max(joined, lastJobWorkers());
      }
    }
    t.is(joined, 1, 'no worker ever joined a job, so the threaded path went untested');
    t.true(byWorkers > 0);
  } finally {
    setGemmThreads(threads);
  }
});

test('the single-thread results the threaded ones are compared with agree with the float64 definition', (t) => {
  const threads = getGemmThreads();
  try {
    setGemmThreads(1);
    const [M, K, N] = [150, 130, 250];
    const a = random(M * K, 60);
    const b = random(K * N, 61);
    const got = gemm(a, b, M, K, N);
    const want = gemmReference(a, b, M, K, N);
    let err = 0;
    for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(got[i]! - want[i]!));
    t.true(err < 1e-4, `max abs error ${err}`);
  } finally {
    setGemmThreads(threads);
  }
});

test('the threading policy holds the workers back for a while once threaded jobs run slower than one thread would', (t) => {
  const policy = new ThreadingPolicy();
  // The caller did half the chunks in 1 ms: alone the job would take 2 ms. Jobs of 1.2 ms are a win.
  for (let i = 0; i < 20; i++) {
    t.true(policy.offer());
    policy.record(1, 1.2, 8, 16);
  }
  // Waiting for a descheduled worker: 3 ms against 2 ms alone. One slow job is not enough (the average is
  // 0.6 → 0.83 → 0.99); the third tips it over 1, and the next SOLO_JOBS jobs run on the caller.
  policy.record(1, 3, 8, 16);
  policy.record(1, 3, 8, 16);
  t.true(policy.offer());
  policy.record(1, 3, 8, 16);
  const offered = Array.from({ length: ThreadingPolicy.SOLO_JOBS }, () => policy.offer());
  t.deepEqual(offered, Array<boolean>(ThreadingPolicy.SOLO_JOBS).fill(false));
  // Then the workers are tried again, and one good job keeps them.
  t.true(policy.offer());
  policy.record(1, 1.1, 8, 16);
  t.true(policy.offer());
  // Jobs the workers took no part in say nothing about threading.
  policy.record(2, 2, 16, 16);
  t.true(policy.offer());
});
