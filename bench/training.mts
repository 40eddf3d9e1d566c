/**
 * `KILN_BENCH_ONLY=training`: issue 15's training measurements, each side by side in one process (interleaved
 * rounds, the order alternating each round, median of each; same data, same weights, same GEMM threads):
 * 1. MLP 784-512-512-10, batch 64, crossEntropy, Adam: a training step (zeroGrad, forward, loss, backward, Adam
 *    step) with the model under `compile(m)` (the kernels backend: AOT autograd's forward and backward graphs
 *    compiled to kernels) against the same step eagerly.
 * 2. The same MLP's forward with gradients enabled (the tape is recorded, no backward), compiled vs eager.
 * 3. The bench's CNN (bench/peers/shapes.mts: 3× conv3x3-BN-ReLU 3-16-32-32, MaxPool2d(2), Linear(8192, 10),
 *    batch 16, BatchNorm in training mode), a training step as in 1, compiled vs eager.
 * 4. The MLP training step of 1 against tfjs-wasm (bench/peers.mts's loader: XNNPACK SIMD, its thread count):
 *    `tf.variableGrads` of the same forward and loss, then `tf.train.adam`'s `applyGradients`; kiln compiled
 *    runs with its GEMM on tfjs-wasm's thread count.
 * 5. Bytes saved for the backward by the min-cut partitioner vs the default one, on the MLP with GELU
 *    activations (F.gelu, and the tanh GELU written element-wise), through `aotFunction` with compilers that
 *    record the forward and backward graphs.
 * 6. Peak memory of the MLP training step, compiled vs eager, each in its own child process (this file run as
 *    `node --expose-gc --import tsx bench/training.mts memory eager|compiled`; sampling as bench/memory.mts).
 * Before anything is timed, the compiled contenders are checked: they ran AOT autograd's compiled programs
 * (`trainingEagerReason` undefined, a forward and a backward program), and their first step's loss and every
 * gradient (and the CNN's running statistics) equal eager's within float32 tolerance; tfjs's first step's loss
 * and gradients equal kiln eager's too.
 * (Item 7, CNN inference against tfjs-wasm with BN folded and against onnxruntime-node, is the `cnn` peer case
 * of bench/run.mts; its targets are in kernelTargets there.)
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { F, compile, manualSeed, nn, optim, tensor, type Tensor } from '../src/index.js';
import {
  aotFunction,
  defaultDecompositions,
  defaultPartition,
  minCutRematerializationPartition,
  savedBytes,
  type Compiler,
  type PartitionFn,
} from '../src/aot/index.js';
import type { GraphModule } from '../src/fx.js';
import { getGemmThreads, gemmHeapBytes, setGemmThreads } from '../src/kernels/gemm/index.js';
import { kernelsBackend, type KernelProgram } from '../src/kernels/program.js';
import { CNN, MLP, cnnData, loadPeer, mlpData, transpose2d, type CnnWeights, type MlpWeights } from './peers.mjs';
import { kilnCnn, kilnMlp } from './kiln-models.mjs';

// tfjs-core's Node bundle leaves its gradient rules out; tf.variableGrads needs them registered
createRequire(import.meta.url)('@tensorflow/tfjs-core/dist/register_all_gradients');

export interface TrainingCheck {
  name: string;
  unit: string;
  value: number;
  target: string;
  pass: boolean;
  /** 'training': bench/readme-table.mts puts these in the targets table. */
  group: 'training';
  detail?: object;
}

const ROUNDS = Math.max(7, Number(process.env.KILN_BENCH_ROUNDS ?? 11));
const WARMUP = 3;
const DEFAULT_GEMM_THREADS = getGemmThreads();
const LR = 1e-3;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

/**
 * Warm-up, then ROUNDS rounds in which every contender runs once, the order reversed every other round (so no
 * contender always runs first or after the same neighbour); median ms each.
 */
