/**
 * Plain-JS reference implementations (float64 accumulation) of the bench cases, and the check every
 * contender's output must pass before the bench reports a number for it.
 */
import type { CnnWeights, MlpWeights } from './shapes.mjs';
import { CNN, MLP } from './shapes.mjs';

/** C = A·B for row-major n×n operands (i-k-j order, float64 row accumulator). */
export function matmulRef(a: Float32Array, b: Float32Array, n: number): Float32Array {
  const c = new Float32Array(n * n);
  const row = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    row.fill(0);
    for (let k = 0; k < n; k++) {
      const aik = a[i * n + k]!;
      const bk = k * n;
      for (let j = 0; j < n; j++) row[j]! += aik * b[bk + j]!;
    }
    c.set(row, i * n);
  }
  return c;
}

/** y = x·Wᵀ + b with W in PyTorch's [out, in] layout; `relu` clamps at 0 afterwards. */
function linearRef(
  x: Float32Array,
  rows: number,
  inF: number,
  outF: number,
  w: Float32Array,
  b: Float32Array,
  relu: boolean,
): Float32Array {
  const y = new Float32Array(rows * outF);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outF; o++) {
      let s = b[o]!;
      const xo = r * inF;
      const wo = o * inF;
      for (let i = 0; i < inF; i++) s += x[xo + i]! * w[wo + i]!;
      y[r * outF + o] = relu && s < 0 ? 0 : s;
    }
  }
  return y;
}

export function mlpRef(w: MlpWeights, x: Float32Array): Float32Array {
  let h = x;
  w.layers.forEach((l, i) => {
    h = linearRef(h, MLP.batch, l.inFeatures, l.outFeatures, l.weight, l.bias, i < w.layers.length - 1);
  });
  return h;
}

export function cnnRef(w: CnnWeights, x: Float32Array): Float32Array {
  const N = CNN.batch;
  const H = CNN.hw;
  const W = CNN.hw;
  let h = x;
  for (const c of w.convs) {
    const Ci = c.inChannels;
    const Co = c.outChannels;
    const out = new Float32Array(N * Co * H * W);
    const acc = new Float64Array(H * W);
    for (let n = 0; n < N; n++) {
      for (let co = 0; co < Co; co++) {
        acc.fill(c.bias[co]!);
        for (let ci = 0; ci < Ci; ci++) {
          const plane = (n * Ci + ci) * H * W;
          for (let ky = 0; ky < 3; ky++) {
            for (let kx = 0; kx < 3; kx++) {
              const wv = c.weight[((co * Ci + ci) * 3 + ky) * 3 + kx]!;
              for (let y = 0; y < H; y++) {
                const iy = y + ky - 1;
                if (iy < 0 || iy >= H) continue;
                for (let xx = 0; xx < W; xx++) {
                  const ix = xx + kx - 1;
                  if (ix < 0 || ix >= W) continue;
                  acc[y * W + xx]! += wv * h[plane + iy * W + ix]!;
                }
              }
            }
          }
        }
        const scale = c.gamma[co]! / Math.sqrt(c.runningVar[co]! + w.eps);
        const o = (n * Co + co) * H * W;
        for (let i = 0; i < H * W; i++) {
          const v = (acc[i]! - c.runningMean[co]!) * scale + c.beta[co]!;
          out[o + i] = v > 0 ? v : 0;
        }
      }
    }
    h = out;
  }
  // MaxPool2d(2) then flatten in NCHW order
  const C = w.convs[w.convs.length - 1]!.outChannels;
  const Hp = H / 2;
  const Wp = W / 2;
  const pooled = new Float32Array(N * C * Hp * Wp);
  for (let n = 0; n < N; n++)
    for (let ch = 0; ch < C; ch++)
      for (let y = 0; y < Hp; y++)
        for (let xx = 0; xx < Wp; xx++) {
          const base = ((n * C + ch) * H + 2 * y) * W + 2 * xx;
          pooled[((n * C + ch) * Hp + y) * Wp + xx] = Math.max(h[base]!, h[base + 1]!, h[base + W]!, h[base + W + 1]!);
        }
  return linearRef(pooled, N, C * Hp * Wp, CNN.classes, w.fcWeight, w.fcBias, false);
}

export const TOLERANCE = 1e-3;

/**
 * Throws unless `got` matches `ref` within max abs error ≤ 1e-3·max(1, |ref|) at every element, so the
 * bench can never report a number for a wrong result. Returns the worst scaled error.
 */
