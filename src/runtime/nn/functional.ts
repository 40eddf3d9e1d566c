/**
 * `F`: the functional forms of the layers. Each is the op itself, so it takes PyTorch's positional
 * arguments and, last, an options object keyed by parameter name: `F.conv2d(x, w, b, { stride: 2 })`.
 * The user-facing ops only: the native and backward ops those are built on (nativeBatchNorm,
 * convolutionBackward, …) stay on `ops`, as PyTorch keeps them in `torch.ops.aten`.
 */
import * as conv from '../ops/conv.js';
import * as elementwise from '../ops/elementwise.js';
import * as linalg from '../ops/linalg.js';
import * as nn from '../ops/nn.js';
import * as pool from '../ops/pool.js';
import * as reduce from '../ops/reduce.js';
import type { TypedTable } from '../ops/typed.js';

/** The same op objects, typed with their exact options (a misspelt option fails `tsc`). */
const typed: Pick<
  TypedTable,
  keyof typeof conv | keyof typeof elementwise | keyof typeof linalg | keyof typeof nn | keyof typeof pool | keyof typeof reduce
> = {
  ...conv,
  ...elementwise,
  ...linalg,
  ...nn,
  ...pool,
  ...reduce,
};

export const { layerNorm, batchNorm, embedding, embeddingBag, dropout, nllLoss, crossEntropy, mseLoss } = typed;
export const { maxPool2d, avgPool2d, adaptiveAvgPool2d } = typed;
export const { conv1d, conv2d } = typed;
export const { linear } = typed;
export const { relu, gelu, sigmoid, tanh } = typed;
export const { softmax, logSoftmax } = typed;
