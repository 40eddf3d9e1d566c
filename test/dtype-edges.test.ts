import test from 'ava';
import { F, ShapeError, compile, noGrad, ops, randn, tensor, full, type Tensor } from '../src/index.js';
import { functionParams } from '../src/analysis/signature.js';

/**
 * Edge cases a review of the op-table change found, each a silently wrong result or an unclear error before:
 * bool results computed by float primitives, NaN cast to bool, `t()` beyond 2-D, an empty inner dim with a 2-D
 * right operand, a bias of the wrong shape in `linear`, and a `/` after `x++` in a default parameter value.
 */

const values = (x: Tensor) => Array.from(x.data());

test('compiled arithmetic on bool tensors holds 0/1 like eager (bool + bool is logical or), on every call', (t) => {
  const fn = (a: Tensor, b: Tensor) => a.gt(0).add(b.gt(0)).float().mul(3);
  const a = tensor([1, -1, 1, -1]);
  const b = tensor([1, 1, -1, -1]);
  const eager = values(fn(a, b));
  t.deepEqual(eager, [3, 3, 3, 0]);
  const compiled = compile(fn);
  for (let call = 0; call < 3; call++) t.deepEqual(values(noGrad(() => compiled(a, b) as Tensor)), eager, `call ${call}`);
});

test('NaN cast to bool is true, eagerly (toDType, tensor, full) and compiled, as in PyTorch', (t) => {
  const x = tensor([NaN, 0, -0, 2]);
  t.deepEqual(values(x.bool()), [1, 0, 0, 1]);
  t.deepEqual(values(tensor([NaN, 0], { dtype: 'bool' })), [1, 0]);
  t.deepEqual(values(full([2], NaN, { dtype: 'bool' })), [1, 1]);
  const compiled = compile((v: Tensor) => v.mul(1).bool().float());
  for (let call = 0; call < 2; call++) t.deepEqual(values(noGrad(() => compiled(x) as Tensor)), [1, 0, 0, 1]);
});

test('t() on a tensor of more than 2 dims is a ShapeError, as in PyTorch (not a silent transpose of dims 0 and 1)', (t) => {
  t.throws(() => randn([2, 3, 4]).t(), { instanceOf: ShapeError, message: /t: expects a tensor with <= 2 dimensions, but self is 3-D/ });
  t.deepEqual(randn([2, 3]).t().shape, [3, 2]);
  t.deepEqual(randn([3]).t().shape, [3]);
});

test('matmul with an empty inner dim and a 2-D right operand gives zeros, as in PyTorch', (t) => {
  const y = ops.matmul(randn([2, 3, 0]), randn([0, 4]));
  t.deepEqual(y.shape, [2, 3, 4]);
  t.true(values(y).every((v) => v === 0));
  t.deepEqual(F.linear(randn([2, 3, 0]), randn([5, 0])).shape, [2, 3, 5]);
});

test('linear with a bias of the wrong shape names linear, the weight and the bias', (t) => {
  t.throws(() => F.linear(randn([2, 3]), randn([5, 3]), randn([4])), {
    instanceOf: ShapeError,
    message: 'linear: bias must be [5] for weight [5, 3], got [4]',
  });
});

test('parameter names: a / after x++ in a default value divides (it was read as a regex, losing every name)', (t) => {
  let x = 4;
  const f = function (a = x++ / 2, b: number) {
    return [a, b, x];
  };
  t.deepEqual(
    functionParams(f).map((p) => p.name),
    ['a', 'b'],
  );
  // source that cannot be read (a bound function) gives argN names, one per declared parameter
  const g = function (p: number, q: number) {
    return p + q;
  }.bind(null);
  t.deepEqual(
    functionParams(g).map((p) => p.name),
    ['arg0', 'arg1'],
  );
});
