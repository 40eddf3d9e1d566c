/**
 * `F`: the functional forms of the layers. Each is the op itself, so it takes PyTorch's positional
 * arguments and, last, an options object keyed by parameter name: `F.conv2d(x, w, b, { stride: 2 })`.
 * The user-facing ops only: the native and backward ops those are built on (nativeBatchNorm,
 * convolutionBackward, …) stay on `ops`, as PyTorch keeps them in `torch.ops.aten`.
 */
export { layerNorm, batchNorm, embedding, embeddingBag, dropout, nllLoss, crossEntropy, mseLoss } from '../ops/nn.js';
export { maxPool2d, avgPool2d, adaptiveAvgPool2d } from '../ops/pool.js';
export { conv1d, conv2d } from '../ops/conv.js';
export { linear } from '../ops/linalg.js';
export { relu, gelu, sigmoid, tanh } from '../ops/elementwise.js';
export { softmax, logSoftmax } from '../ops/reduce.js';
