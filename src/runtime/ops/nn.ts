import { DTypeError, IndexError, ShapeError, ValueError } from '../../errors.js';
import { noGrad } from '../autograd.js';
import { defineOp } from '../op.js';
import { broadcastShapes, fmt, numel, sameShape } from '../shape.js';
import { Tensor } from '../tensor.js';
import { rand } from './creation.js';
import { dropoutMask, where } from './elementwise.js';
import { matmul } from './linalg.js';
import { indexSelect } from './view.js';
import { optionalTensor } from './lowering-helpers.js';

/** Normalisation, embedding, dropout and loss functions, written with the primitive ops. */

export const layerNorm = defineOp<
  (input: Tensor, normalizedShape: readonly number[] | number, weight?: Tensor | null, bias?: Tensor | null, eps?: number) => Tensor
>({
  schema: 'layerNorm(Tensor input, int|int[] normalizedShape, Tensor? weight=null, Tensor? bias=null, Scalar eps=1e-5)',
  composite: true,
  forward(_ctx, x, normalizedShape, weight = null, bias = null, eps = 1e-5) {
    const ns = typeof normalizedShape === 'number' ? [normalizedShape] : [...normalizedShape];
    const tail = x.shape.slice(x.ndim - ns.length);
    if (ns.length > x.ndim || tail.join() !== ns.join()) {
      throw new ShapeError(`layerNorm: expected input with shape [*, ${ns.join(', ')}], got ${fmt(x.shape)}`);
    }
    for (const [name, p] of [
      ['weight', weight],
      ['bias', bias],
    ] as const) {
      if (p && p.shape.join() !== ns.join()) throw new ShapeError(`layerNorm: ${name} must have shape ${fmt(ns)}, got ${fmt(p.shape)}`);
    }
    const dims = ns.map((_, i) => x.ndim - ns.length + i);
    const mu = x.mean(dims, true);
    const centered = x.sub(mu);
    const variance = centered.mul(centered).mean(dims, true);
    let y = centered.div(variance.add(eps).sqrt());
    if (weight) y = y.mul(weight);
    if (bias) y = y.add(bias);
    return y;
  },
  lower(k, a) {
    const x = k.tensor(a.input);
    if (x === null) return null;
    const shape = k.shape(x);
    const ns = typeof a.normalizedShape === 'number' ? [a.normalizedShape] : (a.normalizedShape as number[]);
    const dims = ns.map((_, i) => shape.length - ns.length + i);
    const count = numel(ns);
    const mean = k.reduce('sum', x, dims, true, count);
    const c = k.prim('sub', x, mean);
    const variance = k.reduce('sum', k.prim('mul', c, c), dims, true, count);
    // (x - mean) / sqrt(var + eps) · w + b, in the order the eager forward computes it
    let y = k.prim('div', k.prim('sub', x, mean), k.prim('sqrt', k.prim('add', variance, a.eps as number)));
    const w = optionalTensor(k, a.weight);
    const b = optionalTensor(k, a.bias);
    if (w === false || b === false) return null;
    if (w !== null) y = k.prim('mul', y, w);
    if (b !== null) y = k.prim('add', y, b);
    return y;
  },
});

export const batchNorm = defineOp<
  (
    input: Tensor,
    runningMean: Tensor | null,
    runningVar: Tensor | null,
    weight?: Tensor | null,
    bias?: Tensor | null,
    training?: boolean,
    momentum?: number,
    eps?: number,
  ) => Tensor
