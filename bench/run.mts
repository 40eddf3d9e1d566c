/**
 * `npm run bench`: kiln eager against @tensorflow/tfjs-backend-cpu, measured side by side in one
 * process (interleaved rounds, median of each) so that machine noise hits both alike; then kiln eager and
 * kiln compiled (`backend: 'kernels'`) against the peers in bench/peers.mts (tfjs-backend-wasm, @jax-js/jax
 * on wasm, onnxruntime-node) on matmul 256/512/1024, an MLP and a small CNN, every contender's result
 * checked against a plain-JS reference before it is timed.
 * Fairness: every contender's result is checked before it is timed (the tfjs-cpu cases too); kiln compiled also
 * runs with its GEMM held to one thread, beside the 1-thread peers; the CNN has a folded-BN tfjs-wasm variant
 * beside the unfolded one; jax-js runs both on the main thread and on its worker pool. Last, bench/gemm.mts runs
 * in a child process (its GEMM variants, copying and packed; `KILN_BENCH_GEMM=0` skips it).
 * Writes bench/results.json; `npx tsx bench/readme-table.mts --write` makes the README's tables from it.
 * `KILN_BENCH_ONLY=memory` (or any of fusion, fx, compile, plugin, memory, backward, training, export, onnx, and the sections eager, peers, gemm,
 * comma-separated) runs just those and prints them, leaving bench/results.json as it is (gemm: bench/gemm.mts
 * records its own section, as it always does). `KILN_BENCH_CASES=matmul256,matmul512,matmul1024,mlp,cnn` picks
 * peer cases, `KILN_BENCH_PEERS=tfjs-wasm,…` peers.
 *
 * results.json keys added for the fairness columns (the older keys keep their meaning):
 * - `gemmThreads`: `{ default, peerCases }`: kiln's default GEMM thread count, and the count kiln compiled runs
 *   on in the peer cases (at most 2, the multi-threaded peers' count).
 * - `results[i].kiln1Thread`, `.speedup1Thread`: kiln eager with its GEMM held to one thread, and tfjs-cpu's
 *   time ÷ its time (the 1-thread-against-1-thread ratio); `.kilnThreads`: kiln eager's default GEMM thread
 *   count; `.verified`: every contender matched the reference before it was timed.
 * - `peerCases[i].ms` / `.value` gain the contenders 'kiln compiled 1-thread' and, in the CNN case,
 *   'tfjs-wasm folded-BN'; `.threads`: threads per contender; `.ratios` gains 'kernels/compiled-1t',
 *   'kernels-1t/X' (X's ms ÷ kiln compiled 1-thread's) and 'sameThreads/X' (X's ms ÷ the kiln compiled run on
 *   X's thread count) for every peer X.
 * - `peers[i].threads`: threads each peer computes on.
 * - `gemmRemeasured`: whether this run's bench/gemm.mts child wrote the `gemm` section (false: kept from before).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { createRequire } from 'node:module';
// tfjs-core's Node bundle leaves its gradient rules out; training needs them registered
createRequire(import.meta.url)('@tensorflow/tfjs-core/dist/register_all_gradients');
import { F, compile, manualSeed, nn, noGrad, ops, optim, randn, tensor, type Tensor } from '../src/index.js';
import { getGemmThreads, setGemmThreads } from '../src/kernels/gemm/index.js';
import { firstFailing } from '../src/compile/guards.js';
import { CompiledCallable } from '../src/compile/compiled-callable.js';
import { symbolicTrace } from '../src/fx.js';
import { transformSource } from '../src/register/transform-file.js';
import { backwardBench } from './backward.mjs';
import { trainingBench } from './training.mjs';
import { exportBench } from './export.mjs';
import { onnxExportBench } from './onnx-export.mjs';
import { kilnCnn, kilnMlp } from './kiln-models.mjs';
import type { MemoryReport } from './memory.mjs';
import {
  CNN,
  MLP,
  PEER_NAMES,
  checkClose,
  checkCloseScaled,
  cnnData,
  loadPeer,
  matmulData,
  matmulRef,
  mlpData,
  mlpGradientsRef,
  prepareCase,
  referenceCnn,
  referenceMatmul,
  referenceMlp,
  rng,
  transpose2d,
  type Loaded,
  type MlpGradients,
  type Peer,
  type PeerName,
  type Prepared,
} from './peers.mjs';

interface Result {
  name: string;
  unit: string;
  /** kiln eager at its default GEMM thread count (`kilnThreads`) */
  kiln: number;
  tfjsCpu: number;
  /** kiln ÷ tfjs for throughputs, tfjs ÷ kiln for times: > 1 means kiln is faster. */
  speedup: number;
  /** kiln eager with its GEMM held to one thread, as tfjs-backend-cpu runs */
  kiln1Thread: number;
  /** `speedup` for kiln1Thread: the one-thread-against-one-thread ratio */
  speedup1Thread: number;
  /** kiln's default GEMM thread count in this run */
  kilnThreads: number;
  /** every contender's result matched the plain-JS reference (checkClose) before it was timed */
  verified: true;
}

const ROUNDS = Number(process.env.KILN_BENCH_ROUNDS ?? 7);
/** Rounds for the peer comparisons: at least 10 (odd, so the median is one measured round). */
const PEER_ROUNDS = Math.max(10, Number(process.env.KILN_BENCH_PEER_ROUNDS ?? 11));
/**
 * Untimed calls of each contender before the timed rounds (JIT tiers, caches, kernel compilation), on top
 * of the two untimed calls every contender already made when its result was checked.
 */
const PEER_WARMUP = 1;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Time `fn` once per round for each contender, alternating, after a warm-up; returns median ms. */
function sideBySide(label: string, contenders: Record<string, () => void>): Record<string, number> {
  const names = Object.keys(contenders);
  for (const n of names) for (let i = 0; i < 2; i++) contenders[n]!(); // warm-up: JIT tiers, caches
  const times: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  for (let r = 0; r < ROUNDS; r++) {
    for (const n of names) {
      const t0 = performance.now();
      contenders[n]!();
      times[n]!.push(performance.now() - t0);
    }
    if (process.stdout.isTTY) process.stdout.write(`\r  ${label}: round ${r + 1}/${ROUNDS}`);
  }
  console.log(`${process.stdout.isTTY ? '\r' : ''}  ${label}: ${ROUNDS} rounds done`);
  return Object.fromEntries(names.map((n) => [n, median(times[n]!)]));
}

