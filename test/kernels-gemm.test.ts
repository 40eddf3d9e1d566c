import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { DTypeError, ShapeError, ValueError } from '../src/errors.js';
import {
  bmm,
  gemm,
  gemmGpuJs,
  gemmGpuJsNaive,
  gemmGpuJsThreaded,
  gemmHeapBytes,
  gemmReference,
  getGemmThreads,
  heapAlloc,
  heapFree,
  onHeap,
  packB,
  setGemmThreads,
  type GemmOptions,
} from '../src/kernels/gemm/index.js';
import type { GemmExports } from '../src/kernels/gemm/runtime.js';
import { buildGemmModule, FLAG_BIAS, FLAG_RELU, scratchBytes, type KernelConfig } from '../src/kernels/gemm/simd-kernel.js';
import { wasm } from '../src/kernels/gemm/wasm-api.js';
import { ModuleBuilder } from '../src/kernels/gemm/wasm-encoder.js';
import { WasmHeap } from '../src/kernels/gemm/wasm-heap.js';
import { lastJobWorkers } from '../src/kernels/gemm/simd-gemm.js';

/** Deterministic values in [-1, 1). */
function random(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

/** The definition, in float64: (a @ b + bias) then relu, b given as [K, N] or [N, K]. */
function naive(a: Float32Array, b: Float32Array, M: number, K: number, N: number, opts: GemmOptions = {}): Float64Array {
  const out = new Float64Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = opts.bias ? opts.bias[j]! : 0;
      for (let k = 0; k < K; k++) s += a[i * K + k]! * (opts.bTransposed ? b[j * K + k]! : b[k * N + j]!);
      out[i * N + j] = opts.activation === 'relu' ? Math.max(s, 0) : s;
    }
  }
  return out;
}

/** Max abs error ≤ 1e-4 relative to the reference's magnitude. */
function assertClose(t: { true(v: boolean, m?: string): void }, got: Float32Array, want: ArrayLike<number>, what: string): void {
  let err = 0;
  let mag = 1;
  for (let i = 0; i < want.length; i++) {
    err = Math.max(err, Math.abs(got[i]! - want[i]!));
    mag = Math.max(mag, Math.abs(want[i]!));
  }
  t.true(got.length === want.length && err <= 1e-4 * mag, `${what}: length ${got.length}/${want.length}, max error ${err} (scale ${mag})`);
}

const SHAPES: [number, number, number][] = [
  [1, 1, 1],
  [1, 9, 1],
  [3, 5, 7],
  [17, 33, 9],
  [64, 128, 65],
  [100, 1, 100],
  [5, 300, 13],
  [67, 513, 31],
  [256, 256, 256],
];

const EPILOGUES: GemmOptions[] = [{ activation: 'none' }, { activation: 'relu' }];

function withBias(opts: GemmOptions, N: number, seed: number): GemmOptions[] {
  return [opts, { ...opts, bias: random(N, seed) }];
}

test('gemm matches the triple loop at awkward shapes, with and without bias and ReLU, B plain or transposed', (t) => {
  for (const [M, K, N] of SHAPES) {
    const a = random(M * K, M + 1);
    const b = random(K * N, K + 2);
    for (const bTransposed of [false, true]) {
      for (const base of EPILOGUES) {
        for (const opts of withBias({ ...base, bTransposed }, N, N + 3)) {
          const want = naive(a, b, M, K, N, opts);
          assertClose(t, gemm(a, b, M, K, N, opts), want, `gemm ${M}x${K}x${N} ${JSON.stringify({ ...opts, bias: !!opts.bias })}`);
        }
      }
    }
  }
});

test('gemm matches the triple loop at 80 random shapes and option sets (seeded)', (t) => {
  let s = 12345;
  const next = (n: number): number => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return 1 + (s % n);
  };
  for (let i = 0; i < 80; i++) {
    const [M, K, N] = [next(70), next(300), next(70)];
    const a = random(M * K, i);
    const b = random(K * N, i + 1000);
    const opts: GemmOptions = {
      bTransposed: next(2) === 1,
      activation: next(2) === 1 ? 'relu' : 'none',
      bias: next(2) === 1 ? random(N, i + 2000) : undefined,
    };
    assertClose(t, gemm(a, b, M, K, N, opts), naive(a, b, M, K, N, opts), `gemm ${M}x${K}x${N} #${i}`);
  }
});