>({
  schema:
    'batchNorm(Tensor? input, Tensor? runningMean, Tensor? runningVar, Tensor? weight=null, Tensor? bias=null, bool training=false, Scalar momentum=0.1, Scalar eps=1e-5)',
  composite: true,
  forward(_ctx, x, runningMean, runningVar, weight = null, bias = null, training = false, momentum = 0.1, eps = 1e-5) {
    if (x.ndim < 2) throw new ShapeError(`batchNorm: expected an input [N, C, ...] with at least 2 dims, got ${fmt(x.shape)}`);
    const C = x.shape[1]!;
    for (const [name, p] of [
      ['runningMean', runningMean],
      ['runningVar', runningVar],
      ['weight', weight],
      ['bias', bias],
    ] as const) {
      if (p && (p.ndim !== 1 || p.shape[0] !== C)) {
        throw new ShapeError(`batchNorm: ${name} must have shape [${C}] for input ${fmt(x.shape)}, got ${fmt(p.shape)}`);
      }
    }
    const dims = [0, ...Array.from({ length: x.ndim - 2 }, (_, i) => i + 2)];
    const bshape = x.shape.map((s, i) => (i === 1 ? s : 1));
    let mu: Tensor;
    let variance: Tensor;
    if (training || !runningMean || !runningVar) {
      const count = x.numel() / C;
      if (training && count <= 1) {
        throw new ValueError(`batchNorm: expected more than 1 value per channel when training, got input ${fmt(x.shape)}`);
      }
      mu = x.mean(dims, true);
      const centered = x.sub(mu);
      variance = centered.mul(centered).mean(dims, true);
      if (training && runningMean && runningVar) {
        noGrad(() => {
          runningMean.mul_(1 - momentum).add_(mu.reshape([C]), momentum);
          runningVar.mul_(1 - momentum).add_(variance.reshape([C]).mul(count / (count - 1)), momentum);
        });
      }
    } else {
      mu = runningMean.reshape(bshape);
      variance = runningVar.reshape(bshape);
    }
    let y = x.sub(mu).div(variance.add(eps).sqrt());
    if (weight) y = y.mul(weight.reshape(bshape));
    if (bias) y = y.add(bias.reshape(bshape));
    return y;
  },
  lower(k, a) {
    if (a.training === true) return { eager: 'batchNorm: training mode normalises with batch statistics and updates the running ones' };
    const x = k.tensor(a.input);
    const mean = k.tensor(a.runningMean);
    const variance = k.tensor(a.runningVar);
    if (x === null || mean === null || variance === null) return null;
    if (k.shape(x).length < 2) return { eager: 'batchNorm: a 1-d input' };
    const weight = optionalTensor(k, a.weight);
    const bias = optionalTensor(k, a.bias);
    if (weight === false || bias === false) return null;
    return k.batchNorm(x, { mean, variance, weight, bias, eps: a.eps as number });
  },
});

function checkIndices(op: string, idx: Tensor, rows: number): void {
  if (idx.dtype !== 'int32') throw new DTypeError(`${op}: indices must be an int32 tensor, got ${idx.dtype}`);
  for (const v of idx.data()) {
    if (v < 0 || v >= rows) throw new IndexError(`${op}: index ${v} is out of range for an embedding table of ${rows} rows`);
  }
}

export const embedding = defineOp<(input: Tensor, weight: Tensor, paddingIdx?: number | null) => Tensor>({
  schema: 'embedding(Tensor input, Tensor weight, int? paddingIdx=null)',
  composite: true,
  forward(_ctx, input, weight, paddingIdx = null) {
    if (weight.ndim !== 2) throw new ShapeError(`embedding: weight must be 2-D [num, dim], got ${fmt(weight.shape)}`);
    checkIndices('embedding', input, weight.shape[0]!);
    const flat = input.reshape([-1]);
    let rows = indexSelect(weight, 0, flat);
    if (paddingIdx !== null) {
      // same values, but the padding row receives no gradient
      const keep = flat.ne(paddingIdx).unsqueeze(1);
      rows = where(keep, rows, rows.detach());
    }
    return rows.reshape([...input.shape, weight.shape[1]!]);
  },
  lower(k, a, out) {
    const index = k.tensor(a.input);
    const table = k.tensor(a.weight);
    if (index === null || table === null) return null;
    if (k.dtype(index) !== 'int32' || k.dtype(table) !== 'float32')
      return { eager: 'embedding: indices other than int32 or a table other than float32' };
    return k.gather(table, index, out.shape);
  },
});

export const embeddingBag = defineOp<
  (input: Tensor, weight: Tensor, offsets?: Tensor | null, mode?: 'sum' | 'mean', perSampleWeights?: Tensor | null) => Tensor
