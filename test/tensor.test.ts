import test from 'ava';
import {
  arange,
  full,
  ones,
  ops,
  rand,
  randn,
  manualSeed,
  tensor,
  zeros,
  Tensor,
  ShapeError,
  DTypeError,
  IndexError,
} from '../src/index.js';

test('tensor() infers shape and dtype from nested arrays and typed arrays', (t) => {
  const a = tensor([
    [1, 2, 3],
    [4, 5, 6],
  ]);
  t.deepEqual(a.shape, [2, 3]);
  t.is(a.dtype, 'float32');
  t.is(a.ndim, 2);
  t.is(a.numel(), 6);
  t.deepEqual(a.toArray(), [
    [1, 2, 3],
    [4, 5, 6],
  ]);
  t.is(tensor([true, false]).dtype, 'bool');
  t.deepEqual(tensor([true, false]).toArray(), [true, false]);
  const i = tensor(Int32Array.from([1, 2, 3, 4]), { shape: [2, 2] });
  t.is(i.dtype, 'int32');
  t.deepEqual(i.toArray(), [
    [1, 2],
    [3, 4],
  ]);
  t.is(tensor(3.5).item(), 3.5);
  t.deepEqual(tensor(3.5).shape, []);
});

test('factories: zeros, ones, full, arange, rand, randn', (t) => {
  t.deepEqual(zeros([2, 2]).toArray(), [
    [0, 0],
    [0, 0],
  ]);
  t.deepEqual(ones([3]).toArray(), [1, 1, 1]);
  t.deepEqual(full([2], 7, { dtype: 'int32' }).toArray(), [7, 7]);
  t.deepEqual(arange(4).toArray(), [0, 1, 2, 3]);
  t.is(arange(4).dtype, 'int32');
  t.deepEqual(arange(1, 2, 0.25).toArray(), [1, 1.25, 1.5, 1.75]);
  t.is(arange(0, 1, 0.5).dtype, 'float32');
  const u = rand([1000]).data();
  t.true(u.every((v) => v >= 0 && v < 1));
  const n = randn([4000]);
  t.true(Math.abs(n.mean().item()) < 0.1);
  t.true(Math.abs(n.mul(n).mean().item() - 1) < 0.1);
  t.true(zeros([2], { requiresGrad: true }).requiresGrad);
});

test('manualSeed makes random streams reproducible', (t) => {
  manualSeed(7);
  const a = randn([5]).data();
  manualSeed(7);
  const b = randn([5]).data();
  t.deepEqual(a, b);
  manualSeed(8);
  t.notDeepEqual(randn([5]).data(), a);
});

test('views share storage: transpose, permute, narrow, select, expand, squeeze, unsqueeze, reshape', (t) => {
  const x = arange(12).float().reshape([3, 4]);
  const views: Tensor[] = [
    x.transpose(0, 1),
    x.permute([1, 0]),
    x.narrow(1, 1, 2),
    x.select(0, 2),
    x.unsqueeze(0).expand([2, 3, 4]),
    x.unsqueeze(1).squeeze(1),
    x.reshape([2, 6]),
    x.view([12]),
    x.index([':', '1::2']),
  ];
  for (const v of views) t.is(v._storage, x._storage);
  t.deepEqual(x.transpose(0, 1).toArray(), [
    [0, 4, 8],
    [1, 5, 9],
    [2, 6, 10],
    [3, 7, 11],
  ]);
  t.deepEqual(x.narrow(1, 1, 2).toArray(), [
    [1, 2],
    [5, 6],
    [9, 10],
  ]);
  t.deepEqual(x.select(0, 2).toArray(), [8, 9, 10, 11]);
  t.deepEqual(x.index([':', '1::2']).toArray(), [
    [1, 3],
    [5, 7],
    [9, 11],
  ]);
  // writing through a view is visible in the base
  x.narrow(0, 0, 1).fill_(-1);
  t.deepEqual(x.select(0, 0).toArray(), [-1, -1, -1, -1]);
});

test('reshape of non-contiguous data copies; view refuses with a clear error', (t) => {
  const x = arange(6).float().reshape([2, 3]).transpose(0, 1);
  t.false(x.isContiguous());
  const r = x.reshape([6]);
  t.not(r._storage, x._storage);
  t.deepEqual(r.toArray(), [0, 3, 1, 4, 2, 5]);
  const err = t.throws(() => x.view([6]), { instanceOf: ShapeError });
  t.regex(err!.message, /view: .*use reshape\(\) instead/);
  t.true(x.contiguous().isContiguous());
  t.deepEqual(x.contiguous().toArray(), x.toArray());
});

