import { DTypeError, ShapeError, ValueError } from '../../errors.js';
import type { SizeArith } from '../size-arith.js';
import { checkConvMask } from './conv.js';
import { fmtSizes, meta, product, sizeOf, type ShapeRule, type TensorMeta } from './meta.js';
import { broadcastSizes, sameSizes } from './sizes.js';
import { matmulMeta } from './linalg.js';
import { resultDType } from './elementwise.js';
import { checkMeanDType } from './reduce.js';

/** Shape rules of the layers and losses (src/runtime/ops/nn.ts) and the checks the eager ops share with them. */

type M<S> = TensorMeta<S>;
type Reduction = 'mean' | 'sum' | 'none';

export function checkGradOutputOf<S>(A: SizeArith<S>, op: string, g: M<S>, want: readonly S[], what: string): void {
  if (g.dtype !== 'float32') throw new DTypeError(`${op}: expected a float32 gradOutput, got ${g.dtype}`);
  if (!sameSizes(A, g.shape, want))
    throw new ShapeError(`${op}: gradOutput must have shape ${fmtSizes(want)} for ${what}, got ${fmtSizes(g.shape)}`);
}

/** layer norm's normalised shape checked against the input's trailing sizes and the affine parameters. */
export function layerNormDims<S>(
  A: SizeArith<S>,
  op: string,
  x: M<S>,
  normalizedShape: readonly (S | number)[] | number,
  weight: M<S> | null,
  bias: M<S> | null,
) {
  const ns = (typeof normalizedShape === 'number' ? [normalizedShape] : [...normalizedShape]).map((d) => sizeOf(A, d));
  const ndim = x.shape.length;
  if (ns.length > ndim || !sameSizes(A, x.shape.slice(ndim - ns.length), ns)) {
    throw new ShapeError(`${op}: expected input with shape [*, ${ns.join(', ')}], got ${fmtSizes(x.shape)}`);
  }
  for (const [name, p] of [
    ['weight', weight],
    ['bias', bias],
  ] as const) {
    if (p && !sameSizes(A, p.shape, ns)) throw new ShapeError(`${op}: ${name} must have shape ${fmtSizes(ns)}, got ${fmtSizes(p.shape)}`);
  }
  const lead = ndim - ns.length;
  return { ns, dims: ns.map((_, i) => lead + i), leadDims: Array.from({ length: lead }, (_, i) => i) };
}

/** batch norm's input [N, C, ...] and per-channel parameters; returns C. */
export function checkBatchNorm<S>(A: SizeArith<S>, op: string, x: M<S>, params: readonly (readonly [string, M<S> | null])[]): S {
  if (x.shape.length < 2) throw new ShapeError(`${op}: expected an input [N, C, ...] with at least 2 dims, got ${fmtSizes(x.shape)}`);
  const C = x.shape[1]!;
  for (const [name, p] of params) {
    if (p && (p.shape.length !== 1 || !A.eq(p.shape[0]!, C))) {
      throw new ShapeError(`${op}: ${name} must have shape [${C}] for input ${fmtSizes(x.shape)}, got ${fmtSizes(p.shape)}`);
    }
  }
  return C;
}

export function checkReduction(op: string, r: string): Reduction {
  if (r !== 'mean' && r !== 'sum' && r !== 'none') throw new ValueError(`${op}: reduction must be 'mean', 'sum' or 'none', got '${r}'`);
  return r;
}

/** The negative log-likelihood's dtype and shape checks (target values are checked when it runs); returns C. */
export function checkNllShapes<S>(A: SizeArith<S>, op: string, input: M<S>, target: M<S>, weight: M<S> | null, reduction: string): S {
  checkReduction(op, reduction);
  if (target.dtype !== 'int32') throw new DTypeError(`${op}: target must be an int32 tensor of class indices, got ${target.dtype}`);
  const expected = nllOutSizes(input.shape);
  if (!sameSizes(A, target.shape, expected)) {
    throw new ShapeError(
      `${op}: expected target of shape ${fmtSizes(expected)} for input ${fmtSizes(input.shape)}, got ${fmtSizes(target.shape)}`,
    );
  }
  const C = input.shape.length === 1 ? input.shape[0]! : input.shape[1]!;
  if (weight && (weight.shape.length !== 1 || !A.eq(weight.shape[0]!, C))) {
    throw new ShapeError(`${op}: weight must have shape [${C}], got ${fmtSizes(weight.shape)}`);
  }
  return C;
}

/** The per-position loss sizes of input [C] or [N, C, d1, …]: [] or [N, d1, …]. */
export function nllOutSizes<S>(input: readonly S[]): S[] {
  return input.length === 1 ? [] : [input[0]!, ...input.slice(2)];
}