>({
  schema: 'embeddingBag(Tensor input, Tensor weight, Tensor? offsets=null, str mode="mean", Tensor? perSampleWeights=null)',
  composite: true,
  forward(_ctx, input, weight, offsets = null, mode = 'mean', perSampleWeights = null) {
    if (mode !== 'sum' && mode !== 'mean') throw new ValueError(`embeddingBag: mode must be 'sum' or 'mean', got '${mode}'`);
    if (weight.ndim !== 2) throw new ShapeError(`embeddingBag: weight must be 2-D [num, dim], got ${fmt(weight.shape)}`);
    checkIndices('embeddingBag', input, weight.shape[0]!);
    let starts: number[];
    const T = input.numel();
    if (input.ndim === 2) {
      if (offsets) throw new ValueError('embeddingBag: offsets must be null when the input is 2-D [bags, length]');
      const [B, len] = input.shape as [number, number];
      starts = Array.from({ length: B }, (_, b) => b * len);
    } else if (input.ndim === 1) {
      if (!offsets) throw new ValueError('embeddingBag: a 1-D input needs offsets giving where each bag starts');
      starts = Array.from(offsets.data());
      if (starts[0] !== 0 || starts.some((s, i) => s > T || (i > 0 && s < starts[i - 1]!))) {
        throw new ValueError(`embeddingBag: offsets must start at 0 and increase within the input length ${T}, got ${fmt(starts)}`);
      }
    } else {
      throw new ShapeError(`embeddingBag: expected a 1-D or 2-D input, got ${fmt(input.shape)}`);
    }
    if (perSampleWeights && mode !== 'sum') throw new ValueError(`embeddingBag: perSampleWeights only works with mode='sum'`);
    const B = starts.length;
    // A [bags × tokens] matrix that sums (or averages) each bag's rows; empty bags give zeros.
    const pooling = new Float32Array(B * T);
    starts.forEach((s, b) => {
      const e = b + 1 < B ? starts[b + 1]! : T;
      for (let t = s; t < e; t++) pooling[b * T + t] = mode === 'mean' ? 1 / (e - s) : 1;
    });
    let rows = indexSelect(weight, 0, input.reshape([-1]));
    if (perSampleWeights) rows = rows.mul(perSampleWeights.reshape([-1, 1]));
    return matmul(Tensor.fromData(pooling, [B, T], 'float32'), rows);
  },
  lower: { eager: 'embeddingBag: bags of varying length (offsets) have no kernel yet' },
});

export const dropout = defineOp<(input: Tensor, p?: number, training?: boolean) => Tensor>({
  schema: 'dropout(Tensor input, Scalar p=0.5, bool training=true)',
  composite: true,
  forward(_ctx, x, p = 0.5, training = true) {
    if (p < 0 || p > 1) throw new ValueError(`dropout: probability has to be between 0 and 1, got ${p}`);
    if (!training || p === 0) return x;
    if (p === 1) return x.mul(0);
    const mask = rand(x.shape).lt(1 - p);
    return dropoutMask(x, mask, 1 / (1 - p));
  },
  lower(k, a) {
    if (a.training === true && a.p !== 0) return { eager: 'dropout: training mode draws a random mask' };
    const x = k.operand(a.input);
    return x === null ? null : k.prim('copy', x);
  },
});

type Reduction = 'mean' | 'sum' | 'none';

function checkReduction(op: string, r: string): Reduction {
  if (r !== 'mean' && r !== 'sum' && r !== 'none') throw new ValueError(`${op}: reduction must be 'mean', 'sum' or 'none', got '${r}'`);
  return r;
}

/** Move the class dim (1) of [N, C, d1, …] last and flatten to [N·d1·…, C]; targets alike. */
function classesLast(input: Tensor, target: Tensor | null): [Tensor, Tensor | null, number[]] {
  if (input.ndim === 1) return [input.unsqueeze(0), target?.reshape([1]) ?? null, []];
  if (input.ndim === 2) return [input, target, [input.shape[0]!]];
  const C = input.shape[1]!;
  const perm = [0, ...Array.from({ length: input.ndim - 2 }, (_, i) => i + 2), 1];
  const outShape = [input.shape[0]!, ...input.shape.slice(2)];
  return [input.permute(perm).reshape([-1, C]), target?.reshape([-1]) ?? null, outShape];
}

/** The negative log-likelihood of log-probabilities `input`; errors are named after `op` (nllLoss or crossEntropy). */
function nll(op: string, input: Tensor, target: Tensor, weight: Tensor | null, ignoreIndex: number, reduction: Reduction): Tensor {
  checkReduction(op, reduction);
  if (target.dtype !== 'int32') {
    throw new DTypeError(`${op}: target must be an int32 tensor of class indices, got ${target.dtype}`);
  }
  const expected = input.ndim === 1 ? [] : [input.shape[0]!, ...input.shape.slice(2)];
  if (target.shape.join() !== expected.join()) {
    throw new ShapeError(`${op}: expected target of shape ${fmt(expected)} for input ${fmt(input.shape)}, got ${fmt(target.shape)}`);
  }
  const [logp, tgt, outShape] = classesLast(input, target);
  const C = logp.shape[1]!;
  if (weight && (weight.ndim !== 1 || weight.shape[0] !== C)) {
    throw new ShapeError(`${op}: weight must have shape [${C}], got ${fmt(weight.shape)}`);
  }
  const t = tgt!.data();
  for (const v of t) {
    if (v !== ignoreIndex && (v < 0 || v >= C)) throw new IndexError(`${op}: target ${v} is out of bounds for ${C} classes`);
  }
  const valid = Float32Array.from(t, (v) => (v === ignoreIndex ? 0 : 1));
  const safe = Int32Array.from(t, (v) => (v === ignoreIndex ? 0 : v));
  const safeT = Tensor.fromData(safe, [safe.length, 1], 'int32');
  let w = Tensor.fromData(valid, [valid.length], 'float32');
  if (weight) w = w.mul(indexSelect(weight, 0, safeT.reshape([-1])));
  const picked = logp.gather(1, safeT).reshape([-1]);
  const losses = picked.mul(w).neg();
  if (reduction === 'none') return losses.reshape(outShape);
  if (reduction === 'sum') return losses.sum();
  return losses.sum().div(w.sum());
}