export function checkClose(who: string, got: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (got.length !== ref.length) throw new Error(`${who}: wrong result: ${got.length} values, expected ${ref.length}`);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < ref.length; i++) {
    const e = Math.abs(got[i]! - ref[i]!) / Math.max(1, Math.abs(ref[i]!));
    if (!(e <= worst)) {
      worst = Number.isNaN(e) ? Infinity : e;
      at = i;
    }
  }
  if (worst > TOLERANCE) {
    throw new Error(
      `${who}: wrong result: at flat index ${at} got ${got[at]}, reference ${ref[at]} ` +
        `(error ${worst.toExponential(2)} > ${TOLERANCE}·max(1, |ref|))`,
    );
  }
  return worst;
}

/** Gradients of one training step of the MLP: the loss, and d loss / d (each layer's weight and bias). */
export interface MlpGradients {
  loss: number;
  /** per layer: [out, in] (PyTorch's layout), and [out] */
  weight: Float64Array[];
  bias: Float64Array[];
}

/**
 * One step of the MLP (Linear layers with ReLU between) under mean softmax cross-entropy against integer
 * `labels`, in float64: the loss and every parameter's gradient, so a training step's update can be checked.
 */
export function mlpGradientsRef(w: MlpWeights, x: Float32Array, labels: Int32Array): MlpGradients {
  const B = labels.length;
  const L = w.layers;
  // forward: inputs[i] feeds layer i; pre[i] is layer i's output before its ReLU
  const inputs: Float64Array[] = [Float64Array.from(x)];
  const pre: Float64Array[] = [];
  for (const [i, l] of L.entries()) {
    const h = inputs[i]!;
    const z = new Float64Array(B * l.outFeatures);
    for (let r = 0; r < B; r++)
      for (let o = 0; o < l.outFeatures; o++) {
        let s = l.bias[o]!;
        for (let k = 0; k < l.inFeatures; k++) s += h[r * l.inFeatures + k]! * l.weight[o * l.inFeatures + k]!;
        z[r * l.outFeatures + o] = s;
      }
    pre.push(z);
    if (i < L.length - 1) inputs.push(z.map((v) => (v > 0 ? v : 0)));
  }
  // mean cross-entropy of softmax(logits); its gradient is (softmax − one-hot) / B
  const C = L[L.length - 1]!.outFeatures;
  const logits = pre[pre.length - 1]!;
  let g = new Float64Array(B * C);
  let loss = 0;
  for (let r = 0; r < B; r++) {
    let max = -Infinity;
    for (let c = 0; c < C; c++) max = Math.max(max, logits[r * C + c]!);
    let sum = 0;
    for (let c = 0; c < C; c++) sum += Math.exp(logits[r * C + c]! - max);
    for (let c = 0; c < C; c++) g[r * C + c] = Math.exp(logits[r * C + c]! - max) / sum / B;
    g[r * C + labels[r]!]! -= 1 / B;
    loss -= (logits[r * C + labels[r]!]! - max - Math.log(sum)) / B;
  }
  // backward, last layer first
  const weight: Float64Array[] = [];
  const bias: Float64Array[] = [];
  for (let i = L.length - 1; i >= 0; i--) {
    const l = L[i]!;
    const h = inputs[i]!;
    const dw = new Float64Array(l.outFeatures * l.inFeatures);
    const db = new Float64Array(l.outFeatures);
    for (let r = 0; r < B; r++)
      for (let o = 0; o < l.outFeatures; o++) {
        const go = g[r * l.outFeatures + o]!;
        db[o]! += go;
        for (let k = 0; k < l.inFeatures; k++) dw[o * l.inFeatures + k]! += go * h[r * l.inFeatures + k]!;
      }
    weight[i] = dw;
    bias[i] = db;
    if (i === 0) break;
    const gh = new Float64Array(B * l.inFeatures);
    const below = pre[i - 1]!;
    for (let r = 0; r < B; r++)
      for (let k = 0; k < l.inFeatures; k++) {
        if (!(below[r * l.inFeatures + k]! > 0)) continue; // ReLU'
        let s = 0;
        for (let o = 0; o < l.outFeatures; o++) s += g[r * l.outFeatures + o]! * l.weight[o * l.inFeatures + k]!;
        gh[r * l.inFeatures + k] = s;
      }
    g = gh;
  }
  return { loss, weight, bias };
}

/**
 * `checkClose` on values scaled by the reference's largest magnitude: for gradients, whose entries are far
 * below 1, an absolute 1e-3 would pass almost anything; this bounds the error at 1e-3 of the largest entry.
 */
export function checkCloseScaled(who: string, got: ArrayLike<number>, ref: ArrayLike<number>): number {
  let scale = 0;
  for (let i = 0; i < ref.length; i++) scale = Math.max(scale, Math.abs(ref[i]!));
  if (scale === 0) return checkClose(who, got, ref);
  const div = (v: ArrayLike<number>) => Float64Array.from({ length: v.length }, (_, i) => v[i]! / scale);
  return checkClose(who, div(got), div(ref));
}