test('the plain-JS reference agrees with the definition', (t) => {
  for (const [M, K, N] of SHAPES.slice(0, 6)) {
    const a = random(M * K, 7);
    const b = random(K * N, 8);
    const opts: GemmOptions = { bias: random(N, 9), activation: 'relu', bTransposed: true };
    assertClose(t, gemmReference(a, b, M, K, N, opts), naive(a, b, M, K, N, opts), `reference ${M}x${K}x${N}`);
  }
});

test('the gpu.js variants agree with the definition (every K tail, M not a multiple of 4, epilogues, transposed B)', (t) => {
  const shapes: [number, number, number][] = [
    [1, 1, 1],
    [3, 5, 7],
    [17, 33, 9],
    [6, 8, 12],
    [5, 6, 3],
    [2, 7, 5],
  ];
  for (const [M, K, N] of shapes) {
    const a = random(M * K, 11);
    const b = random(K * N, 12);
    const cases: GemmOptions[] = [{}, { bias: random(N, 13), activation: 'relu', bTransposed: true }];
    for (const opts of cases) {
      const want = naive(a, b, M, K, N, opts);
      assertClose(t, gemmGpuJs(a, b, M, K, N, opts), want, `gemmGpuJs ${M}x${K}x${N}`);
      assertClose(t, gemmGpuJsNaive(a, b, M, K, N, opts), want, `gemmGpuJsNaive ${M}x${K}x${N}`);
    }
  }
  const packed = packB(random(5 * 7, 14), 5, 7);
  assertClose(t, gemmGpuJs(random(15, 15), packed, 3, 5, 7), naive(random(15, 15), random(35, 14), 3, 5, 7), 'gemmGpuJs with a PackedB');
  packed.dispose();
});

test('the threaded gpu.js variant (gpu.js async contract, its worker pool) agrees too', async (t) => {
  for (const [M, K, N] of [
    [3, 5, 7],
    [64, 37, 300], // 16 quads × 300 columns: past gpu.js's 4096-cell threading threshold
  ] as const) {
    const a = random(M * K, 51);
    const b = random(N * K, 52);
    const opts: GemmOptions = { bias: random(N, 53), activation: 'relu', bTransposed: true };
    assertClose(t, await gemmGpuJsThreaded(a, b, M, K, N, opts), naive(a, b, M, K, N, opts), `gemmGpuJsThreaded ${M}x${K}x${N}`);
  }
});

test('a packed B is reused across calls, from plain or transposed weights, and refuses use after dispose', (t) => {
  const [K, N] = [37, 21];
  const w = random(N * K, 21); // a Linear weight [out, in] = B transposed
  const packed = packB(w, K, N, { transposed: true });
  t.deepEqual([packed.K, packed.N, packed.disposed], [K, N, false]);
  const bias = random(N, 22);
  for (const M of [1, 4, 9, 64]) {
    const x = random(M * K, M);
    const opts: GemmOptions = { bias, activation: 'relu' };
    const want = naive(x, w, M, K, N, { ...opts, bTransposed: true });
    assertClose(t, gemm(x, packed, M, K, N, opts), want, `packed, M=${M}`);
    // The same result as packing on the fly, bit for bit: the kernel is the same.
    t.deepEqual(gemm(x, packed, M, K, N, opts), gemm(x, w, M, K, N, { ...opts, bTransposed: true }));
  }
  const plain = random(K * N, 23);
  const packedPlain = packB(plain, K, N);
  assertClose(t, gemm(random(3 * K, 24), packedPlain, 3, K, N), naive(random(3 * K, 24), plain, 3, K, N), 'packed plain B');
  packed.dispose();
  packed.dispose(); // twice is fine
  t.true(packed.disposed);
  t.throws(() => gemm(random(K, 1), packed, 1, K, N), { instanceOf: ValueError, message: /^gemm: packed b \[37, 21\] was disposed/ });
  packedPlain.dispose();
});