export const nllLoss = defineOp<
  (input: Tensor, target: Tensor, weight?: Tensor | null, ignoreIndex?: number, reduction?: Reduction) => Tensor
>({
  schema: 'nllLoss(Tensor input, Tensor target, Tensor? weight=null, int ignoreIndex=-100, str reduction="mean")',
  composite: true,
  forward: (_ctx, input, target, weight = null, ignoreIndex = -100, reduction = 'mean') =>
    nll('nllLoss', input, target, weight, ignoreIndex, reduction),
  lower: { eager: 'nllLoss: a loss (picks by int32 targets); losses run eagerly' },
});

export const crossEntropy = defineOp<
  (input: Tensor, target: Tensor, weight?: Tensor | null, ignoreIndex?: number, reduction?: Reduction, labelSmoothing?: number) => Tensor
>({
  schema:
    'crossEntropy(Tensor input, Tensor target, Tensor? weight=null, int ignoreIndex=-100, str reduction="mean", Scalar labelSmoothing=0)',
  composite: true,
  forward(_ctx, input, target, weight = null, ignoreIndex = -100, reduction = 'mean', labelSmoothing = 0) {
    checkReduction('crossEntropy', reduction);
    if (input.dtype !== 'float32') throw new DTypeError(`crossEntropy: input must be float32 logits, got ${input.dtype}`);
    if (labelSmoothing < 0 || labelSmoothing > 1)
      throw new ValueError(`crossEntropy: labelSmoothing must be in [0, 1], got ${labelSmoothing}`);
    const classDim = input.ndim === 1 ? 0 : 1;
    const logp = input.logSoftmax(classDim);
    if (target.dtype === 'float32') {
      // class probabilities as targets
      if (target.shape.join() !== input.shape.join()) {
        throw new ShapeError(`crossEntropy: probability targets must have the input's shape ${fmt(input.shape)}, got ${fmt(target.shape)}`);
      }
      const C = input.shape[classDim]!;
      let probs = labelSmoothing > 0 ? target.mul(1 - labelSmoothing).add(labelSmoothing / C) : target;
      if (weight) probs = probs.mul(weight.reshape(input.shape.map((s, i) => (i === classDim ? s : 1))));
      const losses = logp.mul(probs).sum(classDim).neg();
      if (reduction === 'none') return losses;
      if (reduction === 'sum') return losses.sum();
      return losses.sum().div(input.ndim === 1 ? 1 : losses.numel());
    }
    const nllOut = nll('crossEntropy', logp, target, weight, ignoreIndex, reduction);
    if (labelSmoothing === 0) return nllOut;
    if (weight) throw new ValueError('crossEntropy: labelSmoothing with class weights is not supported');
    const C = input.shape[classDim]!;
    const [flat, tgt, outShape] = classesLast(logp, target);
    const valid = tgt!.ne(ignoreIndex).float();
    const smooth = flat.sum(1).neg().mul(valid);
    const smoothR = reduction === 'none' ? smooth.reshape(outShape) : reduction === 'sum' ? smooth.sum() : smooth.sum().div(valid.sum());
    return nllOut.mul(1 - labelSmoothing).add(smoothR.mul(labelSmoothing / C));
  },
  lower: { eager: 'crossEntropy: a loss (picks by int32 targets); losses run eagerly' },
});

export const mseLoss = defineOp<(input: Tensor, target: Tensor, reduction?: Reduction) => Tensor>({
  schema: 'mseLoss(Tensor input, Tensor target, str reduction="mean")',
  composite: true,
  forward(_ctx, input, target, reduction = 'mean') {
    checkReduction('mseLoss', reduction);
    if (!sameShape(input.shape, target.shape)) broadcastShapes('mseLoss', input.shape, target.shape);
    const d = input.sub(target);
    const sq = d.mul(d);
    return reduction === 'none' ? sq : reduction === 'sum' ? sq.sum() : sq.mean();
  },
  lower: { eager: 'mseLoss: a loss; losses run eagerly' },
});
