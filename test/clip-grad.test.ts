import test from 'ava';
import { ValueError, nn, tensor, zeros } from '../src/index.js';
import { closeTo, decode, golden, numbersClose } from './train-golden.js';

/**
 * nn.utils.clipGradNorm_ and clipGradValue_ against PyTorch 1.13 (scripts/golden_train.py): the total norm
 * returned and every gradient after clipping, within 1e-5, for the L2, L1, infinity and a fractional norm,
 * below and above maxNorm, with a parameter that has no gradient; then bad input.
 */

const { clipGradNorm_, clipGradValue_ } = nn.utils;

/** Zero parameters of the gradients' shapes holding copies of them (null: no gradient). */
function withGrads(grads: ({ shape: number[]; data: number[] } | null)[], shapes: number[][]) {
  return shapes.map((shape, i) => {
    const p = new nn.Parameter(zeros(shape));
    p.grad = grads[i] ? decode(grads[i]) : null;
    return p;
  });
}

for (const c of golden.clipGradNorm) {
  test(`clipGradNorm_ matches PyTorch's clip_grad_norm_: ${c.name}`, (t) => {
    const params = withGrads(c.grads, [[4, 3], [6], [2, 2, 2]]);
    const normType = c.normType === 'inf' ? Infinity : c.normType;
    const total = clipGradNorm_(params, c.maxNorm, { normType });
    t.deepEqual(total.shape, []);
    t.is(total.dtype, 'float32');
    numbersClose(t, [total.item()], [c.totalNorm], 'total norm');
    params.forEach((p, i) => {
      const want = c.gradsAfter[i];
      if (want === null) t.is(p.grad, null, `parameter ${i} still has no gradient`);
      else closeTo(t, p.grad!, want!, `gradient ${i}`);
    });
  });
}

for (const c of golden.clipGradValue) {
  test(`clipGradValue_ matches PyTorch's clip_grad_value_: ${c.name}`, (t) => {
    const params = withGrads(
      c.grads,
      c.grads.map((g) => g.shape),
    );
    t.is(clipGradValue_(params, c.clipValue), undefined);
    params.forEach((p, i) => closeTo(t, p.grad!, c.gradsAfter[i]!, `gradient ${i}`));
  });
}

test('clipGradNorm_ takes a single Tensor, and gives 0 when no parameter has a gradient', (t) => {
  const p = new nn.Parameter(tensor([3, 4]));
  p.grad = tensor([3, 4]);
  t.is(clipGradNorm_(p, 1).item(), 5);
  t.true(Math.abs((p.grad.toArray() as number[])[0]! - 0.6) < 1e-6);
  t.is(clipGradNorm_([new nn.Parameter(tensor([1]))], 1).item(), 0);
});

test('clipGradNorm_ with errorIfNonfinite refuses a NaN or infinite norm and leaves the gradients alone', (t) => {
  const p = new nn.Parameter(tensor([1, 2]));
  p.grad = tensor([Infinity, 1]);
  t.throws(() => clipGradNorm_([p], 1, { errorIfNonfinite: true }), {
    instanceOf: ValueError,
    message: /clipGradNorm_: the total norm of order 2 of the gradients is Infinity, so they cannot be clipped/,
  });
  t.deepEqual(p.grad.toArray(), [Infinity, 1]);
  // without the flag, PyTorch scales by the infinite norm anyway: ∞·(1/∞) is NaN and 1·0 is 0
  t.is(clipGradNorm_([p], 1).item(), Infinity);
  t.deepEqual(p.grad.toArray(), [NaN, 0]);
});

test('clipGradNorm_ and clipGradValue_ reject bad arguments with ValueErrors naming them', (t) => {
  const p = new nn.Parameter(tensor([1]));
  p.grad = tensor([2]);
  t.throws(() => clipGradNorm_([p], -1), { instanceOf: ValueError, message: 'clipGradNorm_: maxNorm must be a number ≥ 0, got -1' });
  t.throws(() => clipGradNorm_([p], 1, { normType: NaN }), { message: 'clipGradNorm_: normType must be a number, got NaN' });
  t.throws(() => clipGradNorm_([p], 1, { norm: 1 } as never), { message: /clipGradNorm_: unknown option 'norm'/ });
  t.throws(() => clipGradNorm_([p, 3] as never, 1), { message: 'clipGradNorm_: parameters[1] must be a Tensor, got 3' });
  t.throws(() => clipGradNorm_(5 as never, 1), { message: 'clipGradNorm_: parameters must be a Tensor or an iterable of Tensors, got 5' });
  t.throws(() => clipGradValue_([p], -0.5), {
    instanceOf: ValueError,
    message: 'clipGradValue_: clipValue must be a number ≥ 0, got -0.5',
  });
  t.deepEqual(p.grad.toArray(), [2], 'nothing clipped by a refused call');
});