test('broadcasting follows PyTorch', (t) => {
  const a = tensor([[1], [2], [3]]);
  const b = tensor([10, 20]);
  t.deepEqual(a.add(b).toArray(), [
    [11, 21],
    [12, 22],
    [13, 23],
  ]);
  t.deepEqual(a.mul(2).toArray(), [[2], [4], [6]]);
  const err = t.throws(() => tensor([1, 2, 3]).add(tensor([1, 2])), { instanceOf: ShapeError });
  t.is(err!.message, 'add: shapes [3] and [2] cannot be broadcast together (dim 0: 3 vs 2)');
});

test('dtype promotion: int stays int, int / int gives float, comparisons give bool', (t) => {
  const i = tensor([1, 2, 3], { dtype: 'int32' });
  t.is(i.add(i).dtype, 'int32');
  t.is(i.add(1).dtype, 'int32');
  t.is(i.add(0.5).dtype, 'float32');
  t.deepEqual(i.add(0.5).toArray(), [1.5, 2.5, 3.5]);
  t.is(i.div(tensor([2, 2, 2], { dtype: 'int32' })).dtype, 'float32');
  t.deepEqual(i.div(2).toArray(), [0.5, 1, 1.5]);
  t.is(i.add(tensor([0.5])).dtype, 'float32');
  t.is(i.gt(1).dtype, 'bool');
  t.deepEqual(i.gt(1).toArray(), [false, true, true]);
  t.is(tensor([true, false]).add(1).dtype, 'int32');
  t.is(i.sum().dtype, 'int32');
  t.throws(() => i.mean(), { instanceOf: DTypeError, message: /mean: input dtype must be float32, got int32/ });
});

test('reductions: sum/mean over dims with keepdim, max/min with indices, argmax', (t) => {
  const x = tensor([
    [1, 5, 2],
    [7, 3, 4],
  ]);
  t.is(x.sum().item(), 22);
  t.deepEqual(x.sum(0).toArray(), [8, 8, 6]);
  t.deepEqual(x.sum([0, 1], true).shape, [1, 1]);
  t.deepEqual(
    x.mean(1, true).toArray(),
    [[8 / 3], [14 / 3]].map((r) => [Math.fround(r[0]!)]),
  );
  const m = x.max(1);
  t.deepEqual(m.values.toArray(), [5, 7]);
  t.deepEqual(m.indices.toArray(), [1, 0]);
  const [vals, inds] = x.min(0);
  t.deepEqual(vals.toArray(), [1, 3, 2]);
  t.deepEqual(inds.toArray(), [0, 1, 0]);
  t.is(x.max().item(), 7);
  t.is(x.argmax().item(), 3);
  t.deepEqual(x.argmax(1, true).toArray(), [[1], [0]]);
  t.deepEqual(ops.max(x, 0).values.toArray(), [7, 5, 4]);
});

test('softmax and logSoftmax are stable for large inputs', (t) => {
  const x = tensor([
    [1000, 1001, 1002],
    [-1000, -1000, -1000],
  ]);
  const s = x.softmax(1).toArray() as number[][];
  t.true(s.flat().every(Number.isFinite));
  t.true(Math.abs(s[1]![0]! - 1 / 3) < 1e-6);
  const l = x.logSoftmax(-1).toArray() as number[][];
  t.true(Math.abs(l[0]![2]! - -0.40760596) < 1e-5);
});

test('index() supports ints, slices, null, ellipsis, index tensors and masks', (t) => {
  const x = arange(24).reshape([2, 3, 4]);
  t.deepEqual(x.index([1, 2, 3]).item(), 23);
  t.deepEqual(x.index(['...', 0]).shape, [2, 3]);
  t.deepEqual(x.index([null, 0]).shape, [1, 3, 4]);
  t.deepEqual(x.index([0, '-2:']).toArray(), [
    [4, 5, 6, 7],
    [8, 9, 10, 11],
  ]);
  t.deepEqual(x.index([0, 0, { start: 1, step: 2 }]).toArray(), [1, 3]);
  t.deepEqual(x.index([0, tensor([2, 0], { dtype: 'int32' }), 0]).toArray(), [8, 0]);
  t.deepEqual(x.index([1, tensor([true, false, true]), 1]).toArray(), [13, 21]);
  t.throws(() => x.index([0, 0, 0, 0]), { instanceOf: IndexError, message: /too many indices for a tensor of dimension 3/ });
  t.throws(() => x.index([5]), { instanceOf: IndexError, message: /index 5 is out of bounds for dim 0 with size 2/ });
  t.throws(() => x.index(['1:x']), { instanceOf: IndexError, message: /'1:x' is not a slice/ });
});

