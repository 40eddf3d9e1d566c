import test from 'ava';
import { readFileSync } from 'node:fs';
import { F, Tensor, nn, ops, tensor, testing, type DType } from '../src/index.js';

/**
 * kiln against real PyTorch 1.13: inputs, outputs and input gradients written by scripts/golden.py.
 * Each case name maps to the same computation written with kiln's API.
 */

interface Encoded {
  shape: number[];
  dtype: DType;
  data: number[];
}

const load = (name: string) => JSON.parse(readFileSync(new URL(`./fixtures/golden/${name}`, import.meta.url), 'utf8'));
const decode = (e: Encoded, requiresGrad = false) =>
  tensor(e.data, { shape: e.shape, dtype: e.dtype, requiresGrad: requiresGrad && e.dtype === 'float32' });

const ar = (n: number) => tensor(Array.from({ length: n }, (_, i) => i + 1));
const T = (...xs: Tensor[]) => xs;
type Fn = (...xs: Tensor[]) => Tensor;

const KILN: Record<string, Fn> = {
  'add broadcast': (a, b) => a.add(b!),
  'add alpha': (a, b) => ops.add(a, b!, 2),
  'add scalar': (a) => a.add(1.5),
  sub: (a, b) => a.sub(b!),
  mul: (a, b) => a.mul(b!),
  div: (a, b) => a.div(b!),
  'div int': (a, b) => a.div(b!),
  neg: (a) => a.neg(),
  'pow scalar': (a) => a.pow(2.5),
  'pow tensor': (a, b) => a.pow(b!),
  exp: (a) => a.exp(),
  log: (a) => a.log(),
  sqrt: (a) => a.sqrt(),
  abs: (a) => a.abs(),
  tanh: (a) => a.tanh(),
  sigmoid: (a) => a.sigmoid(),
  relu: (a) => a.relu(),
  'matmul 1d 1d': (a, b) => a.matmul(b!),
  'matmul 2d 2d': (a, b) => a.matmul(b!),
  'matmul 1d 2d': (a, b) => a.matmul(b!),
  'matmul 2d 1d': (a, b) => a.matmul(b!),
  'matmul batched': (a, b) => a.matmul(b!),
  'matmul broadcast batch': (a, b) => a.matmul(b!),
  'sum all': (a) => a.sum(),
  'sum dim keepdim': (a) => a.sum(1, true),
  'sum dims': (a) => a.sum([0, 2]),
  'mean all': (a) => a.mean(),
  'mean dim': (a) => a.mean(-1),
  'max all': (a) => a.max(),
  'max dim values': (a) => a.max(1).values,
  'max dim indices': (a) => a.max(1).indices,
  'min dim keepdim values': (a) => a.min(0, true).values,
  argmax: (a) => a.argmax(1),
  reshape: (a) =>
    a
      .t()
      .reshape([3, 2])
      .mul(ar(6).reshape([3, 2])),
  view: (a) => a.view([6]).mul(ar(6)),
  flatten: (a) => a.flatten(1).mul(ar(6)),
  transpose: (a) => a.transpose(0, 1).mul(tensor([1, 2])),
  permute: (a) => a.permute([2, 0, 1]).mul(ar(4).reshape([4, 1, 1])),
  unsqueeze: (a) => a.unsqueeze(1).mul(tensor([1, 2])),
  squeeze: (a) => a.squeeze().mul(tensor([1, 2, 3])),
  expand: (a) => a.expand([2, 3, 4]).mul(ar(24).reshape([2, 3, 4])),
  narrow: (a) => a.narrow(0, 1, 2),
  select: (a) => a.select(1, -1),
  gather: (a, i) => a.gather(1, i!),
  'clamp min': (a) => a.clamp(-0.3),
  'clamp max': (a) => a.clamp(undefined, 0.4),
  'clamp both': (a) => a.clamp(-0.3, 0.4),
  where: (c, a, b) => ops.where(c, a!, b!),
  eq: (a, b) => a.eq(b!),
  ne: (a, b) => a.ne(b!),
  lt: (a, b) => a.lt(b!),
  le: (a, b) => a.le(b!),
  gt: (a, b) => a.gt(b!),
  ge: (a, b) => a.ge(b!),
  softmax: (a) => a.softmax(1),
  'softmax large': (a) => a.softmax(-1),
  logSoftmax: (a) => a.logSoftmax(0),
  'logSoftmax large': (a) => a.logSoftmax(1),
  cat: (a, b) => ops.cat(T(a, b!), 1),
  stack: (a, b) => ops.stack(T(a, b!), 1),
  conv1d: (x, w, b) => F.conv1d(x, w!, b, { stride: 2, padding: 1 }),
  conv2d: (x, w, b) => F.conv2d(x, w!, b, { padding: 1 }),
  'conv2d stride dilation': (x, w) => F.conv2d(x, w!, null, { stride: [2, 1], dilation: [1, 2] }),
  'conv2d groups': (x, w, b) => F.conv2d(x, w!, b, { groups: 2 }),
  maxPool2d: (x) => F.maxPool2d(x, 2),
  'maxPool2d stride padding': (x) => F.maxPool2d(x, 3, { stride: 2, padding: 1 }),
  'avgPool2d padding': (x) => F.avgPool2d(x, 3, { stride: 2, padding: 1 }),
  adaptiveAvgPool2d: (x) => F.adaptiveAvgPool2d(x, [2, 3]),
  layerNorm: (x, w, b) => F.layerNorm(x, [4], { weight: w, bias: b }),
  'batchNorm training': (x, w, b) => F.batchNorm(x, null, null, { weight: w, bias: b, training: true }),
  'batchNorm eval': (x, m, v, w, b) => F.batchNorm(x, m!.detach(), v!.detach(), { weight: w, bias: b, training: false }),
  embedding: (i, w) => F.embedding(i, w!),
  'embeddingBag sum': (i, w, o) => F.embeddingBag(i, w!, { offsets: o, mode: 'sum' }),
  'embeddingBag mean': (i, w, o) => F.embeddingBag(i, w!, { offsets: o, mode: 'mean' }),
  gelu: (x) => F.gelu(x),
  'gelu tanh': (x) => F.gelu(x, { approximate: 'tanh' }),
  linear: (x, w, b) => F.linear(x, w!, b),
  'crossEntropy mean': (x, t) => F.crossEntropy(x, t!),
  'crossEntropy sum': (x, t) => F.crossEntropy(x, t!, { reduction: 'sum' }),
  'crossEntropy none': (x, t) => F.crossEntropy(x, t!, { reduction: 'none' }),
  'crossEntropy ignoreIndex': (x, t) => F.crossEntropy(x, t!, { ignoreIndex: -100 }),
  mseLoss: (a, b) => F.mseLoss(a, b!),
};

