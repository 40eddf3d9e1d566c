/**
 * The bench's peers: the same matmul, MLP and CNN that kiln runs, on @tensorflow/tfjs-backend-wasm,
 * @jax-js/jax (wasm) and onnxruntime-node, from the same Float32Array data.
 *
 * Each peer's prepare functions take plain arrays and return an async runner `() => Promise<Float32Array>`
 * that computes the result and copies it to the host (so the timed work is real), after checking the
 * peer's output against the plain-JS reference in bench/peers/reference.mts (max abs error
 * ≤ 1e-3·max(1, |ref|)); a wrong peer throws, so the bench never reports a number for a wrong result.
 * A peer that cannot load, or cannot express a case, reports `{ available: false, why }`.
 *
 * Run on its own (`npx tsx bench/peers.mts`) it loads every peer, checks every case and prints a few timings.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Tensor as TfTensor, Tensor2D, Tensor4D } from '@tensorflow/tfjs-core';
import { cnnModel, matmulModel, mlpModel } from './peers/onnx-writer.mjs';
import { checkClose, checkCloseScaled, cnnRef, matmulRef, mlpGradientsRef, mlpRef } from './peers/reference.mjs';
import { CNN, MLP, cnnData, matmulData, mlpData, rng, type CnnWeights, type ConvBnWeights, type MlpWeights } from './peers/shapes.mjs';
import { createWebWorkerShim, type WebWorkerShim } from './peers/web-worker-shim.mjs';

export { CNN, MLP, cnnData, matmulData, mlpData, rng, checkClose, checkCloseScaled, cnnRef, matmulRef, mlpGradientsRef, mlpRef };
export type { CnnWeights, ConvBnWeights, LinearWeights, MlpWeights } from './peers/shapes.mjs';
export type { MlpGradients } from './peers/reference.mjs';

export type Runner = () => Promise<Float32Array>;
export type Prepared = { available: true; run: Runner } | { available: false; why: string };

export type PeerName = 'tfjs-wasm' | 'jax-js-wasm' | 'jax-js-wasm-mt' | 'onnxruntime-node';

export interface Peer {
  name: PeerName;
  version: string;
  /** How it runs: threads, SIMD, layouts, anything a reader of the numbers should know. */
  config: string;
  /** Threads it computes on, so the bench can set it beside kiln at the same count. */
  threads: number;
  /** C = A·B, both n×n row-major, both given at run time. */
  matmul(a: Float32Array, b: Float32Array, n: number): Promise<Prepared>;
  /** MLP 784-512-512-10 inference on x [64, 784]. */
  mlp(w: MlpWeights, x: Float32Array): Promise<Prepared>;
  /** The small CNN on x [16, 3, 32, 32] NCHW. */
  cnn(w: CnnWeights, x: Float32Array): Promise<Prepared>;
  /**
   * The same CNN with each batch norm folded into its conv's weights and bias at prepare time, as an
   * inference-graph converter does (and as kiln compiled and onnxruntime do themselves); only peers that run
   * the unfolded graph as written have it.
   */
  cnnFoldedBn?(w: CnnWeights, x: Float32Array): Promise<Prepared>;
  /** Release threads and memory (the bench calls it at the end). */
  dispose(): Promise<void>;
}

export type Loaded = { name: PeerName; available: true; peer: Peer } | { name: PeerName; available: false; why: string };

const require = createRequire(import.meta.url);
/** A package's version from its package.json (found from its main file: not every package exports it). */
function versionOf(pkg: string): string {
  for (let dir = dirname(require.resolve(pkg)); dir !== dirname(dir); dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      const json = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (json.name === pkg) return json.version ?? '?';
    }
  }
  return '?';
}
const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));

// ---------------------------------------------------------------------------------------------------------
// References, computed once per input (several peers check against the same one).