/** kiln's default GEMM thread count (every core), before any contender changes it. */
const DEFAULT_GEMM_THREADS = getGemmThreads();

/**
 * `f` with kiln's wasm GEMM held to `threads` threads (the only threaded part of kiln: gpu.js's webasm kernels
 * run on the calling thread when called synchronously). The setting is process-wide and read at each GEMM
 * call, so it is set on every call and put back after, leaving the other contenders at the default.
 */
function withGemmThreads<T>(threads: number, f: () => T): () => T {
  return () => {
    setGemmThreads(threads);
    try {
      return f();
    } finally {
      setGemmThreads(DEFAULT_GEMM_THREADS);
    }
  };
}

/** `f` run `n` times per sample, so a ratio measures per-call overhead rather than timer noise. */
const repeat = (n: number, f: () => unknown) => () => {
  for (let i = 0; i < n; i++) f();
};

/**
 * The overhead of `candidate` over `base` in percent: the median of per-round ratios, the order within a
 * round alternating so drift and GC hit both sides alike. Used for the few-percent dispatch targets.
 */
function pairedOverhead(label: string, base: () => void, candidate: () => void, rounds = 21): number {
  for (let i = 0; i < 3; i++) {
    base();
    candidate();
  }
  const ratios: number[] = [];
  const time = (f: () => void) => {
    const t0 = performance.now();
    f();
    return performance.now() - t0;
  };
  for (let r = 0; r < rounds; r++) {
    let b: number;
    let c: number;
    if (r % 2 === 0) {
      b = time(base);
      c = time(candidate);
    } else {
      c = time(candidate);
      b = time(base);
    }
    ratios.push(c / b);
  }
  console.log(`  ${label}: ${rounds} paired rounds done`);
  return (median(ratios) - 1) * 100;
}

function matmulBench(n: number): Result {
  const { a: da, b: db } = matmulData(n);
  const ref = matmulRef(da, db, n);
  const a = tensor(da, { shape: [n, n] });
  const b = tensor(db, { shape: [n, n] });
  const ta = tf.tensor2d(da, [n, n]);
  const tb = tf.tensor2d(db, [n, n]);
  const kiln = () => a.matmul(b).data() as Float32Array;
  const kiln1 = withGemmThreads(1, kiln);
  const tfjs = () => {
    const r = tf.matMul(ta, tb);
    try {
      return r.dataSync() as Float32Array;
    } finally {
      r.dispose();
    }
  };
  // every contender checked against the plain-JS reference before it is timed, as in the peer cases
  checkClose(`kiln eager matmul ${n}`, kiln(), ref);
  checkClose(`kiln eager matmul ${n}, 1 thread`, kiln1(), ref);
  checkClose(`tfjs-cpu matmul ${n}`, tfjs(), ref);
  const ms = sideBySide(`matmul ${n}×${n}`, { kiln, kiln1, tfjs });
  const gflops = (t: number) => (2 * n ** 3) / (t * 1e6);
  return {
    name: `matmul ${n}x${n} float32`,
    unit: 'GFLOP/s',
    kiln: gflops(ms.kiln!),
    tfjsCpu: gflops(ms.tfjs!),
    speedup: ms.tfjs! / ms.kiln!,
    kiln1Thread: gflops(ms.kiln1!),
    speedup1Thread: ms.tfjs! / ms.kiln1!,
    kilnThreads: DEFAULT_GEMM_THREADS,
    verified: true,
  };
}

/**
 * Checks one training step against the float64 reference: the loss it reported, and each parameter's
 * gradient as the step applied it, (before − after) / lr, from PyTorch-layout [out, in] weights.
 */
function checkTrainingStep(
  who: string,
  ref: MlpGradients,
  lr: number,
  loss: number,
  before: { weight: Float32Array; bias: Float32Array }[],
  after: { weight: Float32Array; bias: Float32Array }[],
): void {
  checkClose(`${who}: loss`, [loss], [ref.loss]);
  const grad = (b: Float32Array, a: Float32Array) => Float64Array.from(b, (v, i) => (v - a[i]!) / lr);
  before.forEach((b, i) => {
    checkCloseScaled(`${who}: layer ${i} weight gradient`, grad(b.weight, after[i]!.weight), ref.weight[i]!);
    checkCloseScaled(`${who}: layer ${i} bias gradient`, grad(b.bias, after[i]!.bias), ref.bias[i]!);
  });
}

/**
 * One SGD step (forward, cross-entropy, backward, update) of a 784-512-512-10 ReLU MLP on a batch of 64, both
 * from the same weights (bench/peers/shapes.mts); each side's first step is checked against the float64
 * reference (loss and every gradient) before any is timed.
 */