export function sideBySide(label: string, contenders: Record<string, () => unknown>, rounds = ROUNDS): Record<string, number> {
  const names = Object.keys(contenders);
  for (const n of names) for (let i = 0; i < WARMUP; i++) contenders[n]!();
  const times: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  for (let r = 0; r < rounds; r++) {
    for (const n of r % 2 === 0 ? names : [...names].reverse()) {
      const t0 = performance.now();
      contenders[n]!();
      times[n]!.push(performance.now() - t0);
    }
  }
  const ms = Object.fromEntries(names.map((n) => [n, median(times[n]!)]));
  console.log(`  ${label}, median of ${rounds} interleaved rounds: ${names.map((n) => `${n} ${ms[n]!.toFixed(2)} ms`).join(', ')}`);
  return ms;
}

/** `f` with kiln's GEMM held to `threads` threads (set on each call, the default put back after). */
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

/** Throws unless |got − want| ≤ atol + rtol·max|want| everywhere (a scaled check: gradients span decades). */
function checkScaled(who: string, got: ArrayLike<number>, want: ArrayLike<number>, rtol = 1e-3, atol = 1e-5): void {
  if (got.length !== want.length) throw new Error(`training bench: ${who}: ${got.length} values, expected ${want.length}`);
  let scale = 0;
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    scale = Math.max(scale, Math.abs(want[i]!));
    worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
  }
  if (!(worst <= atol + rtol * scale))
    throw new Error(`training bench: ${who} differs from eager by ${worst} (max |eager| ${scale}): a wrong result is never timed`);
}

// ---------------------------------------------------------------------------------------------------------
// Models from the shared weights (the same arrays the peers get)

/** The peer cases' kiln models (bench/kiln-models.mts) in training mode. */
const mlpModel = (w: MlpWeights): nn.Module => kilnMlp(w).train();
const cnnModel = (w: CnnWeights): nn.Module => kilnCnn(w).train();

/** The kernels backend (what `compile(m)` resolves to), keeping each KernelProgram it makes so the bench can check it. */
function recordingKernels(programs: KernelProgram[]) {
  return (gm: GraphModule, inputs: Tensor[]) => {
    const compiled = kernelsBackend(gm, inputs);
    programs.push(compiled.program);
    return compiled as unknown as (...a: Tensor[]) => unknown;
  };
}

/** One model training with Adam on a fixed batch: its step returns the loss. */
interface Trainer {
  readonly model: nn.Module;
  step(): number;
  forward(): Tensor;
}

function trainer(model: nn.Module, x: Tensor, y: Tensor): Trainer {
  const opt = new optim.Adam(model.parameters(), { lr: LR });
  return {
    model,
    step: () => {
      opt.zeroGrad();
      const loss = F.crossEntropy(model.call(x) as Tensor, y);
      loss.backward();
      opt.step();
      return loss.item();
    },
    forward: () => model.call(x) as Tensor,
  };
}