const refCache = new WeakMap<object, Float32Array>();
function cachedRef(key: object, compute: () => Float32Array): Float32Array {
  let r = refCache.get(key);
  if (r === undefined) refCache.set(key, (r = compute()));
  return r;
}
export const referenceMatmul = (a: Float32Array, b: Float32Array, n: number): Float32Array => cachedRef(a, () => matmulRef(a, b, n));
export const referenceMlp = (w: MlpWeights, x: Float32Array): Float32Array => cachedRef(x, () => mlpRef(w, x));
export const referenceCnn = (w: CnnWeights, x: Float32Array): Float32Array => cachedRef(x, () => cnnRef(w, x));

/** Run twice (the first call compiles/plans), check the second result, return the runner. */
async function verified(who: string, run: Runner, ref: Float32Array): Promise<Prepared> {
  await run();
  checkClose(who, await run(), ref);
  return { available: true, run };
}

/**
 * A conv + inference batch norm as one conv: w' = w·γ/√(var + eps) per output channel and
 * b' = (b − mean)·γ/√(var + eps) + β, computed in float64 and rounded once (tfjs-converter's and
 * onnxruntime's fold; the rounding differs from the unfolded graph's by float ULPs, well inside the check).
 */
export function foldBatchNorm(c: ConvBnWeights, eps: number): { weight: Float32Array; bias: Float32Array } {
  const per = c.weight.length / c.outChannels;
  const weight = new Float32Array(c.weight.length);
  const bias = new Float32Array(c.outChannels);
  for (let o = 0; o < c.outChannels; o++) {
    const scale = c.gamma[o]! / Math.sqrt(c.runningVar[o]! + eps);
    for (let i = o * per; i < (o + 1) * per; i++) weight[i] = c.weight[i]! * scale;
    bias[o] = (c.bias[o]! - c.runningMean[o]!) * scale + c.beta[o]!;
  }
  return { weight, bias };
}

/** A row-major [rows, cols] matrix transposed to [cols, rows]. */
export function transpose2d(m: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = m[r * cols + c]!;
  return t;
}

// ---------------------------------------------------------------------------------------------------------
// @tensorflow/tfjs-backend-wasm (XNNPACK)

