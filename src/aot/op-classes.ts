import type { Node } from '../graph/node.js';
import { targetName } from '../graph/node.js';

/**
 * What the min-cut partitioner may recompute in the backward, by op name (PyTorch's `pointwise_ops`,
 * `view_ops`, `reduction_ops`, `misc_ops` and `random_ops` in torch/_functorch/partitioners.py, mapped onto
 * kiln's op table). An op in none of the sets is never recomputed, so a new op is safe until it is classified;
 * test/aot-partition.test.ts fails when an op of the table is missing here so that it gets classified.
 */

/** Element-wise ops (the ones the kernels lower to element-wise primitives) and their fused backward forms. */
export const POINTWISE_OPS: ReadonlySet<string> = new Set([
  'add', 'sub', 'mul', 'div', 'pow', 'neg', 'exp', 'exp2', 'log', 'sqrt', 'abs', 'tanh', 'sigmoid', 'relu',
  'sin', 'cos', 'gelu', 'clamp', 'where', 'eq', 'ne', 'lt', 'le', 'gt', 'ge', 'clone',
  // fused element-wise backward ops (PyTorch's threshold_backward, gelu_backward, …) as they are added
  'thresholdBackward', 'geluBackward', 'sigmoidBackward', 'tanhBackward', 'nativeDropoutBackward',
]); // prettier-ignore

/** Metadata-only views: recomputing one costs nothing but a new header. */
export const VIEW_OPS: ReadonlySet<string> = new Set([
  'view', 'reshape', 'flatten', 'permute', 'transpose', 't', 'unsqueeze', 'squeeze', 'expand', 'slice', 'narrow',
  'select', 'split', 'unbind', 'asStrided', 'alias',
]); // prettier-ignore

/**
 * Reductions and reads by index cheap enough to recompute (PyTorch's list has sum, mean, amax, max, min, argmax,
 * and "we should allow recomputing indexing": index, gather).
 */
export const REDUCTION_OPS: ReadonlySet<string> = new Set([
  'sum', 'mean', 'amax', 'amin', 'max', 'min', 'argmax', 'softmax', 'logSoftmax', 'gather', 'index',
]); // prettier-ignore

/** Casts, item reads and shape arithmetic, plus the cheap fills (PyTorch's `misc_ops` and its `full`, `zeros`, `arange`). */
export const MISC_OPS: ReadonlySet<string> = new Set([
  'toDType', 'getitem', 'getattr', 'sym_size', 'sym_add', 'sym_sub', 'sym_mul', 'sym_floordiv', 'sym_mod', 'sym_truediv',
  'full', 'zerosLike', 'onesLike', 'arange',
]); // prettier-ignore

/** Ops that draw random numbers: recomputing one would draw a different mask (PyTorch's `random_ops`). */
export const RANDOM_OPS: ReadonlySet<string> = new Set([
  'dropout', 'dropoutMask', 'nativeDropout', 'rand', 'randn', 'randLike', 'randnLike', 'bernoulli',
]); // prettier-ignore

/**
 * Ops that are never recomputed because they are expensive (GEMMs, convolutions, pooling and their backward
 * ops), read by an index, or build a new buffer from several (cat, stack, the scatters). Listed so that the
 * table test can tell "decided: not recomputable" from "not classified yet".
 */
export const UNRECOMPUTABLE_OPS: ReadonlySet<string> = new Set([
  'mm', 'addmm', 'matmul', 'linear', 'bmm', 'conv1d', 'conv2d', 'convolutionBackward', 'conv2dBackward',
  'maxPool2d', 'avgPool2d', 'adaptiveAvgPool2d', 'maxPool2dBackward', 'avgPool2dBackward', 'adaptiveAvgPool2dBackward',
  'layerNorm', 'batchNorm', 'nativeLayerNorm', 'nativeLayerNormBackward', 'nativeBatchNorm', 'nativeBatchNormBackward',
  'embedding', 'embeddingBag', 'embeddingDenseBackward', 'nllLoss', 'crossEntropy', 'mseLoss',
  'indexSelect', 'cat', 'stack', 'maxPool2dWithIndices', 'maxPool2dWithIndicesBackward', 'embeddingBagBackward',
  'nllLossForward', 'nllLossBackward', 'nllLossWeightBackward',
  'viewScatter', 'selectScatter', 'sliceScatter', 'asStridedScatter', 'diagonalScatter', 'scatterAdd', 'indexAdd',
]); // prettier-ignore

/** The op-table name a call node runs, or undefined for other nodes. */
export function opName(n: Node): string | undefined {
  return n.op === 'call_function' || n.op === 'call_method' ? targetName(n.target) : undefined;
}

/** PyTorch's `recomputable_ops`: element-wise, views, cheap reductions and misc. */
export function isRecomputable(n: Node): boolean {
  const name = opName(n);
  if (name === undefined) return false;
  return POINTWISE_OPS.has(name) || VIEW_OPS.has(name) || REDUCTION_OPS.has(name) || MISC_OPS.has(name);
}

/** PyTorch's `fusible_ops` (recomputable or random): ops a fusing backend puts in one kernel with their neighbours. */
export function isFusible(n: Node): boolean {
  const name = opName(n);
  return name !== undefined && (isRecomputable(n) || RANDOM_OPS.has(name));
}

/** Whether `b` can fuse `a` in: both fusible, or `b` concatenates (a producer can write into a cat's output). */
export function canFuse(a: Node, b: Node): boolean {
  const name = opName(b);
  if (name === 'cat' || name === 'stack') return true;
  return isFusible(a) && isFusible(b);
}

export function isViewOp(n: Node): boolean {
  const name = opName(n);
  return name !== undefined && VIEW_OPS.has(name);
}

export function isRandomOp(n: Node): boolean {
  const name = opName(n);
  return name !== undefined && RANDOM_OPS.has(name);
}