const TOL = { rtol: 1e-4, atol: 1e-5 };
const LOOSE = { rtol: 1e-4, atol: 1e-4 }; // long float32 sums (conv, matmul, norms)
const tolFor = (name: string) => (/conv|matmul|Norm|linear|Pool/.test(name) ? LOOSE : TOL);

interface OpCase {
  name: string;
  inputs: Encoded[];
  out: Encoded;
  gradOut?: Encoded;
  grads?: (Encoded | null)[];
}

const opCases = load('ops.json').cases as OpCase[];

test('every golden case has a kiln counterpart', (t) => {
  t.deepEqual(
    opCases.map((c) => c.name).filter((n) => !KILN[n]),
    [],
  );
});

for (const c of opCases) {
  test(`matches PyTorch: ${c.name}`, (t) => {
    const fn = KILN[c.name]!;
    const inputs = c.inputs.map((e) => decode(e, c.grads !== undefined));
    const out = fn(...inputs);
    const want = decode(c.out);
    t.deepEqual(out.shape, want.shape);
    t.is(out.dtype, want.dtype);
    testing.assertClose(out, want, tolFor(c.name));
    if (!c.gradOut) return;
    out.backward(decode(c.gradOut));
    c.grads!.forEach((g, i) => {
      if (!g) return;
      t.truthy(inputs[i]!.grad, `input ${i} has a gradient`);
      testing.assertClose(inputs[i]!.grad!, decode(g), tolFor(c.name));
    });
  });
}

class CNN extends nn.Module {
  conv = new nn.Conv2d(1, 4, 3, { padding: 1 });
  bn = new nn.BatchNorm2d(4);
  pool = new nn.MaxPool2d(2);
  fc = new nn.Linear(4 * 3 * 3, 5);
  override forward(x: Tensor): Tensor {
    return this.fc.call(this.pool.call(this.bn.call(this.conv.call(x)).relu()).flatten(1));
  }
}

interface ModelCase {
  name: string;
  stateDict: Record<string, Encoded>;
  keys: string[];
  input: Encoded;
  target: Encoded;
  out: Encoded;
  loss: number;
  grads: Record<string, Encoded>;
  buffersAfter: Record<string, Encoded>;
}

const builders: Record<string, () => nn.Module> = {
  mlp: () => new nn.Sequential(new nn.Linear(4, 8), new nn.ReLU(), new nn.Linear(8, 3)),
  cnn: () => new CNN(),
};

for (const c of load('models.json').cases as ModelCase[]) {
  test(`model matches PyTorch: ${c.name} (state-dict keys, output, loss, grads, running stats)`, (t) => {
    const model = builders[c.name]!();
    t.deepEqual(Object.keys(model.stateDict()), c.keys);
    model.loadStateDict(Object.fromEntries(Object.entries(c.stateDict).map(([k, v]) => [k, decode(v)])));
    model.train();
    const out = model.call(decode(c.input)) as Tensor;
    testing.assertClose(out, decode(c.out), LOOSE);
    const loss = F.crossEntropy(out, decode(c.target));
    t.true(Math.abs(loss.item() - c.loss) < 1e-5, `loss ${loss.item()} vs ${c.loss}`);
    loss.backward();
    const params = new Map(model.namedParameters());
    for (const [name, g] of Object.entries(c.grads)) testing.assertClose(params.get(name)!.grad!, decode(g), LOOSE);
    const sd = model.stateDict();
    for (const [name, b] of Object.entries(c.buffersAfter)) testing.assertClose(sd[name]!, decode(b), LOOSE);
  });
}

test('the comparison used above rejects a value off by more than the tolerance', (t) => {
  const c = opCases.find((x) => x.name === 'exp')!;
  const want = decode(c.out);
  const off = want.add(tensor([0, 0, 0, 1e-3]));
  t.throws(() => testing.assertClose(off, want, TOL), { message: /assertClose: tensors differ at element 3/ });
});