test('packB stages a B from outside wasm memory a few panels at a time: same result, and memory grows by the packed size only', (t) => {
  // [K, N] chosen so the staging block holds several panels (2 chunks) or less than one panel (chunks of one)
  for (const [K, N] of [
    [300, 250],
    [9000, 20],
  ] as const) {
    for (const transposed of [false, true]) {
      const b = random(K * N, K + N);
      const packed = packB(b, K, N, { transposed });
      const a = random(3 * K, 7);
      const raw = gemm(a, b, 3, K, N, { bTransposed: transposed });
      t.deepEqual(gemm(a, packed, 3, K, N), raw, `packed = packed per call, K=${K} N=${N} transposed=${transposed}`);
      assertClose(t, raw, naive(a, b, 3, K, N, { bTransposed: transposed }), `K=${K} N=${N} transposed=${transposed}`);
      packed.dispose();
    }
  }
  // wasm memory never shrinks: packing a 4 MiB weight must not leave a second copy's worth of growth behind
  const [K, N] = [1024, 1024];
  const w = random(K * N, 5);
  const before = gemmHeapBytes();
  const packed = packB(w, K, N, { transposed: true });
  const grown = gemmHeapBytes() - before;
  t.true(grown <= K * N * 4 + 256 * 1024 + 65536, `grew ${grown} bytes for a ${K * N * 4}-byte packed weight`);
  packed.dispose();
});

test('views on wasm memory are used in place, give the same result, and survive the memory growing', (t) => {
  const [M, K, N] = [33, 70, 41];
  const a = random(M * K, 31);
  const b = random(K * N, 32);
  const ha = heapAlloc(M * K);
  const out = heapAlloc(M * N);
  t.true(onHeap(ha) && onHeap(out) && !onHeap(a));
  ha.set(a);
  const packed = packB(b, K, N);
  const result = gemm(ha, packed, M, K, N, { out, activation: 'relu' });
  t.is(result, out);
  t.deepEqual(Array.from(out), Array.from(gemm(a, b, M, K, N, { activation: 'relu' })));
  // Grow the memory by allocating far past its current size; old views still read and write it.
  const big = heapAlloc(16 << 20);
  gemm(ha, packed, M, K, N, { out });
  assertClose(t, out, naive(a, b, M, K, N), 'after growth');
  heapFree(big);
  // An out that overlaps an input in wasm memory would be overwritten while still read.
  t.throws(() => gemm(ha, random(K * K, 33), M, K, K, { out: ha }), {
    instanceOf: ValueError,
    message: /^gemm: out overlaps a in wasm memory/,
  });
  heapFree(ha);
  heapFree(out);
  packed.dispose();
  t.throws(() => heapFree(a), { instanceOf: ValueError, message: /^heapFree: / });
});

test('bmm: per-batch B, broadcast B (raw and packed), epilogues', (t) => {
  const cases: [number, number, number, number][] = [
    [1, 1, 1, 1],
    [3, 5, 7, 9],
    [4, 17, 16, 33],
  ];
  for (const [B, M, K, N] of cases) {
    const a = random(B * M * K, B);
    const bs = random(B * K * N, B + 1);
    const one = random(K * N, B + 2);
    const bias = random(N, B + 3);
    const opts: GemmOptions = { bias, activation: 'relu' };
    const perBatch = bmm(a, bs, B, M, K, N, opts);
    const broadcast = bmm(a, one, B, M, K, N, opts);
    const packed = packB(one, K, N);
    const broadcastPacked = bmm(a, packed, B, M, K, N, opts);
    const transposedB = new Float32Array(B * K * N);
    for (let i = 0; i < B; i++) {
      for (let k = 0; k < K; k++) for (let j = 0; j < N; j++) transposedB[i * K * N + j * K + k] = bs[i * K * N + k * N + j]!;
    }
    const perBatchT = bmm(a, transposedB, B, M, K, N, { ...opts, bTransposed: true });
    for (let i = 0; i < B; i++) {
      const ai = a.subarray(i * M * K, (i + 1) * M * K);
      const slice = (x: Float32Array): Float32Array => x.subarray(i * M * N, (i + 1) * M * N);
      const want = naive(ai, bs.subarray(i * K * N, (i + 1) * K * N), M, K, N, opts);
      assertClose(t, slice(perBatch), want, `bmm ${B}x${M}x${K}x${N} batch ${i}`);
      assertClose(t, slice(perBatchT), want, `bmm transposed ${B}x${M}x${K}x${N} batch ${i}`);
      const wantOne = naive(ai, one, M, K, N, opts);
      assertClose(t, slice(broadcast), wantOne, `bmm broadcast batch ${i}`);
      assertClose(t, slice(broadcastPacked), wantOne, `bmm broadcast packed batch ${i}`);
    }
    packed.dispose();
  }
});