function mlpBench(): Result {
  const { weights: w, x } = mlpData();
  const { batch } = MLP;
  const lr = 0.01;
  const labels = Int32Array.from({ length: batch }, (_, i) => i % 10);
  const ref = mlpGradientsRef(w, x, labels);

  /** kiln: one model per contender (the 1-thread one too), since each step moves its weights. */
  const kilnTrainer = () => {
    const model = kilnMlp(w).train();
    const opt = new optim.SGD(model.parameters(), { lr });
    const tx = tensor(x, { shape: [batch, MLP.sizes[0]] });
    const y = tensor(labels, { dtype: 'int32' });
    const step = () => {
      opt.zeroGrad();
      const loss = F.crossEntropy(model.call(tx) as Tensor, y);
      loss.backward();
      opt.step();
      return loss.item();
    };
    const params = () =>
      w.layers.map((_, i) => {
        const sd = model.stateDict();
        return { weight: sd[`${2 * i}.weight`]!.data() as Float32Array, bias: sd[`${2 * i}.bias`]!.data() as Float32Array };
      });
    return { step, params };
  };
  const copy = (ps: { weight: Float32Array; bias: Float32Array }[]) => ps.map((p) => ({ weight: p.weight.slice(), bias: p.bias.slice() }));
  const kilnStep = (who: string, threads: number) => {
    const k = kilnTrainer();
    const step = withGemmThreads(threads, k.step);
    const before = copy(k.params());
    const loss = step();
    checkTrainingStep(who, ref, lr, loss, before, k.params());
    return () => void step();
  };
  const kiln = kilnStep('kiln eager MLP training step', DEFAULT_GEMM_THREADS);
  const kiln1 = kilnStep('kiln eager MLP training step, 1 thread', 1);

  // tfjs: kernels as [in, out]
  const weights = w.layers.map((l) =>
    tf.variable(tf.tensor2d(transpose2d(l.weight, l.outFeatures, l.inFeatures), [l.inFeatures, l.outFeatures])),
  );
  const biases = w.layers.map((l) => tf.variable(tf.tensor1d(l.bias)));
  const tx = tf.tensor2d(x, [batch, MLP.sizes[0]]);
  const ty = tf.oneHot(tf.tensor1d(labels, 'int32'), MLP.sizes[MLP.sizes.length - 1]);
  const tfOpt = tf.train.sgd(lr);
  const tfjsStep = () => {
    const cost = tfOpt.minimize(
      () =>
        tf.tidy(() => {
          let h: tf.Tensor = tx;
          weights.forEach((w, i) => {
            h = tf.add(tf.matMul(h, w), biases[i]!);
            if (i < weights.length - 1) h = tf.relu(h);
          });
          return tf.losses.softmaxCrossEntropy(ty, h) as tf.Scalar;
        }),
      true,
    );
    try {
      return cost!.dataSync()[0]!;
    } finally {
      cost?.dispose();
    }
  };
  const tfParams = () =>
    w.layers.map((l, i) => ({
      weight: transpose2d(weights[i]!.dataSync() as Float32Array, l.inFeatures, l.outFeatures),
      bias: biases[i]!.dataSync() as Float32Array,
    }));
  const tfBefore = copy(tfParams());
  checkTrainingStep('tfjs-cpu MLP training step', ref, lr, tfjsStep(), tfBefore, tfParams());

  const ms = sideBySide('MLP training step', { kiln, kiln1, tfjs: () => void tfjsStep() });
  return {
    name: 'MLP 784-512-512-10 training step, batch 64',
    unit: 'ms',
    kiln: ms.kiln!,
    tfjsCpu: ms.tfjs!,
    speedup: ms.tfjs! / ms.kiln!,
    kiln1Thread: ms.kiln1!,
    speedup1Thread: ms.tfjs! / ms.kiln1!,
    kilnThreads: DEFAULT_GEMM_THREADS,
    verified: true,
  };
}

/** A target kiln must meet on its own (no peer): a time or a ratio measured in this run. */
interface Check {
  name: string;
  unit: string;
  value: number;
  target: string;
  pass: boolean;
  /** The measurements behind `value`, for results.json. */
  detail?: object;
}

/** 200 Linear(64, 64) layers with ReLU between: what the graph IR must trace and run without fuss. */
class Deep extends nn.Module {
  layers = new nn.ModuleList(Array.from({ length: 200 }, () => new nn.Linear(64, 64)));
  override forward(x: Tensor): Tensor {
    for (const l of this.layers) x = F.relu(l.call(x));
    return x;
  }
}

/** kiln/fx: tracing + codegen time of a 200-layer MLP, and a GraphModule's run time against eager. */
function fxBench(): Check[] {
  manualSeed(0);
  const model = new Deep();
  const traceTimes: number[] = [];
  let gm = symbolicTrace(model);
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = performance.now();
    gm = symbolicTrace(model);
    traceTimes.push(performance.now() - t0);
  }
  console.log(`  fx trace + codegen, 200-layer MLP (${gm.graph.length} nodes): ${ROUNDS} rounds done`);
  const x = randn([32, 64]);
  const overhead = pairedOverhead(
    'eager vs GraphModule, 200-layer MLP',
    repeat(5, () => model.call(x)),
    repeat(5, () => gm.call(x)),
  );
  const trace = median(traceTimes);
  return [
    { name: 'fx trace + codegen, 200-layer MLP', unit: 'ms', value: trace, target: '< 200', pass: trace < 200 },
    { name: 'GraphModule run overhead vs eager, 200-layer MLP', unit: '%', value: overhead, target: '< 5', pass: overhead < 5 },
  ];
}

/** compile(): what a guard check and the compiled dispatch cost on a tiny model, eager backend. */
function compileBench(): Check[] {
  manualSeed(0);
  class Tiny extends nn.Module {
    fc = new nn.Linear(8, 8);
    override forward(x: Tensor): Tensor {
      return this.fc.call(x).relu();
    }
  }
  const model = new Tiny();
  const x = randn([4, 8]);
  // a 10-guard entry: grad mode, a 2-D tensor argument (6 guards) and three number arguments
  const fn = (t: Tensor, a: number, b: number, c: number) => t.mul(a).add(b).sub(c);
  const callable = new CompiledCallable(fn as never, undefined, {
    backend:
      (gm) =>
      (...a) =>
        gm.forward(...a),
    fullgraph: false,
    dynamic: undefined,
    cacheSizeLimit: 8,
    errorOnRecompile: false,
  });
  const args = [x, 1, 2, 3];
  const guards = callable.capture(args).guards;
  const n = 200_000;
  const times: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) if (firstFailing(guards, args, undefined) !== -1) throw new Error('guard failed');
    times.push(((performance.now() - t0) * 1000) / n);
  }
  const guardUs = median(times);
  console.log(`  guard check (${guards.length} guards): ${ROUNDS} rounds done`);
  const opt = compile(model, { backend: 'eager' });
  const overhead = pairedOverhead(
    'eager vs compiled tiny model',
    repeat(1000, () => model.call(x)),
    repeat(1000, () => opt.call(x)),
  );
  return [
    { name: `guard check, ${guards.length}-guard entry`, unit: 'µs', value: guardUs, target: '< 5', pass: guardUs < 5 },
    { name: 'compiled dispatch overhead, tiny model, eager backend', unit: '%', value: overhead, target: '< 10', pass: overhead < 10 },
  ];
}

