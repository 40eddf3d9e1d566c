import test from 'ava';
import { DTypeError, IndexError, ShapeError, Tensor, ValueError, manualSeed, noGrad, ops, randn, tensor } from '../src/index.js';
import { symbolicTrace } from '../src/fx.js';
import { kernelsBackend } from '../src/kernels/index.js';
import { close, same } from './helpers.js';

/**
 * The fused backward ops (PyTorch's threshold_backward, tanh_backward, sigmoid_backward, gelu_backward) and
 * scatterAdd (issue 15, item 1): the gradient rules of relu/tanh/sigmoid/gelu call them, each is one kernel
 * pass eagerly and lowers to the element-wise primitives when compiled.
 */

function compiledEqualsEager(t: import('ava').ExecutionContext, fn: (g: Tensor, v: Tensor) => Tensor, g: Tensor, v: Tensor, what: string) {
  const program = kernelsBackend(symbolicTrace(fn));
  noGrad(() => close(t, (program as unknown as typeof fn)(g, v), fn(g, v), what));
  t.regex(program.pprint(), /: 1 kernel, 0 eager steps/, `${what}: ${program.pprint()}`);
}

test('the fused backward ops lower to one kernel that equals the eager result', (t) => {
  manualSeed(1);
  const g = randn([3, 5]);
  const x = randn([3, 5]).mul(3);
  compiledEqualsEager(t, (a, b) => ops.thresholdBackward(a, b, 0.5).mul(1), g, x, 'thresholdBackward');
  compiledEqualsEager(t, (a, b) => ops.tanhBackward(a, b.tanh()).mul(1), g, x, 'tanhBackward');
  compiledEqualsEager(t, (a, b) => ops.sigmoidBackward(a, b.sigmoid()).mul(1), g, x, 'sigmoidBackward');
  compiledEqualsEager(t, (a, b) => ops.geluBackward(a, b).mul(1), g, x, 'geluBackward');
  compiledEqualsEager(t, (a, b) => ops.geluBackward(a, b, 'tanh').mul(1), g, x, 'geluBackward tanh');
});

test("relu, tanh, sigmoid and gelu gradients are their fused backward ops' values", (t) => {
  manualSeed(2);
  const x = randn([7]).mul(2);
  const g = randn([7]);
  const cases: [(x: Tensor) => Tensor, (g: Tensor) => Tensor][] = [
    [(v) => v.relu(), (gg) => ops.thresholdBackward(gg, x.relu(), 0)],
    [(v) => v.tanh(), (gg) => ops.tanhBackward(gg, x.tanh())],
    [(v) => v.sigmoid(), (gg) => ops.sigmoidBackward(gg, x.sigmoid())],
    [(v) => ops.gelu(v), (gg) => ops.geluBackward(gg, x)],
    [(v) => ops.gelu(v, 'tanh'), (gg) => ops.geluBackward(gg, x, 'tanh')],
  ];
  for (const [f, fused] of cases) {
    const leaf = x.clone().requiresGrad_(true);
    f(leaf).backward(g);
    same(t, leaf.grad!, fused(g));
  }
});

test('thresholdBackward passes the gradient where self > threshold (relu at 0 gets none, as in PyTorch)', (t) => {
  const out = ops.thresholdBackward(tensor([1, 2, 3, 4]), tensor([-1, 0, 0.5, NaN]), 0);
  t.deepEqual(Array.from(out.data()), [0, 0, 3, 0]);
});

test('geluBackward refuses an unknown approximation', (t) => {
  t.throws(() => ops.geluBackward(tensor([1]), tensor([1]), 'fast' as 'tanh'), {
    instanceOf: ValueError,
    message: "geluBackward: approximate must be 'none' or 'tanh', got 'fast'",
  });
});

test('scatterAdd adds src at index along dim into a copy of input (torch.scatter_add)', (t) => {
  const x = tensor([
    [1, 2, 3],
    [4, 5, 6],
  ]);
  const out = x.scatterAdd(
    1,
    tensor(
      [
        [0, 0],
        [2, 1],
      ],
      { dtype: 'int32' },
    ),
    tensor([
      [10, 20],
      [30, 40],
    ]),
  );
  t.deepEqual(out.toArray(), [
    [31, 2, 3],
    [4, 45, 36],
  ]);
  t.deepEqual(x.toArray(), [
    [1, 2, 3],
    [4, 5, 6],
  ]);
});

test('scatterAdd errors name the op and the offending values', (t) => {
  const x = randn([2, 3]);
  const idx = (v: number[][]) => tensor(v, { dtype: 'int32' });
  t.throws(() => x.scatterAdd(1, tensor([[0]]), randn([1, 1])), {
    instanceOf: DTypeError,
    message: 'scatterAdd: index must be an int32 tensor, got float32',
  });
  t.throws(() => x.scatterAdd(1, idx([[3]]), randn([1, 1])), {
    instanceOf: IndexError,
    message: 'scatterAdd: index 3 is out of bounds for dim 1 with size 3',
  });
  t.throws(() => x.scatterAdd(1, idx([[0, 1]]), randn([1, 1])), {
    instanceOf: ShapeError,
    message: /^scatterAdd: index \[1, 2\] is larger than src \[1, 1\]/,
  });
  t.throws(() => x.scatterAdd(0, tensor([0], { dtype: 'int32' }), randn([1])), {
    instanceOf: ShapeError,
    message: /^scatterAdd: index \[1\], src \[1\] and input \[2, 3\] must have the same number of dims/,
  });
});
