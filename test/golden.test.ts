import test from 'ava';
import type { ExecutionContext } from 'ava';
import { readFileSync } from 'node:fs';
import { F, Tensor, cat, nn, ops, stack, tensor } from '../src/index.js';

/**
 * kiln against real PyTorch 1.13. scripts/golden.py runs each case in PyTorch and stores it in kiln's
 * terms (op name, positional args, trailing options object); this file replays it with kiln and compares
 * the output, the gradient of sum(out * gradOut) with respect to every input that requires grad, and any
 * argument the op updates in place. Regenerate the fixtures with `/usr/bin/python3 scripts/golden.py`.
 */

type DTypeName = 'float32' | 'int32' | 'bool';

interface EncodedTensor {
  t: { shape: number[]; dtype: DTypeName; data: number[]; requiresGrad: boolean };
}

/** A JSON value in a case: an encoded tensor, a list, or a plain scalar. */
type Encoded = EncodedTensor | Encoded[] | number | boolean | string | null;
/** The same value decoded for kiln. */
type Arg = Tensor | Arg[] | number | boolean | string | null;
type Kwargs = Record<string, Arg>;

interface OpCase {
  name: string;
  op: string;
  args: Encoded[];
  kwargs: Record<string, Encoded>;
  out: EncodedTensor | EncodedTensor[];
  gradOut: EncodedTensor | (EncodedTensor | null)[] | null;
  grads: (EncodedTensor | EncodedTensor[] | null)[];
  kwargsGrads: Record<string, EncodedTensor>;
  argsAfter?: (EncodedTensor | null)[];
}

interface ModelCase {
  name: string;
  stateDict: Record<string, EncodedTensor>;
  keys: string[];
  input: EncodedTensor;
  target: EncodedTensor;
  out: EncodedTensor;
  loss: number;
  grads: Record<string, EncodedTensor>;
  buffersAfter: Record<string, EncodedTensor>;
}

const load = <T>(name: string): T => JSON.parse(readFileSync(new URL(`./fixtures/golden/${name}`, import.meta.url), 'utf8')) as T;

const isTensor = (v: unknown): v is EncodedTensor => typeof v === 'object' && v !== null && !Array.isArray(v) && 't' in v;

function decodeTensor({ t: e }: EncodedTensor): Tensor {
  const opts = { shape: e.shape, dtype: e.dtype, requiresGrad: e.requiresGrad };
  if (e.dtype === 'float32') return tensor(Float32Array.from(e.data), opts);
  if (e.dtype === 'int32') return tensor(Int32Array.from(e.data), opts);
  return tensor(e.data, opts);
}

function decode(v: Encoded): Arg {
  if (isTensor(v)) return decodeTensor(v);
  if (Array.isArray(v)) return v.map(decode);
  return v;
}

// ---------------------------------------------------------------------------------------------------
// kiln's side of every op named in ops.json

const T = (v: Arg | undefined) => v as Tensor;
const N = (v: Arg | undefined) => v as number;
const TN = (v: Arg | undefined) => v as Tensor | number;
const dimArg = (v: Arg | undefined) => v as number | number[];
const shapeArg = (v: Arg | undefined) => v as number[];
const optBool = (v: Arg | undefined) => (v === undefined ? undefined : (v as boolean));
const optNum = (v: Arg | undefined) => (v === undefined || v === null ? undefined : (v as number));
const hasKw = (kw: Kwargs) => Object.keys(kw).length > 0;

function valuesIndices(res: [Tensor, Tensor] & { values: Tensor; indices: Tensor }): Tensor[] {
  const [values, indices] = res;
  if (values !== res.values || indices !== res.indices) throw new Error('max/min: [values, indices] and .values/.indices disagree');
  return [res.values, res.indices];
}

type Runner = (a: Arg[], kw: Kwargs) => Tensor | Tensor[];

