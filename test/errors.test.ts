import test from 'ava';
import {
  AutogradError,
  DTypeError,
  F,
  IndexError,
  KilnError,
  ShapeError,
  StateDictError,
  ValueError,
  nn,
  ops,
  tensor,
  testing,
  zeros,
} from '../src/index.js';

/** One representative failure per error class, checking the class, its name and that the message names the op and values. */
const cases: [string, new (...a: never[]) => KilnError, () => unknown, RegExp][] = [
  [
    'ShapeError',
    ShapeError,
    () => zeros([2, 3]).reshape([4, 2]),
    /^reshape: shape \[4, 2\] is invalid for input of size 6 \(shape \[2, 3\]\)$/,
  ],
  ['DTypeError', DTypeError, () => ops.gather(zeros([2]), 0, zeros([2])), /^gather: index must be an int32 tensor, got float32$/],
  [
    'IndexError',
    IndexError,
    () => zeros([2, 3]).transpose(0, 2),
    /^transpose: dim 2 is out of range for a tensor with 2 dims \(expected -2\.\.1\)$/,
  ],
  [
    'ValueError',
    ValueError,
    () => F.conv2d(zeros([1, 1, 4, 4]), zeros([1, 1, 3, 3]), null, { strid: 2 } as never),
    /^conv2d: unexpected option 'strid' \(expected one of input, weight, bias, stride, padding, dilation, groups\)$/,
  ],
  ['AutogradError', AutogradError, () => tensor([1]).backward(), /^backward: this \[1\] tensor does not require grad/],
  [
    'StateDictError',
    StateDictError,
    () => new nn.Linear(1, 1).loadStateDict({}),
    /^Error\(s\) in loading state_dict for Linear:\n\tMissing key\(s\) in state_dict: "weight", "bias"\.$/,
  ],
  [
    'GradcheckError',
    testing.GradcheckError,
    () => testing.gradcheck((x) => x.mul(x.detach()), [tensor([1], { requiresGrad: true })]),
    /^gradcheck\(.*\): input 0 \[1\] element 0/,
  ],
];

for (const [name, cls, fn, message] of cases) {
  test(`${name} is a KilnError with a precise message`, (t) => {
    const err = t.throws(fn, { instanceOf: cls });
    t.true(err instanceof KilnError);
    t.is(err!.name, name);
    t.regex(err!.message, message);
  });
}

test('op arguments are type-checked against the schema', (t) => {
  t.throws(() => ops.add(zeros([1]), 'x' as never), {
    instanceOf: DTypeError,
    message: "add: argument 'other' must be a Tensor or a number, got 'x'",
  });
  t.throws(() => ops.sum(zeros([1]), 0.5), {
    instanceOf: ValueError,
    message: "sum: argument 'dim' must be an integer or an array of integers, got 0.5",
  });
  t.throws(() => (ops.softmax as (...a: unknown[]) => unknown)(zeros([1])), {
    message: "softmax: missing required argument 'dim' (softmax(Tensor input, int dim))",
  });
  t.throws(() => F.crossEntropy(zeros([2, 3]), tensor([0, 3], { dtype: 'int32' })), {
    instanceOf: IndexError,
    message: 'crossEntropy: target 3 is out of bounds for 3 classes',
  });
  t.throws(() => F.crossEntropy(zeros([2, 3]), tensor([0, 1, 2], { dtype: 'int32' })), {
    instanceOf: ShapeError,
    message: 'crossEntropy: expected target of shape [2] for input [2, 3], got [3]',
  });
});
