import test from 'ava';
import {
  DTypeError,
  Generator,
  IndexError,
  ShapeError,
  ValueError,
  arange,
  data,
  manualSeed,
  nn,
  ops,
  optim,
  randn,
  tensor,
  type Tensor,
} from '../src/index.js';

/**
 * data.Dataset, data.TensorDataset and data.DataLoader (PyTorch's torch.utils.data on one process):
 * batching, drop-last, seeded shuffles, the default collate of tensors, numbers and nested arrays and
 * objects, a custom collateFn, sync and async iteration, and bad input.
 */

const { DataLoader, TensorDataset, Dataset, defaultCollate } = data;

/** The first column of each batch's first tensor: which samples each batch holds, for x = arange(n) rows. */
const ids = (batches: Iterable<unknown>) => [...batches].map((b) => ((b as Tensor[])[0]!.toArray() as number[][]).map((r) => r[0]!));

const rows = (n: number) => new TensorDataset(arange(n * 2).reshape([n, 2]), arange(n));

test('TensorDataset: each sample is the row of every tensor; length is the first dimension', (t) => {
  const ds = rows(4);
  t.is(ds.length, 4);
  const [x, y] = ds.getItem(2);
  t.deepEqual(x!.toArray(), [4, 5]);
  t.deepEqual(y!.toArray(), 2);
  t.deepEqual(ds.getItem(-1)[1]!.toArray(), 3, 'a negative index counts from the end, as in PyTorch');
});

test('TensorDataset rejects tensors of different lengths, scalars and bad indices', (t) => {
  t.throws(() => new TensorDataset(randn([4, 2]), randn([3])), {
    instanceOf: ShapeError,
    message:
      'TensorDataset: size mismatch between tensors: tensor 0 has shape [4, 2], tensor 1 has shape [3] (the first dimensions must be equal)',
  });
  t.throws(() => new TensorDataset(tensor(1)), { instanceOf: ShapeError, message: /tensor 0 is a scalar/ });
  t.throws(() => new TensorDataset(), { instanceOf: ValueError, message: 'TensorDataset: needs at least one tensor' });
  t.throws(() => rows(3).getItem(3), {
    instanceOf: IndexError,
    message: 'TensorDataset: index 3 is out of range for a dataset of 3 samples',
  });
  t.throws(() => rows(3).getItem(1.5), { instanceOf: IndexError });
});

test('DataLoader batches in order, the last batch smaller; length counts the batches', (t) => {
  const loader = new DataLoader(rows(10), { batchSize: 4 });
  t.is(loader.length, 3);
  const batches = [...loader] as Tensor[][];
  t.deepEqual(
    batches.map(([x, y]) => [x!.shape, y!.shape]),
    [
      [[4, 2], [4]],
      [[4, 2], [4]],
      [[2, 2], [2]],
    ],
  );
  t.deepEqual(ids(batches), [
    [0, 2, 4, 6],
    [8, 10, 12, 14],
    [16, 18],
  ]);
  t.deepEqual(batches[2]![1]!.toArray(), [8, 9]);
});

test('dropLast leaves out the short last batch, and length says so', (t) => {
  const loader = new DataLoader(rows(10), { batchSize: 4, dropLast: true });
  t.is(loader.length, 2);
  t.is([...loader].length, 2);
  t.is(new DataLoader(rows(8), { batchSize: 4, dropLast: true }).length, 2, 'nothing dropped when the batches fit');
  t.is(new DataLoader(rows(3), { batchSize: 4, dropLast: true }).length, 0);
});

test('the default batchSize is 1', (t) => {
  const loader = new DataLoader([1, 2, 3]);
  t.deepEqual(
    [...loader].map((b) => (b as Tensor).toArray()),
    [[1], [2], [3]],
  );
});

test('a seeded shuffle is a permutation, new every epoch, and the same for the same seed', (t) => {
  const a = new DataLoader(rows(12), { batchSize: 5, shuffle: true, seed: 7 });
  const b = new DataLoader(rows(12), { batchSize: 5, shuffle: true, seed: 7 });
  const a1 = ids(a).flat();
  const a2 = ids(a).flat();
  t.deepEqual(
    [...a1].sort((x, y) => x - y),
    Array.from({ length: 12 }, (_, i) => 2 * i),
  );
  t.notDeepEqual(a1, a2, 'each epoch draws a new order');
  t.deepEqual(ids(b).flat(), a1, 'the same seed gives the same first epoch');
  t.deepEqual(ids(b).flat(), a2, 'and the same second epoch');
  t.notDeepEqual(ids(new DataLoader(rows(12), { batchSize: 5, shuffle: true, seed: 8 })).flat(), a1, 'another seed, another order');
});

