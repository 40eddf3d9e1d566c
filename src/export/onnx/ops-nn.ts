import { pair, rankOf, sizesOf } from './builder.js';
import { emit, GRADIENT_OP, missing, notExportable, type EmitContext, type OnnxMapping } from './mapping.js';
import { Unsupported, type TensorValue } from './values.js';

/** Convolution, pooling, normalisation, embedding, dropout and losses. */

const tv = (x: unknown) => x as TensorValue;
const given = (x: unknown): x is TensorValue => x !== null && x !== undefined;

/** ONNX pads: every spatial dim's begin, then every end. */
function symmetricPads(p: readonly number[]): number[] {
  return [...p, ...p];
}

function conv(spatial: number): OnnxMapping {
  return emit((ctx, [x, weight, bias, stride, padding, dilation, groups]) => {
    const kernel = sizesOf(tv(weight)).slice(2);
    if (kernel.some((k) => k === null)) throw new Unsupported('a weight of dynamic size');
    const dil = pair(dilation as number | number[], spatial);
    let pads: number[];
    if (padding === 'valid') pads = Array(2 * spatial).fill(0);
    else if (padding === 'same') {
      // PyTorch's 'same': the total d·(k-1), the extra one at the end
      const total = kernel.map((k, i) => dil[i]! * (k! - 1));
      pads = [...total.map((t) => Math.floor(t / 2)), ...total.map((t) => t - Math.floor(t / 2))];
    } else if (typeof padding === 'string') throw new Unsupported(`padding '${padding}'`);
    else pads = symmetricPads(pair(padding as number | number[], spatial));
    const inputs = [tv(x).name, tv(weight).name, ...(given(bias) ? [bias.name] : [])];
    return ctx.b.one('Conv', inputs, {
      kernel_shape: kernel as number[],
      strides: pair(stride as number | number[], spatial),
      pads,
      dilations: dil,
      group: groups as number,
    });
  });
}

function poolAttrs(kernelSize: unknown, stride: unknown, padding: unknown, ceilMode: unknown) {
  const kernel = pair(kernelSize as number | number[]);
  const strides =
    stride === null || stride === undefined || (Array.isArray(stride) && stride.length === 0) ? kernel : pair(stride as number | number[]);
  return { kernel_shape: kernel, strides, pads: symmetricPads(pair(padding as number | number[])), ceil_mode: ceilMode === true ? 1 : 0 };
}

function maxPool(ctx: EmitContext, [x, kernelSize, stride, padding, dilation, ceilMode]: readonly unknown[]): string {
  return ctx.b.one('MaxPool', [tv(x).name], {
    ...poolAttrs(kernelSize, stride, padding, ceilMode),
    dilations: pair(dilation as number | number[]),
  });
}

function adaptiveAvgPool(ctx: EmitContext, x: TensorValue, outputSize: number | readonly (number | null)[]): string {
  const sizes = sizesOf(x);
  const rank = rankOf(x);
  const out = (typeof outputSize === 'number' ? [outputSize, outputSize] : outputSize).map((o, i) => o ?? sizes[rank - 2 + i]);
  if (out.every((o) => o === 1)) return ctx.b.one('GlobalAveragePool', [x.name]);
  const input = sizes.slice(rank - 2);
  if (input.some((s) => s === null)) throw new Unsupported('adaptive pooling to a size other than 1 over dynamic spatial dims');
  if (input.some((s, i) => s! % out[i]! !== 0))
    throw new Unsupported(
      `adaptive pooling of [${input.join(', ')}] to [${out.join(', ')}] (windows of unequal size; ONNX's AveragePool needs one kernel)`,
    );
  const kernel = input.map((s, i) => s! / out[i]!);
  return ctx.b.one('AveragePool', [x.name], { kernel_shape: kernel, strides: kernel });
}