/** Eager and `compile(m)` trainers of two models built alike, checked: the compiled one ran AOT's compiled programs and its first step equals eager's. */
function verifiedPair(
  label: string,
  make: () => nn.Module,
  x: Tensor,
  y: Tensor,
): { eager: Trainer; compiled: Trainer; program: KernelProgram } {
  const programs: KernelProgram[] = [];
  const eager = trainer(make(), x, y);
  const base = make();
  const compiled = trainer(compile(base, { backend: recordingKernels(programs) }), x, y);
  // gradients of the first step: capture them before Adam moves the weights (step() applies them)
  const gradsOf = (m: nn.Module) => m.parameters().map((p) => (p.grad ? (p.grad.data() as Float32Array).slice() : null));
  const firstStep = (t: Trainer) => {
    t.model.parameters().forEach((p) => (p.grad = null));
    const loss = F.crossEntropy(t.model.call(x) as Tensor, y);
    loss.backward();
    return { loss: loss.item(), grads: gradsOf(t.model) };
  };
  const want = firstStep(eager);
  const got = firstStep(compiled);
  checkScaled(`${label} compiled: loss`, [got.loss], [want.loss], 1e-4, 1e-5);
  const names = Object.keys(Object.fromEntries(eager.model.namedParameters()));
  want.grads.forEach((g, i) => {
    if (g === null) throw new Error(`training bench: ${label} eager: no gradient for ${names[i]}`);
    const c = got.grads[i];
    if (!c) throw new Error(`training bench: ${label} compiled: no gradient for ${names[i]}`);
    checkScaled(`${label} compiled: gradient of ${names[i]}`, c, g);
  });
  // running statistics (BatchNorm in training mode) moved alike
  const buffers = (m: nn.Module) => Object.entries(m.stateDict()).filter(([k]) => k.includes('running_'));
  const wantBuffers = buffers(eager.model);
  const gotBuffers = Object.fromEntries(buffers(base));
  for (const [k, v] of wantBuffers) checkScaled(`${label} compiled: ${k}`, gotBuffers[k]!.data(), v.data(), 1e-4, 1e-6);
  if (programs.length !== 1) throw new Error(`training bench: ${label}: ${programs.length} captured graphs, expected 1`);
  const program = programs[0]!;
  if (program.trainingEagerReason !== undefined)
    throw new Error(`training bench: ${label} compiled ran eagerly: ${program.trainingEagerReason}`);
  if (program.trainingPrograms.length !== 2)
    throw new Error(`training bench: ${label}: ${program.trainingPrograms.length} AOT programs, expected a forward and a backward`);
  // one full step each (Adam included) before timing, so Adam's state exists on both sides
  eager.step();
  compiled.step();
  return { eager, compiled, program };
}

function mlpBatch(): { w: MlpWeights; x: Tensor; y: Tensor; xData: Float32Array; labels: Int32Array } {
  const { weights: w, x } = mlpData();
  const labels = Int32Array.from({ length: MLP.batch }, (_, i) => i % 10);
  return { w, x: tensor(x, { shape: [MLP.batch, MLP.sizes[0]] }), y: tensor(labels, { dtype: 'int32' }), xData: x, labels };
}

const ratioCheck = (name: string, value: number, target: number, detail: object): TrainingCheck => ({
  name,
  unit: '×',
  value,
  target: `≥ ${target}`,
  pass: value >= target,
  group: 'training',
  detail,
});

/** 1 and 2: the MLP's training step and its forward with gradients, compiled vs eager. */
function mlpChecks(): TrainingCheck[] {
  const { w, x, y } = mlpBatch();
  const { eager, compiled } = verifiedPair('MLP', () => mlpModel(w), x, y);
  // the forward with gradients: outputs equal, and both record a tape
  const e = eager.forward();
  const c = compiled.forward();
  checkScaled('MLP compiled forward with gradients', c.data(), e.data(), 1e-4, 1e-5);
  if (!e.requiresGrad || !c.requiresGrad) throw new Error('training bench: the forward with gradients recorded no tape');
  const step = sideBySide('MLP training step (Adam)', { eager: eager.step, compiled: compiled.step });
  const fwd = sideBySide('MLP forward with gradients', { eager: eager.forward, compiled: compiled.forward });
  const threads = DEFAULT_GEMM_THREADS;
  return [
    ratioCheck('MLP training step (Adam) compiled vs eager', step.eager! / step.compiled!, 3, { ms: step, threads }),
    ratioCheck('MLP forward with gradients compiled vs eager', fwd.eager! / fwd.compiled!, 5, { ms: fwd, threads }),
  ];
}

/** 3: the CNN's training step (BatchNorm in training mode), compiled vs eager. */
function cnnCheck(): TrainingCheck[] {
  const { weights, x } = cnnData();
  const tx = tensor(x, { shape: [CNN.batch, CNN.channels[0], CNN.hw, CNN.hw] });
  const y = tensor(
    Int32Array.from({ length: CNN.batch }, (_, i) => i % CNN.classes),
    { dtype: 'int32' },
  );
  const { eager, compiled } = verifiedPair('CNN', () => cnnModel(weights), tx, y);
  const ms = sideBySide('CNN training step (Adam)', { eager: eager.step, compiled: compiled.step });
  return [ratioCheck('CNN training step (Adam) compiled vs eager', ms.eager! / ms.compiled!, 2, { ms, threads: DEFAULT_GEMM_THREADS })];
}