const KILN: Record<string, Runner> = {
  add: (a) => T(a[0]).add(TN(a[1])),
  sub: (a) => T(a[0]).sub(TN(a[1])),
  mul: (a) => T(a[0]).mul(TN(a[1])),
  div: (a) => T(a[0]).div(TN(a[1])),
  pow: (a) => T(a[0]).pow(TN(a[1])),
  neg: (a) => T(a[0]).neg(),
  exp: (a) => T(a[0]).exp(),
  log: (a) => T(a[0]).log(),
  sqrt: (a) => T(a[0]).sqrt(),
  abs: (a) => T(a[0]).abs(),
  tanh: (a) => T(a[0]).tanh(),
  sigmoid: (a) => T(a[0]).sigmoid(),
  relu: (a) => T(a[0]).relu(),
  sin: (a) => T(a[0]).sin(),
  cos: (a) => T(a[0]).cos(),
  exp2: (a) => T(a[0]).exp2(),
  matmul: (a) => T(a[0]).matmul(T(a[1])),
  mm: (a) => T(a[0]).mm(T(a[1])),
  addmm: (a, kw) => (hasKw(kw) ? ops.addmm(T(a[0]), T(a[1]), T(a[2]), kw) : T(a[0]).addmm(T(a[1]), T(a[2]))),
  unbind: (a) => T(a[0]).unbind(optNum(a[1])),
  thresholdBackward: (a) => ops.thresholdBackward(T(a[0]), T(a[1]), N(a[2])),
  tanhBackward: (a) => ops.tanhBackward(T(a[0]), T(a[1])),
  sigmoidBackward: (a) => ops.sigmoidBackward(T(a[0]), T(a[1])),
  geluBackward: (a, kw) => (hasKw(kw) ? ops.geluBackward(T(a[0]), T(a[1]), kw) : ops.geluBackward(T(a[0]), T(a[1]))),
  scatterAdd: (a) => T(a[0]).scatterAdd(N(a[1]), T(a[2]), T(a[3])),
  sliceScatter: (a) =>
    T(a[0]).sliceScatter(T(a[1]), optNum(a[2]), a[3] as number | null | undefined, a[4] as number | null | undefined, optNum(a[5])),
  selectScatter: (a) => T(a[0]).selectScatter(T(a[1]), N(a[2]), N(a[3])),
  t: (a) => T(a[0]).t(),
  sum: (a) => (a.length === 1 ? T(a[0]).sum() : T(a[0]).sum(dimArg(a[1]), optBool(a[2]))),
  mean: (a) => (a.length === 1 ? T(a[0]).mean() : T(a[0]).mean(dimArg(a[1]), optBool(a[2]))),
  max: (a) => (a.length === 1 ? T(a[0]).max() : valuesIndices(T(a[0]).max(N(a[1]), optBool(a[2])))),
  min: (a) => (a.length === 1 ? T(a[0]).min() : valuesIndices(T(a[0]).min(N(a[1]), optBool(a[2])))),
  argmax: (a) => (a.length === 1 ? T(a[0]).argmax() : T(a[0]).argmax(N(a[1]), optBool(a[2]))),
  reshape: (a) => T(a[0]).reshape(shapeArg(a[1])),
  view: (a) => T(a[0]).view(shapeArg(a[1])),
  flatten: (a) => (a.length === 1 ? T(a[0]).flatten() : a.length === 2 ? T(a[0]).flatten(N(a[1])) : T(a[0]).flatten(N(a[1]), N(a[2]))),
  transpose: (a) => T(a[0]).transpose(N(a[1]), N(a[2])),
  permute: (a) => T(a[0]).permute(shapeArg(a[1])),
  unsqueeze: (a) => T(a[0]).unsqueeze(N(a[1])),
  squeeze: (a) => (a.length === 1 ? T(a[0]).squeeze() : T(a[0]).squeeze(N(a[1]))),
  expand: (a) => T(a[0]).expand(shapeArg(a[1])),
  narrow: (a) => T(a[0]).narrow(N(a[1]), N(a[2]), N(a[3])),
  select: (a) => T(a[0]).select(N(a[1]), N(a[2])),
  gather: (a) => T(a[0]).gather(N(a[1]), T(a[2])),
  clamp: (a) => T(a[0]).clamp(optNum(a[1]), optNum(a[2])),
  where: (a) => ops.where(T(a[0]), T(a[1]), T(a[2])),
  eq: (a) => T(a[0]).eq(TN(a[1])),
  ne: (a) => T(a[0]).ne(TN(a[1])),
  lt: (a) => T(a[0]).lt(TN(a[1])),
  le: (a) => T(a[0]).le(TN(a[1])),
  gt: (a) => T(a[0]).gt(TN(a[1])),
  ge: (a) => T(a[0]).ge(TN(a[1])),
  softmax: (a) => T(a[0]).softmax(N(a[1])),
  logSoftmax: (a) => T(a[0]).logSoftmax(N(a[1])),
  cat: (a) => cat(a[0] as Tensor[], N(a[1])),
  stack: (a) => stack(a[0] as Tensor[], N(a[1])),
  'F.conv1d': (a, kw) => F.conv1d(T(a[0]), T(a[1]), a[2] as Tensor | null, kw),
  'F.conv2d': (a, kw) => F.conv2d(T(a[0]), T(a[1]), a[2] as Tensor | null, kw),
  'F.maxPool2d': (a, kw) => F.maxPool2d(T(a[0]), dimArg(a[1]), kw),
  'F.avgPool2d': (a, kw) => F.avgPool2d(T(a[0]), dimArg(a[1]), kw),
  'F.adaptiveAvgPool2d': (a) => F.adaptiveAvgPool2d(T(a[0]), dimArg(a[1])),
  'F.layerNorm': (a, kw) => (hasKw(kw) ? F.layerNorm(T(a[0]), shapeArg(a[1]), kw) : F.layerNorm(T(a[0]), shapeArg(a[1]))),
  'F.batchNorm': (a, kw) => F.batchNorm(T(a[0]), a[1] as Tensor | null, a[2] as Tensor | null, kw),
  'F.embedding': (a) => F.embedding(T(a[0]), T(a[1])),
  'F.embeddingBag': (a, kw) => F.embeddingBag(T(a[0]), T(a[1]), kw),
  'F.gelu': (a, kw) => (hasKw(kw) ? F.gelu(T(a[0]), kw) : F.gelu(T(a[0]))),
  'F.linear': (a) => (a.length === 2 ? F.linear(T(a[0]), T(a[1])) : F.linear(T(a[0]), T(a[1]), T(a[2]))),
  'F.crossEntropy': (a, kw) => (hasKw(kw) ? F.crossEntropy(T(a[0]), T(a[1]), kw) : F.crossEntropy(T(a[0]), T(a[1]))),
  'F.mseLoss': (a, kw) => (hasKw(kw) ? F.mseLoss(T(a[0]), T(a[1]), kw) : F.mseLoss(T(a[0]), T(a[1]))),
};