export function checkLossGradOf<S>(A: SizeArith<S>, op: string, g: M<S>, input: M<S>, reduction: string): void {
  const want = reduction !== 'none' || input.shape.length === 1 ? [] : nllOutSizes(input.shape);
  checkGradOutputOf(A, op, g, want, `input ${fmtSizes(input.shape)} with reduction '${reduction}'`);
}

export function checkIndicesDType(op: string, dtype: string): void {
  if (dtype !== 'int32') throw new DTypeError(`${op}: indices must be an int32 tensor, got ${dtype}`);
}

export function checkDropoutP(op: string, p: number): void {
  if (p < 0 || p > 1) throw new ValueError(`${op}: probability has to be between 0 and 1, got ${p}`);
}

/** embeddingBag's checks (offset and index values are checked when it runs); returns the number of bags. */
export function checkBagShapes<S>(
  A: SizeArith<S>,
  op: string,
  input: M<S>,
  weight: M<S>,
  offsets: M<S> | null,
  mode: string,
  psw: M<S> | null,
): S {
  if (mode !== 'sum' && mode !== 'mean') throw new ValueError(`${op}: mode must be 'sum' or 'mean', got '${mode}'`);
  checkEmbeddingWeight(op, weight.shape);
  checkIndicesDType(op, input.dtype);
  let B: S;
  if (input.shape.length === 2) {
    if (offsets) throw new ValueError(`${op}: offsets must be null when the input is 2-D [bags, length]`);
    B = input.shape[0]!;
  } else if (input.shape.length === 1) {
    if (!offsets) throw new ValueError(`${op}: a 1-D input needs offsets giving where each bag starts`);
    B = product(A, offsets.shape);
  } else throw new ShapeError(`${op}: expected a 1-D or 2-D input, got ${fmtSizes(input.shape)}`);
  if (psw && mode !== 'sum') throw new ValueError(`${op}: perSampleWeights only works with mode='sum'`);
  const T = product(A, input.shape);
  if (psw && !A.eq(product(A, psw.shape), T)) {
    throw new ShapeError(`${op}: perSampleWeights must have one weight per index (${T}), got ${fmtSizes(psw.shape)}`);
  }
  return B;
}

export function checkEmbeddingWeight(op: string, weight: readonly unknown[]): void {
  if (weight.length !== 2) throw new ShapeError(`${op}: weight must be 2-D [num, dim], got ${fmtSizes(weight)}`);
}

/** embeddingDenseBackward: gradOutput is [...indices, dim], float32. */
export function checkEmbeddingGrad<S>(A: SizeArith<S>, g: M<S>, indices: M<S>): void {
  const op = 'embeddingDenseBackward';
  if (g.shape.length !== indices.shape.length + 1 || !sameSizes(A, g.shape.slice(0, -1), indices.shape)) {
    throw new ShapeError(
      `${op}: gradOutput must have shape [${[...indices.shape, 'dim'].join(', ')}] for indices ${fmtSizes(indices.shape)}, got ${fmtSizes(g.shape)}`,
    );
  }
  if (g.dtype !== 'float32') throw new DTypeError(`${op}: expected a float32 gradOutput, got ${g.dtype}`);
}

/** nativeDropoutBackward: a bool mask and a float32 gradOutput of its shape. */
export function checkDropoutGrad<S>(A: SizeArith<S>, g: M<S>, mask: M<S>): void {
  const op = 'nativeDropoutBackward';
  if (mask.dtype !== 'bool') throw new DTypeError(`${op}: mask must be a bool tensor, got ${mask.dtype}`);
  checkGradOutputOf(A, op, g, mask.shape, `mask ${fmtSizes(mask.shape)}`);
}

const statSizes = <S>(A: SizeArith<S>, x: M<S>, dims: readonly number[]) => x.shape.map((s, i) => (dims.includes(i) ? A.lit(1) : s));