/** 4: the MLP training step, kiln compiled against tfjs-wasm's variableGrads + Adam, on tfjs-wasm's thread count. */
async function tfjsCheck(): Promise<TrainingCheck[]> {
  const loaded = await loadPeer('tfjs-wasm');
  if (!loaded.available) {
    console.log(`  tfjs-wasm: not available: ${loaded.why}`);
    return [
      {
        name: 'MLP training step tfjs-wasm ÷ kiln compiled',
        unit: '×',
        value: NaN,
        target: '> 1',
        pass: false,
        group: 'training',
        detail: { why: loaded.why },
      },
    ];
  }
  const peer = loaded.peer;
  const threads = peer.threads;
  const { w, x, y, xData, labels } = mlpBatch();
  // tfjs: kernels as [in, out], one-hot labels, the same softmax cross-entropy (mean over the batch)
  const kernels = w.layers.map((l) =>
    tf.variable(tf.tensor2d(transpose2d(l.weight, l.outFeatures, l.inFeatures), [l.inFeatures, l.outFeatures])),
  );
  const biases = w.layers.map((l) => tf.variable(tf.tensor1d(l.bias)));
  const tx = tf.tensor2d(xData, [MLP.batch, MLP.sizes[0]]);
  const ty = tf.oneHot(tf.tensor1d(labels, 'int32'), MLP.sizes[MLP.sizes.length - 1]!);
  const adam = tf.train.adam(LR, 0.9, 0.999, 1e-8);
  const vars = [...kernels, ...biases];
  const loss = () => {
    let h: tf.Tensor = tx;
    kernels.forEach((k, i) => {
      h = tf.add(tf.matMul(h, k), biases[i]!);
      if (i < kernels.length - 1) h = tf.relu(h);
    });
    return tf.losses.softmaxCrossEntropy(ty, h) as tf.Scalar;
  };
  /** One step: gradients of every variable, then Adam; returns the loss and (when asked) the gradients. */
  const tfjsStep = (keepGrads = false) => {
    const { value, grads } = tf.variableGrads(loss, vars);
    const copies = keepGrads ? vars.map((v) => grads[v.name]!.dataSync().slice() as Float32Array) : [];
    adam.applyGradients(grads as unknown as Parameters<typeof adam.applyGradients>[0]); // variableGrads keys its gradients by variable name, as applyGradients reads them
    const l = value.dataSync()[0]!;
    value.dispose();
    tf.dispose(Object.values(grads));
    return { loss: l, grads: copies };
  };
  try {
    if (tf.getBackend() !== 'wasm') throw new Error(`tfjs backend is ${tf.getBackend()}, expected wasm`);
    // tfjs's first step against kiln eager's (layouts: tfjs kernels are [in, out])
    const ref = trainer(mlpModel(w), x, y);
    ref.model.parameters().forEach((p) => (p.grad = null));
    const refLoss = F.crossEntropy(ref.model.call(x) as Tensor, y);
    refLoss.backward();
    const first = tfjsStep(true);
    checkScaled('tfjs-wasm MLP training step: loss', [first.loss], [refLoss.item()], 1e-4, 1e-5);
    const sd = Object.fromEntries(ref.model.namedParameters());
    w.layers.forEach((l, i) => {
      const kGrad = transpose2d(first.grads[i]!, l.inFeatures, l.outFeatures);
      checkScaled(`tfjs-wasm: gradient of layer ${i} weight`, kGrad, sd[`${2 * i}.weight`]!.grad!.data());
      checkScaled(`tfjs-wasm: gradient of layer ${i} bias`, first.grads[kernels.length + i]!, sd[`${2 * i}.bias`]!.grad!.data());
    });
    const before = tf.memory().numTensors;
    tfjsStep();
    tfjsStep();
    if (tf.memory().numTensors !== before) throw new Error(`tfjs-wasm training step leaks tensors (${before} → ${tf.memory().numTensors})`);

    const { compiled } = verifiedPair('MLP (beside tfjs-wasm)', () => mlpModel(w), x, y);
    const contenders: Record<string, () => unknown> = {
      [`kiln compiled, ${threads} thread(s)`]: withGemmThreads(threads, compiled.step),
      'tfjs-wasm': () => tfjsStep(),
    };
    if (threads !== DEFAULT_GEMM_THREADS) contenders[`kiln compiled, ${DEFAULT_GEMM_THREADS} threads`] = compiled.step;
    const ms = sideBySide(`MLP training step vs tfjs-wasm (${peer.version})`, contenders);
    const ratio = ms['tfjs-wasm']! / ms[`kiln compiled, ${threads} thread(s)`]!;
    return [
      {
        name: `MLP training step tfjs-wasm ÷ kiln compiled (${threads} thread each)`,
        unit: '×',
        value: ratio,
        target: '> 1',
        pass: ratio > 1,
        group: 'training',
        detail: { ms, threads, tfjs: peer.config },
      },
    ];
  } finally {
    tf.dispose([...vars, tx, ty]);
    adam.dispose();
    await peer.dispose();
  }
}