/** layer norm over the last `normalizedShape.length` dims: LayerNormalization from opset 17, written out before. */
function layerNorm(ctx: EmitContext, [x, normalizedShape, weight, bias, eps]: readonly unknown[]): string {
  const shape = typeof normalizedShape === 'number' ? [normalizedShape] : (normalizedShape as number[]);
  const { b } = ctx;
  if (b.opset >= 17) {
    const scale = given(weight) ? weight.name : b.constant('float32', shape, Array(shape.reduce((p, s) => p * s, 1)).fill(1));
    return b.one('LayerNormalization', [tv(x).name, scale, ...(given(bias) ? [bias.name] : [])], {
      axis: -shape.length,
      epsilon: { float: eps as number },
    });
  }
  const axes = shape.map((_s, i) => i - shape.length);
  const centred = b.one('Sub', [tv(x).name, b.reduce('ReduceMean', tv(x).name, axes, true)]);
  const variance = b.reduce('ReduceMean', b.one('Mul', [centred, centred]), axes, true);
  let y = b.one('Div', [centred, b.one('Sqrt', [b.one('Add', [variance, b.scalar(eps as number, 'float32')])])]);
  if (given(weight)) y = b.one('Mul', [y, weight.name]);
  if (given(bias)) y = b.one('Add', [y, bias.name]);
  return y;
}

/** Batch norm with its running statistics (eval mode). */
function batchNorm(
  ctx: EmitContext,
  x: unknown,
  weight: unknown,
  bias: unknown,
  mean: unknown,
  variance: unknown,
  training: unknown,
  eps: unknown,
): string {
  if (training === true)
    throw new Unsupported(
      'batch norm in training mode uses batch statistics and updates its buffers: call .eval() on the model before exporting',
    );
  if (!given(mean) || !given(variance)) throw new Unsupported('batch norm without running statistics');
  const channels = sizesOf(mean)[0];
  if (channels === null || channels === undefined) throw new Unsupported('running statistics of dynamic size');
  const { b } = ctx;
  const scale = given(weight) ? weight.name : b.constant('float32', [channels], Array(channels).fill(1));
  const shift = given(bias) ? bias.name : b.constant('float32', [channels], Array(channels).fill(0));
  return b.one('BatchNormalization', [tv(x).name, scale, shift, mean.name, variance.name], { epsilon: { float: eps as number } });
}

const EVAL_ONLY_DROPOUT = 'dropout in training mode is random: call .eval() on the model before exporting';

function reductionOf(reduction: unknown): string {
  if (reduction !== 'none' && reduction !== 'mean' && reduction !== 'sum') throw new Unsupported(`reduction '${String(reduction)}'`);
  return reduction;
}

function nllLoss(ctx: EmitContext, [input, target, weight, ignoreIndex, reduction]: readonly unknown[]): string {
  const inputs = [tv(input).name, ctx.b.cast(tv(target).name, tv(target).dtype, 'int64'), ...(given(weight) ? [weight.name] : [])];
  return ctx.b.one('NegativeLogLikelihoodLoss', inputs, { reduction: reductionOf(reduction), ignore_index: ignoreIndex as number });
}

