/**
 * `npm run bench`: kiln eager against @tensorflow/tfjs-backend-cpu, measured side by side in one
 * process (interleaved rounds, median of each) so that machine noise hits both alike.
 * Writes bench/results.json; the README's table summarises it.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { createRequire } from 'node:module';
// tfjs-core's Node bundle leaves its gradient rules out; training needs them registered
createRequire(import.meta.url)('@tensorflow/tfjs-core/dist/register_all_gradients');
import { F, compile, manualSeed, nn, optim, randn, tensor, type Tensor } from '../src/index.js';
import { firstFailing } from '../src/compile/guards.js';
import { CompiledCallable } from '../src/compile/compiled-callable.js';
import { symbolicTrace } from '../src/fx.js';
import { transformSource } from '../src/register/transform-file.js';

interface Result {
  name: string;
  unit: string;
  kiln: number;
  tfjsCpu: number;
  /** kiln ÷ tfjs for throughputs, tfjs ÷ kiln for times: > 1 means kiln is faster. */
  speedup: number;
}

const ROUNDS = Number(process.env.KILN_BENCH_ROUNDS ?? 7);

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
  manualSeed(0);
  const a = randn([n, n]);
  const b = randn([n, n]);
  const ta = tf.tensor2d(a.data() as Float32Array, [n, n]);
  const tb = tf.tensor2d(b.data() as Float32Array, [n, n]);
  const ms = sideBySide(`matmul ${n}×${n}`, {
    kiln: () => void a.matmul(b),
    tfjs: () => {
      const r = tf.matMul(ta, tb);
      r.dataSync();
      r.dispose();
    },
  });
  const gflops = (t: number) => (2 * n ** 3) / (t * 1e6);
  return {
    name: `matmul ${n}x${n} float32`,
    unit: 'GFLOP/s',
    kiln: gflops(ms.kiln!),
    tfjsCpu: gflops(ms.tfjs!),
    speedup: ms.tfjs! / ms.kiln!,
  };
}

/** One SGD step (forward, cross-entropy, backward, update) of a 784-512-512-10 ReLU MLP on a batch of 64. */
function mlpBench(): Result {
  const sizes = [784, 512, 512, 10];
  const batch = 64;
  manualSeed(0);
  const model = new nn.Sequential(new nn.Linear(784, 512), new nn.ReLU(), new nn.Linear(512, 512), new nn.ReLU(), new nn.Linear(512, 10));
  const opt = new optim.SGD(model.parameters(), { lr: 0.01 });
  const x = randn([batch, 784]);
  const labels = Int32Array.from({ length: batch }, (_, i) => i % 10);
  const y = tensor(labels, { dtype: 'int32' });
  const kilnStep = () => {
    opt.zeroGrad();
    const loss = F.crossEntropy(model.call(x) as Tensor, y);
    loss.backward();
    opt.step();
  };

  const weights = sizes.slice(1).map((out, i) => tf.variable(tf.randomUniform([sizes[i]!, out], -0.05, 0.05)));
  const biases = sizes.slice(1).map((out) => tf.variable(tf.zeros([out])));
  const tx = tf.tensor2d(x.data() as Float32Array, [batch, 784]);
  const ty = tf.oneHot(tf.tensor1d(labels, 'int32'), 10);
  const tfOpt = tf.train.sgd(0.01);
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
    cost?.dataSync();
    cost?.dispose();
  };
  const ms = sideBySide('MLP training step', { kiln: kilnStep, tfjs: tfjsStep });
  return {
    name: 'MLP 784-512-512-10 training step, batch 64',
    unit: 'ms',
    kiln: ms.kiln!,
    tfjsCpu: ms.tfjs!,
    speedup: ms.tfjs! / ms.kiln!,
  };
}

/** A target kiln must meet on its own (no peer): a time or a ratio measured in this run. */
interface Check {
  name: string;
  unit: string;
  value: number;
  target: string;
  pass: boolean;
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

async function main() {
  await tf.setBackend('cpu');
  console.log(`kiln bench: eager runtime vs @tensorflow/tfjs-backend-cpu ${tf.version_core}, ${ROUNDS} interleaved rounds each`);
  // The overhead checks first: they measure microseconds of dispatch, which the big benchmarks' garbage disturbs.
  const checks = [...fxBench(), ...compileBench(), ...(await pluginBench())];
  const results = [matmulBench(256), matmulBench(512), mlpBench()];
  console.log();
  for (const r of results) {
    console.log(
      `${r.name.padEnd(50)} kiln ${r.kiln.toFixed(2).padStart(8)} ${r.unit.padEnd(8)} tfjs-cpu ${r.tfjsCpu.toFixed(2).padStart(8)} ${r.unit.padEnd(8)} kiln ${r.speedup.toFixed(2)}×`,
    );
  }
  for (const c of checks) {
    console.log(
      `${c.name.padEnd(50)} ${c.value.toFixed(2).padStart(13)} ${c.unit.padEnd(8)} target ${c.target} ${c.unit}: ${c.pass ? 'pass' : 'FAIL'}`,
    );
  }
  const out = {
    date: new Date().toISOString(),
    machine: { node: process.version, cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length },
    rounds: ROUNDS,
    results,
    checks,
  };
  writeFileSync(new URL('./results.json', import.meta.url), JSON.stringify(out, null, 2) + '\n');
  console.log('\nwrote bench/results.json');
}

await main();