async function loadTfjsWasm(): Promise<Peer> {
  const tf = await import('@tensorflow/tfjs-core');
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  // On Node the emscripten loader reads the .wasm with fs from this prefix: the files in node_modules,
  // nothing is fetched. tfjs picks tfjs-backend-wasm-simd.wasm when WASM_HAS_SIMD_SUPPORT holds.
  const dir = dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm')) + sep;
  wasm.setWasmPaths(dir);
  // Its emscripten glue adds process-wide uncaughtException/unhandledRejection handlers that rethrow from
  // inside its minified bundle (so any later crash prints that bundle); they do nothing else: take them off.
  const uncaught = process.listeners('uncaughtException');
  const unhandled = process.listeners('unhandledRejection');
  try {
    if (!(await tf.setBackend('wasm'))) throw new Error('tf.setBackend("wasm") failed');
  } finally {
    for (const l of process.listeners('uncaughtException')) if (!uncaught.includes(l)) process.removeListener('uncaughtException', l);
    for (const l of process.listeners('unhandledRejection')) if (!unhandled.includes(l)) process.removeListener('unhandledRejection', l);
  }
  const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
  const threads = await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT');
  if (!simd) throw new Error('this Node has no wasm SIMD; the bench compares against the SIMD build only');
  const config =
    `XNNPACK, ${threads ? 'threaded-SIMD' : 'SIMD'} build (${threads ? 'tfjs-backend-wasm-threaded-simd.wasm' : 'tfjs-backend-wasm-simd.wasm'}), ` +
    `${wasm.getThreadsCount()} thread(s): tfjs turns wasm threads off on Node (WASM_HAS_MULTITHREAD_SUPPORT is false ` +
    `under IS_NODE, tfjs issue #3830; forcing it fails: its pthread workers are blob: URLs, which worker_threads refuses ` +
    `with ERR_WORKER_PATH). Linear as tf.fused.matMul (bias, relu), conv as tf.fused.conv2d (bias) then tf.batchNorm ` +
    `and tf.relu, as tfjs-layers would run them (its folded-BN variant: tf.fused.conv2d with the batch norm folded into ` +
    `filter and bias and relu fused, as tfjs-converter emits for an inference graph); the CNN input is transposed ` +
    `NCHW→NHWC once, outside the timed region; conv and Linear weights converted to tfjs layouts at prepare time`;

  /** Tensors a prepare function made (inputs, converted weights): kept until dispose(). */
  const owned: TfTensor[] = [];
  const keep = <T extends TfTensor>(t: T): T => {
    owned.push(t);
    return t;
  };

  const ensureBackend = () => {
    if (tf.getBackend() !== 'wasm') throw new Error(`tfjs backend is ${tf.getBackend()}, expected wasm`);
  };

  /** A PyTorch [out, in, kh, kw] conv weight as a tfjs [kh, kw, in, out] filter. */
  const tfjsFilter = (weight: Float32Array, out: number, inC: number): Tensor4D =>
    tf.tidy(() => tf.transpose(tf.tensor4d(weight, [out, inC, 3, 3]), [2, 3, 1, 0]));

  /** The CNN's input (NHWC) and its tail (MaxPool2d(2), flatten, Linear), shared by both CNN variants. */
  const cnnHead = (w: CnnWeights, x: Float32Array) => {
    const { batch: N, hw: H, classes } = CNN;
    const C = w.convs[w.convs.length - 1]!.outChannels;
    const Hp = H / 2;
    // Linear(8192, 10) columns are in NCHW flatten order (c, h, w); tfjs flattens NHWC as (h, w, c):
    // permute the columns once and store the kernel as [in, out].
    const fcKernel = new Float32Array(CNN.flat * classes);
    for (let o = 0; o < classes; o++)
      for (let c = 0; c < C; c++)
        for (let p = 0; p < Hp * Hp; p++) fcKernel[(p * C + c) * classes + o] = w.fcWeight[o * CNN.flat + c * Hp * Hp + p]!;
    const fcK = keep(tf.tensor2d(fcKernel, [CNN.flat, classes]));
    const fcB = keep(tf.tensor1d(w.fcBias));
    return {
      // the input arrives NCHW; tfjs convolves NHWC: transposed once here, outside the timed region
      x: keep(tf.tidy(() => tf.transpose(tf.tensor4d(x, [N, CNN.channels[0], H, H]), [0, 2, 3, 1])) as Tensor4D),
      poolLinear: (h: Tensor4D) => tf.fused.matMul({ a: tf.reshape(tf.maxPool(h, 2, 2, 'valid'), [N, CNN.flat]), b: fcK, bias: fcB }),
    };
  };

  /** Wrap a tidy forward: result copied to host, every intermediate and the result disposed. */
  const runnerOf =
    (forward: () => TfTensor): Runner =>
    async () => {
      const y = tf.tidy(forward);
      try {
        return (await y.data()) as Float32Array;
      } finally {
        y.dispose();
      }
    };

  /** Verify, and check that running it leaks no tensors. */
  async function prepared(who: string, run: Runner, ref: Float32Array): Promise<Prepared> {
    ensureBackend();
    const p = await verified(who, run, ref);
    const before = tf.memory().numTensors;
    await run();
    await run();
    if (tf.memory().numTensors !== before) throw new Error(`${who}: leaks tensors (${before} → ${tf.memory().numTensors})`);
    return p;
  }

  return {
    name: 'tfjs-wasm',
    version: `tfjs-core ${tf.version_core}, tfjs-backend-wasm ${wasm.version_wasm}`,
    config,
    threads: wasm.getThreadsCount(),
    async matmul(a, b, n) {
      const ta = keep(tf.tensor2d(a, [n, n]));
      const tb = keep(tf.tensor2d(b, [n, n]));
      return prepared(
        `tfjs-wasm matmul ${n}`,
        runnerOf(() => tf.matMul(ta, tb)),
        referenceMatmul(a, b, n),
      );
    },
    async mlp(w, x) {
      const layers = w.layers.map((l) => ({
        kernel: keep(tf.tensor2d(transpose2d(l.weight, l.outFeatures, l.inFeatures), [l.inFeatures, l.outFeatures])),
        bias: keep(tf.tensor1d(l.bias)),
      }));
      const tx = keep(tf.tensor2d(x, [MLP.batch, MLP.sizes[0]]));
      const forward = () => {
        let h = tx as Tensor2D;
        layers.forEach((l, i) => {
          h = tf.fused.matMul({ a: h, b: l.kernel, bias: l.bias, activation: i < layers.length - 1 ? 'relu' : 'linear' }) as Tensor2D;
        });
        return h;
      };
      return prepared('tfjs-wasm MLP', runnerOf(forward), referenceMlp(w, x));
    },
    async cnn(w, x) {
      const convs = w.convs.map((c) => ({
        filter: keep(tfjsFilter(c.weight, c.outChannels, c.inChannels)),
        bias: keep(tf.tensor1d(c.bias)),
        gamma: keep(tf.tensor1d(c.gamma)),
        beta: keep(tf.tensor1d(c.beta)),
        mean: keep(tf.tensor1d(c.runningMean)),
        variance: keep(tf.tensor1d(c.runningVar)),
      }));
      const head = cnnHead(w, x);
      const forward = () => {
        let h = head.x;
        for (const c of convs) {
          h = tf.fused.conv2d({ x: h, filter: c.filter, strides: 1, pad: 'same', bias: c.bias });
          h = tf.relu(tf.batchNorm(h, c.mean, c.variance, c.beta, c.gamma, w.eps));
        }
        return head.poolLinear(h);
      };
      return prepared('tfjs-wasm CNN', runnerOf(forward), referenceCnn(w, x));
    },
    async cnnFoldedBn(w, x) {
      const convs = w.convs.map((c) => {
        const f = foldBatchNorm(c, w.eps);
        return { filter: keep(tfjsFilter(f.weight, c.outChannels, c.inChannels)), bias: keep(tf.tensor1d(f.bias)) };
      });
      const head = cnnHead(w, x);
      const forward = () => {
        let h = head.x;
        for (const c of convs) h = tf.fused.conv2d({ x: h, filter: c.filter, strides: 1, pad: 'same', bias: c.bias, activation: 'relu' });
        return head.poolLinear(h);
      };
      return prepared('tfjs-wasm CNN (folded BN)', runnerOf(forward), referenceCnn(w, x));
    },
    async dispose() {
      for (const t of owned.splice(0)) t.dispose();
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// @jax-js/jax, wasm device

type Jax = typeof import('@jax-js/jax');
type JArray = import('@jax-js/jax').Array;

/**
 * jax-js on its wasm device. `threads` = 0: as it runs on Node out of the box (no global Worker, so
 * every kernel on the main thread). `threads` > 0: its own worker pool, given a Web Worker shim over
 * worker_threads (bench/peers/web-worker-shim.mts). The two are separate module instances (the package's
 * ESM and CJS builds), since jax-js decides on its pool once, when its wasm backend starts.
 */
async function loadJax(threads: number): Promise<Peer> {
  let jax: Jax;
  let shim: WebWorkerShim | undefined;
  if (threads === 0) {
    jax = await import('@jax-js/jax');
  } else {
    if (typeof SharedArrayBuffer === 'undefined') throw new Error('no SharedArrayBuffer, so jax-js cannot share wasm memory with workers');
    const s = (shim = createWebWorkerShim(threads));
    // the CJS build: a second instance, whose wasm backend (made as the module loads) gets shared memory and a pool
    jax = s.during(() => require('@jax-js/jax') as Jax);
  }
  /** Every call into the pooled instance runs with the shim as `globalThis.Worker`. */
  const inScope = <T,>(fn: () => T): T => (shim ? shim.during(fn) : fn());
  const { init, numpy: np, jit, lax, nn, defaultDevice } = jax;
  try {
    // init() with no argument probes WebGPU through `navigator`, which Node 20 lacks; ask for wasm only
    const devices = await inScope(() => init('wasm'));
    if (!devices.includes('wasm')) throw new Error(`init('wasm') started ${JSON.stringify(devices)}, no wasm`);
    inScope(() => defaultDevice('wasm'));
    if (shim) {
      await inScope(() => np.ones([4096]).mul(2).data()); // the pool makes its workers on its first dispatch
      if (shim.started === 0) throw new Error('jax-js made no workers through the shim, so it would run single-threaded');
    }
  } catch (e) {
    await shim?.terminate();
    throw e;
  }
  const name: PeerName = threads === 0 ? 'jax-js-wasm' : 'jax-js-wasm-mt';
  const config =
    threads === 0
      ? `wasm device, 1 thread: on Node 20 there is no global Worker, so jax-js runs every kernel on the main thread. ` +
        `numpy API under jit (whole forward one jitted function), Linear weights pre-transposed to [in, out] at prepare time`
      : `wasm device, its worker pool of 4 virtual workers (navigator.hardwareConcurrency is absent on Node 20) on ` +
        `${threads} worker_threads through a Web Worker shim; otherwise as jax-js-wasm`;

  /** jax-js arrays are reference-counted and every call consumes its arguments: pass `.ref`s. */
  const runnerOf =
    <A extends JArray[]>(f: (...args: A) => JArray, args: A): Runner =>
    () =>
      inScope(async () => (await f(...(args.map((a) => a.ref) as A)).data()) as Float32Array);

  /** Arrays a prepare function made (inputs, weights), and the jitted functions: released by dispose(). */
  const owned: { dispose(): void }[] = [];
  const arr = (data: Float32Array, shape: number[]): JArray =>
    inScope(() => {
      const a = np.array(data).reshape(shape);
      owned.push(a);
      return a;
    });
  const jitted = <F extends Parameters<typeof jit>[0]>(f: F) => {
    const j = jit(f);
    owned.push(j);
    return j;
  };

  async function matmul(a: Float32Array, b: Float32Array, n: number): Promise<Prepared> {
    const mm = jitted((x: JArray, y: JArray) => np.matmul(x, y));
    return verified(`${name} matmul ${n}`, runnerOf(mm, [arr(a, [n, n]), arr(b, [n, n])]), referenceMatmul(a, b, n));
  }

  async function mlp(w: MlpWeights, x: Float32Array): Promise<Prepared> {
    const params = w.layers.flatMap((l) => [
      arr(transpose2d(l.weight, l.outFeatures, l.inFeatures), [l.inFeatures, l.outFeatures]),
      arr(l.bias, [l.outFeatures]),
    ]);
    const last = w.layers.length - 1;
    const forward = jitted((h: JArray, ...p: JArray[]) => {
      for (let i = 0; i <= last; i++) {
        h = np.matmul(h, p[2 * i]!).add(p[2 * i + 1]!);
        if (i < last) h = nn.relu(h);
      }
      return h;
    });
    return verified(`${name} MLP`, runnerOf(forward, [arr(x, [MLP.batch, MLP.sizes[0]]), ...params]), referenceMlp(w, x));
  }

  async function cnn(w: CnnWeights, x: Float32Array): Promise<Prepared> {
    const { batch: N, hw: H, classes } = CNN;
    const C = w.convs[w.convs.length - 1]!.outChannels;
    const perChannel = (v: Float32Array, c: number) => arr(v, [1, c, 1, 1]);
    const params = w.convs.flatMap((c) => [
      arr(c.weight, [c.outChannels, c.inChannels, 3, 3]), // lax.conv takes PyTorch's OIHW layout as it is
      perChannel(c.bias, c.outChannels),
      perChannel(c.gamma, c.outChannels),
      perChannel(c.beta, c.outChannels),
      perChannel(c.runningMean, c.outChannels),
      perChannel(c.runningVar, c.outChannels),
    ]);
    const fcK = arr(transpose2d(w.fcWeight, classes, CNN.flat), [CNN.flat, classes]);
    const fcB = arr(w.fcBias, [classes]);
    const eps = w.eps;
    const pad1: [number, number][] = [
      [1, 1],
      [1, 1],
    ];
    const forward = jitted((h: JArray, fcKernel: JArray, fcBias: JArray, ...p: JArray[]) => {
      for (let i = 0; i < p.length; i += 6) {
        const [weight, bias, gamma, beta, mean, variance] = p.slice(i, i + 6) as [JArray, JArray, JArray, JArray, JArray, JArray];
        h = lax.conv(h, weight, [1, 1], pad1).add(bias);
        // BatchNorm2d, inference: (h − mean) · γ / √(var + eps) + β, computed in the graph as written
        h = nn.relu(
          h
            .sub(mean)
            .mul(gamma)
            .div(np.sqrt(variance.add(eps)))
            .add(beta),
        );
      }
      // MaxPool2d(2) as a max over the two 2-wide window axes, then flatten in NCHW order
      const pooled = np.max(h.reshape([N, C, H / 2, 2, H / 2, 2]), [3, 5]);
      return np.matmul(pooled.reshape([N, CNN.flat]), fcKernel).add(fcBias);
    });
    return verified(`${name} CNN`, runnerOf(forward, [arr(x, [N, CNN.channels[0], H, H]), fcK, fcB, ...params]), referenceCnn(w, x));
  }

  return {
    name,
    version: `@jax-js/jax ${versionOf('@jax-js/jax')}`,
    config,
    threads: Math.max(1, threads),
    matmul: (a, b, n) => inScope(() => matmul(a, b, n)),
    mlp: (w, x) => inScope(() => mlp(w, x)),
    cnn: (w, x) => inScope(() => cnn(w, x)),
    async dispose() {
      inScope(() => {
        for (const o of owned.splice(0)) o.dispose();
      });
      await shim?.terminate();
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// onnxruntime-node (native MLAS), models built in memory by bench/peers/onnx-writer.mts

const ORT_THREADS = 2;

async function loadOrt(): Promise<Peer> {
  const ort = await import('onnxruntime-node');
  const options = {
    executionProviders: ['cpu'],
    intraOpNumThreads: ORT_THREADS,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    // ORT's pool threads spin-wait after each run by default, taking the cores from whichever contender
    // runs next in an interleaved round (measured here: kiln's matmul 512 ~40% slower right after an ORT
    // run); off, ORT pays its own wake-up latency instead of billing its neighbours.
    extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
  } as const;
  const session = (bytes: Uint8Array) => ort.InferenceSession.create(bytes, options);
  const sessions: import('onnxruntime-node').InferenceSession[] = [];
  const runnerOf = async (bytes: Uint8Array, feeds: Record<string, import('onnxruntime-node').Tensor>): Promise<Runner> => {
    const s = await session(bytes);
    sessions.push(s);
    const out = s.outputNames[0]!;
    return async () => (await s.run(feeds))[out]!.data as Float32Array;
  };
  const f32 = (data: Float32Array, dims: number[]) => new ort.Tensor('float32', data, dims);
  return {
    name: 'onnxruntime-node',
    version: `onnxruntime-node ${versionOf('onnxruntime-node')}`,
    threads: ORT_THREADS,
    config:
      `CPU execution provider (native MLAS), intraOpNumThreads ${ORT_THREADS}, interOpNumThreads 1, sequential, thread ` +
      `spinning off (so ORT does not hold the cores during its neighbours' rounds), graphOptimizationLevel all (ORT ` +
      `may fuse Conv+BatchNormalization+Relu itself); ONNX opset 13 models written ` +
      `in memory from the same weights (PyTorch layouts as they are: Gemm transB=1, Conv OIHW, NCHW input)`,
    async matmul(a, b, n) {
      const run = await runnerOf(matmulModel(n), { a: f32(a, [n, n]), b: f32(b, [n, n]) });
      return verified(`onnxruntime-node matmul ${n}`, run, referenceMatmul(a, b, n));
    },
    async mlp(w, x) {
      const run = await runnerOf(mlpModel(w), { x: f32(x, [MLP.batch, MLP.sizes[0]]) });
      return verified('onnxruntime-node MLP', run, referenceMlp(w, x));
    },
    async cnn(w, x) {
      const run = await runnerOf(cnnModel(w), { x: f32(x, [CNN.batch, CNN.channels[0], CNN.hw, CNN.hw]) });
      return verified('onnxruntime-node CNN', run, referenceCnn(w, x));
    },
    async dispose() {
      await Promise.all(sessions.splice(0).map((s) => s.release()));
    },
  };
}

// ---------------------------------------------------------------------------------------------------------

const loaders: Record<PeerName, () => Promise<Peer>> = {
  'tfjs-wasm': loadTfjsWasm,
  'jax-js-wasm': () => loadJax(0),
  'jax-js-wasm-mt': () => loadJax(2),
  'onnxruntime-node': loadOrt,
};

/**
 * Every peer, in the order the bench shows them; `KILN_BENCH_PEERS=tfjs-wasm,onnxruntime-node` (a comma list)
 * runs only those (handy while iterating: jax-js's CNN alone takes ~2 s a call here).
 */
export const PEER_NAMES = (Object.keys(loaders) as PeerName[]).filter(
  (n) => process.env.KILN_BENCH_PEERS === undefined || process.env.KILN_BENCH_PEERS.split(',').includes(n),
);

/** Load one peer; a peer that cannot load (missing package, no SIMD, …) says why instead of throwing. */
export async function loadPeer(name: PeerName): Promise<Loaded> {
  try {
    return { name, available: true, peer: await loaders[name]() };
  } catch (e) {
    return { name, available: false, why: message(e) };
  }
}

/** Prepare a case on a peer; a case the peer cannot run is `{ available: false }`, a wrong result throws. */
export async function prepareCase(peer: Peer, what: () => Promise<Prepared>): Promise<Prepared> {
  try {
    return await what();
  } catch (e) {
    if (message(e).includes('wrong result') || message(e).includes('leaks tensors')) throw e;
    return { available: false, why: `${peer.name}: ${message(e)}` };
  }
}

async function selfCheck(): Promise<void> {
  const median = (xs: number[]) => [...xs].sort((p, q) => p - q)[xs.length >> 1]!;
  const time = async (run: Runner) => {
    const ts: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      await run();
      ts.push(performance.now() - t0);
    }
    return median(ts);
  };
  const mm = matmulData(512);
  const mlp = mlpData();
  const cnn = cnnData();
  for (const name of PEER_NAMES) {
    const l = await loadPeer(name);
    if (!l.available) {
      console.log(`${name}: not available: ${l.why}`);
      continue;
    }
    const p = l.peer;
    console.log(`${name} (${p.version}, ${p.threads} thread(s)): ${p.config}`);
    const cases: [string, () => Promise<Prepared>][] = [
      ['matmul 512', () => p.matmul(mm.a, mm.b, 512)],
      ['MLP', () => p.mlp(mlp.weights, mlp.x)],
      ['CNN', () => p.cnn(cnn.weights, cnn.x)],
    ];
    const folded = p.cnnFoldedBn?.bind(p);
    if (folded) cases.push(['CNN, folded BN', () => folded(cnn.weights, cnn.x)]);
    for (const [label, prep] of cases) {
      const c = await prepareCase(p, prep);
      console.log(c.available ? `  ${label}: correct, ${(await time(c.run)).toFixed(2)} ms` : `  ${label}: not available: ${c.why}`);
    }
    await p.dispose();
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await selfCheck();