export const NN_RULES = {
  layerNorm: (A, [x, ns, w, b]) => {
    const t = x as M<never>;
    layerNormDims(A, 'layerNorm', t, ns as never, w as M<never> | null, b as M<never> | null);
    return meta(t.shape, 'float32');
  },
  nativeLayerNorm: (A, [x, ns, w, b]) => {
    const t = x as M<never>;
    const { dims } = layerNormDims(A, 'nativeLayerNorm', t, ns as never, w as M<never> | null, b as M<never> | null);
    const stat = meta(statSizes(A, t, dims), 'float32');
    return [meta(t.shape, 'float32'), stat, stat];
  },
  nativeLayerNormBackward: (A, [g, x, ns, mean, rstd, w, b, outputMask]) => {
    const op = 'nativeLayerNormBackward';
    const mask = checkConvMask(op, outputMask);
    const t = x as M<never>;
    const { dims, ns: sizes } = layerNormDims(A, op, t, ns as never, w as M<never> | null, b as M<never> | null);
    checkGradOutputOf(A, op, g as M<never>, t.shape, `input ${fmtSizes(t.shape)}`);
    const stat = statSizes(A, t, dims);
    for (const [name, s] of [
      ['mean', mean],
      ['rstd', rstd],
    ] as const) {
      const sm = s as M<never>;
      if (!sameSizes(A, sm.shape, stat))
        throw new ShapeError(`${op}: ${name} must have shape ${fmtSizes(stat)}, got ${fmtSizes(sm.shape)}`);
    }
    return [
      mask[0] ? meta(t.shape, 'float32') : null,
      mask[1] && w ? meta(sizes, 'float32') : null,
      mask[2] && b ? meta(sizes, 'float32') : null,
    ];
  },
  batchNorm: (A, [x, rm, rv, w, b, training]) => {
    const t = x as M<never>;
    const C = checkBatchNorm(A, 'batchNorm', t, [
      ['runningMean', rm as M<never> | null],
      ['runningVar', rv as M<never> | null],
      ['weight', w as M<never> | null],
      ['bias', b as M<never> | null],
    ]);
    // numel / C <= 1, as numel <= C (the division is exact)
    if (training && A.le(product(A, t.shape), C)) {
      throw new ValueError(`batchNorm: expected more than 1 value per channel when training, got input ${fmtSizes(t.shape)}`);
    }
    return meta(t.shape, 'float32');
  },
  nativeBatchNorm: (A, [x, w, b, rm, rv, training]) => {
    const op = 'nativeBatchNorm';
    const t = x as M<never>;
    const C = checkBatchNorm(A, op, t, [
      ['weight', w as M<never> | null],
      ['bias', b as M<never> | null],
      ['runningMean', rm as M<never> | null],
      ['runningVar', rv as M<never> | null],
    ]);
    if (!training && (!rm || !rv)) throw new ValueError(`${op}: runningMean and runningVar must be defined in evaluation mode`);
    const stat = meta(training ? [C] : [A.lit(0)], 'float32');
    return [meta(t.shape, 'float32'), stat, stat];
  },
  nativeBatchNormBackward: (A, [g, x, w, rm, rv, sm, si, training, , outputMask]) => {
    const op = 'nativeBatchNormBackward';
    const mask = checkConvMask(op, outputMask);
    const t = x as M<never>;
    const stats = (training ? [sm, si] : [rm, rv]) as (M<never> | null)[];
    const names = training ? ['saveMean', 'saveInvstd'] : ['runningMean', 'runningVar'];
    const C = checkBatchNorm(A, op, t, [
      ['weight', w as M<never> | null],
      [names[0]!, stats[0]!],
      [names[1]!, stats[1]!],
    ]);
    if (!stats[0] || !stats[1]) throw new ValueError(`${op}: ${names.join(' and ')} must be given when training=${String(training)}`);
    checkGradOutputOf(A, op, g as M<never>, t.shape, `input ${fmtSizes(t.shape)}`);
    return [mask[0] ? meta(t.shape, 'float32') : null, mask[1] ? meta([C], 'float32') : null, mask[2] ? meta([C], 'float32') : null];
  },
  embedding: (_A, [input, weight]) => {
    const [i, w] = [input as M<never>, weight as M<never>];
    checkEmbeddingWeight('embedding', w.shape);
    checkIndicesDType('embedding', i.dtype);
    return meta([...i.shape, w.shape[1]!], w.dtype);
  },
  embeddingDenseBackward: (A, [g, indices, numWeights]) => {
    const [gm, im] = [g as M<never>, indices as M<never>];
    checkIndicesDType('embeddingDenseBackward', im.dtype);
    checkEmbeddingGrad(A, gm, im);
    return meta([sizeOf(A, numWeights as never), gm.shape[gm.shape.length - 1]!], 'float32');
  },
  embeddingBag: (A, [input, weight, offsets, mode, psw]) => {
    const w = weight as M<never>;
    const B = checkBagShapes(A, 'embeddingBag', input as M<never>, w, offsets as M<never> | null, mode as string, psw as M<never> | null);
    const T = product(A, (input as M<never>).shape);
    return matmulMeta(A, meta([B, T], 'float32'), meta([T, w.shape[1]!], w.dtype));
  },
  embeddingBagBackward: (A, [g, input, weight, offsets, mode, psw, outputMask]) => {
    const op = 'embeddingBagBackward';
    if (!Array.isArray(outputMask) || outputMask.length !== 2 || !outputMask.every((m) => typeof m === 'boolean')) {
      throw new ValueError(`${op}: outputMask must be 2 booleans [weight, perSampleWeights], got ${JSON.stringify(outputMask)}`);
    }
    const w = weight as M<never>;
    const p = psw as M<never> | null;
    const B = checkBagShapes(A, op, input as M<never>, w, offsets as M<never> | null, mode as string, p);
    checkGradOutputOf(A, op, g as M<never>, [B, w.shape[1]!], `${B} bags of a ${fmtSizes(w.shape)} table`);
    if (outputMask[1] && !p) throw new ValueError(`${op}: outputMask asks for perSampleWeights' gradient but none were given`);
    return [outputMask[0] ? meta(w.shape, 'float32') : null, outputMask[1] ? meta(p!.shape, 'float32') : null];
  },
  dropout: (_A, [x, p, training]) => {
    checkDropoutP('dropout', p as number);
    const t = x as M<never>;
    if (!training || p === 0) return meta(t.shape, t.dtype);
    return meta(t.shape, p === 1 ? (t.dtype === 'bool' ? 'int32' : t.dtype) : 'float32');
  },
  nativeDropout: (_A, [x, p, train]) => {
    checkDropoutP('nativeDropout', p as number);
    const t = x as M<never>;
    return [meta(t.shape, train ? 'float32' : t.dtype), meta(t.shape, 'bool')];
  },
  nativeDropoutBackward: (A, [g, mask]) => {
    checkDropoutGrad(A, g as M<never>, mask as M<never>);
    return meta((g as M<never>).shape, 'float32');
  },
  nllLossForward: (A, [input, target, weight, reduction]) => {
    const i = input as M<never>;
    checkNllShapes(A, 'nllLossForward', i, target as M<never>, weight as M<never> | null, reduction as string);
    return [meta(reduction === 'none' ? nllOutSizes(i.shape) : [], 'float32'), meta([], 'float32')];
  },
  nllLossBackward: (A, [g, input, target, weight, reduction]) => {
    const op = 'nllLossBackward';
    const i = input as M<never>;
    checkNllShapes(A, op, i, target as M<never>, weight as M<never> | null, reduction as string);
    checkLossGradOf(A, op, g as M<never>, i, reduction as string);
    return meta(i.shape, 'float32');
  },
  nllLossWeightBackward: (A, [g, input, target, weight, reduction]) => {
    const op = 'nllLossWeightBackward';
    const i = input as M<never>;
    checkNllShapes(A, op, i, target as M<never>, weight as M<never>, reduction as string);
    checkLossGradOf(A, op, g as M<never>, i, reduction as string);
    return meta((weight as M<never>).shape, 'float32');
  },
  nllLoss: (A, [input, target, weight, , reduction]) => {
    const i = input as M<never>;
    checkNllShapes(A, 'nllLoss', i, target as M<never>, weight as M<never> | null, reduction as string);
    return meta(reduction === 'none' ? nllOutSizes(i.shape) : [], 'float32');
  },
  crossEntropy: (A, [input, target, weight, , reduction, labelSmoothing]) => {
    checkReduction('crossEntropy', reduction as string);
    const [i, t] = [input as M<never>, target as M<never>];
    if (i.dtype !== 'float32') throw new DTypeError(`crossEntropy: input must be float32 logits, got ${i.dtype}`);
    const ls = labelSmoothing as number;
    if (ls < 0 || ls > 1) throw new ValueError(`crossEntropy: labelSmoothing must be in [0, 1], got ${ls}`);
    const classDim = i.shape.length === 1 ? 0 : 1;
    if (t.dtype === 'float32') {
      if (!sameSizes(A, t.shape, i.shape)) {
        throw new ShapeError(
          `crossEntropy: probability targets must have the input's shape ${fmtSizes(i.shape)}, got ${fmtSizes(t.shape)}`,
        );
      }
      return meta(reduction === 'none' ? i.shape.filter((_, k) => k !== classDim) : [], 'float32');
    }
    checkNllShapes(A, 'crossEntropy', i, t, weight as M<never> | null, reduction as string);
    if (ls !== 0 && weight) throw new ValueError('crossEntropy: labelSmoothing with class weights is not supported');
    return meta(reduction === 'none' ? nllOutSizes(i.shape) : [], 'float32');
  },
  mseLoss: (A, [input, target, reduction]) => {
    checkReduction('mseLoss', reduction as string);
    const [i, t] = [input as M<never>, target as M<never>];
    const shape = broadcastSizes(A, 'mseLoss', i.shape, t.shape);
    // (input - target)², then reduced: sum keeps an integer kind, mean needs float32 (mean's own check)
    const dtype = resultDType(i, t);
    if (reduction === 'none') return meta(shape, dtype);
    if (reduction === 'sum') return meta([], dtype === 'float32' ? 'float32' : 'int32');
    checkMeanDType(dtype);
    return meta([], 'float32');
  },
} satisfies Record<string, ShapeRule>;
