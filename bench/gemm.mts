/**
 * The matmul micro-benchmark behind src/kernels/gemm: every GEMM variant side by side in one run, C = A·B at
 * n×n×n float32 for n = 256, 512, 1024, in GFLOP/s (2n³ flops per call).
 *
 *   npx tsx bench/gemm.mts [--sizes 256,512] [--reps 10] [--no-peers]
 *
 * After the table: the threaded GEMM called back to back against calls with other work between them (the
 * pattern a compiled matmul in a loop makes, and the one layers of a model make), and the eager MLP training
 * step on the wasm GEMM against the plain-JS kernel, both measured side by side in this process.
 *
 * Per size: every case is checked once against the plain-JS result (max abs error ≤ 1e-4·max(1, |ref|)),
 * warmed up twice (gpu.js compiles, TurboFan tiers the wasm up), then timed in interleaved rounds, one call
 * of each case per round, starting from a different case each round, so background load spreads over all of
 * them; the median of the rounds is reported. The peers (tfjs-wasm, jax-js wasm, onnxruntime-node) come
 * from bench/peers.mts when it loads, so the comparison the issue asks for is made in the same run.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { F, manualSeed, nn, optim, randn, tensor, type Tensor } from '../src/index.js';
import { gemm as eagerGemm, gemmJs as eagerGemmJs, useWasmGemm } from '../src/runtime/cpu/matmul.js';
import { lastJobChunks } from '../src/kernels/gemm/simd-gemm.js';
import {
  gemm,
  gemmGpuJs,
  gemmGpuJsNaive,
  gemmGpuJsThreaded,
  gemmReference,
  getGemmThreads,
  heapAlloc,
  heapFree,
  packB,
  setGemmThreads,
} from '../src/kernels/gemm/index.js';
import { matmulData } from './peers/shapes.mjs';

type Runner = () => Float32Array | Promise<Float32Array>;

interface Case {
  name: string;
  /** What the runner includes, for the reader of the table. */
  note: string;
  prepare(a: Float32Array, b: Float32Array, n: number): Promise<{ run: Runner; dispose?: () => void | Promise<void> } | { skip: string }>;
}

const args = process.argv.slice(2);
const arg = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const SIZES = (arg('--sizes') ?? '256,512,1024').split(',').map(Number);
const REPS = Math.max(10, Number(arg('--reps') ?? 10));
const WARMUP = 2;
const MAX_THREADS = getGemmThreads();

function kilnSimd(threads: number, inPlace: boolean): Case {
  return {
    name: `kiln wasm SIMD, ${threads} thread${threads > 1 ? 's' : ''}, ${inPlace ? 'packed B, in place' : 'copying'}`,
    note: inPlace
      ? 'B packed once beforehand (a weight); a and out are views on wasm memory: no copies per call'
      : 'a, b copied into wasm memory, b packed, result copied out, every call',
    async prepare(a, b, n) {
      if (threads > MAX_THREADS) return { skip: `this machine runs ${MAX_THREADS} thread(s)` };
      if (!inPlace) {
        return {
          run: () => {
            setGemmThreads(threads);
            return gemm(a, b, n, n, n);
          },
        };
      }
      const packed = packB(b, n, n);
      const ha = heapAlloc(n * n);
      ha.set(a);
      const out = heapAlloc(n * n);
      return {
        run: () => {
          setGemmThreads(threads);
          return gemm(ha, packed, n, n, n, { out });
        },
        dispose: () => {
          packed.dispose();
          heapFree(ha);
          heapFree(out);
        },
      };
    },
  };
}

/** An eager matmul kernel taking strided operands, run on dense row-major n×n inputs. */
function eagerCase(name: string, note: string, kernel: typeof eagerGemm): Case {
  const dense = (data: Float32Array, n: number) => ({ data, offset: 0, rowStride: n, colStride: 1 });
  return {
    name,
    note,
    prepare: async (a, b, n) => ({
      run: () => {
        const c = new Float32Array(n * n);
        kernel(dense(a, n), dense(b, n), n, n, n, c);
        return c;
      },
    }),
  };
}