// ---------------------------------------------------------------------------------------------------
// comparison: |got - want| <= atol + rtol·|want| element-wise (PyTorch's allclose), exact for ints/bools

interface Tol {
  rtol: number;
  atol: number;
}
const TOL: Tol = { rtol: 1e-4, atol: 1e-5 };
/** Long float32 accumulations (convolutions, matmuls, normalisation statistics, whole models). */
const LOOSE: Tol = { rtol: 1e-4, atol: 1e-4 };
const tolFor = (c: OpCase): Tol => (/conv|matmul|linear|Norm/.test(c.op) ? LOOSE : TOL);

/** A description of the first problem, or null when `got` matches `want`. */
function mismatch(got: Tensor, want: EncodedTensor, tol: Tol): string | null {
  const e = want.t;
  if (!(got instanceof Tensor)) return `expected a Tensor, got ${String(got)}`;
  if (got.shape.join(',') !== e.shape.join(',')) return `shape [${got.shape.join(', ')}], expected [${e.shape.join(', ')}]`;
  if (got.dtype !== e.dtype) return `dtype ${got.dtype}, expected ${e.dtype}`;
  const data = Array.from(got.data() as ArrayLike<number | boolean>, Number);
  if (data.length !== e.data.length) return `${data.length} elements, expected ${e.data.length}`;
  let maxErr = 0;
  let worst = -1;
  let bad = 0;
  for (let i = 0; i < data.length; i++) {
    const g = data[i]!;
    const w = e.data[i]!;
    const err = Math.abs(g - w);
    const ok = e.dtype === 'float32' ? err <= tol.atol + tol.rtol * Math.abs(w) : g === w;
    if (Number.isNaN(err) || err > maxErr) {
      maxErr = Number.isNaN(err) ? NaN : err;
      worst = i;
    }
    if (!ok || Number.isNaN(err)) bad++;
  }
  if (bad === 0) return null;
  return (
    `${bad}/${data.length} elements ${e.dtype === 'float32' ? `out of tolerance (rtol ${tol.rtol}, atol ${tol.atol})` : 'differ (exact compare)'}; ` +
    `max abs error ${maxErr} ` +
    `at flat index ${worst}: got ${data[worst]}, expected ${e.data[worst]}`
  );
}

function check(t: ExecutionContext, what: string, got: Tensor | null | undefined, want: EncodedTensor, tol: Tol): void {
  if (!got) {
    t.fail(`${what}: got ${String(got)}, expected a tensor of shape [${want.t.shape.join(', ')}]`);
    return;
  }
  const problem = mismatch(got, want, tol);
  if (problem) t.fail(`${what}: ${problem}`);
  else t.pass();
}

// ---------------------------------------------------------------------------------------------------
// op cases

const opCases = load<OpCase[]>('ops.json');

test('every op in ops.json has a kiln runner', (t) => {
  t.true(opCases.length > 100);
  t.deepEqual([...new Set(opCases.filter((c) => !KILN[c.op]).map((c) => c.op))], []);
});