test('two and three threads give bit-identical results to one, for gemm and bmm', (t) => {
  const threads = getGemmThreads();
  const [M, K, N] = [150, 130, 250]; // past the threading threshold, edges in every direction
  const a = random(M * K, 41);
  const b = random(K * N, 42);
  const opts: GemmOptions = { bias: random(N, 43), activation: 'relu' };
  const [ba, bb] = [random(6 * 70 * 130, 44), random(6 * 130 * 90, 45)];
  try {
    setGemmThreads(1);
    const one = gemm(a, b, M, K, N, opts);
    const oneBmm = bmm(ba, bb, 6, 70, 130, 90);
    setGemmThreads(2);
    // A worker joins once it is awake; until then the caller does every chunk. Retry until one has joined.
    let joined = 0;
    for (let i = 0; i < 200 && joined === 0; i++) {
      t.deepEqual(gemm(a, b, M, K, N, opts), one);
      joined = lastJobWorkers();
    }
    t.is(joined, 1, 'no worker ever joined a job');
    t.deepEqual(bmm(ba, bb, 6, 70, 130, 90), oneBmm);
    assertClose(t, one, naive(a, b, M, K, N, opts), 'threaded');
    // More threads than cores: the pool grows by one worker, results stay the same.
    setGemmThreads(3);
    t.deepEqual(gemm(a, b, M, K, N, opts), one);
  } finally {
    setGemmThreads(threads);
  }
  t.throws(() => setGemmThreads(0), { instanceOf: RangeError });
});

test('empty dims: K = 0 gives the bias (after ReLU) or zeros; M or N = 0 give empty results', (t) => {
  const bias = Float32Array.from([1, -2, 3]);
  t.deepEqual(Array.from(gemm(new Float32Array(0), new Float32Array(0), 2, 0, 3, { bias, activation: 'relu' })), [1, 0, 3, 1, 0, 3]);
  t.deepEqual(Array.from(gemm(new Float32Array(0), new Float32Array(0), 2, 0, 3)), [0, 0, 0, 0, 0, 0]);
  t.is(gemm(new Float32Array(0), random(12, 1), 0, 4, 3).length, 0);
  t.is(gemm(random(8, 1), new Float32Array(0), 2, 4, 0).length, 0);
  t.is(bmm(new Float32Array(0), new Float32Array(0), 0, 2, 2, 2).length, 0);
});

test('NaN and infinities propagate as in PyTorch (ReLU keeps NaN)', (t) => {
  const a = Float32Array.from([NaN, 1, 1, 1]);
  const b = Float32Array.from([1, 1, -1, 1]);
  const out = gemm(a, b, 2, 2, 2, { activation: 'relu' });
  t.true(Number.isNaN(out[0]!) && Number.isNaN(out[1]!));
  t.deepEqual(Array.from(out.subarray(2)), [0, 2]);
});

