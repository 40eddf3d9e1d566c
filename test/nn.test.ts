import test from 'ava';
import { F, KilnError, ShapeError, StateDictError, Tensor, manualSeed, nn, ones, randn, tensor, zeros } from '../src/index.js';

class Block extends nn.Module {
  conv = new nn.Conv2d(1, 2, 3, { padding: 1 });
  bn = new nn.BatchNorm2d(2);
  override forward(x: Tensor): Tensor {
    return this.bn.call(this.conv.call(x)).relu();
  }
}

class Net extends nn.Module {
  features = new nn.Sequential(new Block(), new nn.MaxPool2d(2));
  layers = new nn.ModuleList([new nn.Linear(8, 4), new nn.Linear(4, 3)]);
  heads = new nn.ModuleDict({ cls: new nn.Linear(3, 2) });
  scale = new nn.Parameter(ones([1]));
  constructor() {
    super();
    this.registerBuffer('steps', zeros([1]));
    this.registerBuffer('scratch', zeros([1]), false);
  }
  override forward(x: Tensor): Tensor {
    let h = this.features.call(x).flatten(1);
    for (const layer of this.layers) h = layer.call(h).relu();
    return this.heads.get('cls').call(h).mul(this.scale);
  }
}

test('stateDict keys follow PyTorch: own params, buffers, then children in assignment order', (t) => {
  const net = new Net();
  t.deepEqual(Object.keys(net.stateDict()), [
    'scale',
    'steps',
    'features.0.conv.weight',
    'features.0.conv.bias',
    'features.0.bn.weight',
    'features.0.bn.bias',
    'features.0.bn.running_mean',
    'features.0.bn.running_var',
    'features.0.bn.num_batches_tracked',
    'layers.0.weight',
    'layers.0.bias',
    'layers.1.weight',
    'layers.1.bias',
    'heads.cls.weight',
    'heads.cls.bias',
  ]);
  t.deepEqual(
    net.namedParameters().map(([n]) => n),
    [
      'scale',
      'features.0.conv.weight',
      'features.0.conv.bias',
      'features.0.bn.weight',
      'features.0.bn.bias',
      'layers.0.weight',
      'layers.0.bias',
      'layers.1.weight',
      'layers.1.bias',
      'heads.cls.weight',
      'heads.cls.bias',
    ],
  );
  t.deepEqual(
    net.namedBuffers().map(([n]) => n),
    ['steps', 'scratch', 'features.0.bn.running_mean', 'features.0.bn.running_var', 'features.0.bn.num_batches_tracked'],
  );
  t.is(net.stateDict()['features.0.bn.num_batches_tracked']!.dtype, 'int32');
  t.deepEqual(
    net.namedChildren().map(([n]) => n),
    ['features', 'layers', 'heads'],
  );
  t.deepEqual(
    net.namedModules().map(([n]) => n),
    [
      '',
      'features',
      'features.0',
      'features.0.conv',
      'features.0.bn',
      'features.1',
      'layers',
      'layers.0',
      'layers.1',
      'heads',
      'heads.cls',
    ],
  );
  t.is(net.getSubmodule('features.0.bn'), (net.features[0] as Block).bn);
  t.throws(() => net.getSubmodule('features.7'), { message: /Sequential has no submodule '7'/ });
  t.deepEqual(net.call(randn([2, 1, 4, 4])).shape, [2, 2]);
});

test('shared parameters are listed once but keep both state-dict keys', (t) => {
  class Tied extends nn.Module {
    a = new nn.Linear(2, 2);
    b = new nn.Linear(2, 2);
    constructor() {
      super();
      this.b.weight = this.a.weight;
    }
  }
  const m = new Tied();
  t.is(m.parameters().length, 3);
  t.deepEqual(Object.keys(m.stateDict()), ['a.weight', 'a.bias', 'b.weight', 'b.bias']);
});

