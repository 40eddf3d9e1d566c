import test from 'ava';
import { AutogradError, TraceError, randn, tensor } from '../src/index.js';
import { setTraceDispatch, type TraceDispatch } from '../src/runtime/dispatch.js';

/** t_, transpose_ and unsqueeze_: in-place metadata mutation (same storage, new shape and strides, a version bump). */

test('t_ transposes in place: same object and storage, new shape and strides, version bumped', (t) => {
  const x = tensor([
    [1, 2, 3],
    [4, 5, 6],
  ]);
  const storage = x._storage;
  const before = storage.version;
  t.is(x.t_(), x);
  t.is(x._storage, storage);
  t.deepEqual(x.shape, [3, 2]);
  t.deepEqual(x.strides, [1, 3]);
  t.deepEqual(x.toArray(), [
    [1, 4],
    [2, 5],
    [3, 6],
  ]);
  t.is(storage.version, before + 1);
});

test('transpose_ and unsqueeze_ change the layout in place', (t) => {
  const x = randn([2, 3, 4]);
  const want = x.transpose(0, 2).toArray();
  x.transpose_(0, 2);
  t.deepEqual(x.shape, [4, 3, 2]);
  t.deepEqual(x.toArray(), want);
  const y = tensor([1, 2, 3]);
  y.unsqueeze_(-1);
  t.deepEqual(y.shape, [3, 1]);
  t.deepEqual(y.toArray(), [[1], [2], [3]]);
});

test('gradients flow through an in-place metadata op on a non-leaf', (t) => {
  const a = randn([2, 3]).requiresGrad_(true);
  const b = a.mul(2);
  b.t_().unsqueeze_(0);
  t.deepEqual(b.shape, [1, 3, 2]);
  b.mul(tensor([1, 10]))
    .sum()
    .backward();
  t.deepEqual(a.grad!.toArray(), [
    [2, 2, 2],
    [20, 20, 20],
  ]);
});

test('a leaf that requires grad refuses in-place metadata ops, as PyTorch', (t) => {
  const a = randn([2, 3]).requiresGrad_(true);
  t.throws(() => a.t_(), {
    instanceOf: AutogradError,
    message: 't_: a leaf Variable that requires grad is being used in an in-place operation.',
  });
  t.throws(() => a.unsqueeze_(0), { instanceOf: AutogradError, message: /^unsqueeze_: a leaf Variable/ });
  t.deepEqual(a.shape, [2, 3]);
});

test('a saved tensor changed by t_ is caught at backward', (t) => {
  const a = randn([2, 2]).requiresGrad_(true);
  const b = a.mul(1);
  const c = b.mul(b);
  b.t_();
  t.throws(() => c.sum().backward(), { instanceOf: AutogradError, message: /modified by an in-place operation/ });
});

test('t_ refuses a tensor of more than 2 dims and a bad dim, leaving it unchanged', (t) => {
  const x = randn([2, 3, 4]);
  t.throws(() => x.t_(), { message: /^t: expects a tensor with <= 2 dimensions/ });
  t.throws(() => x.unsqueeze_(5), { message: /unsqueeze/ });
  t.deepEqual(x.shape, [2, 3, 4]);
});

test('in-place metadata ops under a tracer throw a clear error rather than record a stale layout', (t) => {
  const x = randn([2, 3]);
  const tracer: TraceDispatch = { symbolic: false, isTraced: () => false, callOp: () => null };
  const prev = setTraceDispatch(tracer);
  try {
    t.throws(() => x.t_(), { instanceOf: TraceError, message: /^t_: in-place metadata mutation cannot be traced by this tracer/ });
  } finally {
    setTraceDispatch(prev);
  }
});