test('a seeded shuffle does not depend on the global generator, which the default shuffle draws from', (t) => {
  manualSeed(1);
  const seeded = ids(new DataLoader(rows(20), { shuffle: true, seed: 3 })).flat();
  const global1 = ids(new DataLoader(rows(20), { shuffle: true })).flat();
  manualSeed(2);
  t.deepEqual(ids(new DataLoader(rows(20), { shuffle: true, seed: 3 })).flat(), seeded);
  manualSeed(1);
  t.deepEqual(ids(new DataLoader(rows(20), { shuffle: true })).flat(), global1, 'manualSeed reproduces the default shuffle');
  const gen = new Generator(3);
  t.deepEqual(ids(new DataLoader(rows(20), { shuffle: true, generator: gen })).flat(), seeded, 'generator: new Generator(3) is seed: 3');
});

test('the default collate stacks tensors, turns numbers and booleans into tensors and recurses into arrays and objects', (t) => {
  const samples = [0, 1, 2].map((i) => ({
    image: tensor([i, i + 0.5]),
    label: i,
    weight: i + 0.25,
    mask: i % 2 === 0,
    name: `s${i}`,
    pair: [tensor([i]), { id: 10 + i }],
  }));
  const batch = defaultCollate(samples) as {
    image: Tensor;
    label: Tensor;
    weight: Tensor;
    mask: Tensor;
    name: string[];
    pair: [Tensor, { id: Tensor }];
  };
  t.deepEqual(Object.keys(batch), ['image', 'label', 'weight', 'mask', 'name', 'pair']);
  t.deepEqual(batch.image.toArray(), [
    [0, 0.5],
    [1, 1.5],
    [2, 2.5],
  ]);
  t.is(batch.label.dtype, 'int32', 'integers become int32, kiln’s index dtype (PyTorch: int64)');
  t.deepEqual(batch.label.toArray(), [0, 1, 2]);
  t.is(batch.weight.dtype, 'float32');
  t.deepEqual(batch.weight.toArray(), [0.25, 1.25, 2.25]);
  t.is(batch.mask.dtype, 'bool');
  t.deepEqual(batch.mask.toArray(), [true, false, true]);
  t.deepEqual(batch.name, ['s0', 's1', 's2']);
  t.deepEqual(batch.pair[0].shape, [3, 1]);
  t.deepEqual(batch.pair[1].id.toArray(), [10, 11, 12]);
});

test('the default collate names the place and the samples that do not fit together', (t) => {
  t.throws(() => defaultCollate([{ x: randn([2]) }, { x: randn([3]) }]), {
    instanceOf: ShapeError,
    message: 'defaultCollate: the tensors at sample.x have different shapes: [2] in sample 0, [3] in sample 1',
  });
  t.throws(() => defaultCollate([[1, 2], [3]]), { instanceOf: ShapeError, message: /sample has 2 elements in sample 0 but 1 in sample 1/ });
  t.throws(() => defaultCollate([{ a: 1 }, { b: 1 }]), {
    instanceOf: ValueError,
    message: 'defaultCollate: sample has keys a in sample 0 but b in sample 1',
  });
  t.throws(() => defaultCollate([{ a: 1 }, { a: 'x' }]), {
    instanceOf: ValueError,
    message: "defaultCollate: sample.a is 1 in sample 0 but 'x' in sample 1",
  });
  t.throws(() => defaultCollate([[null]]), {
    instanceOf: ValueError,
    message: /defaultCollate: sample\[0\] is null; the default collate takes Tensors/,
  });
  t.throws(() => defaultCollate([2 ** 40]), { instanceOf: DTypeError, message: /the integer 1099511627776 at sample does not fit int32/ });
  t.throws(() => defaultCollate([tensor([1]), tensor([true])]), {
    instanceOf: DTypeError,
    message: /float32 in sample 0 but bool in sample 1/,
  });
});

test('a collateFn receives each batch’s samples', (t) => {
  const seen: number[][] = [];
  const loader = new DataLoader([1, 2, 3, 4, 5], {
    batchSize: 2,
    collateFn: (samples: number[]) => {
      seen.push(samples);
      return samples.reduce((a, b) => a + b, 0);
    },
  });
  t.deepEqual([...loader], [3, 7, 5]);
  t.deepEqual(seen, [[1, 2], [3, 4], [5]]);
});