test('loadStateDict round-trips, and reports missing, unexpected and mis-shaped keys', (t) => {
  manualSeed(0);
  const a = new Net();
  const b = new Net();
  b.loadStateDict(a.stateDict());
  const x = randn([2, 1, 4, 4]);
  a.eval();
  b.eval();
  t.deepEqual(a.call(x).toArray(), b.call(x).toArray());
  const sd = a.stateDict();
  delete sd['layers.1.bias'];
  sd.extra = zeros([1]);
  const err = t.throws(() => b.loadStateDict(sd), { instanceOf: StateDictError });
  t.is(
    err!.message,
    'Error(s) in loading state_dict for Net:\n\tMissing key(s) in state_dict: "layers.1.bias".\n\tUnexpected key(s) in state_dict: "extra".',
  );
  t.deepEqual(b.loadStateDict(sd, { strict: false }), { missingKeys: ['layers.1.bias'], unexpectedKeys: ['extra'] });
  const bad = { ...a.stateDict(), scale: zeros([2]) };
  t.throws(() => b.loadStateDict(bad), {
    message: /size mismatch for scale: copying a param with shape \[2\] from checkpoint, the shape in current model is \[1\]/,
  });
});

test('forward hooks and pre-hooks run in order, can replace values, and can be removed', (t) => {
  const lin = new nn.Linear(2, 2);
  const calls: string[] = [];
  const pre = lin.registerForwardPreHook((_m, args) => {
    calls.push('pre');
    return [(args[0] as Tensor).mul(0)];
  });
  const post = lin.registerForwardHook((_m, _a, out) => {
    calls.push('post');
    return (out as Tensor).add(1);
  });
  const y = lin.call(ones([1, 2]));
  t.deepEqual(calls, ['pre', 'post']);
  t.deepEqual(y.toArray(), lin.bias!.add(1).unsqueeze(0).toArray());
  pre.remove();
  post.remove();
  t.deepEqual(lin.call(zeros([1, 2])).toArray(), lin.bias!.unsqueeze(0).toArray());
  t.is(calls.length, 2);
});

test('train/eval switch dropout and batch-norm behaviour', (t) => {
  manualSeed(0);
  const drop = new nn.Dropout(0.5);
  const x = ones([1000]);
  const y = drop.call(x);
  const zerosCount = y.eq(0).float().sum().item();
  t.true(zerosCount > 400 && zerosCount < 600);
  t.true(y.data().every((v) => v === 0 || v === 2));
  drop.eval();
  t.deepEqual(drop.call(x).toArray(), x.toArray());

  const bn = new nn.BatchNorm1d(2);
  const batch = tensor([
    [1, 10],
    [3, 30],
  ]);
  bn.call(batch);
  t.deepEqual(bn.running_mean!.toArray(), [0.2, 2].map(Math.fround));
  t.is(bn.num_batches_tracked!.item(), 1);
  bn.eval();
  const out = bn.call(batch).toArray() as number[][];
  // running_var = 0.9 · 1 + 0.1 · unbiased var([1, 3]) = 1.1
  t.deepEqual(bn.running_var!.toArray(), [1.1, 0.9 + 0.1 * 200].map(Math.fround));
  t.true(Math.abs(out[0]![0]! - (1 - 0.2) / Math.sqrt(1.1 + 1e-5)) < 1e-5);
  t.is(bn.num_batches_tracked!.item(), 1);
  t.false(
    new Net()
      .eval()
      .modules()
      .some((m) => m.training),
  );
});

