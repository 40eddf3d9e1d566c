/**
 * `F`: the functional forms of the layers. Each is the op itself, so it takes PyTorch's positional
 * arguments and, last, an options object keyed by parameter name: `F.conv2d(x, w, b, { stride: 2 })`.
 */
export {
  relu,
  gelu,
  sigmoid,
  tanh,
  softmax,
  logSoftmax,
  linear,
  conv1d,
  conv2d,
  maxPool2d,
  avgPool2d,
  adaptiveAvgPool2d,
  dropout,
  layerNorm,
  batchNorm,
  embedding,
  embeddingBag,
  crossEntropy,
  nllLoss,
  mseLoss,
} from '../ops/index.js';