/** A model file of about `lines` lines: module classes with loops, helpers and a graph break each. */
function generatedModelFile(lines: number): string {
  const out = [`import { F, nn, type Tensor } from 'kiln';`, ''];
  for (let i = 0; out.length < lines; i++) {
    out.push(
      `/** Block ${i}: a residual MLP block with a gated helper. */`,
      `export class Block${i} extends nn.Module {`,
      `  norm = new nn.LayerNorm(32);`,
      `  layers = new nn.ModuleList([new nn.Linear(32, 64), new nn.Linear(64, 32)]);`,
      `  scale = ${i % 7};`,
      `  steps = 0;`,
      ``,
      `  gate(h: Tensor): Tensor {`,
      `    const g = h.sigmoid();`,
      `    return h.mul(g);`,
      `  }`,
      ``,
      `  override forward(x: Tensor, bias?: Tensor): Tensor {`,
      `    let h = this.norm.call(x);`,
      `    for (const layer of this.layers) {`,
      `      h = F.gelu(layer.call(h));`,
      `    }`,
      `    if (bias !== undefined) h = h.add(bias);`,
      `    h = this.gate(h).mul(this.scale);`,
      `    if (h.abs().max().item() > 1e6) {`,
      `      console.warn('block ${i}: activations exploding');`,
      `    }`,
      `    this.steps++;`,
      `    const [rows] = h.shape;`,
      `    return x.add(h.div(rows));`,
      `  }`,
      `}`,
      ``,
    );
  }
  return out.join('\n');
}

/** kiln/plugin: transform time of a 2,000-line model file, and a rewritten tiny model's dispatch overhead. */
async function pluginBench(): Promise<Check[]> {
  const source = generatedModelFile(2000);
  const lineCount = source.split('\n').length;
  const filename = new URL('./.tmp/generated-model.ts', import.meta.url).pathname;
  transformSource(source, filename, { sourceMaps: false }); // warm Babel and the plugin up
  const times: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = performance.now();
    transformSource(source, filename, { sourceMaps: false });
    times.push(performance.now() - t0);
  }
  console.log(`  plugin transform of a ${lineCount}-line model file: ${ROUNDS} rounds done`);
  // The same tiny model loaded twice: as written (eager) and rewritten by the plugin (runs captured).
  const tiny = [
    `import { nn, type Tensor } from 'kiln';`,
    `export class Tiny extends nn.Module {`,
    `  fc = new nn.Linear(8, 8);`,
    `  override forward(x: Tensor): Tensor {`,
    `    return this.fc.call(x).relu();`,
    `  }`,
    `}`,
  ].join('\n');
  const dir = new URL('./.tmp/', import.meta.url);
  mkdirSync(dir, { recursive: true });
  writeFileSync(new URL('tiny-eager.ts', dir), tiny);
  writeFileSync(new URL('tiny-plugin.mjs', dir), transformSource(tiny, new URL('tiny.ts', dir).pathname, { sourceMaps: false }).code);
  type TinyModule = { Tiny: new () => { call(x: unknown): unknown; loadStateDict(s: unknown): unknown; stateDict(): unknown } };
  const plain = (await import(new URL('tiny-eager.ts', dir).href)) as TinyModule;
  const rewritten = (await import(new URL('tiny-plugin.mjs', dir).href)) as TinyModule;
  const kiln = (await import('kiln')) as unknown as { randn(s: number[]): unknown };
  const eagerModel = new plain.Tiny();
  const compiledModel = new rewritten.Tiny();
  compiledModel.loadStateDict(eagerModel.stateDict());
  const x = kiln.randn([4, 8]);
  const overhead = pairedOverhead(
    'eager vs plugin-rewritten tiny model',
    repeat(1000, () => eagerModel.call(x)),
    repeat(1000, () => compiledModel.call(x)),
  );
  const transformMs = median(times);
  return [
    { name: `plugin transform, ${lineCount}-line model file`, unit: 'ms', value: transformMs, target: '< 1000', pass: transformMs < 1000 },
    { name: 'plugin-rewritten dispatch overhead, tiny model', unit: '%', value: overhead, target: '< 10', pass: overhead < 10 },
  ];
}

const MiB = (bytes: number) => (bytes / 2 ** 20).toFixed(2);

/** One bench/memory.mts child: a fresh process per variant, with --expose-gc for its full GCs. */
function memoryChild(variant: 'eager' | 'compiled'): MemoryReport {
  const script = new URL('./memory.mts', import.meta.url).pathname;
  const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', script, variant], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bench/memory.mts ${variant} failed (exit ${r.status}):\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as MemoryReport;
}

/**
 * Peak memory of an MLP 784-512-512-10 forward (batch 64, noGrad), compiled against eager, each in its own
 * process (bench/memory.mts says how it samples). The first check counts everything the compiled program
 * holds: the weights it packed for the GEMM (a second copy of them), its planned activation buffers, the
 * grown wasm memory, its plans and compiled code. The second leaves out the packed weights, which the
 * compiled program keeps so that no call repacks them: what remains is the working memory of a forward.
 */
function memoryBench(): Check[] {
  const eager = memoryChild('eager');
  const compiled = memoryChild('compiled');
  for (const r of [eager, compiled]) {
    console.log(
      `  MLP forward memory, ${r.variant}: peak ${MiB(r.peak)} MiB above the built model = held between calls ${MiB(r.retained)} MiB` +
        ` (wasm ${MiB(r.wasm)}, of it packed weights ${MiB(r.packedWeights)}) + one call ${MiB(r.perCall)} MiB; RSS +${MiB(r.rss)} MiB`,
    );
  }
  const all = compiled.peak / eager.peak;
  const working = (compiled.peak - compiled.packedWeights) / eager.peak;
  return [
    {
      name: 'MLP forward peak memory, compiled ÷ eager',
      unit: '×',
      value: all,
      target: '≤ 1',
      pass: all <= 1,
      detail: { eager, compiled },
    },
    {
      name: 'the same without the packed weight copies',
      unit: '×',
      value: working,
      target: '≤ 1',
      pass: working <= 1,
    },
  ];
}

// ---------------------------------------------------------------------------------------------------------
// kiln against its peers (bench/peers.mts): matmul, MLP and CNN inference, every result checked first

/** A contender in a side-by-side case: returns the result copied to host (a typed array). */
type Contender = () => unknown;

/**
 * The async counterpart of `sideBySide`: warm-up, then `rounds` rounds in which every contender runs once,
 * in a fresh (seeded) random order each round, so that no contender always runs first or always right after
 * the same neighbour (whose leftover threads, caches or garbage it would otherwise inherit); median ms each.
 */
