import test from 'ava';
import { AutogradError, DTypeError, noGrad, ones, randn, tensor, zeros } from '../src/index.js';

test('backward on a scalar fills leaf grads; a second backward accumulates', (t) => {
  const x = tensor([1, 2, 3], { requiresGrad: true });
  const y = x.mul(x).sum();
  y.backward();
  t.deepEqual(x.grad!.toArray(), [2, 4, 6]);
  x.mul(3).sum().backward();
  t.deepEqual(x.grad!.toArray(), [5, 7, 9]);
  t.true(x.isLeaf);
  t.false(y.isLeaf);
});

test('backward with an explicit grad, and its errors', (t) => {
  const x = tensor(
    [
      [1, 2],
      [3, 4],
    ],
    { requiresGrad: true },
  );
  const y = x.mul(2);
  y.backward(
    tensor([
      [1, 0],
      [0, 1],
    ]),
  );
  t.deepEqual(x.grad!.toArray(), [
    [2, 0],
    [0, 2],
  ]);
  const err = t.throws(() => x.mul(2).backward(), { instanceOf: AutogradError });
  t.regex(err!.message, /implicitly created only for one-element outputs, got shape \[2, 2\]/);
  t.throws(() => x.mul(2).backward(ones([3])), {
    instanceOf: AutogradError,
    message: /grad has shape \[3\], but the output has shape \[2, 2\]/,
  });
  t.throws(() => tensor([1]).backward(), { instanceOf: AutogradError, message: /does not require grad/ });
});

test('a tensor used twice gets both contributions (diamond graph)', (t) => {
  const x = tensor([3], { requiresGrad: true });
  const a = x.mul(2);
  const b = x.pow(2);
  a.add(b).add(a.mul(b)).sum().backward(); // d/dx (2x + x² + 2x³) = 2 + 2x + 6x²
  t.deepEqual(x.grad!.toArray(), [2 + 6 + 54]);
});

test('broadcasting reduces gradients to each input shape', (t) => {
  const a = randn([3, 1], { requiresGrad: true });
  const b = randn([4], { requiresGrad: true });
  a.add(b).sum().backward();
  t.deepEqual(a.grad!.toArray(), [[4], [4], [4]]);
  t.deepEqual(b.grad!.toArray(), [3, 3, 3, 3]);
});

test('noGrad, detach and requiresGrad_', (t) => {
  const x = tensor([1, 2], { requiresGrad: true });
  const y = noGrad(() => x.mul(2));
  t.false(y.requiresGrad);
  const d = x.detach();
  t.false(d.requiresGrad);
  t.is(d._storage, x._storage);
  const z = zeros([2]);
  t.false(z.requiresGrad);
  z.requiresGrad_();
  t.true(z.requiresGrad);
  t.throws(() => x.mul(2).requiresGrad_(false), { instanceOf: AutogradError, message: /can only change the flag of leaf tensors/ });
  t.throws(() => zeros([2], { dtype: 'int32' }).requiresGrad_(), {
    instanceOf: DTypeError,
    message: /only float32 tensors can require gradients/,
  });
});

test('retainGrad keeps the gradient of a non-leaf tensor', (t) => {
  const x = tensor([1, 2], { requiresGrad: true });
  const h = x.mul(3).retainGrad();
  h.mul(h).sum().backward();
  t.deepEqual(h.grad!.toArray(), [6, 12]);
  t.deepEqual(x.grad!.toArray(), [18, 36]);
});

test('gradients flow through views (transpose, narrow, expand, select)', (t) => {
  const x = tensor(
    [
      [1, 2, 3],
      [4, 5, 6],
    ],
    { requiresGrad: true },
  );
  x.transpose(0, 1)
    .narrow(0, 1, 2)
    .mul(
      tensor([
        [1, 10],
        [100, 1000],
      ]),
    )
    .sum()
    .backward();
  t.deepEqual(x.grad!.toArray(), [
    [0, 1, 100],
    [0, 10, 1000],
  ]);
  x.grad = null;
  x.select(1, 0).unsqueeze(1).expand([2, 4]).sum().backward();
  t.deepEqual(x.grad!.toArray(), [
    [4, 0, 0],
    [4, 0, 0],
  ]);
});

test('in-place ops on non-leaf tensors are differentiated', (t) => {
  const x = tensor([1, 2, 3], { requiresGrad: true });
  const y = x.mul(2);
  y.add_(1).mul_(x); // y = (2x + 1) * x → dy/dx = 4x + 1
  t.regex(y.gradFn!.name, /mulBackward/);
  y.sum().backward();
  t.deepEqual(x.grad!.toArray(), [5, 9, 13]);
});

test('in-place writes through a view update the base history (CopySlices)', (t) => {
  const w = tensor([10, 20], { requiresGrad: true });
  const base = zeros([2, 3]);
  base.narrow(1, 1, 1).copy_(w.unsqueeze(1)); // base[:, 1] = w
  t.true(base.requiresGrad);
  t.is(base.gradFn!.name, 'CopySlices');
  base
    .mul(
      tensor([
        [1, 2, 3],
        [4, 5, 6],
      ]),
    )
    .sum()
    .backward();
  t.deepEqual(w.grad!.toArray(), [2, 5]);

  // a view of a non-leaf: the overwritten region gets no gradient from the base's old value
  const x = tensor([1, 2, 3, 4], { requiresGrad: true });
  const h = x.mul(1);
  h.narrow(0, 0, 2).mul_(10);
  h.sum().backward();
  t.deepEqual(x.grad!.toArray(), [10, 10, 1, 1]);
  t.deepEqual(h.toArray(), [10, 20, 3, 4]);
});

test('in-place on a leaf that requires grad, or a view of one, is refused', (t) => {
  const x = tensor([1, 2], { requiresGrad: true });
  t.throws(() => x.add_(1), {
    instanceOf: AutogradError,
    message: /add_: a leaf tensor that requires grad is being used in an in-place operation/,
  });
  t.throws(() => x.narrow(0, 0, 1).mul_(2), { instanceOf: AutogradError, message: /view of a leaf tensor/ });
  noGrad(() => x.add_(1)); // allowed without recording, like PyTorch's torch.no_grad()
  t.deepEqual(x.toArray(), [2, 3]);
});

test('modifying a tensor saved for backward raises a version error', (t) => {
  const x = tensor([1, 2], { requiresGrad: true });
  const y = x.exp(); // exp saves its output
  const z = y.sum();
  noGrad(() => y.mul_(2));
  const err = t.throws(() => z.backward(), { instanceOf: AutogradError });
  t.true(err!.message.length > 0);
  const a = x.exp();
  const b = a.mul(2);
  a.add_(1);
  const err2 = t.throws(() => a.mul(b).sum().backward(), { instanceOf: AutogradError });
  t.regex(err2!.message, /modified by an in-place operation: float32 \[2\] saved by expBackward is at version 1; expected version 0/);
});

test('in-place on a saved input is fine when the op did not save it (add)', (t) => {
  const x = tensor([1, 2], { requiresGrad: true });
  const h = x.mul(1);
  const y = h.add(1); // add saves nothing
  h.add_(5);
  y.sum().backward();
  t.deepEqual(x.grad!.toArray(), [1, 1]);
});