test('bad input throws a clear error naming gemm, the shapes and what was expected', (t) => {
  const a = random(12, 1);
  const b = random(20, 2);
  t.throws(() => gemm(random(11, 1), b, 3, 4, 5), {
    instanceOf: ShapeError,
    message: 'gemm: a has 11 elements, expected 12 for a [3, 4] @ b [4, 5]',
  });
  t.throws(() => gemm(a, random(19, 2), 3, 4, 5), {
    instanceOf: ShapeError,
    message: 'gemm: b has 19 elements, expected 20 for a [3, 4] @ b [4, 5]',
  });
  t.throws(() => gemm(a, random(19, 2), 3, 4, 5, { bTransposed: true }), {
    instanceOf: ShapeError,
    message: 'gemm: b has 19 elements, expected 20 for a [3, 4] @ b [5, 4] (transposed)',
  });
  t.throws(() => gemm(a, b, 3, 4, 5, { bias: random(4, 3) }), {
    instanceOf: ShapeError,
    message: 'gemm: bias has 4 elements, expected 5 for a [3, 4] @ b [4, 5] (one bias per output column, N=5)',
  });
  t.throws(() => gemm(a, b, 3, 4, 5, { out: new Float32Array(14) }), {
    instanceOf: ShapeError,
    message: 'gemm: out has 14 elements, expected 15 for a [3, 4] @ b [4, 5] (out is [3, 5])',
  });
  t.throws(() => gemm(a, b, 2.5, 4, 5), {
    instanceOf: ValueError,
    message: 'gemm: M must be a non-negative integer, got 2.5 (M=2.5, K=4, N=5)',
  });
  t.throws(() => gemm(a, b, 3, -4, 5), {
    instanceOf: ValueError,
    message: 'gemm: K must be a non-negative integer, got -4 (M=3, K=-4, N=5)',
  });
  t.throws(() => gemm(a, b, 3, 4, NaN), { instanceOf: ValueError, message: /^gemm: N must be a non-negative integer, got NaN/ });
  t.throws(() => gemm(new Float64Array(12) as unknown as Float32Array, b, 3, 4, 5), {
    instanceOf: DTypeError,
    message: 'gemm: a must be a Float32Array, got Float64Array (for a [3, 4] @ b [4, 5])',
  });
  t.throws(() => gemm(a, [1, 2] as unknown as Float32Array, 3, 4, 5), {
    instanceOf: DTypeError,
    message: /^gemm: b must be a Float32Array or a PackedB from packB\(\), got Array/,
  });
  t.throws(() => gemm(a, b, 3, 4, 5, { activation: 'gelu' as 'relu' }), {
    instanceOf: ValueError,
    message: `gemm: activation must be 'none' or 'relu', got "gelu"`,
  });
  const packed = packB(random(24, 4), 4, 6);
  t.throws(() => gemm(a, packed, 3, 4, 5), {
    instanceOf: ShapeError,
    message: 'gemm: packed b is [K=4, N=6], expected [K=4, N=5] for a [3, 4] @ b [4, 5]',
  });
  packed.dispose();
  t.throws(() => packB(random(23, 4), 4, 6, { transposed: true }), {
    instanceOf: ShapeError,
    message: 'packB: b has 23 elements, expected 24 for b [6, 4] (transposed)',
  });
  t.throws(() => packB(random(24, 4), 4, -6), { instanceOf: ValueError, message: /^packB: N must be a non-negative integer, got -6/ });
  t.throws(() => bmm(random(2 * 12, 1), random(30, 2), 2, 3, 4, 5), {
    instanceOf: ShapeError,
    message: 'bmm: b has 30 elements, expected batch·K·N = 40 or K·N = 20 (one b for every batch entry) for a [2, 3, 4] @ b [2, 4, 5]',
  });
  t.throws(() => bmm(random(12, 1), random(20, 2), 2, 3, 4, 5), {
    instanceOf: ShapeError,
    message: 'bmm: a has 12 elements, expected 24 for a [2, 3, 4] @ b [4, 5]',
  });
  t.throws(() => heapAlloc(-1), { instanceOf: ValueError });
});

test('other tile shapes, K unrolling and small K/M blocks emit correct kernels too', (t) => {
  // The shipped config is one point of this space; the generator must be right at every point it accepts.
  const configs: KernelConfig[] = [
    { mr: 4, nr: 8, unroll: 4, kc: 256, mc: 64, relaxed: false },
    { mr: 3, nr: 12, unroll: 2, kc: 16, mc: 6, relaxed: false },
    { mr: 1, nr: 4, unroll: 1, kc: 5, mc: 3, relaxed: false },
    { mr: 6, nr: 16, unroll: 8, kc: 40, mc: 12, relaxed: false },
  ];
  for (const cfg of configs) {
    const heap = new WasmHeap();
    const instance = new wasm.Instance(new wasm.Module(buildGemmModule(cfg)), { env: { memory: heap.memory } });
    const k = instance.exports as unknown as GemmExports;
    const sizes = scratchBytes(cfg);
    const [apack, tile] = [heap.alloc(sizes.apack), heap.alloc(sizes.tile)];
    for (const [M, K, N] of [
      [1, 1, 1],
      [7, 37, 13],
      [20, 64, 33],
    ] as const) {
      const a = random(M * K, M);
      const b = random(K * N, K);
      const bias = random(N, N);
      const np = Math.ceil(N / cfg.nr) * cfg.nr;
      const [pa, pb, pp, pc, pbias] = [M * K, K * N, K * np, M * N, np].map((n) => heap.alloc(n * 4)) as [
        number,
        number,
        number,
        number,
        number,
      ];
      heap.f32.set(a, pa >> 2);
      heap.f32.set(b, pb >> 2);
      heap.f32.fill(0, pbias >> 2, (pbias >> 2) + np);
      heap.f32.set(bias, pbias >> 2);
      k.packB(pb, N * 4, 4, K, N, pp);
      k.gemm(pa, K * 4, pp, K * cfg.nr * 4, pc, N * 4, M, N, K, FLAG_BIAS | FLAG_RELU, pbias, apack, tile);
      assertClose(t, heap.view(pc, M * N), naive(a, b, M, K, N, { bias, activation: 'relu' }), `${JSON.stringify(cfg)} ${M}x${K}x${N}`);
    }
  }
});