async function sideBySideAsync(contenders: Record<string, Contender>, rounds: number): Promise<Record<string, number>> {
  const names = Object.keys(contenders);
  for (const n of names) for (let i = 0; i < PEER_WARMUP; i++) await contenders[n]!();
  const times: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  const next = rng(rounds);
  for (let r = 0; r < rounds; r++) {
    const order = [...names];
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(next() * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    for (const n of order) {
      const t0 = performance.now();
      await contenders[n]!();
      times[n]!.push(performance.now() - t0);
    }
  }
  return Object.fromEntries(names.map((n) => [n, median(times[n]!)]));
}

interface PeerCase {
  name: string;
  /** 'GFLOP/s' for matmul, 'ms' for the models */
  unit: string;
  /** floating-point operations of one call (2·n³ for matmul; multiply-adds ×2 of the model's layers) */
  flop: number;
  /** median ms per call, by contender ('kiln eager', 'kiln compiled', and each peer) */
  ms: Record<string, number>;
  /** the same in `unit` */
  value: Record<string, number>;
  /** contenders with no number, and why (not installed, cannot express the case, wrong result) */
  missing: Record<string, string>;
  /**
   * 'kernels/X' = X's ms ÷ kiln compiled's ms: > 1 means kiln compiled is faster than X ('kernels/eager' for
   * kiln eager, 'kernels/compiled-1t' for kiln compiled on one thread). 'kernels-1t/X' = X's ms ÷ kiln compiled
   * 1-thread's ms. 'sameThreads/X' = X's ms ÷ the ms of the kiln compiled contender on X's thread count (the
   * 1-thread one for a 1-thread X), absent when kiln ran no contender on that count.
   */
  ratios: Record<string, number>;
  /** threads each contender computes on */
  threads: Record<string, number>;
}

/** The contenders' display names: kiln's three, then the peers in PEER_NAMES order. */
const KILN_EAGER = 'kiln eager';
const KILN_COMPILED = 'kiln compiled';
const KILN_COMPILED_1T = 'kiln compiled 1-thread';
/** The CNN case's extra contender: tfjs-wasm with each batch norm folded into its conv, as kiln compiled folds. */
const TFJS_FOLDED = 'tfjs-wasm folded-BN';
/**
 * Threads kiln compiled runs on in the peer cases: the multi-threaded peers (onnxruntime-node, jax-js's worker
 * pool) run 2, so kiln does too, even on a machine with more cores.
 */
const KILN_THREADS = Math.min(2, DEFAULT_GEMM_THREADS);
/** How a contender's name reads in a ratio key. */
const ratioName = (who: string): string => (who === KILN_EAGER ? 'eager' : who === KILN_COMPILED_1T ? 'compiled-1t' : who);

/** Check a kiln result like a peer's; a wrong result is reported, never timed. */
function verifiedKiln(who: string, run: () => Tensor, ref: Float32Array): Contender {
  run();
  checkClose(who, run().data() as Float32Array, ref);
  return () => run().data();
}

/** How a contender's preparation ended: a runner, a reason it is absent, or a wrong result (an error). */
type Outcome = { run: Contender } | { why: string; error?: true };

async function outcome(f: () => Promise<Prepared> | Contender): Promise<Outcome> {
  try {
    const r = await f();
    if (typeof r === 'function') return { run: r };
    return r.available ? { run: r.run } : { why: r.why };
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    console.log(`  ✗ ${why}`);
    process.exitCode = 1; // the bench still writes its results, but the run fails: a contender is wrong
    return { why, error: true };
  }
}

async function peerCase(
  name: string,
  unit: 'GFLOP/s' | 'ms',
  flop: number,
  prepare: Record<string, () => Promise<Prepared> | Contender>,
  threads: Record<string, number>,
): Promise<PeerCase> {
  const runs: Record<string, Contender> = {};
  const missing: Record<string, string> = {};
  for (const [who, p] of Object.entries(prepare)) {
    const o = await outcome(p);
    if ('run' in o) runs[who] = o.run;
    else missing[who] = o.why;
  }
  const ms = await sideBySideAsync(runs, PEER_ROUNDS);
  const toUnit = (t: number) => (unit === 'GFLOP/s' ? flop / (t * 1e6) : t);
  const value = Object.fromEntries(Object.entries(ms).map(([k, t]) => [k, toUnit(t)]));
  const ratios: Record<string, number> = {};
  const kernels = ms[KILN_COMPILED];
  if (kernels !== undefined)
    for (const [who, t] of Object.entries(ms)) if (who !== KILN_COMPILED) ratios[`kernels/${ratioName(who)}`] = t / kernels;
  const kernels1 = ms[KILN_COMPILED_1T];
  const kilnAt: Record<number, number | undefined> = { 1: kernels1, [threads[KILN_COMPILED] ?? KILN_THREADS]: kernels };
  for (const [who, t] of Object.entries(ms)) {
    if (who.startsWith('kiln ')) continue;
    if (kernels1 !== undefined) ratios[`kernels-1t/${who}`] = t / kernels1;
    const same = kilnAt[threads[who] ?? NaN];
    if (same !== undefined) ratios[`sameThreads/${who}`] = t / same;
  }
  const shown = Object.entries(value)
    .map(([k, v]) => `${k} ${v.toFixed(unit === 'ms' ? 2 : 1)}`)
    .join(', ');
  console.log(
    `  ${name}: ${PEER_ROUNDS} rounds: ${shown} ${unit}${Object.keys(missing).length ? ` (no number: ${Object.keys(missing).join(', ')})` : ''}`,
  );
  return { name, unit, flop, ms, value, missing, ratios, threads };
}

/** Threads per contender: kiln's three, and every loaded peer's (the folded-BN tfjs variant is tfjs-wasm's). */
function threadsOf(peers: Loaded[]): Record<string, number> {
  const out: Record<string, number> = { [KILN_EAGER]: DEFAULT_GEMM_THREADS, [KILN_COMPILED]: KILN_THREADS, [KILN_COMPILED_1T]: 1 };
  for (const l of peers) if (l.available) out[l.name] = l.peer.threads;
  if (out['tfjs-wasm'] !== undefined) out[TFJS_FOLDED] = out['tfjs-wasm'];
  return out;
}

/** Prepare functions for every loaded peer, in PEER_NAMES order; an unloaded peer says why. */
function peerPreparers(peers: Loaded[], f: (p: Peer) => Promise<Prepared>): Record<string, () => Promise<Prepared>> {
  return Object.fromEntries(
    peers.map((l) => [
      l.name,
      l.available ? () => prepareCase(l.peer, () => f(l.peer)) : async (): Promise<Prepared> => ({ available: false, why: l.why }),
    ]),
  );
}

function matmulPeerCase(n: number, peers: Loaded[]): Promise<PeerCase> {
  const { a, b } = matmulData(n);
  const ref = referenceMatmul(a, b, n);
  const ta = tensor(a, { shape: [n, n] });
  const tb = tensor(b, { shape: [n, n] });
  const mm = compile((x: Tensor, y: Tensor) => ops.matmul(x, y), { backend: 'kernels' });
  return peerCase(
    `matmul ${n}x${n} float32`,
    'GFLOP/s',
    2 * n ** 3,
    {
      [KILN_EAGER]: () => verifiedKiln(`kiln eager matmul ${n}`, () => ops.matmul(ta, tb), ref),
      ...kilnCompiledContenders(`matmul ${n}`, () => mm(ta, tb), ref),
      ...peerPreparers(peers, (p) => p.matmul(a, b, n)),
    },
    threadsOf(peers),
  );
}

/**
 * kiln compiled twice over, on KILN_THREADS and on one thread (the same compiled code: the GEMM's thread
 * count is read at each call), each checked against the reference.
 */
function kilnCompiledContenders(label: string, run: () => Tensor, ref: Float32Array): Record<string, () => Contender> {
  return {
    [KILN_COMPILED]: () => verifiedKiln(`kiln compiled ${label}`, withGemmThreads(KILN_THREADS, run), ref),
    [KILN_COMPILED_1T]: () => verifiedKiln(`kiln compiled ${label}, 1 thread`, withGemmThreads(1, run), ref),
  };
}

/** Eager and compiled (`backend: 'kernels'`) inference of `model` under noGrad, checked against `ref`. */
function kilnModelContenders(label: string, model: nn.Module, x: Tensor, ref: Float32Array): Record<string, () => Contender> {
  const compiled = compile(model, { backend: 'kernels' });
  return {
    [KILN_EAGER]: () => verifiedKiln(`kiln eager ${label}`, () => noGrad(() => model.call(x) as Tensor), ref),
    ...kilnCompiledContenders(label, () => noGrad(() => compiled.call(x) as Tensor), ref),
  };
}

function mlpPeerCase(peers: Loaded[]): Promise<PeerCase> {
  const { weights, x } = mlpData();
  const ref = referenceMlp(weights, x);
  const s = MLP.sizes;
  const flop = 2 * MLP.batch * s.slice(1).reduce((acc, out, i) => acc + s[i]! * out, 0);
  return peerCase(
    `MLP ${s.join('-')} inference, batch ${MLP.batch}`,
    'ms',
    flop,
    {
      ...kilnModelContenders('MLP', kilnMlp(weights), tensor(x, { shape: [MLP.batch, s[0]] }), ref),
      ...peerPreparers(peers, (p) => p.mlp(weights, x)),
    },
    threadsOf(peers),
  );
}

function cnnPeerCase(peers: Loaded[]): Promise<PeerCase> {
  const { weights, x } = cnnData();
  const ref = referenceCnn(weights, x);
  const { batch: N, hw: H, channels: ch } = CNN;
  const flop = 2 * N * H * H * 9 * ch.slice(1).reduce((acc, out, i) => acc + ch[i]! * out, 0) + 2 * N * CNN.flat * CNN.classes;
  const tfjs = peers.find((l): l is Extract<Loaded, { available: true }> => l.name === 'tfjs-wasm' && l.available)?.peer;
  const folded = tfjs?.cnnFoldedBn?.bind(tfjs);
  return peerCase(
    `CNN 3x(conv3x3-bn-relu) ${ch.join('-')}, pool, linear, batch ${N}`,
    'ms',
    flop,
    {
      ...kilnModelContenders('CNN', kilnCnn(weights), tensor(x, { shape: [N, ch[0], H, H] }), ref),
      ...peerPreparers(peers, (p) => p.cnn(weights, x)),
      // beside the unfolded tfjs graph: tfjs-wasm on the graph an inference converter would give it
      ...(tfjs && folded ? { [TFJS_FOLDED]: () => prepareCase(tfjs, () => folded(weights, x)) } : {}),
    },
    threadsOf(peers),
  );
}

/** The issue's targets for the kernel backend, from this run's numbers (missing numbers: not passed). */
function kernelTargets(cases: PeerCase[]): Check[] {
  const byName = (prefix: string) => cases.find((c) => c.name.startsWith(prefix));
  const out: Check[] = [];
  const mlp = byName('MLP');
  const cnn = byName('CNN');
  const mm512 = byName('matmul 512');
  const ratio = (c: PeerCase | undefined, key: string) => c?.ratios[key] ?? NaN;
  const eagerMlp = ratio(mlp, 'kernels/eager');
  out.push({ name: 'compiled MLP speed-up over eager', unit: '×', value: eagerMlp, target: '≥ 3', pass: eagerMlp >= 3 });
  const jaxNames: PeerName[] = ['jax-js-wasm', 'jax-js-wasm-mt'];
  const jaxBest = jaxNames
    .map((n) => ({ n, v: mm512?.value[n] }))
    .filter((j): j is { n: PeerName; v: number } => j.v !== undefined)
    .sort((p, q) => q.v - p.v)[0];
  const kernels512 = mm512?.value[KILN_COMPILED] ?? NaN;
  const ofJax = jaxBest ? kernels512 / jaxBest.v : NaN;
  out.push({
    name: `matmul 512 kiln compiled ÷ ${jaxBest?.n ?? 'jax-js'} (the faster jax-js)`,
    unit: '×',
    value: ofJax,
    target: '≥ 0.5',
    pass: ofJax >= 0.5,
  });
  const tfjs512 = mm512?.value['tfjs-wasm'] ?? NaN;
  const stretch = Math.min(ofJax, kernels512 / tfjs512);
  out.push({
    name: 'matmul 512 kiln compiled ÷ max(jax-js, tfjs-wasm) (stretch)',
    unit: '×',
    value: stretch,
    target: '> 1',
    pass: stretch > 1,
  });
  for (const c of [mlp, cnn]) {
    const slower = 1 / ratio(c, 'kernels/tfjs-wasm'); // compiled ms ÷ tfjs-wasm ms
    out.push({
      name: `${c?.name.split(' ')[0] ?? '?'} compiled time ÷ tfjs-wasm time`,
      unit: '×',
      value: slower,
      target: '≤ 1.5',
      pass: slower <= 1.5,
    });
  }
  // issue 15: CNN inference with BN folded on both sides (kiln compiled folds it itself), each peer against
  // kiln compiled on the peer's thread count (tfjs-wasm 1, onnxruntime-node 2)
  for (const [peer, limit] of [
    [TFJS_FOLDED, 0.8],
    ['onnxruntime-node', 4],
  ] as const) {
    const slower = 1 / (cnn?.ratios[`sameThreads/${peer}`] ?? ratio(cnn, `kernels/${peer}`));
    out.push({
      name: `CNN compiled time ÷ ${peer} time (same threads)`,
      unit: '×',
      value: slower,
      target: `≤ ${limit}`,
      pass: slower <= limit,
    });
  }
  return out;
}

async function peerBench(): Promise<{ peers: object[]; cases: PeerCase[]; targets: Check[] }> {
  console.log(
    `\nkiln vs peers: median of ${PEER_ROUNDS} interleaved rounds, each contender first called ${2 + PEER_WARMUP} times untimed (twice to check its result against the reference)`,
  );
  const loaded: Loaded[] = [];
  for (const name of PEER_NAMES) {
    const l = await loadPeer(name);
    loaded.push(l);
    console.log(l.available ? `  ${name}: ${l.peer.version}; ${l.peer.config}` : `  ${name}: not available: ${l.why}`);
  }
  console.log(`  kiln compiled: ${KILN_THREADS} GEMM thread(s), and 1 in the '${KILN_COMPILED_1T}' column`);
  const cases: PeerCase[] = [];
  const selected = PEER_CASES.filter((c) => PEER_CASE_FILTER === undefined || PEER_CASE_FILTER.includes(c.key));
  for (const c of selected) cases.push(await c.run(loaded));
  for (const l of loaded) if (l.available) await l.peer.dispose();
  const peers = loaded.map((l) =>
    l.available ? { name: l.name, available: true, version: l.peer.version, config: l.peer.config, threads: l.peer.threads } : l,
  );
  return { peers, cases, targets: kernelTargets(cases) };
}

/** The peer cases, by the names KILN_BENCH_CASES takes. */
const PEER_CASES: { key: string; run: (peers: Loaded[]) => Promise<PeerCase> }[] = [
  { key: 'matmul256', run: (p) => matmulPeerCase(256, p) },
  { key: 'matmul512', run: (p) => matmulPeerCase(512, p) },
  { key: 'matmul1024', run: (p) => matmulPeerCase(1024, p) },
  { key: 'mlp', run: mlpPeerCase },
  { key: 'cnn', run: cnnPeerCase },
];
/** `KILN_BENCH_CASES=matmul512,cnn`: only those peer cases (with KILN_BENCH_ONLY=peers, while iterating). */
const PEER_CASE_FILTER = process.env.KILN_BENCH_CASES?.split(',').map((c) => c.trim());
if (PEER_CASE_FILTER) {
  const unknown = PEER_CASE_FILTER.filter((c) => !PEER_CASES.some((p) => p.key === c));
  if (unknown.length)
    throw new Error(`KILN_BENCH_CASES: unknown case ${unknown.join(', ')} (expected ${PEER_CASES.map((p) => p.key).join(', ')})`);
}

/** The ratio table: each contender's value, and kiln compiled's speed-up over it. */
/** The peer table's columns: kiln's three, then the peers, the folded-BN tfjs variant beside tfjs-wasm. */
function peerColumns(): string[] {
  return [KILN_EAGER, KILN_COMPILED_1T, KILN_COMPILED, ...PEER_NAMES.flatMap((n) => (n === 'tfjs-wasm' ? [n, TFJS_FOLDED] : [n]))];
}

/**
 * The ratio a table shows after a contender's value: for a peer, kiln compiled's speed on the same thread
 * count over the peer's; for kiln eager, kiln compiled's (default threads) over eager's.
 */
function shownRatio(c: PeerCase, who: string): number | undefined {
  if (who === KILN_EAGER) return c.ratios['kernels/eager'];
  if (who.startsWith('kiln ')) return undefined;
  return c.ratios[`sameThreads/${who}`];
}

/** The ratio table: each contender's value, and kiln compiled's speed-up over it at the same thread count. */
function printPeerTable(cases: PeerCase[]): void {
  const who = peerColumns();
  const w = 24;
  console.log(`\n${'case'.padEnd(52)}${who.map((n) => n.padStart(w)).join('')}`);
  console.log(`${'threads'.padEnd(52)}${who.map((n) => String(cases[0]?.threads[n] ?? '?').padStart(w)).join('')}`);
  for (const c of cases) {
    const cells = who.map((n) => {
      const v = c.value[n];
      if (v === undefined) return '—'.padStart(w);
      const ratio = shownRatio(c, n);
      const r = ratio === undefined ? '' : ` (${ratio.toFixed(2)}×)`;
      return `${v.toFixed(c.unit === 'ms' ? 2 : 1)}${r}`.padStart(w);
    });
    console.log(`${`${c.name} [${c.unit}]`.padEnd(52)}${cells.join('')}`);
  }
  console.log(
    '(n×) after a peer: kiln compiled on the same thread count ÷ it, in speed (> 1: kiln is faster); after kiln eager: kiln compiled ÷ eager',
  );
}

/** The checks kiln must meet on its own, by the names KILN_BENCH_ONLY takes. */
/**
 * An 8-op element-wise chain over 1M floats: eager (8 passes, 7 temporaries) against `compile` with the
 * 'kernels' backend (one fused kernel), checked equal first, timed side by side.
 */
function fusionBench(): Check[] {
  manualSeed(0);
  const chain = (x: Tensor, y: Tensor) => x.mul(y).add(1).relu().sub(y).mul(0.5).exp().add(x).tanh();
  const fused = compile(chain);
  const x = randn([1024, 1024]);
  const y = randn([1024, 1024]);
  noGrad(() => {
    const a = fused(x, y) as Tensor;
    const diff = a.sub(chain(x, y)).abs().max().item();
    if (!(diff < 1e-5)) throw new Error(`fusion bench: the fused chain differs from eager by ${diff}`);
  });
  const t = sideBySide('8-op element-wise chain, 1M floats', {
    eager: () => noGrad(() => chain(x, y)),
    compiled: () => noGrad(() => fused(x, y)),
  });
  const speedup = t.eager! / t.compiled!;
  return [
    {
      name: 'fused 8-op chain (1M) speed-up over eager',
      unit: '×',
      value: speedup,
      target: '≥ 4',
      pass: speedup >= 4,
      detail: { eagerMs: t.eager, compiledMs: t.compiled },
    },
  ];
}

const CHECKS: Record<string, () => Check[] | Promise<Check[]>> = {
  fusion: fusionBench,
  fx: fxBench,
  compile: compileBench,
  plugin: pluginBench,
  memory: memoryBench,
  backward: backwardBench,
  training: trainingBench,
  export: exportBench,
  onnx: onnxExportBench,
};

function printChecks(checks: Check[]): void {
  for (const c of checks) {
    console.log(
      `${c.name.padEnd(50)} ${c.value.toFixed(2).padStart(13)} ${c.unit.padEnd(8)} target ${c.target} ${c.unit}: ${c.pass ? 'pass' : 'FAIL'}`,
    );
  }
}

/** The eager runtime against tfjs-backend-cpu (tfjs' global backend must be 'cpu'). */
async function eagerBench(): Promise<Result[]> {
  await tf.setBackend('cpu');
  console.log(`kiln bench: eager runtime vs @tensorflow/tfjs-backend-cpu ${tf.version_core}, ${ROUNDS} interleaved rounds each`);
  return [matmulBench(256), matmulBench(512), mlpBench()];
}

function printEager(results: Result[]): void {
  for (const r of results) {
    const v = (x: number) => `${x.toFixed(2).padStart(8)} ${r.unit.padEnd(8)}`;
    console.log(
      `${r.name.padEnd(50)} kiln ${v(r.kiln)} kiln 1-thread ${v(r.kiln1Thread)} tfjs-cpu ${v(r.tfjsCpu)} kiln ${r.speedup.toFixed(2)}×, 1 thread ${r.speedup1Thread.toFixed(2)}×`,
    );
  }
}

function printTargets(targets: Check[]): void {
  for (const c of targets) {
    console.log(
      `${c.name.padEnd(60)} ${c.value.toFixed(2).padStart(8)} ${c.unit.padEnd(2)} target ${c.target}: ${c.pass ? 'pass' : 'miss'}`,
    );
  }
}

/**
 * bench/gemm.mts in a child process (its own GEMM-variant table, which it records under `gemm` in
 * bench/results.json); false if it failed.
 */
function gemmChild(): boolean {
  const script = new URL('./gemm.mts', import.meta.url).pathname;
  console.log('\nbench/gemm.mts (a child process; it records the gemm section of bench/results.json):');
  const r = spawnSync(process.execPath, ['--import', 'tsx', script], { stdio: 'inherit' });
  if (r.status === 0) return true;
  console.log(`  ✗ bench/gemm.mts failed (exit ${r.status}); results.json keeps its previous gemm section`);
  process.exitCode = 1;
  return false;
}

/** Sections KILN_BENCH_ONLY takes besides the checks: the tfjs-cpu cases, the peer cases, the GEMM variants. */
const SECTIONS: Record<string, () => Promise<void>> = {
  eager: async () => printEager(await eagerBench()),
  peers: async () => {
    const p = await peerBench();
    printPeerTable(p.cases);
    printTargets(p.targets);
  },
  gemm: async () => void gemmChild(),
};

/**
 * KILN_BENCH_ONLY=memory,peers,…: just those checks and sections, printed; results.json is left alone (except
 * by `gemm`, which runs bench/gemm.mts as it is, and that records its own section).
 */
async function runOnly(only: string): Promise<void> {
  const names = only.split(',').map((n) => n.trim());
  const known = [...Object.keys(CHECKS), ...Object.keys(SECTIONS)];
  const unknown = names.filter((n) => !known.includes(n));
  if (unknown.length) throw new Error(`KILN_BENCH_ONLY: unknown check ${unknown.join(', ')} (expected ${known.join(', ')})`);
  const checks: Check[] = [];
  for (const n of names) {
    if (n in SECTIONS) await SECTIONS[n]!();
    else checks.push(...(await CHECKS[n]!()));
  }
  console.log();
  printChecks(checks);
  console.log('\n(KILN_BENCH_ONLY: bench/results.json not written)');
}

/** The `gemm` section bench/gemm.mts wrote into results.json, if any. */
function previousGemm(): unknown {
  const file = new URL('./results.json', import.meta.url);
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as { gemm?: unknown }).gemm : undefined;
}

