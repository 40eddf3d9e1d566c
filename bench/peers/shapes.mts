/**
 * The bench models' shapes and weights as plain data: kiln loads these arrays into its `nn` modules and
 * every peer gets the very same arrays, so all contenders compute the same function on the same numbers.
 * Layouts are PyTorch's: Linear weight [out, in], Conv2d weight [out, in, kh, kw], activations NCHW.
 */

/** MLP 784-512-512-10 (Linear, ReLU, Linear, ReLU, Linear), inference on a batch of 64. */
export const MLP = { sizes: [784, 512, 512, 10], batch: 64 } as const;

/**
 * Small CNN: 3× (Conv2d 3×3 pad 1 + bias → BatchNorm2d (inference) → ReLU) with channels 3→16→32→32,
 * MaxPool2d(2), flatten in NCHW order (32·16·16 = 8192), Linear(8192, 10); input [16, 3, 32, 32].
 */
export const CNN = { batch: 16, channels: [3, 16, 32, 32], hw: 32, classes: 10, eps: 1e-5, flat: 32 * 16 * 16 } as const;

export interface LinearWeights {
  inFeatures: number;
  outFeatures: number;
  /** [out, in], row-major */
  weight: Float32Array;
  /** [out] */
  bias: Float32Array;
}

export interface MlpWeights {
  layers: LinearWeights[];
}

export interface ConvBnWeights {
  inChannels: number;
  outChannels: number;
  /** [out, in, 3, 3], row-major */
  weight: Float32Array;
  bias: Float32Array;
  /** BatchNorm2d weight (γ), bias (β), running_mean, running_var: each [out] */
  gamma: Float32Array;
  beta: Float32Array;
  runningMean: Float32Array;
  runningVar: Float32Array;
}

export interface CnnWeights {
  convs: ConvBnWeights[];
  eps: number;
  /** [10, 8192]: columns in NCHW flatten order (c, h, w) */
  fcWeight: Float32Array;
  fcBias: Float32Array;
}

/** A deterministic uniform [0, 1) generator (mulberry32), so every run benchmarks the same numbers. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` values uniform in [lo, hi). */
export function uniform(n: number, lo: number, hi: number, next: () => number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * next();
  return out;
}

/** Two n×n operands, uniform in [-1, 1). */
export function matmulData(n: number, seed = 1): { a: Float32Array; b: Float32Array } {
  const next = rng(seed);
  return { a: uniform(n * n, -1, 1, next), b: uniform(n * n, -1, 1, next) };
}

/** PyTorch's default Linear init range (±1/√in), so activations stay O(1) through the layers. */
function linear(inFeatures: number, outFeatures: number, next: () => number): LinearWeights {
  const k = 1 / Math.sqrt(inFeatures);
  return { inFeatures, outFeatures, weight: uniform(outFeatures * inFeatures, -k, k, next), bias: uniform(outFeatures, -k, k, next) };
}

export function mlpData(seed = 2): { weights: MlpWeights; x: Float32Array } {
  const next = rng(seed);
  const s = MLP.sizes;
  const layers = s.slice(1).map((out, i) => linear(s[i]!, out, next));
  return { weights: { layers }, x: uniform(MLP.batch * s[0], 0, 1, next) };
}

export function cnnData(seed = 3): { weights: CnnWeights; x: Float32Array } {
  const next = rng(seed);
  const ch = CNN.channels;
  const convs = ch.slice(1).map((out, i): ConvBnWeights => {
    const inCh = ch[i]!;
    const k = 1 / Math.sqrt(inCh * 9);
    return {
      inChannels: inCh,
      outChannels: out,
      weight: uniform(out * inCh * 9, -k, k, next),
      bias: uniform(out, -k, k, next),
      gamma: uniform(out, 0.5, 1.5, next),
      beta: uniform(out, -0.2, 0.2, next),
      runningMean: uniform(out, -0.1, 0.1, next),
      runningVar: uniform(out, 0.5, 1.5, next),
    };
  });
  const fc = linear(CNN.flat, CNN.classes, next);
  return {
    weights: { convs, eps: CNN.eps, fcWeight: fc.weight, fcBias: fc.bias },
    x: uniform(CNN.batch * ch[0] * CNN.hw * CNN.hw, -1, 1, next),
  };
}