/** A dataset whose samples arrive asynchronously (as from disk), in a random order of completion. */
class SlowSquares extends Dataset<{ x: number; y: number }> {
  constructor(readonly length: number) {
    super();
  }

  async getItem(i: number) {
    await new Promise((r) => setTimeout(r, (i * 7) % 5));
    return { x: i, y: i * i };
  }
}

test('for await reads asynchronous samples, in order, into the same batches', async (t) => {
  const loader = new DataLoader(new SlowSquares(7), { batchSize: 3 });
  const batches: { x: Tensor; y: Tensor }[] = [];
  for await (const b of loader) batches.push(b as { x: Tensor; y: Tensor });
  t.deepEqual(
    batches.map((b) => b.y.toArray()),
    [[0, 1, 4], [9, 16, 25], [36]],
  );
  // a synchronous dataset iterates asynchronously too, with the same batches
  const sync = [...new DataLoader(rows(5), { batchSize: 2 })] as Tensor[][];
  const async: Tensor[][] = [];
  for await (const b of new DataLoader(rows(5), { batchSize: 2 })) async.push(b as Tensor[]);
  t.deepEqual(
    async.map((b) => b.map((x) => x.toArray())),
    sync.map((b) => b.map((x) => x.toArray())),
  );
});

test('iterating an asynchronous dataset synchronously is an error that says to use for await', (t) => {
  t.throws(() => [...new DataLoader(new SlowSquares(3))], {
    instanceOf: ValueError,
    message: 'DataLoader: dataset.getItem(0) returned a Promise; iterate with for await … of',
  });
});

test('DataLoader rejects bad options with ValueErrors naming them', (t) => {
  t.throws(() => new DataLoader(rows(3), { batchSize: 0 }), {
    instanceOf: ValueError,
    message: 'DataLoader: batchSize must be an integer ≥ 1, got 0',
  });
  t.throws(() => new DataLoader(rows(3), { batchSize: 2.5 }), { message: 'DataLoader: batchSize must be an integer ≥ 1, got 2.5' });
  t.throws(() => new DataLoader(rows(3), { numWorkers: 2 } as never), { message: /DataLoader: unknown option 'numWorkers'/ });
  t.throws(() => new DataLoader(rows(3), { seed: 1 }), {
    message: 'DataLoader: a generator or seed only orders a shuffle; pass shuffle: true too',
  });
  t.throws(() => new DataLoader(rows(3), { shuffle: true, seed: 1, generator: new Generator() }), {
    message: 'DataLoader: give a generator or a seed, not both',
  });
  t.throws(() => new DataLoader(rows(3), { shuffle: true, generator: {} as never }), {
    message: 'DataLoader: generator must be a kiln Generator, got an object',
  });
  t.throws(() => new DataLoader(rows(3), { collateFn: 3 as never }), { message: 'DataLoader: collateFn must be a function, got 3' });
  t.throws(() => new DataLoader(5 as never), {
    message: 'DataLoader: dataset must be a Dataset (length and getItem(index)) or an array of samples, got 5',
  });
  t.throws(() => new DataLoader({ length: -1, getItem: () => 0 }), {
    message: 'DataLoader: dataset.length must be an integer ≥ 0, got -1',
  });
});

test('a training loop over a DataLoader (AdamW, StepLR, clipGradNorm_) lowers the loss', (t) => {
  manualSeed(0);
  const x = randn([64, 4]);
  const y = x.matmul(tensor([[1], [-2], [0.5], [3]])).add(0.1);
  const model = new nn.Linear(4, 1);
  const opt = new optim.AdamW(model.parameters(), { lr: 0.05 });
  const sched = new optim.lrScheduler.StepLR(opt, { stepSize: 10, gamma: 0.5 });
  const loader = new DataLoader(new TensorDataset(x, y), { batchSize: 16, shuffle: true, seed: 0 });
  const epochLoss: number[] = [];
  for (let epoch = 0; epoch < 30; epoch++) {
    let total = 0;
    for (const [xb, yb] of loader as Iterable<Tensor[]>) {
      opt.zeroGrad();
      const loss = ops.mseLoss(model.call(xb!) as Tensor, yb!);
      loss.backward();
      nn.utils.clipGradNorm_(model.parameters(), 5);
      opt.step();
      total += loss.item();
    }
    sched.step();
    epochLoss.push(total / loader.length);
  }
  t.true(epochLoss.at(-1)! < epochLoss[0]! / 20, `loss ${epochLoss[0]} → ${epochLoss.at(-1)}`);
  t.deepEqual(sched.getLastLr(), [0.05 * 0.5 ** 3]);
});