async function main() {
  const only = process.env.KILN_BENCH_ONLY;
  if (only) return runOnly(only);
  // The overhead checks first: they measure microseconds of dispatch, which the big benchmarks' garbage disturbs.
  // (The memory check runs in child processes of its own.)
  const checks: Check[] = [];
  for (const run of Object.values(CHECKS)) checks.push(...(await run()));
  const results = await eagerBench();
  console.log();
  printEager(results);
  printChecks(checks);
  // after the tfjs-cpu cases: loading the tfjs-wasm peer switches tfjs' global backend to wasm
  const peers = await peerBench();
  printPeerTable(peers.cases);
  printTargets(peers.targets);
  // last, in its own process: bench/gemm.mts's GEMM variants (KILN_BENCH_GEMM=0 keeps the recorded ones)
  const gemmRan = process.env.KILN_BENCH_GEMM !== '0' && gemmChild();
  const out = {
    date: new Date().toISOString(),
    machine: { node: process.version, cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length },
    gemmThreads: { default: DEFAULT_GEMM_THREADS, peerCases: KILN_THREADS },
    rounds: ROUNDS,
    results,
    checks,
    peerRounds: PEER_ROUNDS,
    peerWarmup: PEER_WARMUP,
    ratioMeaning:
      "ratios['kernels/X'] = X's median ms ÷ kiln compiled's median ms: > 1 means kiln compiled (backend 'kernels') is faster than X; " +
      "'kernels-1t/X' the same against kiln compiled with its GEMM on one thread; 'sameThreads/X' against the kiln compiled run on X's thread count",
    peers: peers.peers,
    peerCases: peers.cases,
    kernelTargets: peers.targets,
    gemm: previousGemm(), // bench/gemm.mts's section: written by the child above, or kept from an earlier run
    gemmRemeasured: gemmRan,
  };
  writeFileSync(new URL('./results.json', import.meta.url), JSON.stringify(out, null, 2) + '\n');
  console.log('\nwrote bench/results.json');
}

await main();