/** The tanh approximation of GELU written out in element-wise ops (PyTorch's min-cut demonstrations use this form). */
const tanhGelu = (h: Tensor): Tensor =>
  h.mul(0.5).mul(
    h
      .mul(h)
      .mul(h)
      .mul(0.044715)
      .add(h)
      .mul(Math.sqrt(2 / Math.PI))
      .tanh()
      .add(1),
  );

/**
 * 5: bytes the forward saves for the backward, min-cut vs the default partition, on the MLP 784-512-512-10 with
 * GELU activations: once with F.gelu (one op with a fused geluBackward, as nn.GELU runs), once with the tanh GELU
 * written out element-wise. Both partitions' gradients are checked equal.
 */
function savedBytesCheck(): TrainingCheck[] {
  const { w, x } = mlpBatch();
  const params = mlpModel(w).parameters();
  const measure = (activation: (h: Tensor) => Tensor, partitionFn: PartitionFn) => {
    let fw: GraphModule | undefined;
    let bw: GraphModule | undefined;
    const recording =
      (set: (gm: GraphModule) => void): Compiler =>
      (gm) => {
        set(gm);
        return (...args) => gm.forward(...args);
      };
    const mlp = (h: Tensor, ...p: Tensor[]) => {
      for (let i = 0; i < p.length; i += 2) {
        h = F.linear(h, p[i]!, p[i + 1]!);
        if (i + 2 < p.length) h = activation(h);
      }
      return h;
    };
    // PyTorch's partitioner tests trace with its default decompositions (linear → addmm); kiln's table does the same
    const fn = aotFunction(mlp, {
      fwCompiler: recording((gm) => (fw = gm)),
      bwCompiler: recording((gm) => (bw = gm)),
      partitionFn,
      decompositions: defaultDecompositions,
    });
    params.forEach((p) => (p.grad = null));
    (fn(x, ...params) as Tensor).sum().backward();
    if (!fw || !bw) throw new Error('training bench: aotFunction compiled no forward/backward graph');
    return { bytes: savedBytes(fw, bw), grads: params.map((p) => p.grad!.data().slice()) };
  };
  return (
    [
      ['F.gelu', (h: Tensor) => F.gelu(h)],
      ['tanh GELU written element-wise', tanhGelu],
    ] as const
  ).map(([label, activation]) => {
    const def = measure(activation, defaultPartition);
    const minCut = measure(activation, minCutRematerializationPartition);
    def.grads.forEach((g, i) => checkScaled(`GELU MLP (${label}): min-cut gradient ${i} vs default`, minCut.grads[i]!, g, 1e-5, 1e-7));
    const ratio = minCut.bytes / def.bytes;
    console.log(`  GELU MLP (${label}) saved for backward: default ${def.bytes} bytes, min-cut ${minCut.bytes} bytes`);
    // F.gelu's output feeds the next layer's weight-gradient GEMM, so the backward must hold it either way: PyTorch's
    // min-cut bans recomputing a value the backward materialises, and saves what the default does (at most that).
    const fused = label === 'F.gelu';
    return {
      name: `GELU MLP (${label}) bytes saved for backward, min-cut ÷ default`,
      unit: '×',
      value: ratio,
      target: fused ? '≤ 1' : '< 1',
      pass: fused ? ratio <= 1 : ratio < 1,
      group: 'training' as const,
      detail: { defaultBytes: def.bytes, minCutBytes: minCut.bytes },
    };
  });
}

