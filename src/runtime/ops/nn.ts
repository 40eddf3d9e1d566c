import { DTypeError, IndexError, ShapeError, ValueError } from '../../errors.js';
import { activeTrace } from '../dispatch.js';
import { defineOp, type GradResult, type Op } from '../op.js';
import { broadcastShapes, fmt, numel, sameShape } from '../shape.js';
import { NUMBER_ARITH } from '../size-arith.js';
import {
  checkBatchNorm as checkBatchNormOf,
  checkDropoutGrad,
  checkDropoutP,
  checkEmbeddingGrad,
  checkEmbeddingWeight,
  checkGradOutputOf,
  checkNllShapes,
  checkReduction as checkReductionOf,
  layerNormDims as layerNormDimsOf,
} from '../shape-rules/nn.js';
import { Tensor } from '../tensor.js';
import { full, onesLike, rand } from './creation.js';
import { matmul } from './linalg.js';
import { scatterAdd } from './reduce.js';
import { indexSelect } from './view.js';
import { optionalTensor } from './lowering-helpers.js';

/**
 * Normalisation, embedding, dropout and loss functions. The user-facing ops are written over PyTorch's
 * native ops (nativeLayerNorm, nativeBatchNorm, nativeDropout, nllLossForward, …), which return what their
 * backward needs as extra outputs and whose gradient rules call named backward ops, so that a backward can
 * be recorded as a graph of op-table calls.
 */

/** The gradients a native backward computes: [input, weight, bias], each only where asked. */
type GradMask = [boolean, boolean, boolean];

function checkMask(op: string, mask: unknown): GradMask {
  if (!Array.isArray(mask) || mask.length !== 3 || !mask.every((m) => typeof m === 'boolean')) {
    throw new ValueError(`${op}: outputMask must be 3 booleans [input, weight, bias], got ${JSON.stringify(mask)}`);
  }
  return mask as GradMask;
}

function checkGradOutput(op: string, g: Tensor, want: readonly number[], what: string): void {
  checkGradOutputOf(NUMBER_ARITH, op, g, want, what);
}

/** Sum over `dims` (all of them an empty list would sum in PyTorch's sum, so an empty list copies). */
function sumOver(t: Tensor, dims: number[]): Tensor {
  return dims.length === 0 ? t.clone() : t.sum(dims);
}

function floats(t: Tensor): Float32Array {
  return t.contiguous().data() as Float32Array;
}

// ---- layer normalisation ----

function layerNormDims(op: string, x: Tensor, normalizedShape: readonly number[] | number, weight: Tensor | null, bias: Tensor | null) {
  return layerNormDimsOf(NUMBER_ARITH, op, x, normalizedShape, weight, bias);
}

export const layerNorm = defineOp<
  (input: Tensor, normalizedShape: readonly number[] | number, weight?: Tensor | null, bias?: Tensor | null, eps?: number) => Tensor