const CASES: Case[] = [
  {
    name: 'plain JS (i-k-j triple loop)',
    note: 'gemmReference: float64 row accumulator',
    prepare: async (a, b, n) => ({ run: () => gemmReference(a, b, n, n, n) }),
  },
  eagerCase('kiln eager (plain JS, 4×4 tile)', "the eager runtime's plain-JS matmul (src/runtime/cpu/matmul.ts)", eagerGemmJs),
  eagerCase(
    'kiln eager (wasm SIMD, strided entry)',
    "the eager runtime's matmul: operands copied/packed from tensor storage into wasm memory, threaded",
    eagerGemm,
  ),
  {
    name: 'gpu.js webasm, naive',
    note: 'one output per thread, sync (1 thread); includes gpu.js argument upload and readback',
    prepare: async (a, b, n) => ({ run: () => gemmGpuJsNaive(a, b, n, n, n) }),
  },
  {
    name: 'gpu.js webasm, 4 rows/thread',
    note: 'best gpu.js kernel found: Array(4) of rows, packed A, K unrolled by 4; sync (1 thread)',
    prepare: async (a, b, n) => ({ run: () => gemmGpuJs(a, b, n, n, n) }),
  },
  {
    name: 'gpu.js webasm, 4 rows/thread, threaded',
    note: "the same kernel under gpu.js's async contract: cells split over gpu.js's worker pool",
    prepare: async (a, b, n) => ({ run: () => gemmGpuJsThreaded(a, b, n, n, n) }),
  },
  kilnSimd(1, false),
  kilnSimd(1, true),
  kilnSimd(2, false),
  kilnSimd(2, true),
];

/** The part of bench/peers.mts used here; typed locally so this bench builds whether or not that file does. */
type PeerPrepared = { available: true; run: () => Promise<Float32Array> } | { available: false; why: string };
interface Peer {
  version: string;
  config: string;
  matmul(a: Float32Array, b: Float32Array, n: number): Promise<PeerPrepared>;
  dispose(): Promise<void>;
}
type LoadedPeer = { available: true; peer: Peer } | { available: false; why: string };
interface PeersModule {
  PEER_NAMES: string[];
  loadPeer(name: string): Promise<LoadedPeer>;
}

/** Peers from bench/peers.mts (another file of the bench, loaded only if present and working). */
async function peerCases(): Promise<{ cases: Case[]; dispose: () => Promise<void> }> {
  if (args.includes('--no-peers')) return { cases: [], dispose: async () => {} };
  try {
    const path = './peers.mjs';
    const peers = (await import(path)) as PeersModule;
    const cases: Case[] = [];
    const loaded: { dispose(): Promise<void> }[] = [];
    for (const name of peers.PEER_NAMES) {
      const l = await peers.loadPeer(name);
      if (!l.available) {
        console.log(`peer ${name}: unavailable (${l.why})`);
        continue;
      }
      loaded.push(l.peer);
      cases.push({
        name: `${name} ${l.peer.version}`,
        note: l.peer.config,
        async prepare(a, b, n) {
          const p = await l.peer.matmul(a, b, n);
          return p.available ? { run: p.run } : { skip: p.why };
        },
      });
    }
    return { cases, dispose: async () => void (await Promise.all(loaded.map((p) => p.dispose()))) };
  } catch (e) {
    console.log(`peers: not loaded (${e instanceof Error ? e.message.split('\n')[0] : String(e)})`);
    return { cases: [], dispose: async () => {} };
  }
}