test('the wasm encoder emits modules the engine validates and runs', (t) => {
  const m = new ModuleBuilder({ initial: 1, maximum: 1, shared: false });
  const f = m.func('addmul', ['i32', 'i32'], ['i32'], true);
  const tmp = f.local('i32');
  // (x + 1000000) * y, with a negative LEB128 constant on the way: x - (-1000000)
  f.get(0).i32(-1000000).i32Sub().tee(tmp).get(1).i32Mul();
  const memory = new wasm.Memory({ initial: 1, maximum: 1, shared: false });
  const instance = new wasm.Instance(new wasm.Module(m.toBytes()), { env: { memory } });
  const addmul = instance.exports.addmul as (x: number, y: number) => number;
  t.is(addmul(5, 3), 3000015);
  t.is(addmul(-1000000, 7), 0);
});

test("a process that used the worker pool exits on its own (workers are unref'd)", (t) => {
  mkdirSync('test/.tmp', { recursive: true });
  const script = 'test/.tmp/gemm-threads-exit.mts';
  writeFileSync(
    script,
    `import { gemm, setGemmThreads } from '../../src/kernels/gemm/index.js';
setGemmThreads(2);
const n = 200;
const out = gemm(new Float32Array(n * n).fill(1), new Float32Array(n * n).fill(1), n, n, n);
process.stdout.write(String(out[0])); // not console.log: CI's FORCE_COLOR would colour a number
`,
  );
  const started = Date.now();
  const r = spawnSync(process.execPath, ['--import', 'tsx', script], { encoding: 'utf8', timeout: 60_000 });
  t.is(r.status, 0, r.stderr);
  t.is(r.stdout.trim(), '200');
  t.true(Date.now() - started < 60_000);
});

test('where the engine has relaxed SIMD, the kernels use its fused multiply-add and still agree with the definition', (t) => {
  // Node 20 ships relaxed SIMD behind a V8 flag (Node 22 has it on): turn it on in a child process.
  mkdirSync('test/.tmp', { recursive: true });
  const script = 'test/.tmp/gemm-relaxed.mts';
  writeFileSync(
    script,
    `import { setFlagsFromString } from 'node:v8';
setFlagsFromString('--experimental-wasm-relaxed-simd');
const { gemm, bmm } = await import('../../src/kernels/gemm/index.js');
const { getRuntime } = await import('../../src/kernels/gemm/runtime.js');
let worst = 0;
for (const [M, K, N] of [[1, 1, 1], [3, 5, 7], [17, 33, 9], [64, 300, 65]]) {
  const a = Float32Array.from({ length: M * K }, (_, i) => Math.sin(i));
  const b = Float32Array.from({ length: K * N }, (_, i) => Math.cos(i));
  const bias = Float32Array.from({ length: N }, (_, i) => i / N - 0.5);
  const out = gemm(a, b, M, K, N, { bias, activation: 'relu' });
  for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) {
    let s = bias[j];
    for (let k = 0; k < K; k++) s += a[i * K + k] * b[k * N + j];
    worst = Math.max(worst, Math.abs(out[i * N + j] - Math.max(s, 0)) / Math.max(1, Math.abs(s)));
  }
}
console.log(JSON.stringify({ relaxed: getRuntime().cfg.relaxed, worst, bmm: bmm(new Float32Array(4).fill(1), new Float32Array(2).fill(2), 2, 1, 2, 1)[1] }));
`,
  );
  const r = spawnSync(process.execPath, ['--import', 'tsx', script], { encoding: 'utf8', timeout: 60_000 });
  t.is(r.status, 0, r.stderr);
  const result = JSON.parse(r.stdout) as { relaxed: boolean; worst: number; bmm: number };
  t.true(result.relaxed, 'relaxed SIMD was not picked up');
  t.true(result.worst <= 1e-4, `max relative error ${result.worst}`);
  t.is(result.bmm, 4);
});
