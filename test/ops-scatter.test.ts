import test from 'ava';
import { DTypeError, IndexError, ShapeError, ops, randn, tensor } from '../src/index.js';

/** sliceScatter and selectScatter (PyTorch's slice_scatter/select_scatter), the out-of-place writes functionalisation uses. */

test('sliceScatter writes src into a copy of the slice and leaves input as it was (torch.slice_scatter)', (t) => {
  const x = tensor([
    [0, 0, 0, 0],
    [0, 0, 0, 0],
  ]);
  const out = x.sliceScatter(
    tensor([
      [1, 2],
      [3, 4],
    ]),
    1,
    0,
    null,
    2,
  );
  t.deepEqual(out.toArray(), [
    [1, 0, 2, 0],
    [3, 0, 4, 0],
  ]);
  t.deepEqual(x.toArray(), [
    [0, 0, 0, 0],
    [0, 0, 0, 0],
  ]);
  t.not(out._storage, x._storage);
});

test('selectScatter writes src into a copy at index along dim, negative index from the end (torch.select_scatter)', (t) => {
  const out = ops.selectScatter(
    tensor([
      [0, 0],
      [0, 0],
      [0, 0],
    ]),
    tensor([5, 6]),
    0,
    -1,
  );
  t.deepEqual(out.toArray(), [
    [0, 0],
    [0, 0],
    [5, 6],
  ]);
});

test('sliceScatter and selectScatter gradients: the slice of grad for src, grad with the slice zeroed for input', (t) => {
  const x = randn([2, 4]).requiresGrad_(true);
  const src = randn([2, 2]).requiresGrad_(true);
  const g = tensor([
    [1, 2, 3, 4],
    [5, 6, 7, 8],
  ]);
  ops.sliceScatter(x, src, 1, 1, 3).backward(g);
  t.deepEqual(x.grad!.toArray(), [
    [1, 0, 0, 4],
    [5, 0, 0, 8],
  ]);
  t.deepEqual(src.grad!.toArray(), [
    [2, 3],
    [6, 7],
  ]);
  const y = randn([2, 4]).requiresGrad_(true);
  const row = randn([4]).requiresGrad_(true);
  ops.selectScatter(y, row, 0, 1).backward(g);
  t.deepEqual(y.grad!.toArray(), [
    [1, 2, 3, 4],
    [0, 0, 0, 0],
  ]);
  t.deepEqual(row.grad!.toArray(), [5, 6, 7, 8]);
});

test('sliceScatter and selectScatter refuse a src of the wrong shape or dtype, naming both', (t) => {
  const x = randn([2, 4]);
  t.throws(() => x.sliceScatter(randn([2, 3]), 1, 0, 2), {
    instanceOf: ShapeError,
    message: 'sliceScatter: expected src to have the size of the slice of input, [2, 2], got [2, 3]',
  });
  t.throws(() => x.selectScatter(randn([2]), 0, 0), {
    instanceOf: ShapeError,
    message: 'selectScatter: expected src to have the size of the slice of input, [4], got [2]',
  });
  t.throws(() => x.selectScatter(tensor([1, 2, 3, 4], { dtype: 'int32' }), 0, 0), {
    instanceOf: DTypeError,
    message: 'selectScatter: src (int32) must have the dtype of input (float32)',
  });
  t.throws(() => x.selectScatter(randn([4]), 0, 2), {
    instanceOf: IndexError,
    message: /^select: index 2 is out of bounds for dim 0 with size 2/,
  });
  t.throws(() => tensor(1).sliceScatter(tensor(1)), { instanceOf: IndexError, message: 'sliceScatter: cannot slice a 0-d tensor' });
});