function maxRelError(x: Float32Array, ref: Float32Array): number {
  let err = 0;
  let mag = 1;
  for (let i = 0; i < ref.length; i++) {
    err = Math.max(err, Math.abs(x[i]! - ref[i]!));
    mag = Math.max(mag, Math.abs(ref[i]!));
  }
  return err / mag;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((p, q) => p - q);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function main(): Promise<void> {
  const peers = await peerCases();
  const cases = [...CASES, ...peers.cases];
  console.log(`gemm bench: n×n×n float32, n ∈ {${SIZES.join(', ')}}, median of ${REPS} interleaved rounds after ${WARMUP} warm-up calls`);
  console.log(`node ${process.version}, ${MAX_THREADS} kiln thread(s) available\n`);
  /** results[case][size] = median ms, or a reason it was skipped. */
  const results = new Map<string, Map<number, number | string>>(cases.map((c) => [c.name, new Map()]));
  const copyCost = new Map<number, number>();

  for (const n of SIZES) {
    const { a, b } = matmulData(n, 1 + n);
    const ref = gemmReference(a, b, n, n, n);
    const live: { c: Case; run: Runner; times: number[]; dispose?: () => void | Promise<void> }[] = [];
    for (const c of cases) {
      const p = await c.prepare(a, b, n);
      if ('skip' in p) {
        results.get(c.name)!.set(n, p.skip);
        console.log(`[${n}] ${c.name}: skipped (${p.skip})`);
        continue;
      }
      const t0 = performance.now();
      const out = await p.run();
      const first = performance.now() - t0;
      for (let i = 1; i < WARMUP; i++) await p.run();
      const err = maxRelError(out, ref);
      if (!(err <= 1e-4)) throw new Error(`${c.name} at ${n}: max error ${err} relative to the reference`);
      console.log(`[${n}] ${c.name}: checked (max rel error ${err.toExponential(1)}), first call ${first.toFixed(1)} ms`);
      live.push({ c, run: p.run, times: [], dispose: p.dispose });
    }
    for (let round = 0; round < REPS; round++) {
      for (let i = 0; i < live.length; i++) {
        const item = live[(i + round) % live.length]!;
        const t0 = performance.now();
        await item.run();
        item.times.push(performance.now() - t0);
      }
    }
    for (const item of live) {
      const ms = median(item.times);
      results.get(item.c.name)!.set(n, ms);
      console.log(`[${n}] ${item.c.name}: ${ms.toFixed(2)} ms, ${gflops(n, ms).toFixed(2)} GFLOP/s`);
      await item.dispose?.();
    }
    copyCost.set(n, measureCopy(a, b, n));
    console.log('');
  }
  await peers.dispose();
  setGemmThreads(MAX_THREADS);
  printTable(cases, results, copyCost);
  const handoff = MAX_THREADS > 1 ? threadPatterns() : null;
  recordResults(results, handoff, eagerMlp());
}

/**
 * The threaded GEMM (2 threads, copying) at 256 and 512: CALLS calls back to back with nothing between them,
 * against CALLS calls each preceded by ~2 ms of other JS work (the worker has gone to sleep by then), in
 * interleaved rounds; the median GFLOP/s per pattern, the share of chunks the worker did, and how many calls
 * ThreadingPolicy kept on the calling thread because threaded calls had been running slower than one thread.
 */
/** Median GFLOP/s by size and pattern, and the worker's share of chunks. */
type Handoff = Record<number, Record<string, { gflops: number; workerShare: number; heldOnOneThread: number }>>;

function threadPatterns(): Handoff {
  const record: Handoff = {};
  const CALLS = 15;
  const rounds = Math.max(5, Math.round(REPS / 2));
  const otherWork = (ms: number): number => {
    const t0 = performance.now();
    let x = 0;
    while (performance.now() - t0 < ms) x += Math.sqrt(x + 1);
    return x;
  };
  setGemmThreads(2);
  console.log(`\nthreaded GEMM, 2 threads, ${CALLS} consecutive calls per pattern, median of ${rounds} interleaved rounds`);
  for (const n of [256, 512]) {
    const { a, b } = matmulData(n, 7 + n);
    for (let i = 0; i < 3; i++) gemm(a, b, n, n, n);
    const patterns = { 'back to back': 0, 'interleaved with 2 ms of other work': 2 };
    const rates = new Map<string, number[]>(Object.keys(patterns).map((k) => [k, []]));
    const shares = new Map<string, number[]>(Object.keys(patterns).map((k) => [k, []]));
    const solo = new Map<string, number>(Object.keys(patterns).map((k) => [k, 0]));
    for (let round = 0; round < rounds; round++) {
      const order = Object.entries(patterns);
      if (round % 2) order.reverse();
      for (const [name, gap] of order) {
        const times: number[] = [];
        for (let i = 0; i < CALLS; i++) {
          if (gap > 0) otherWork(gap);
          const t0 = performance.now();
          gemm(a, b, n, n, n);
          times.push(performance.now() - t0);
          const { chunks, byWorkers } = lastJobChunks();
          shares.get(name)!.push(chunks > 0 ? byWorkers / chunks : 0);
          if (chunks === 0) solo.set(name, solo.get(name)! + 1);
        }
        rates.get(name)!.push(gflops(n, median(times)));
      }
    }
    record[n] = {};
    for (const name of Object.keys(patterns)) {
      const share = shares.get(name)!.reduce((x, y) => x + y, 0) / shares.get(name)!.length;
      const rate = median(rates.get(name)!);
      record[n][name] = { gflops: Number(rate.toFixed(2)), workerShare: Number(share.toFixed(3)), heldOnOneThread: solo.get(name)! };
      console.log(
        `  ${n}: ${name.padEnd(36)} ${rate.toFixed(1).padStart(6)} GFLOP/s, worker did ${(100 * share).toFixed(0)}% of chunks` +
          `, ${solo.get(name)} of ${rounds * CALLS} calls held on one thread (threading measured slower)`,
      );
    }
  }
  setGemmThreads(MAX_THREADS);
  return record;
}

/** The eager MLP 784-512-512-10 training step (batch 64, forward, cross-entropy, backward, Adam), wasm GEMM vs plain JS. */
function eagerMlp(): { wasmMs: number; plainJsMs: number; speedup: number; target: string; pass: boolean } {
  const step = (): (() => number) => {
    manualSeed(0);
    const model = new nn.Sequential(new nn.Linear(784, 512), new nn.ReLU(), new nn.Linear(512, 512), new nn.ReLU(), new nn.Linear(512, 10));
    const opt = new optim.Adam(model.parameters(), { lr: 1e-3 });
    const x = randn([64, 784]);
    const y = tensor(
      Int32Array.from({ length: 64 }, (_, i) => i % 10),
      { dtype: 'int32' },
    );
    return () => {
      opt.zeroGrad();
      const loss = F.crossEntropy(model.call(x) as Tensor, y);
      loss.backward();
      opt.step();
      return loss.item();
    };
  };
  const kernels = { 'wasm SIMD GEMM': true, 'plain-JS GEMM': false };
  const steps = new Map(Object.entries(kernels).map(([name, wasm]) => [name, { wasm, run: step(), times: [] as number[] }]));
  const rounds = Math.max(8, REPS);
  for (let round = -1; round < rounds; round++) {
    const order = [...steps.values()];
    if (round % 2) order.reverse();
    for (const s of order) {
      useWasmGemm(s.wasm);
      const t0 = performance.now();
      s.run();
      if (round >= 0) s.times.push(performance.now() - t0);
    }
  }
  useWasmGemm(undefined);
  const [fast, slow] = [...steps.values()].map((s) => median(s.times));
  console.log(`\neager MLP 784-512-512-10 training step (batch 64, Adam), median of ${rounds} interleaved rounds:`);
  const speedup = slow! / fast!;
  console.log(`  wasm SIMD GEMM ${fast!.toFixed(1)} ms, plain-JS GEMM ${slow!.toFixed(1)} ms: ${speedup.toFixed(2)}× faster (target ≥ 3×)`);
  const round2 = (v: number) => Number(v.toFixed(2));
  return { wasmMs: round2(fast!), plainJsMs: round2(slow!), speedup: round2(speedup), target: '≥ 3×', pass: speedup >= 3 };
}

const gflops = (n: number, ms: number): number => (2 * n ** 3) / (ms * 1e6);

/** What the copying variant pays on top of the kernel: a and b in, C out (memcpy into/out of wasm memory). */
function measureCopy(a: Float32Array, b: Float32Array, n: number): number {
  const ha = heapAlloc(n * n);
  const hb = heapAlloc(n * n);
  const hc = heapAlloc(n * n);
  const out = new Float32Array(n * n);
  const times: number[] = [];
  for (let i = 0; i < REPS; i++) {
    const t0 = performance.now();
    ha.set(a);
    hb.set(b);
    out.set(hc);
    times.push(performance.now() - t0);
  }
  heapFree(ha);
  heapFree(hb);
  heapFree(hc);
  return median(times);
}

function printTable(cases: Case[], results: Map<string, Map<number, number | string>>, copyCost: Map<number, number>): void {
  const width = Math.max(...cases.map((c) => c.name.length));
  const head = ['variant'.padEnd(width), ...SIZES.map((n) => `${n} GFLOP/s (ms)`.padStart(22))].join(' | ');
  console.log(head);
  console.log('-'.repeat(head.length));
  for (const c of cases) {
    const cells = SIZES.map((n) => {
      const r = results.get(c.name)!.get(n);
      if (r === undefined) return '—'.padStart(22);
      if (typeof r === 'string') return 'skipped'.padStart(22);
      return `${gflops(n, r).toFixed(2)} (${r.toFixed(1)})`.padStart(22);
    });
    console.log([c.name.padEnd(width), ...cells].join(' | '));
  }
  console.log('');
  for (const n of SIZES) console.log(`copy a, b in and C out of wasm memory at ${n}: ${copyCost.get(n)!.toFixed(3)} ms (memcpy only)`);
  console.log('');
  for (const c of cases) console.log(`${c.name}: ${c.note}`);
}

/**
 * Keep this run beside `npm run bench`'s in bench/results.json (key `gemm`), so the README's GEMM table has its
 * numbers on file. `--sizes` runs other than the default are not recorded.
 */
function recordResults(
  results: Map<string, Map<number, number | string>>,
  handoff: Handoff | null,
  eagerMlpStep: ReturnType<typeof eagerMlp>,
): void {
  if (SIZES.join(',') !== '256,512,1024') return;
  const file = new URL('./results.json', import.meta.url);
  const all = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>) : {};
  const gflopsBySize = (m: Map<number, number | string>) =>
    Object.fromEntries(SIZES.map((n) => [n, typeof m.get(n) === 'number' ? Number(gflops(n, m.get(n) as number).toFixed(2)) : null]));
  all.gemm = {
    date: new Date().toISOString(),
    note: 'bench/gemm.mts: matmul n×n float32, GFLOP/s, median of interleaved rounds (null: skipped)',
    gflops: Object.fromEntries([...results].map(([name, m]) => [name, gflopsBySize(m)])),
    // the threaded GEMM called back to back vs with other work between calls (null on one core)
    handoff,
    // the eager MLP 784-512-512-10 training step on the wasm GEMM vs the plain-JS GEMM it replaced
    eagerMlpStep,
  };
  writeFileSync(file, JSON.stringify(all, null, 2) + '\n');
  console.log('\nwrote the gemm section of bench/results.json');
}

await main();
