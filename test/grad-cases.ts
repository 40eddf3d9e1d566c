import { arange, manualSeed, ops, rand, randn, tensor, type Tensor } from '../src/index.js';

/**
 * One case per differentiable op: fresh float32 inputs that require grad and a function of them. Used by
 * the finite-difference checks (gradcheck.test.ts) and the traceability check of gradient rules
 * (traceable-grads.test.ts). An op whose gradient is exercised through another entry is named in that entry.
 */

const g = (t: Tensor) => t.requiresGrad_(true);
const pos = (shape: number[]) => g(rand(shape).add(0.5)); // away from 0 for log/sqrt/pow/div
const idx = (data: number[], shape?: number[]) => tensor(data, { dtype: 'int32', shape: shape ?? [data.length] });

export type GradCase = [name: string, make: () => { fn: (...xs: Tensor[]) => Tensor; inputs: Tensor[] }];

export const GRAD_CASES: GradCase[] = [
  ['add', () => ({ fn: (a, b) => ops.add(a, b, 2), inputs: [g(randn([3, 1])), g(randn([1, 4]))] })],
  ['sub', () => ({ fn: (a, b) => ops.sub(a, b), inputs: [g(randn([2, 3])), g(randn([3]))] })],
  ['mul', () => ({ fn: (a, b) => ops.mul(a, b), inputs: [g(randn([2, 3])), g(randn([2, 1]))] })],
  ['div', () => ({ fn: (a, b) => ops.div(a, b), inputs: [g(randn([2, 3])), pos([3])] })],
  ['pow', () => ({ fn: (a, b) => ops.pow(a, b), inputs: [pos([2, 3]), g(randn([2, 3]))] })],
  ['pow (scalar)', () => ({ fn: (a) => ops.pow(a, 3), inputs: [g(randn([4]))] })],
  ['neg', () => ({ fn: (a) => ops.neg(a), inputs: [g(randn([3]))] })],
  ['exp', () => ({ fn: (a) => ops.exp(a), inputs: [g(randn([3]))] })],
  ['log', () => ({ fn: (a) => ops.log(a), inputs: [pos([3])] })],
  ['sqrt', () => ({ fn: (a) => ops.sqrt(a), inputs: [pos([3])] })],
  ['sin', () => ({ fn: (a) => ops.sin(a), inputs: [g(randn([3]))] })],
  ['cos', () => ({ fn: (a) => ops.cos(a), inputs: [g(randn([3]))] })],
  ['exp2', () => ({ fn: (a) => ops.exp2(a), inputs: [g(randn([3]))] })],
  ['abs', () => ({ fn: (a) => ops.abs(a), inputs: [g(tensor([-1.5, 0.7, 2]))] })],
  ['tanh', () => ({ fn: (a) => ops.tanh(a), inputs: [g(randn([3]))] })],
  ['sigmoid', () => ({ fn: (a) => ops.sigmoid(a), inputs: [g(randn([3]))] })],
  ['relu', () => ({ fn: (a) => ops.relu(a), inputs: [g(tensor([-1, 0.5, 2, -0.3]))] })],
  ['gelu', () => ({ fn: (a) => ops.gelu(a), inputs: [g(randn([5]))] })],
  ['gelu (tanh)', () => ({ fn: (a) => ops.gelu(a, 'tanh'), inputs: [g(randn([5]))] })],
  [
    'thresholdBackward',
    () => ({ fn: (go, x) => ops.thresholdBackward(go, x, 0.1), inputs: [g(randn([4])), g(tensor([-1, 0.5, 2, -0.3]))] }),
  ],
  ['tanhBackward', () => ({ fn: (go, y) => ops.tanhBackward(go, y), inputs: [g(randn([2, 3])), g(randn([3]))] })],
  ['sigmoidBackward', () => ({ fn: (go, y) => ops.sigmoidBackward(go, y), inputs: [g(randn([3])), g(randn([3]))] })],
  ['geluBackward', () => ({ fn: (go, x) => ops.geluBackward(go, x), inputs: [g(randn([5])), g(randn([5]))] })],
  ['geluBackward (tanh)', () => ({ fn: (go, x) => ops.geluBackward(go, x, 'tanh'), inputs: [g(randn([5])), g(randn([5]))] })],
  ['clamp', () => ({ fn: (a) => ops.clamp(a, -0.5, 0.5), inputs: [g(tensor([-1, -0.2, 0.3, 0.9]))] })],
  ['where', () => ({ fn: (a, b, c) => ops.where(c!, a, b), inputs: [g(randn([3])), g(randn([2, 1])), tensor([true, false, true])] })],
  ['clone', () => ({ fn: (a) => ops.clone(a).mul(2), inputs: [g(randn([2, 2]))] })],
  ['toDType', () => ({ fn: (a) => ops.toDType(a, 'float32'), inputs: [g(randn([2]))] })],
  ['matmul', () => ({ fn: (a, b) => ops.matmul(a, b), inputs: [g(randn([2, 3, 4])), g(randn([4, 5]))] })],
  ['matmul (1-D, broadcast batch)', () => ({ fn: (a, b) => ops.matmul(a, b), inputs: [g(randn([4])), g(randn([2, 4, 3]))] })],
  ['mm', () => ({ fn: (a, b) => ops.mm(a, b), inputs: [g(randn([3, 4])), g(randn([4, 2]))] })],
  ['mm (transposed operand)', () => ({ fn: (a, b) => ops.mm(a.t(), b), inputs: [g(randn([4, 3])), g(randn([4, 2]))] })],
  [
    'addmm',
    () => ({
      fn: (x, a, b) => ops.addmm(x, a, b, { beta: 0.5, alpha: -2 }),
      inputs: [g(randn([2])), g(randn([3, 4])), g(randn([4, 2]))],
    }),
  ],
  [
    'addmm (defaults, [n, 1] input)',
    () => ({ fn: (x, a, b) => ops.addmm(x, a, b), inputs: [g(randn([3, 1])), g(randn([3, 4])), g(randn([4, 2]))] }),
  ],
  [
    'unbind',
    () => ({
      fn: (a) => {
        const [p, q, r] = ops.unbind(a, 1);
        return ops.stack([p!.mul(2), r!.neg(), q!.mul(r!)]);
      },
      inputs: [g(randn([2, 3]))],
    }),
  ],
  ['linear', () => ({ fn: (x, w, b) => ops.linear(x, w, b), inputs: [g(randn([3, 4])), g(randn([2, 4])), g(randn([2]))] })],
  ['sum', () => ({ fn: (a) => ops.sum(a, [0, 2], true), inputs: [g(randn([2, 3, 4]))] })],
  ['mean', () => ({ fn: (a) => ops.mean(a, 1), inputs: [g(randn([2, 3]))] })],
  ['amax', () => ({ fn: (a) => a.max(), inputs: [g(tensor([1, 5, 2, 3]))] })],
  ['amin', () => ({ fn: (a) => a.min(), inputs: [g(tensor([1, 5, -2, 3]))] })],
  [
    'max',
    () => ({
      fn: (a) => a.max(1).values,
      inputs: [
        g(
          tensor([
            [1, 5, 2],
            [7, 3, 4],
          ]),
        ),
      ],
    }),
  ],
  [
    'min',
    () => ({
      fn: (a) => a.min(0, true).values,
      inputs: [
        g(
          tensor([
            [1, 5, 2],
            [7, 3, 4],
          ]),
        ),
      ],
    }),
  ],
  ['softmax', () => ({ fn: (a) => ops.softmax(a, 0), inputs: [g(randn([3, 2]))] })],
  ['logSoftmax', () => ({ fn: (a) => ops.logSoftmax(a, -1), inputs: [g(randn([2, 4]))] })],
  ['view', () => ({ fn: (a) => ops.view(a, [3, 2]).mul(arangeF(2)), inputs: [g(randn([2, 3]))] })],
  ['reshape', () => ({ fn: (a) => ops.reshape(a.transpose(0, 1), [-1]).mul(arangeF(6)), inputs: [g(randn([2, 3]))] })],
  ['flatten', () => ({ fn: (a) => ops.flatten(a, 1).mul(arangeF(6)), inputs: [g(randn([1, 2, 3]))] })],
  ['transpose', () => ({ fn: (a) => ops.transpose(a, 0, 1).mul(arangeF(2)), inputs: [g(randn([2, 3]))] })],
  ['t', () => ({ fn: (a) => ops.t(a).mul(arangeF(2)), inputs: [g(randn([2, 3]))] })],
  ['t (1-D)', () => ({ fn: (a) => ops.t(a).mul(arangeF(3)), inputs: [g(randn([3]))] })],
  ['permute', () => ({ fn: (a) => ops.permute(a, [2, 0, 1]).mul(arangeF(4).reshape([4, 1, 1])), inputs: [g(randn([2, 3, 4]))] })],
  ['unsqueeze', () => ({ fn: (a) => ops.unsqueeze(a, 1).mul(arangeF(2).reshape([2, 1])), inputs: [g(randn([2, 2]))] })],
  ['squeeze', () => ({ fn: (a) => ops.squeeze(a).mul(arangeF(3)), inputs: [g(randn([1, 3, 1]))] })],
  ['expand', () => ({ fn: (a) => ops.expand(a, [2, 3, 4]).mul(arangeF(24).reshape([2, 3, 4])), inputs: [g(randn([3, 1]))] })],
  ['slice', () => ({ fn: (a) => ops.slice(a, 1, 1, 5, 2), inputs: [g(randn([2, 6]))] })],
  ['narrow', () => ({ fn: (a) => ops.narrow(a, 0, 1, 2), inputs: [g(randn([4, 2]))] })],
  [
    'split',
    () => ({
      fn: (a) => {
        const [p, q, r] = ops.split(a, [1, 2, 1], 0);
        return ops.cat([p!.mul(2), q!, r!.neg()], 0);
      },
      inputs: [g(randn([4, 3]))],
    }),
  ],
  [
    'viewScatter',
    () => ({
      fn: (a, b) =>
        ops.viewScatter(a, b, [
          ['transpose', [0, 1], {}],
          ['narrow', [0, 1, 2], {}],
        ]),
      inputs: [g(randn([3, 4])), g(randn([2, 3]))],
    }),
  ],
  ['select', () => ({ fn: (a) => ops.select(a, 1, -1), inputs: [g(randn([2, 3]))] })],
  ['asStrided', () => ({ fn: (a) => ops.asStrided(a, [2, 2], [1, 2], 1), inputs: [g(randn([6]))] })],
  ['asStrided (overlapping output)', () => ({ fn: (a) => ops.asStrided(a, [3, 2], [1, 1]), inputs: [g(randn([4]))] })],
  ['asStrided (expanded output)', () => ({ fn: (a) => ops.asStrided(a, [2, 3], [0, 1]), inputs: [g(randn([3]))] })],
  ['asStrided (overlapping input)', () => ({ fn: (a) => ops.asStrided(a.expand([2, 3]), [3], [1]), inputs: [g(randn([3]))] })],
  ['sliceScatter', () => ({ fn: (a, b) => ops.sliceScatter(a, b, 1, 1, null, 2), inputs: [g(randn([2, 5])), g(randn([2, 2]))] })],
  ['selectScatter', () => ({ fn: (a, b) => ops.selectScatter(a, b, 0, -1), inputs: [g(randn([3, 2])), g(randn([2]))] })],
  ['index', () => ({ fn: (a, i) => ops.index(a, [null, '...', '::2', i!]), inputs: [g(randn([2, 4, 3])), idx([2, 0])] })],
  ['gather', () => ({ fn: (a, i) => ops.gather(a, 1, i!), inputs: [g(randn([2, 3])), idx([0, 2, 2, 1], [2, 2])] })],
  ['indexSelect', () => ({ fn: (a, i) => ops.indexSelect(a, 0, i!), inputs: [g(randn([2, 3])), idx([1, -1, 0])] })],
  [
    'scatterAdd',
    () => ({ fn: (a, s, i) => ops.scatterAdd(a, 1, i!, s), inputs: [g(randn([2, 3])), g(randn([2, 2])), idx([0, 2, 2, 2], [2, 2])] }),
  ],
  ['cat', () => ({ fn: (a, b) => ops.cat([a, b], 1), inputs: [g(randn([2, 1])), g(randn([2, 3]))] })],
  ['stack', () => ({ fn: (a, b) => ops.stack([a, b], -1), inputs: [g(randn([2, 3])), g(randn([2, 3]))] })],
  [
    'conv2d',
    () => ({
      fn: (x, w, b) => ops.conv2d(x, w, b, [2, 1], [1, 0], [1, 2], 2),
      inputs: [g(randn([2, 4, 5, 6])), g(randn([4, 2, 3, 2])), g(randn([4]))],
    }),
  ],
  ['conv1d', () => ({ fn: (x, w) => ops.conv1d(x, w, null, 1, 'same'), inputs: [g(randn([2, 3, 7])), g(randn([2, 3, 3]))] })],
  ['maxPool2d', () => ({ fn: (x) => ops.maxPool2d(x, 3, 2, 1), inputs: [g(randn([1, 2, 5, 5]))] })],
  ['avgPool2d', () => ({ fn: (x) => ops.avgPool2d(x, 3, 2, 1, false, false), inputs: [g(randn([2, 5, 5]))] })],
  ['adaptiveAvgPool2d', () => ({ fn: (x) => ops.adaptiveAvgPool2d(x, [2, 3]), inputs: [g(randn([1, 2, 5, 5]))] })],
  ['layerNorm', () => ({ fn: (x, w, b) => ops.layerNorm(x, [4], w, b), inputs: [g(randn([3, 4])), g(randn([4])), g(randn([4]))] })],
  [
    'batchNorm',
    () => ({
      fn: (x, w, b) => ops.batchNorm(x, null, null, w, b, true),
      inputs: [g(randn([4, 3, 2])), g(randn([3])), g(randn([3]))],
    }),
  ],
  ['embedding', () => ({ fn: (w, i) => ops.embedding(i!, w), inputs: [g(randn([3, 2])), idx([0, 2, 2, 1], [2, 2])] })],
  [
    'embeddingBag',
    () => ({
      fn: (w, psw, i, offsets) => ops.embeddingBag(i!, w, offsets, 'sum', psw),
      inputs: [g(randn([3, 2])), g(randn([4])), idx([0, 2, 1, 1]), idx([0, 1])],
    }),
  ],
  ['dropout', () => ({ fn: (x) => (manualSeed(3), ops.dropout(x, 0.5)), inputs: [g(randn([8]))] })],
  ['dropoutMask', () => ({ fn: (x) => (manualSeed(3), ops.dropout(x, 0.3)), inputs: [g(randn([8]))] })],
  ['nllLoss', () => ({ fn: (x, t) => ops.nllLoss(x, t!, null, -100), inputs: [g(randn([3, 3])), idx([0, 2, -100])] })],
  [
    'crossEntropy',
    () => ({
      fn: (x, w, t) => ops.crossEntropy(x, t!, w),
      inputs: [g(randn([2, 3, 2])), pos([3]), idx([1, 0, 2, 1], [2, 2])],
    }),
  ],
  [
    'crossEntropy (label smoothing)',
    () => ({ fn: (x, t) => ops.crossEntropy(x, t!, null, -100, 'mean', 0.1), inputs: [g(randn([2, 3])), idx([1, 0])] }),
  ],
  ['mseLoss', () => ({ fn: (a, b) => ops.mseLoss(a, b, 'sum'), inputs: [g(randn([2, 3])), g(randn([2, 3]))] })],
  // The native and backward ops the nn, convolution and pooling rules are written with (issue 15, item 1).
  ['maxPool2dWithIndices', () => ({ fn: (x) => ops.maxPool2dWithIndices(x, 2, 1)[0]!, inputs: [g(randn([1, 2, 4, 4]))] })],
  [
    'maxPool2dWithIndicesBackward',
    () => {
      const x = randn([1, 2, 5, 5]);
      const indices = ops.maxPool2dWithIndices(x, 3, 2, 1)[1]!;
      return {
        fn: (go, x, i) => ops.maxPool2dWithIndicesBackward(go, x!, 3, 2, 1, 1, false, i!),
        inputs: [g(randn([1, 2, 3, 3])), x, indices],
      };
    },
  ],
  [
    'avgPool2dBackward',
    () => ({ fn: (go, x) => ops.avgPool2dBackward(go, x!, 3, 2, 1, false, false, null), inputs: [g(randn([2, 3, 3])), randn([2, 5, 5])] }),
  ],
  [
    'adaptiveAvgPool2dBackward',
    () => ({ fn: (go, x) => ops.adaptiveAvgPool2dBackward(go, x!), inputs: [g(randn([1, 2, 2, 3])), randn([1, 2, 5, 5])] }),
  ],
  [
    'nativeLayerNorm',
    () => ({
      fn: (x, w, b) => ops.nativeLayerNorm(x, [3, 4], w, b, 1e-5)[0]!,
      inputs: [g(randn([2, 3, 4])), g(randn([3, 4])), g(randn([3, 4]))],
    }),
  ],
  [
    'nativeBatchNorm',
    () => ({
      fn: (x, w, b) => ops.nativeBatchNorm(x, w, b, null, null, true, 0.1, 1e-5)[0]!,
      inputs: [g(randn([4, 3, 2])), g(randn([3])), g(randn([3]))],
    }),
  ],
  [
    'nativeBatchNorm (evaluation)',
    () => ({
      fn: (x, w, b, mean, variance) => ops.nativeBatchNorm(x, w, b, mean, variance, false, 0.1, 1e-5)[0]!,
      inputs: [g(randn([2, 3, 2, 2])), g(randn([3])), g(randn([3])), randn([3]), rand([3]).add(0.5)],
    }),
  ],
  ['nativeDropout', () => ({ fn: (x) => (manualSeed(3), ops.nativeDropout(x, 0.4, true)[0]!), inputs: [g(randn([8]))] })],
  [
    'nativeDropoutBackward',
    () => ({ fn: (go, m) => ops.nativeDropoutBackward(go, m!, 2), inputs: [g(randn([2, 3])), rand([2, 3]).lt(0.5)] }),
  ],
  [
    'nllLossForward',
    () => ({ fn: (x, w, t) => ops.nllLossForward(x, t!, w, 'mean', 1)[0]!, inputs: [g(randn([3, 3])), pos([3]), idx([0, 1, 2])] }),
  ],
  [
    'nllLossForward (none, spatial)',
    () => ({ fn: (x, t) => ops.nllLossForward(x, t!, null, 'none', -100)[0]!, inputs: [g(randn([2, 3, 2])), idx([1, 0, 2, 2], [2, 2])] }),
  ],
  [
    'embeddingDenseBackward',
    () => ({ fn: (go, i) => ops.embeddingDenseBackward(go, i!, 4, 2), inputs: [g(randn([2, 2, 3])), idx([0, 2, 3, 0], [2, 2])] }),
  ],
  [
    'embeddingDenseBackward (scaleGradByFreq)',
    () => ({
      fn: (go, i) => ops.embeddingDenseBackward(go, i!, 4, null, true),
      inputs: [g(randn([2, 2, 3])), idx([0, 2, 0, 0], [2, 2])],
    }),
  ],
];

/** 1, 2, …, n as float32: made by `arange`, a factory tracers record, so a traced case knows it. */
function arangeF(n: number): Tensor {
  return arange(1, n + 1, 1, { dtype: 'float32' });
}

/** Ops with a gradient rule, or built from ops that have one. Non-differentiable ops are listed apart. */
export const NOT_DIFFERENTIABLE = new Set(['eq', 'ne', 'lt', 'le', 'gt', 'ge', 'argmax']);

/**
 * Backward ops without a gradient rule of their own (PyTorch's double backward): kiln runs backward passes
 * without recording them, so nothing differentiates these yet.
 */
for (const op of [
  'convolutionBackward',
  'nativeLayerNormBackward',
  'nativeBatchNormBackward',
  'embeddingBagBackward',
  'nllLossBackward',
  'nllLossWeightBackward',
]) {
  NOT_DIFFERENTIABLE.add(op);
}