for (const c of opCases) {
  test(c.name, (t) => {
    const run = KILN[c.op];
    if (!run) return t.fail(`no kiln runner for op ${c.op}`);
    const tol = tolFor(c);
    const args = c.args.map(decode);
    const kwargs: Kwargs = Object.fromEntries(Object.entries(c.kwargs).map(([k, v]) => [k, decode(v)]));

    const result = run(args, kwargs);
    const outs = Array.isArray(result) ? result : [result];
    const wants = Array.isArray(c.out) ? c.out : [c.out];
    t.is(outs.length, wants.length, 'number of outputs');
    wants.forEach((w, i) => check(t, `output ${i}`, outs[i], w, tol));

    if (c.gradOut === null) {
      outs.forEach((o, i) => t.false(o.requiresGrad, `output ${i} should not require grad`));
      return;
    }
    const seeds = Array.isArray(c.gradOut) ? c.gradOut : [c.gradOut];
    // d/dx sum(out_i * G_i): seed each float output with its G and backpropagate once through their sum
    let total: Tensor | null = null;
    for (const [i, g] of seeds.entries()) {
      if (!g) continue;
      if (!outs[i]!.requiresGrad) return t.fail(`output ${i} does not require grad`);
      const term = outs[i]!.mul(decodeTensor(g)).sum();
      total = total ? total.add(term) : term;
    }
    total!.backward();

    c.grads.forEach((g, i) => {
      if (g === null) return;
      if (Array.isArray(g)) {
        const list = args[i] as Tensor[];
        g.forEach((gj, j) => check(t, `grad of arg ${i}[${j}]`, list[j]!.grad, gj, tol));
      } else {
        check(t, `grad of arg ${i}`, (args[i] as Tensor).grad, g, tol);
      }
    });
    for (const [k, g] of Object.entries(c.kwargsGrads)) check(t, `grad of option ${k}`, (kwargs[k] as Tensor).grad, g, tol);
    c.argsAfter?.forEach((w, i) => {
      if (w) check(t, `arg ${i} after the call (updated in place)`, args[i] as Tensor, w, tol);
    });
  });
}

// ---------------------------------------------------------------------------------------------------
// models

class CNN extends nn.Module {
  conv = new nn.Conv2d(1, 4, 3, { padding: 1 });
  bn = new nn.BatchNorm2d(4);
  pool = new nn.MaxPool2d(2);
  fc = new nn.Linear(4 * 3 * 3, 5);
  override forward(x: Tensor): Tensor {
    return this.fc.call(this.pool.call(this.bn.call(this.conv.call(x)).relu()).flatten(1));
  }
}

const builders: Record<string, () => nn.Module> = {
  mlp: () => new nn.Sequential(new nn.Linear(4, 8), new nn.ReLU(), new nn.Linear(8, 3)),
  cnn: () => new CNN(),
};

for (const c of load<ModelCase[]>('models.json')) {
  test(`model ${c.name}: stateDict keys match PyTorch's, in order`, (t) => {
    const model = builders[c.name]!();
    t.deepEqual(Object.keys(model.stateDict()), c.keys);
  });

  test(`model ${c.name}: output, loss, parameter grads and buffers match PyTorch (train mode)`, (t) => {
    const model = builders[c.name]!();
    model.loadStateDict(Object.fromEntries(Object.entries(c.stateDict).map(([k, v]) => [k, decodeTensor(v)])));
    model.train();
    const out = model.call(decodeTensor(c.input)) as Tensor;
    check(t, 'output', out, c.out, LOOSE);
    const loss = F.crossEntropy(out, decodeTensor(c.target));
    const lossErr = Math.abs(loss.item() - c.loss);
    t.true(lossErr <= LOOSE.atol + LOOSE.rtol * Math.abs(c.loss), `loss ${loss.item()} vs ${c.loss} (abs error ${lossErr})`);
    loss.backward();
    const params = new Map(model.namedParameters());
    t.deepEqual([...params.keys()], Object.keys(c.grads), 'parameter names');
    for (const [name, g] of Object.entries(c.grads)) check(t, `grad of ${name}`, params.get(name)?.grad, g, LOOSE);
    const sd = model.stateDict();
    for (const [name, b] of Object.entries(c.buffersAfter)) check(t, `buffer ${name} after the forward`, sd[name], b, LOOSE);
  });
}

test('the comparison rejects a value off by more than the tolerance, and names the max abs error', (t) => {
  const want: EncodedTensor = { t: { shape: [3], dtype: 'float32', data: [1, 2, 3], requiresGrad: false } };
  t.is(mismatch(tensor([1, 2, 3]), want, TOL), null);
  t.is(mismatch(tensor([1, 2, 3.00002]), want, TOL), null);
  t.regex(mismatch(tensor([1, 2.001, 3]), want, TOL) ?? '', /1\/3 elements .* max abs error 0\.00099\d* at flat index 1/);
  t.regex(mismatch(tensor([1, 2]), want, TOL) ?? '', /shape \[2\], expected \[3\]/);
});