test('gather, where, clamp, cat, stack', (t) => {
  const x = tensor([
    [1, 2],
    [3, 4],
  ]);
  t.deepEqual(
    x
      .gather(
        1,
        tensor(
          [
            [0, 0],
            [1, 0],
          ],
          { dtype: 'int32' },
        ),
      )
      .toArray(),
    [
      [1, 1],
      [4, 3],
    ],
  );
  t.deepEqual(ops.where(x.gt(2), x, 0).toArray(), [
    [0, 0],
    [3, 4],
  ]);
  t.deepEqual(x.clamp(2, 3).toArray(), [
    [2, 2],
    [3, 3],
  ]);
  t.deepEqual(x.clamp(undefined, 2).toArray(), [
    [1, 2],
    [2, 2],
  ]);
  t.deepEqual(ops.cat([x, x], 1).shape, [2, 4]);
  t.deepEqual(ops.stack([x, x], 0).shape, [2, 2, 2]);
  t.deepEqual(ops.stack([x, x], 2).toArray(), [
    [
      [1, 1],
      [2, 2],
    ],
    [
      [3, 3],
      [4, 4],
    ],
  ]);
});

test('matmul covers 1-D, 2-D, batched and broadcast batches against a naive reference', (t) => {
  const naive = (a: number[][], b: number[][]) => a.map((r) => b[0]!.map((_, j) => r.reduce((s, v, k) => s + v * b[k]![j]!, 0)));
  manualSeed(1);
  for (const [m, k, n] of [
    [1, 1, 1],
    [3, 5, 7],
    [9, 13, 6],
    [33, 17, 65],
  ] as const) {
    const a = randn([m, k]);
    const b = randn([k, n]);
    const want = naive(a.toArray() as number[][], b.toArray() as number[][]);
    const got = a.matmul(b).toArray() as number[][];
    got.forEach((row, i) => row.forEach((v, j) => t.true(Math.abs(v - want[i]![j]!) < 1e-4)));
    // the same values stored column-major take the strided (packing) path
    const aCol = a.t().contiguous().t();
    const bCol = b.t().contiguous().t();
    t.false(aCol.isContiguous() && m > 1 && k > 1);
    const gotT = aCol.matmul(bCol).toArray() as number[][];
    gotT.forEach((row, i) => row.forEach((v, j) => t.true(Math.abs(v - want[i]![j]!) < 1e-4)));
  }
  t.deepEqual(randn([2, 1, 3, 4]).matmul(randn([5, 4, 2])).shape, [2, 5, 3, 2]);
  t.deepEqual(randn([4]).matmul(randn([4])).shape, []);
  t.deepEqual(randn([3, 4]).matmul(randn([4])).shape, [3]);
  const err = t.throws(() => zeros([2, 3]).matmul(zeros([4, 5])), { instanceOf: ShapeError });
  t.is(err!.message, 'matmul: shapes [2, 3] and [4, 5] cannot be multiplied (3 != 4)');
});

test('in-place ops write through and bump the version', (t) => {
  const x = zeros([2, 2]);
  const v0 = x._storage.version;
  x.add_(1).mul_(3);
  t.deepEqual(x.toArray(), [
    [3, 3],
    [3, 3],
  ]);
  x.select(1, 0).copy_(tensor([7, 8]));
  t.deepEqual(x.toArray(), [
    [7, 3],
    [8, 3],
  ]);
  x.zero_();
  t.deepEqual(x.toArray(), [
    [0, 0],
    [0, 0],
  ]);
  t.true(x._storage.version > v0);
  const err = t.throws(() => zeros([3]).add_(zeros([2, 3])), { instanceOf: ShapeError });
  t.is(err!.message, "add_: output with shape [3] doesn't match the broadcast shape [2, 3]");
  t.throws(() => zeros([2], { dtype: 'int32' }).add_(0.5), { instanceOf: DTypeError });
});

test('toString and item/data/toArray', (t) => {
  const x = tensor([[1, 2]], { requiresGrad: true });
  t.regex(String(x), /tensor\(\[ \[ 1, 2 \] \], dtype=float32, shape=\[1, 2\], requiresGrad=true\)/);
  t.regex(String(x.mul(2)), /gradFn=mulBackward/);
  t.deepEqual(Array.from(x.data()), [1, 2]);
  t.throws(() => x.item(), { message: 'item: only one-element tensors can be converted to a number, got shape [1, 2]' });
  t.throws(() => tensor([[1, 2], [3]]), { instanceOf: ShapeError, message: /expected a sequence of length 2 at dim 1 \(got 1\)/ });
});

test('ops.split: by a piece size (the last shorter) or by listed sizes; sizes that do not add up are a ShapeError', (t) => {
  const x = arange(10).reshape([5, 2]);
  t.deepEqual(
    ops.split(x, 2).map((p) => p.shape),
    [
      [2, 2],
      [2, 2],
      [1, 2],
    ],
  );
  const [a, b] = ops.split(x, [3, 2], 0);
  t.deepEqual(b!.toArray(), [
    [6, 7],
    [8, 9],
  ]);
  t.deepEqual(a!.shape, [3, 2]);
  t.throws(() => ops.split(x, [3, 3], 0), {
    message: 'split: sizes [3, 3] must be non-negative and add up to 5, the size of dim 0 of [5, 2]',
  });
  t.throws(() => ops.split(x, 0), { message: /splitSize must be a positive integer, got 0/ });
});