>({
  schema: 'layerNorm(Tensor input, int|int[] normalizedShape, Tensor? weight=null, Tensor? bias=null, Scalar eps=1e-5)',
  composite: true,
  forward(_ctx, x, normalizedShape, weight = null, bias = null, eps = 1e-5) {
    layerNormDims('layerNorm', x, normalizedShape, weight, bias);
    return nativeLayerNorm(x, normalizedShape, weight, bias, eps)[0];
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

/** PyTorch's native_layer_norm: the normalised output, and the mean and 1/std over the normalised dims (kept as size-1 dims). */
export const nativeLayerNorm = defineOp<
  (
    input: Tensor,
    normalizedShape: readonly number[] | number,
    weight: Tensor | null,
    bias: Tensor | null,
    eps: number,
  ) => [Tensor, Tensor, Tensor]
>({
  schema: 'nativeLayerNorm(Tensor input, int|int[] normalizedShape, Tensor? weight, Tensor? bias, Scalar eps)',
  forward(ctx, x, normalizedShape, weight, bias, eps) {
    const { ns, dims } = layerNormDims('nativeLayerNorm', x, normalizedShape, weight, bias);
    const mu = x.mean(dims, true);
    const centered = x.sub(mu);
    const std = centered.mul(centered).mean(dims, true).add(eps).sqrt();
    let y = centered.div(std);
    if (weight) y = y.mul(weight);
    if (bias) y = y.add(bias);
    const rstd = Tensor.fromData(
      Float32Array.from(std.data(), (v) => 1 / v),
      std.shape,
      'float32',
    );
    Object.assign(ctx, { ns, mask: [x.requiresGrad, weight?.requiresGrad ?? false, bias?.requiresGrad ?? false] });
    ctx.x = ctx.save(x);
    ctx.mean = ctx.save(mu);
    ctx.rstd = ctx.save(rstd);
    ctx.weight = weight && ctx.save(weight);
    ctx.bias = bias && ctx.save(bias);
    return [y, mu, rstd];
  },
  backward(ctx, g) {
    const [gi, gw, gb] = nativeLayerNormBackward(
      g,
      ctx.x as Tensor,
      ctx.ns as number[],
      ctx.mean as Tensor,
      ctx.rstd as Tensor,
      ctx.weight as Tensor | null,
      ctx.bias as Tensor | null,
      ctx.mask as GradMask,
    );
    return [gi, null, gw, gb]; // normalizedShape takes no gradient
  },
  lower: { eager: 'nativeLayerNorm: three outputs; layerNorm lowers to a kernel' },
});

/** PyTorch's native_layer_norm_backward: [gradInput, gradWeight, gradBias] where `outputMask` asks. */
export const nativeLayerNormBackward = defineOp<
  (
    gradOutput: Tensor,
    input: Tensor,
    normalizedShape: readonly number[] | number,
    mean: Tensor,
    rstd: Tensor,
    weight: Tensor | null,
    bias: Tensor | null,
    outputMask: readonly boolean[],
  ) => [Tensor | null, Tensor | null, Tensor | null]
>({
  schema:
    'nativeLayerNormBackward(Tensor gradOutput, Tensor input, int|int[] normalizedShape, Tensor mean, Tensor rstd, Tensor? weight, Tensor? bias, any outputMask)',
  forward(_ctx, g, x, normalizedShape, mean, rstd, weight, bias, outputMask) {
    const op = 'nativeLayerNormBackward';
    const mask = checkMask(op, outputMask);
    const { dims, leadDims } = layerNormDims(op, x, normalizedShape, weight, bias);
    checkGradOutput(op, g, x.shape, `input ${fmt(x.shape)}`);
    const statShape = x.shape.map((s, i) => (dims.includes(i) ? 1 : s));
    for (const [name, s] of [
      ['mean', mean],
      ['rstd', rstd],
    ] as const) {
      if (!sameShape(s.shape, statShape)) throw new ShapeError(`${op}: ${name} must have shape ${fmt(statShape)}, got ${fmt(s.shape)}`);
    }
    const xhat = x.sub(mean).mul(rstd);
    let gi: Tensor | null = null;
    if (mask[0]) {
      const gx = weight ? g.mul(weight) : g;
      gi = gx
        .sub(gx.mean(dims, true))
        .sub(xhat.mul(gx.mul(xhat).mean(dims, true)))
        .mul(rstd);
    }
    const gw = mask[1] && weight ? sumOver(g.mul(xhat), leadDims) : null;
    const gb = mask[2] && bias ? sumOver(g, leadDims) : null;
    return [gi, gw, gb];
  },
  lower: { eager: 'nativeLayerNormBackward: no layer-norm backward kernel yet' },
});

// ---- batch normalisation ----

function checkBatchNorm(op: string, x: Tensor, params: readonly (readonly [string, Tensor | null])[]): number {
  return checkBatchNormOf(NUMBER_ARITH, op, x, params);
}

/** The dims batch norm reduces over ([N, C, d1, …] → all but C) and the shape [1, C, 1, …] its statistics broadcast as. */
export function channelDims(x: Tensor): { dims: number[]; bshape: number[] } {
  return {
    dims: [0, ...Array.from({ length: x.ndim - 2 }, (_, i) => i + 2)],
    bshape: x.shape.map((s, i) => (i === 1 ? s : 1)),
  };
}

/** Batch statistics over all dims but the channel dim, kept [1, C, 1, …]: the mean and the biased variance. */
export function batchStatistics(x: Tensor): [mean: Tensor, variance: Tensor] {
  const { dims } = channelDims(x);
  const mu = x.mean(dims, true);
  const centered = x.sub(mu);
  return [mu, centered.mul(centered).mean(dims, true)];
}

/** `(x - mean) / sqrt(variance + eps) · weight + bias` per channel, and the std it divided by. */
export function normalizeChannels(
  x: Tensor,
  mean: Tensor,
  variance: Tensor,
  eps: number,
  weight: Tensor | null,
  bias: Tensor | null,
): [y: Tensor, std: Tensor] {
  const { bshape } = channelDims(x);
  const std = variance.add(eps).sqrt();
  let y = x.sub(mean).div(std);
  if (weight) y = y.mul(weight.reshape(bshape));
  if (bias) y = y.add(bias.reshape(bshape));
  return [y, std];
}

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
    const C = checkBatchNorm('batchNorm', x, [
      ['runningMean', runningMean],
      ['runningVar', runningVar],
      ['weight', weight],
      ['bias', bias],
    ]);
    if (training && x.numel() / C <= 1) {
      throw new ValueError(`batchNorm: expected more than 1 value per channel when training, got input ${fmt(x.shape)}`);
    }
    // Without running statistics, evaluation mode normalises with the batch's (and has nothing to update).
    const batchStats = training || !runningMean || !runningVar;
    const rm = training ? runningMean : batchStats ? null : runningMean;
    const rv = training ? runningVar : batchStats ? null : runningVar;
    return nativeBatchNorm(x, weight, bias, rm, rv, batchStats, momentum, eps)[0];
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

/**
 * PyTorch's native_batch_norm: the normalised output, and in training mode the batch mean and 1/std per
 * channel (empty in evaluation mode, where the backward reads the running statistics). Training mode also
 * updates the running statistics in place (running_var with the unbiased variance), as PyTorch does.
 */
export const nativeBatchNorm = defineOp<
  (
    input: Tensor,
    weight: Tensor | null,
    bias: Tensor | null,
    runningMean: Tensor | null,
    runningVar: Tensor | null,
    training: boolean,
    momentum: number,
    eps: number,
  ) => [Tensor, Tensor, Tensor]
>({
  schema:
    'nativeBatchNorm(Tensor input, Tensor? weight, Tensor? bias, Tensor? runningMean, Tensor? runningVar, bool training, Scalar momentum, Scalar eps)',
  forward(ctx, x, weight, bias, runningMean, runningVar, training, momentum, eps) {
    const op = 'nativeBatchNorm';
    const C = checkBatchNorm(op, x, [
      ['weight', weight],
      ['bias', bias],
      ['runningMean', runningMean],
      ['runningVar', runningVar],
    ]);
    const { bshape } = channelDims(x);
    let mu: Tensor;
    let variance: Tensor;
    if (training) {
      const count = x.numel() / C;
      [mu, variance] = batchStatistics(x);
      if (runningMean && runningVar) {
        runningMean.mul_(1 - momentum).add_(mu.reshape([C]), momentum);
        runningVar.mul_(1 - momentum).add_(variance.reshape([C]).mul(count / (count - 1)), momentum);
      }
    } else {
      if (!runningMean || !runningVar) throw new ValueError(`${op}: runningMean and runningVar must be defined in evaluation mode`);
      mu = runningMean.reshape(bshape);
      variance = runningVar.reshape(bshape);
    }
    const [y, std] = normalizeChannels(x, mu, variance, eps, weight, bias);
    const empty = () => Tensor.fromData(new Float32Array(0), [0], 'float32');
    const saveMean = training ? mu.reshape([C]) : empty();
    const saveInvstd = training
      ? Tensor.fromData(
          Float32Array.from(std.data(), (v) => 1 / v),
          [C],
          'float32',
        )
      : empty();
    Object.assign(ctx, { training, eps, mask: [x.requiresGrad, weight?.requiresGrad ?? false, bias?.requiresGrad ?? false] });
    ctx.x = ctx.save(x);
    ctx.weight = weight && ctx.save(weight);
    ctx.runningMean = training ? null : ctx.save(runningMean!);
    ctx.runningVar = training ? null : ctx.save(runningVar!);
    ctx.saveMean = ctx.save(saveMean);
    ctx.saveInvstd = ctx.save(saveInvstd);
    return [y, saveMean, saveInvstd];
  },
  backward: (ctx, g): readonly GradResult[] => [
    ...nativeBatchNormBackward(
      g,
      ctx.x as Tensor,
      ctx.weight as Tensor | null,
      ctx.runningMean as Tensor | null,
      ctx.runningVar as Tensor | null,
      ctx.saveMean as Tensor,
      ctx.saveInvstd as Tensor,
      ctx.training as boolean,
      ctx.eps as number,
      ctx.mask as GradMask,
    ),
    null,
    null,
  ],
  lower: { eager: 'nativeBatchNorm: three outputs and running-statistics updates; batchNorm lowers to a kernel' },
});

/** PyTorch's native_batch_norm_backward: [gradInput, gradWeight, gradBias] where `outputMask` asks. */
export const nativeBatchNormBackward = defineOp<
  (
    gradOutput: Tensor,
    input: Tensor,
    weight: Tensor | null,
    runningMean: Tensor | null,
    runningVar: Tensor | null,
    saveMean: Tensor | null,
    saveInvstd: Tensor | null,
    training: boolean,
    eps: number,
    outputMask: readonly boolean[],
  ) => [Tensor | null, Tensor | null, Tensor | null]
>({
  schema:
    'nativeBatchNormBackward(Tensor gradOutput, Tensor input, Tensor? weight, Tensor? runningMean, Tensor? runningVar, Tensor? saveMean, Tensor? saveInvstd, bool training, Scalar eps, any outputMask)',
  forward(_ctx, g, x, weight, runningMean, runningVar, saveMean, saveInvstd, training, eps, outputMask) {
    const op = 'nativeBatchNormBackward';
    const mask = checkMask(op, outputMask);
    const stats = training ? ([saveMean, saveInvstd] as const) : ([runningMean, runningVar] as const);
    const names = training ? ['saveMean', 'saveInvstd'] : ['runningMean', 'runningVar'];
    checkBatchNorm(op, x, [
      ['weight', weight],
      [names[0]!, stats[0]],
      [names[1]!, stats[1]],
    ]);
    if (!stats[0] || !stats[1]) throw new ValueError(`${op}: ${names.join(' and ')} must be given when training=${training}`);
    checkGradOutput(op, g, x.shape, `input ${fmt(x.shape)}`);
    const { dims, bshape } = channelDims(x);
    const mean = stats[0].reshape(bshape);
    const invstd = training
      ? saveInvstd!.reshape(bshape)
      : Tensor.fromData(
          Float32Array.from(runningVar!.contiguous().data(), (v) => 1 / Math.sqrt(v + eps)),
          bshape,
          'float32',
        );
    const xhat = x.sub(mean).mul(invstd);
    let gi: Tensor | null = null;
    if (mask[0]) {
      // Training: the batch statistics depend on the input too (the two mean terms).
      const gx = training ? g.sub(g.mean(dims, true)).sub(xhat.mul(g.mul(xhat).mean(dims, true))) : g;
      gi = gx.mul(invstd);
      if (weight) gi = gi.mul(weight.reshape(bshape));
    }
    const gw = mask[1] ? g.mul(xhat).sum(dims) : null;
    const gb = mask[2] ? g.sum(dims) : null;
    return [gi, gw, gb];
  },
  lower: { eager: 'nativeBatchNormBackward: no batch-norm backward kernel yet' },
});

// ---- embeddings ----

function checkIndices(op: string, idx: Tensor, rows: number): void {
  if (idx.dtype !== 'int32') throw new DTypeError(`${op}: indices must be an int32 tensor, got ${idx.dtype}`);
  for (const v of idx.data()) {
    if (v < 0 || v >= rows) throw new IndexError(`${op}: index ${v} is out of range for an embedding table of ${rows} rows`);
  }
}

export const embedding: Op<(input: Tensor, weight: Tensor, paddingIdx?: number | null) => Tensor> = defineOp<
  (input: Tensor, weight: Tensor, paddingIdx?: number | null) => Tensor
>({
  schema: 'embedding(Tensor input, Tensor weight, int? paddingIdx=null)',
  forward(ctx, input, weight, paddingIdx = null) {
    checkEmbeddingWeight('embedding', weight.shape);
    checkIndices('embedding', input, weight.shape[0]!);
    Object.assign(ctx, { numWeights: weight.shape[0]!, paddingIdx });
    ctx.input = ctx.save(input);
    return indexSelect(weight, 0, input.reshape([-1])).reshape([...input.shape, weight.shape[1]!]);
  },
  backward: (ctx, g) => [null, embeddingDenseBackward(g, ctx.input as Tensor, ctx.numWeights as number, ctx.paddingIdx as number | null)],
  lower(k, a, out) {
    const index = k.tensor(a.input);
    const table = k.tensor(a.weight);
    if (index === null || table === null) return null;
    if (k.dtype(index) !== 'int32' || k.dtype(table) !== 'float32')
      return { eager: 'embedding: indices other than int32 or a table other than float32' };
    return k.gather(table, index, out.shape);
  },
});

/**
 * PyTorch's embedding_dense_backward: the table's gradient, each index's output gradient added to its row
 * (none to the padding row; divided by how often the index occurs with scaleGradByFreq).
 */
export const embeddingDenseBackward = defineOp<
  (gradOutput: Tensor, indices: Tensor, numWeights: number, paddingIdx?: number | null, scaleGradByFreq?: boolean) => Tensor
>({
  schema: 'embeddingDenseBackward(Tensor gradOutput, Tensor indices, int numWeights, int? paddingIdx=null, bool scaleGradByFreq=false)',
  forward(ctx, g, indices, numWeights, paddingIdx = null, scaleGradByFreq = false) {
    const op = 'embeddingDenseBackward';
    checkIndices(op, indices, numWeights);
    checkEmbeddingGrad(NUMBER_ARITH, g, indices);
    const D = g.shape[g.ndim - 1]!;
    const idx = indices.contiguous().data();
    const gs = floats(g);
    const counts = new Int32Array(numWeights);
    if (scaleGradByFreq) for (const v of idx) counts[v]!++;
    const gw = new Float32Array(numWeights * D);
    idx.forEach((row, t) => {
      if (row === paddingIdx) return;
      const scale = scaleGradByFreq ? 1 / counts[row]! : 1;
      for (let d = 0; d < D; d++) gw[row * D + d] += scaleGradByFreq ? gs[t * D + d]! * scale : gs[t * D + d]!;
    });
    Object.assign(ctx, { paddingIdx, scaleGradByFreq, numWeights });
    ctx.indices = ctx.save(indices);
    return Tensor.fromData(gw, [numWeights, D], 'float32');
  },
  backward(ctx, gg): readonly GradResult[] {
    // A scatter-add's gradient is the lookup of the same rows (PyTorch's embedding_dense_double_backward),
    // divided, with scaleGradByFreq, by how often each token's index occurs, as the forward divided it.
    const indices = ctx.indices as Tensor;
    let rows = embedding(indices, gg);
    if (ctx.scaleGradByFreq) {
      const flat = indices.reshape([-1]);
      const counts = scatterAdd(full([ctx.numWeights as number], 0), 0, flat, full([flat.shape[0]!], 1));
      rows = rows.div(indexSelect(counts, 0, flat).reshape([...indices.shape, 1]));
    }
    const pad = ctx.paddingIdx as number | null;
    return [pad === null ? rows : rows.mul(indices.ne(pad).unsqueeze(-1)), null];
  },
  lower: { eager: 'embeddingDenseBackward: no scatter-add kernel yet' },
});

/** Where each bag starts in the flattened input, checked; a 2-D input is bags of equal length. */
function bagStarts(op: string, input: Tensor, offsets: Tensor | null): number[] {
  const T = input.numel();
  if (input.ndim === 2) {
    if (offsets) throw new ValueError(`${op}: offsets must be null when the input is 2-D [bags, length]`);
    const [B, len] = input.shape as [number, number];
    return Array.from({ length: B }, (_, b) => b * len);
  }
  if (input.ndim === 1) {
    if (!offsets) throw new ValueError(`${op}: a 1-D input needs offsets giving where each bag starts`);
    const starts = Array.from(offsets.data());
    if (starts[0] !== 0 || starts.some((s, i) => s > T || (i > 0 && s < starts[i - 1]!))) {
      throw new ValueError(`${op}: offsets must start at 0 and increase within the input length ${T}, got ${fmt(starts)}`);
    }
    return starts;
  }
  throw new ShapeError(`${op}: expected a 1-D or 2-D input, got ${fmt(input.shape)}`);
}

type BagMode = 'sum' | 'mean';

function checkBag(op: string, input: Tensor, weight: Tensor, offsets: Tensor | null, mode: string, psw: Tensor | null): number[] {
  if (mode !== 'sum' && mode !== 'mean') throw new ValueError(`${op}: mode must be 'sum' or 'mean', got '${mode}'`);
  checkEmbeddingWeight(op, weight.shape);
  checkIndices(op, input, weight.shape[0]!);
  const starts = bagStarts(op, input, offsets);
  if (psw && mode !== 'sum') throw new ValueError(`${op}: perSampleWeights only works with mode='sum'`);
  if (psw && psw.numel() !== input.numel()) {
    throw new ShapeError(`${op}: perSampleWeights must have one weight per index (${input.numel()}), got ${fmt(psw.shape)}`);
  }
  return starts;
}

export const embeddingBag = defineOp<
  (input: Tensor, weight: Tensor, offsets?: Tensor | null, mode?: BagMode, perSampleWeights?: Tensor | null) => Tensor
>({
  schema: 'embeddingBag(Tensor input, Tensor weight, Tensor? offsets=null, str mode="mean", Tensor? perSampleWeights=null)',
  forward(ctx, input, weight, offsets = null, mode = 'mean', perSampleWeights = null) {
    const starts = checkBag('embeddingBag', input, weight, offsets, mode, perSampleWeights);
    const T = input.numel();
    const B = starts.length;
    // A [bags × tokens] matrix that sums (or averages) each bag's rows; empty bags give zeros.
    const pooling = new Float32Array(B * T);
    starts.forEach((s, b) => {
      const e = b + 1 < B ? starts[b + 1]! : T;
      for (let t = s; t < e; t++) pooling[b * T + t] = mode === 'mean' ? 1 / (e - s) : 1;
    });
    let rows = indexSelect(weight, 0, input.reshape([-1]));
    if (perSampleWeights) rows = rows.mul(perSampleWeights.reshape([-1, 1]));
    Object.assign(ctx, { mode, mask: [weight.requiresGrad, perSampleWeights?.requiresGrad ?? false] });
    ctx.input = ctx.save(input);
    ctx.weight = ctx.save(weight);
    ctx.offsets = offsets && ctx.save(offsets);
    ctx.psw = perSampleWeights && ctx.save(perSampleWeights);
    return matmul(Tensor.fromData(pooling, [B, T], 'float32'), rows);
  },
  backward(ctx, g) {
    const [gw, gpsw] = embeddingBagBackward(
      g,
      ctx.input as Tensor,
      ctx.weight as Tensor,
      ctx.offsets as Tensor | null,
      ctx.mode as BagMode,
      ctx.psw as Tensor | null,
      ctx.mask as boolean[],
    );
    return [null, gw, null, null, gpsw]; // input, weight, offsets, mode, perSampleWeights
  },
  lower: { eager: 'embeddingBag: bags of varying length (offsets) have no kernel yet' },
});

/**
 * embeddingBag's backward: [gradWeight, gradPerSampleWeights] where `outputMask` asks. Each bag's output
 * gradient (÷ the bag's size in 'mean' mode) goes to the rows of its indices (× their per-sample weight),
 * and each per-sample weight's gradient is that gradient · its row.
 */
export const embeddingBagBackward = defineOp<
  (
    gradOutput: Tensor,
    input: Tensor,
    weight: Tensor,
    offsets: Tensor | null,
    mode: BagMode,
    perSampleWeights: Tensor | null,
    outputMask: readonly boolean[],
  ) => [Tensor | null, Tensor | null]
>({
  schema:
    'embeddingBagBackward(Tensor gradOutput, Tensor input, Tensor weight, Tensor? offsets, str mode, Tensor? perSampleWeights, any outputMask)',
  forward(_ctx, g, input, weight, offsets, mode, psw, outputMask) {
    const op = 'embeddingBagBackward';
    if (!Array.isArray(outputMask) || outputMask.length !== 2 || !outputMask.every((m) => typeof m === 'boolean')) {
      throw new ValueError(`${op}: outputMask must be 2 booleans [weight, perSampleWeights], got ${JSON.stringify(outputMask)}`);
    }
    const starts = checkBag(op, input, weight, offsets, mode, psw);
    const [num, D] = weight.shape as [number, number];
    const B = starts.length;
    checkGradOutput(op, g, [B, D], `${B} bags of a ${fmt(weight.shape)} table`);
    if (outputMask[1] && !psw) throw new ValueError(`${op}: outputMask asks for perSampleWeights' gradient but none were given`);
    const idx = input.contiguous().data();
    const gs = floats(g);
    const ws = outputMask[1] ? floats(weight) : null;
    const pw = psw ? floats(psw) : null;
    const T = idx.length;
    const gw = outputMask[0] ? new Float32Array(num * D) : null;
    const gp = outputMask[1] ? new Float32Array(T) : null;
    starts.forEach((s, b) => {
      const e = b + 1 < B ? starts[b + 1]! : T;
      const coef = mode === 'mean' ? 1 / (e - s) : 1;
      for (let t = s; t < e; t++) {
        const row = idx[t]!;
        let dot = 0;
        for (let d = 0; d < D; d++) {
          const gr = Math.fround(gs[b * D + d]! * coef);
          if (gw) gw[row * D + d] += pw ? gr * pw[t]! : gr;
          if (ws) dot += gr * ws[row * D + d]!;
        }
        if (gp) gp[t] = dot;
      }
    });
    return [gw && Tensor.fromData(gw, [num, D], 'float32'), gp && Tensor.fromData(gp, psw!.shape, 'float32')];
  },
  lower: { eager: 'embeddingBagBackward: no scatter-add kernel yet' },
});

// ---- dropout ----

export const dropout = defineOp<(input: Tensor, p?: number, training?: boolean) => Tensor>({
  schema: 'dropout(Tensor input, Scalar p=0.5, bool training=true)',
  composite: true,
  forward(_ctx, x, p = 0.5, training = true) {
    checkDropoutP('dropout', p);
    if (!training || p === 0) return x;
    if (p === 1) return x.mul(0);
    return nativeDropout(x, p, true)[0];
  },
  lower(k, a) {
    if (a.training === true && a.p !== 0) return { eager: 'dropout: training mode draws a random mask' };
    const x = k.operand(a.input);
    return x === null ? null : k.prim('copy', x);
  },
});

/**
 * PyTorch's native_dropout: in training mode the output and the bool mask of kept elements, the mask drawn
 * from kiln's seeded generator (`rand(shape) < 1 - p`, as eager dropout always drew it), kept ones scaled
 * by 1 / (1 - p). Outside training, a copy and an all-true mask.
 */
export const nativeDropout = defineOp<(input: Tensor, p: number, train: boolean) => [Tensor, Tensor]>({
  schema: 'nativeDropout(Tensor input, Scalar p, bool train)',
  forward(ctx, x, p, train) {
    checkDropoutP('nativeDropout', p);
    if (!train) return [x.clone(), onesLike(x, { dtype: 'bool' })];
    const mask = rand(x.shape).lt(1 - p);
    const scale = 1 / (1 - p);
    const out = dropoutKernel(floats(x.float()), mask.contiguous().data(), scale);
    ctx.scale = scale;
    ctx.mask = ctx.save(mask);
    return [Tensor.fromData(out, x.shape, 'float32'), mask];
  },
  backward: (ctx, g) => [nativeDropoutBackward(g, ctx.mask as Tensor, ctx.scale as number)],
  lower: { eager: 'nativeDropout: draws a random mask' },
});

function dropoutKernel(xs: Float32Array, mask: ArrayLike<number>, scale: number): Float32Array {
  const out = new Float32Array(xs.length);
  for (let i = 0; i < xs.length; i++) out[i] = mask[i] ? xs[i]! * scale : 0;
  return out;
}

/** PyTorch's native_dropout_backward: the gradient where the mask kept the element, × scale; 0 elsewhere. */
export const nativeDropoutBackward = defineOp<(gradOutput: Tensor, mask: Tensor, scale: number) => Tensor>({
  schema: 'nativeDropoutBackward(Tensor gradOutput, Tensor mask, Scalar scale)',
  forward(ctx, g, mask, scale) {
    checkDropoutGrad(NUMBER_ARITH, g, mask);
    Object.assign(ctx, { scale });
    ctx.mask = ctx.save(mask);
    return Tensor.fromData(dropoutKernel(floats(g), mask.contiguous().data(), scale), g.shape, 'float32');
  },
  backward: (ctx, gg): readonly GradResult[] => [nativeDropoutBackward(gg, ctx.mask as Tensor, ctx.scale as number), null],
  lower: { eager: 'nativeDropoutBackward: applies the mask of a training-mode dropout, which runs eagerly' },
});

// ---- losses ----

type Reduction = 'mean' | 'sum' | 'none';

function checkReduction(op: string, r: string): Reduction {
  return checkReductionOf(op, r);
}

/** Check the negative log-likelihood's arguments (input [C] or [N, C, d1, …], targets [N, d1, …]); errors name `op`. */
function checkNll(op: string, input: Tensor, target: Tensor, weight: Tensor | null, ignoreIndex: number, reduction: string): void {
  const C = checkNllShapes(NUMBER_ARITH, op, input, target, weight, reduction);
  // A traced target's values are not the graph's business: the recorded nllLossForward checks them at run time.
  if (activeTrace?.isTraced(target)) return;
  for (const v of target.data()) {
    if (v !== ignoreIndex && (v < 0 || v >= C)) throw new IndexError(`${op}: target ${v} is out of bounds for ${C} classes`);
  }
}

/**
 * The loss terms' layout: for input [N, C, d1, …], `C`, the number of positions `S` = d1·…, and for
 * position-major element (n, s) its class-c value at ((n·C + c)·S + s).
 */
function nllLayout(input: Tensor): { N: number; C: number; S: number } {
  if (input.ndim === 1) return { N: 1, C: input.shape[0]!, S: 1 };
  return { N: input.shape[0]!, C: input.shape[1]!, S: numel(input.shape.slice(2)) };
}

/** Per position: the class-weight (0 where ignored) and the flat input offset of its target's value (−1 where ignored). */
function nllTerms(input: Tensor, target: Tensor, weight: Tensor | null, ignoreIndex: number): { w: Float32Array; at: Int32Array } {
  const { N, C, S } = nllLayout(input);
  const t = target.contiguous().data();
  const ws = weight ? floats(weight) : null;
  const w = new Float32Array(N * S);
  const at = new Int32Array(N * S);
  for (let n = 0; n < N; n++) {
    for (let s = 0; s < S; s++) {
      const i = n * S + s;
      const c = t[i]!;
      at[i] = -1;
      if (c === ignoreIndex) continue;
      w[i] = ws ? ws[c]! : 1;
      at[i] = (n * C + c) * S + s;
    }
  }
  return { w, at };
}

/**
 * PyTorch's nll_loss_forward (and nll_loss2d's, for any number of spatial dims): the loss and the total
 * weight of the targets that count (0 for reduction 'none').
 */
export const nllLossForward = defineOp<
  (input: Tensor, target: Tensor, weight: Tensor | null, reduction: Reduction, ignoreIndex: number) => [Tensor, Tensor]
>({
  schema: 'nllLossForward(Tensor input, Tensor target, Tensor? weight, str reduction, int ignoreIndex)',
  forward(ctx, input, target, weight, reduction, ignoreIndex) {
    checkNll('nllLossForward', input, target, weight, ignoreIndex, reduction);
    const [out, totalWeight] = nllValues(input, target, weight, ignoreIndex, reduction);
    Object.assign(ctx, { reduction, ignoreIndex });
    ctx.input = ctx.save(input);
    ctx.target = ctx.save(target);
    ctx.weight = weight && ctx.save(weight);
    ctx.totalWeight = ctx.save(totalWeight);
    ctx.out = weight?.requiresGrad ? ctx.save(out) : null;
    return [out, totalWeight];
  },
  backward(ctx, g) {
    const args = [ctx.input, ctx.target, ctx.weight, ctx.reduction, ctx.ignoreIndex, ctx.totalWeight] as const;
    const [input, target, weight, reduction, ignoreIndex, totalWeight] = args as unknown as [
      Tensor,
      Tensor,
      Tensor | null,
      Reduction,
      number,
      Tensor,
    ];
    const gi = input.requiresGrad ? nllLossBackward(g, input, target, weight, reduction, ignoreIndex, totalWeight) : null;
    const gw = weight?.requiresGrad
      ? nllLossWeightBackward(g, input, target, weight, reduction, ignoreIndex, totalWeight, ctx.out as Tensor)
      : null;
    return [gi, null, gw];
  },
  lower: { eager: 'nllLossForward: a loss (picks by int32 targets); losses run eagerly' },
});

/** The loss in the float32 op order kiln's eager loss has always used, and the total weight. */
function nllValues(input: Tensor, target: Tensor, weight: Tensor | null, ignoreIndex: number, reduction: Reduction): [Tensor, Tensor] {
  const { w, at } = nllTerms(input, target, weight, ignoreIndex);
  const xs = floats(input);
  const picked = Float32Array.from(at, (a) => (a < 0 ? 0 : xs[a]!));
  const losses = Tensor.fromData(picked, [picked.length], 'float32')
    .mul(Tensor.fromData(w, [w.length], 'float32'))
    .neg();
  const wT = Tensor.fromData(w, [w.length], 'float32');
  if (reduction === 'none') {
    const outShape = input.ndim === 1 ? [] : [input.shape[0]!, ...input.shape.slice(2)];
    return [losses.reshape(outShape), Tensor.fromData(new Float32Array(1), [], 'float32')];
  }
  const total = wT.sum();
  return [reduction === 'sum' ? losses.sum() : losses.sum().div(total), total];
}

/** PyTorch's nll_loss_backward: −weight[target]·gradOutput at each target's class (÷ totalWeight for 'mean'), 0 elsewhere. */
export const nllLossBackward = defineOp<
  (
    gradOutput: Tensor,
    input: Tensor,
    target: Tensor,
    weight: Tensor | null,
    reduction: Reduction,
    ignoreIndex: number,
    totalWeight: Tensor,
  ) => Tensor
>({
  schema:
    'nllLossBackward(Tensor gradOutput, Tensor input, Tensor target, Tensor? weight, str reduction, int ignoreIndex, Tensor totalWeight)',
  forward(_ctx, g, input, target, weight, reduction, ignoreIndex, totalWeight) {
    const op = 'nllLossBackward';
    checkNll(op, input, target, weight, ignoreIndex, reduction);
    const gs = checkLossGrad(op, g, input, reduction);
    const { w, at } = nllTerms(input, target, weight, ignoreIndex);
    const tw = totalWeight.item();
    const gi = new Float32Array(input.numel());
    for (let i = 0; i < w.length; i++) {
      if (at[i]! < 0) continue;
      const gv = reduction === 'none' ? gs[i]! : reduction === 'sum' ? gs[0]! : gs[0]! / tw;
      gi[at[i]!] = -w[i]! * gv;
    }
    return Tensor.fromData(gi, input.shape, 'float32');
  },
  lower: { eager: 'nllLossBackward: a loss gradient (scatters by int32 targets); runs eagerly' },
});

function checkLossGrad(op: string, g: Tensor, input: Tensor, reduction: Reduction): Float32Array {
  const want = reduction !== 'none' || input.ndim === 1 ? [] : [input.shape[0]!, ...input.shape.slice(2)];
  checkGradOutput(op, g, want, `input ${fmt(input.shape)} with reduction '${reduction}'`);
  return floats(g);
}

/**
 * The class weights' gradient of the negative log-likelihood (PyTorch leaves it unimplemented; kiln's
 * loss has always had it): −input at each target, and for 'mean' (−input − loss) ÷ totalWeight, summed per class.
 */
export const nllLossWeightBackward = defineOp<
  (
    gradOutput: Tensor,
    input: Tensor,
    target: Tensor,
    weight: Tensor,
    reduction: Reduction,
    ignoreIndex: number,
    totalWeight: Tensor,
    output: Tensor,
  ) => Tensor
>({
  schema:
    'nllLossWeightBackward(Tensor gradOutput, Tensor input, Tensor target, Tensor weight, str reduction, int ignoreIndex, Tensor totalWeight, Tensor output)',
  forward(_ctx, g, input, target, weight, reduction, ignoreIndex, totalWeight, output) {
    const op = 'nllLossWeightBackward';
    checkNll(op, input, target, weight, ignoreIndex, reduction);
    const gs = checkLossGrad(op, g, input, reduction);
    const t = target.contiguous().data();
    const xs = floats(input);
    const { at } = nllTerms(input, target, null, ignoreIndex);
    const tw = totalWeight.item();
    const loss = reduction === 'mean' ? output.item() : 0;
    const gw = new Float32Array(weight.numel());
    for (let i = 0; i < t.length; i++) {
      if (t[i] === ignoreIndex) continue;
      const x = xs[at[i]!]!;
      const v = reduction === 'none' ? -x * gs[i]! : reduction === 'sum' ? -x * gs[0]! : ((-x - loss) * gs[0]!) / tw;
      gw[t[i]!] += v;
    }
    return Tensor.fromData(gw, weight.shape, 'float32');
  },
  lower: { eager: 'nllLossWeightBackward: a loss gradient (scatters by int32 targets); runs eagerly' },
});

export const nllLoss = defineOp<
  (input: Tensor, target: Tensor, weight?: Tensor | null, ignoreIndex?: number, reduction?: Reduction) => Tensor
>({
  schema: 'nllLoss(Tensor input, Tensor target, Tensor? weight=null, int ignoreIndex=-100, str reduction="mean")',
  composite: true,
  forward(_ctx, input, target, weight = null, ignoreIndex = -100, reduction = 'mean') {
    checkNll('nllLoss', input, target, weight, ignoreIndex, reduction);
    return nllLossForward(input, target, weight, reduction, ignoreIndex)[0];
  },
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
    checkNll('crossEntropy', logp, target, weight, ignoreIndex, reduction);
    const nllOut = nllLossForward(logp, target, weight, reduction, ignoreIndex)[0];
    if (labelSmoothing === 0) return nllOut;
    if (weight) throw new ValueError('crossEntropy: labelSmoothing with class weights is not supported');
    const C = input.shape[classDim]!;
    // −Σ_c logp over the classes at each position that counts. The constants are float32 scalars made by
    // `full` (what a number operand becomes), so a tracer knows them.
    const k = (v: number) => full([], v);
    const valid = target.ne(ignoreIndex).float();
    const smooth = logp.sum(classDim).mul(k(-1)).mul(valid);
    const smoothR = reduction === 'none' ? smooth : reduction === 'sum' ? smooth.sum() : smooth.sum().div(valid.sum());
    return nllOut.mul(k(1 - labelSmoothing)).add(smoothR.mul(k(labelSmoothing / C)));
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