// ---------------------------------------------------------------------------------------------------------
// 6: peak memory of the MLP training step, each variant in a child process of its own

interface TrainingMemory {
  variant: 'eager' | 'compiled';
  /** Largest (sample after a step − baseline), bytes. */
  peak: number;
  /** Held between steps once warm, above the baseline (Adam's state included), bytes. */
  retained: number;
  /** Largest growth during one step (GC'd before it), bytes. */
  perStep: number;
  rss: number;
}

const MEM_WARMUP = 30;
const MEM_SETTLE = 5;
const MEM_STEPS = 15;

function measureMemory(variant: 'eager' | 'compiled'): TrainingMemory {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('bench/training.mts memory needs node --expose-gc');
  const collect = () => {
    gc();
    gc();
  };
  const sample = () => {
    const m = process.memoryUsage();
    return { bytes: m.heapUsed + m.external + gemmHeapBytes(), rss: m.rss };
  };
  manualSeed(0);
  const { w, x, y } = mlpBatch();
  const model = mlpModel(w);
  const t = trainer(variant === 'eager' ? model : compile(model), x, y);
  collect();
  const base = sample();
  for (let i = 0; i < MEM_WARMUP; i++) t.step();
  collect();
  const retained = sample().bytes - base.bytes;
  let peak = 0;
  let perStep = 0;
  let rss = 0;
  for (let i = -MEM_SETTLE; i < MEM_STEPS; i++) {
    collect();
    const before = sample();
    t.step();
    const after = sample();
    if (i < 0) continue;
    peak = Math.max(peak, after.bytes - base.bytes);
    perStep = Math.max(perStep, after.bytes - before.bytes);
    rss = Math.max(rss, after.rss - base.rss);
  }
  return { variant, peak, retained, perStep, rss };
}

function memoryChild(variant: 'eager' | 'compiled'): TrainingMemory {
  const script = new URL('./training.mts', import.meta.url).pathname;
  const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', script, 'memory', variant], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bench/training.mts memory ${variant} failed (exit ${r.status}):\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as TrainingMemory;
}

function memoryCheck(): TrainingCheck[] {
  const eager = memoryChild('eager');
  const compiled = memoryChild('compiled');
  const MiB = (b: number) => (b / 2 ** 20).toFixed(2);
  for (const r of [eager, compiled])
    console.log(
      `  MLP training step memory, ${r.variant}: peak ${MiB(r.peak)} MiB = held ${MiB(r.retained)} MiB + one step ${MiB(r.perStep)} MiB; RSS +${MiB(r.rss)} MiB`,
    );
  const ratio = compiled.peak / eager.peak;
  return [
    {
      name: 'MLP training step peak memory, compiled ÷ eager',
      unit: '×',
      value: ratio,
      target: '≤ 1',
      pass: ratio <= 1,
      group: 'training',
      detail: { eager, compiled },
    },
  ];
}

/** The `training` check group of bench/run.mts. */
export async function trainingBench(): Promise<TrainingCheck[]> {
  console.log(`training: kiln GEMM on ${DEFAULT_GEMM_THREADS} thread(s) unless a row says otherwise`);
  return [...mlpChecks(), ...cnnCheck(), ...(await tfjsCheck()), ...savedBytesCheck(), ...memoryCheck()];
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [what, variant] = process.argv.slice(2);
  if (what !== 'memory' || (variant !== 'eager' && variant !== 'compiled'))
    throw new Error(`usage: bench/training.mts memory eager|compiled (got ${what} ${variant})`);
  console.log(JSON.stringify(measureMemory(variant)));
}