export const NN_ONNX = {
  conv2d: conv(2),
  conv1d: conv(1),
  convolutionBackward: notExportable(GRADIENT_OP),
  maxPool2dWithIndices: emit((ctx, args) => [
    maxPool(ctx, args),
    missing("ONNX's MaxPool indices count over the whole tensor, not per plane as PyTorch's"),
  ]),
  maxPool2dWithIndicesBackward: notExportable(GRADIENT_OP),
  maxPool2d: emit((ctx, args) => maxPool(ctx, args)),
  avgPool2d: emit((ctx, [x, kernelSize, stride, padding, ceilMode, countIncludePad, divisorOverride]) => {
    if (divisorOverride !== null && divisorOverride !== undefined) throw new Unsupported(`divisorOverride ${String(divisorOverride)}`);
    return ctx.b.one('AveragePool', [tv(x).name], {
      ...poolAttrs(kernelSize, stride, padding, ceilMode),
      count_include_pad: countIncludePad === false ? 0 : 1,
    });
  }),
  avgPool2dBackward: notExportable(GRADIENT_OP),
  adaptiveAvgPool2d: emit((ctx, [x, outputSize]) => adaptiveAvgPool(ctx, tv(x), outputSize as number | number[])),
  adaptiveAvgPool2dBackward: notExportable(GRADIENT_OP),
  layerNorm: emit((ctx, args) => layerNorm(ctx, args)),
  nativeLayerNorm: emit((ctx, args) => [
    layerNorm(ctx, args),
    missing("nativeLayerNorm's mean is not exported (only its output)"),
    missing("nativeLayerNorm's rstd is not exported (only its output)"),
  ]),
  nativeLayerNormBackward: notExportable(GRADIENT_OP),
  batchNorm: emit((ctx, [x, mean, variance, weight, bias, training, , eps]) =>
    batchNorm(ctx, x, weight, bias, mean, variance, training, eps),
  ),
  nativeBatchNorm: emit((ctx, [x, weight, bias, mean, variance, training, , eps]) => [
    batchNorm(ctx, x, weight, bias, mean, variance, training, eps),
    missing("nativeBatchNorm's saved mean is not exported (only its output)"),
    missing("nativeBatchNorm's saved inverse std is not exported (only its output)"),
  ]),
  nativeBatchNormBackward: notExportable(GRADIENT_OP),
  embedding: emit((ctx, [input, weight]) => ctx.b.one('Gather', [tv(weight).name, tv(input).name], { axis: 0 })),
  embeddingDenseBackward: notExportable(GRADIENT_OP),
  embeddingBag: notExportable('bags by offsets are not mapped to ONNX yet (use embedding and a reduction)'),
  embeddingBagBackward: notExportable(GRADIENT_OP),
  dropout: emit((ctx, [x, p, training]) => {
    if (training === true && p !== 0) throw new Unsupported(EVAL_ONLY_DROPOUT);
    return ctx.b.one('Identity', [tv(x).name]);
  }),
  nativeDropout: emit((ctx, [x, p, train]) => {
    if (train === true && p !== 0) throw new Unsupported(EVAL_ONLY_DROPOUT);
    return [ctx.b.one('Identity', [tv(x).name]), missing('the mask of an eval-mode dropout is not exported')];
  }),
  nativeDropoutBackward: notExportable(GRADIENT_OP),
  nllLossForward: emit((ctx, [input, target, weight, reduction, ignoreIndex]) => [
    nllLoss(ctx, [input, target, weight, ignoreIndex, reduction]),
    missing("nllLossForward's total weight is not exported"),
  ]),
  nllLossBackward: notExportable(GRADIENT_OP),
  nllLossWeightBackward: notExportable(GRADIENT_OP),
  nllLoss: emit((ctx, args) => nllLoss(ctx, args)),
  crossEntropy: emit((ctx, [input, target, weight, ignoreIndex, reduction, labelSmoothing]) => {
    if (labelSmoothing !== 0) throw new Unsupported(`labelSmoothing ${String(labelSmoothing)}`);
    if (tv(target).dtype === 'float32') throw new Unsupported('class probabilities as the target (ONNX takes class indices)');
    const inputs = [tv(input).name, ctx.b.cast(tv(target).name, tv(target).dtype, 'int64'), ...(given(weight) ? [weight.name] : [])];
    return ctx.b.one('SoftmaxCrossEntropyLoss', inputs, { reduction: reductionOf(reduction), ignore_index: ignoreIndex as number });
  }),
  mseLoss: emit((ctx, [input, target, reduction]) => {
    const d = ctx.b.one('Sub', [tv(input).name, ctx.b.operand(target, 'float32')]);
    const sq = ctx.b.one('Mul', [d, d]);
    const r = reductionOf(reduction);
    return r === 'none' ? sq : ctx.b.reduce(r === 'mean' ? 'ReduceMean' : 'ReduceSum', sq, null, false);
  }),
} satisfies Record<string, OnnxMapping>;