test('layers check their input shapes with clear messages', (t) => {
  const err = t.throws(() => new nn.Linear(784, 10).call(zeros([32, 100])), { instanceOf: ShapeError });
  t.is(err!.message, 'Linear(in_features=784, out_features=10): expected input [..., 784], got [32, 100]');
  t.throws(() => new nn.Conv2d(3, 8, 3).call(zeros([1, 4, 8, 8])), {
    instanceOf: ShapeError,
    message: /Conv2d\(3, 8, kernel_size=\(3, 3\).*expected input \[N, 3, H, W\]/,
  });
  t.throws(() => new nn.BatchNorm2d(4).call(zeros([2, 4, 3])), { message: 'BatchNorm2d(4): expected 4D input (got 3D input [2, 4, 3])' });
  t.throws(() => F.layerNorm(zeros([2, 3]), [4]), { message: 'layerNorm: expected input with shape [*, 4], got [2, 3]' });
  t.throws(() => new nn.Conv2d(3, 8, 3, { groups: 2 }), { message: /groups=2 must divide both inChannels \(3\)/ });
  t.throws(() => new nn.Module().call(), { instanceOf: KilnError, message: /forward\(\) is not defined/ });
});

test('default initialisation matches PyTorch bounds', (t) => {
  manualSeed(0);
  const lin = new nn.Linear(100, 50);
  const bound = 1 / Math.sqrt(100);
  t.true(lin.weight.abs().max().item() <= bound);
  t.true(lin.weight.abs().max().item() > bound * 0.9);
  t.true(lin.bias!.abs().max().item() <= bound);
  const conv = new nn.Conv2d(4, 8, 3, { groups: 2 });
  t.deepEqual(conv.weight.shape, [8, 2, 3, 3]);
  t.true(conv.weight.abs().max().item() <= 1 / Math.sqrt(18));
  const emb = new nn.Embedding(10, 3, { paddingIdx: 0 });
  t.deepEqual(emb.weight.select(0, 0).toArray(), [0, 0, 0]);
  const ln = new nn.LayerNorm(4);
  t.deepEqual(ln.weight!.toArray(), [1, 1, 1, 1]);
});

test('embedding padding row gets no gradient; embedding bag pools bags', (t) => {
  const emb = new nn.Embedding(3, 2, { paddingIdx: 1 });
  emb
    .call(
      tensor(
        [
          [0, 1],
          [1, 2],
        ],
        { dtype: 'int32' },
      ),
    )
    .sum()
    .backward();
  t.deepEqual(emb.weight.grad!.toArray(), [
    [1, 1],
    [0, 0],
    [1, 1],
  ]);
  const bag = new nn.EmbeddingBag(3, 2, { mode: 'sum' });
  const out = bag.call(tensor([0, 1, 2], { dtype: 'int32' }), tensor([0, 2], { dtype: 'int32' }));
  t.deepEqual(out.toArray(), [bag.weight.select(0, 0).add(bag.weight.select(0, 1)).toArray(), bag.weight.select(0, 2).toArray()]);
  t.throws(() => emb.call(tensor([3], { dtype: 'int32' })), {
    message: 'embedding: index 3 is out of range for an embedding table of 3 rows',
  });
});

test('containers: Sequential indexing and iteration, ModuleList append/insert, ParameterList/Dict', (t) => {
  const seq = new nn.Sequential(new nn.Linear(2, 3), new nn.ReLU());
  t.true(seq[0] instanceof nn.Linear);
  t.is(seq.length, 2);
  t.true(seq.at(-1) instanceof nn.ReLU);
  t.deepEqual(
    [...seq].map((m) => m.constructor.name),
    ['Linear', 'ReLU'],
  );
  const named = new nn.Sequential({ fc: new nn.Linear(2, 2), act: new nn.Tanh() });
  t.deepEqual(Object.keys(named.stateDict()), ['fc.weight', 'fc.bias']);
  const list = new nn.ModuleList();
  list.append(new nn.Linear(1, 1)).append(new nn.Linear(2, 2)).insert(0, new nn.Linear(3, 3));
  t.deepEqual(
    [...list].map((m) => (m as nn.Linear).inFeatures),
    [3, 1, 2],
  );
  t.throws(() => list.append(5), { message: 'ModuleList: expected a Module, got number' });
  const plist = new nn.ParameterList([zeros([2]), ones([3])]);
  t.deepEqual(Object.keys(plist.stateDict()), ['0', '1']);
  t.true(plist[1]!.requiresGrad);
  const pdict = new nn.ParameterDict({ b: zeros([1]), a: zeros([2]) });
  t.deepEqual(Object.keys(pdict.stateDict()), ['b', 'a']);
  // entries keep their order; an object literal would put integer-like keys first (a JS rule)
  const mdict = new nn.ModuleDict([
    ['1', new nn.ReLU()],
    ['x', new nn.Linear(1, 1)],
    ['0', new nn.Linear(1, 1)],
  ]);
  t.deepEqual([...mdict.keys()], ['1', 'x', '0']);
  t.deepEqual(Object.keys(mdict.stateDict()), ['x.weight', 'x.bias', '0.weight', '0.bias']);
  t.throws(() => mdict.get('nope'), { message: "ModuleDict: no entry 'nope' (keys: 1, x, 0)" });
});

test('apply, zeroGrad and toString', (t) => {
  const net = new nn.Sequential(new nn.Linear(2, 2), new nn.ReLU());
  const seen: string[] = [];
  net.apply((m) => seen.push(m.constructor.name));
  t.deepEqual(seen, ['Linear', 'ReLU', 'Sequential']);
  net
    .call(ones([1, 2]))
    .sum()
    .backward();
  t.truthy(net.parameters()[0]!.grad);
  net.zeroGrad();
  t.true(net.parameters().every((p) => p.grad === null));
  t.is(net.toString(), 'Sequential(\n  (0): Linear(in_features=2, out_features=2, bias=True)\n  (1): ReLU()\n)');
});
