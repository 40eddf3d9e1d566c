/**
 * `F`: the functional forms of the layers. Each is the op itself, so it takes PyTorch's positional
 * arguments and, last, an options object keyed by parameter name: `F.conv2d(x, w, b, { stride: 2 })`.
 * The norm, embedding, dropout, loss and pooling op modules are functional throughout; from the others,
 * the ops a layer calls.
 */
export * from '../ops/nn.js';
export * from '../ops/pool.js';
export { conv1d, conv2d } from '../ops/conv.js';
export { linear } from '../ops/linalg.js';
export { relu, gelu, sigmoid, tanh } from '../ops/elementwise.js';
export { softmax, logSoftmax } from '../ops/reduce.js';
