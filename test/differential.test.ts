import test from 'ava';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { F, KilnError, manualSeed, nn, randn, ShapeError, testing, ValueError, type Backend, type Tensor } from '../src/index.js';
import * as fx from '../src/fx.js';
import { generateProgram, sideLog } from './fuzz-programs.js';

const here = fileURLToPath(import.meta.url);
const lineOf = (marker: string) =>
  readFileSync(here, 'utf8')
    .split('\n')
    .findIndex((l) => l.includes(marker) && !l.includes('lineOf')) + 1;

class Net extends nn.Module {
  fc = new nn.Linear(4, 6);
  bn = new nn.BatchNorm1d(6);
  drop = new nn.Dropout(0.2);
  out = new nn.Linear(6, 3);
  scale = 0.5;

  override forward(x: Tensor): Tensor {
    const h = this.bn.call(this.fc.call(x)).relu(); // <- relu line
    return this.out.call(this.drop.call(h)).mul(this.scale).softmax(-1);
  }
}

/** A backend that computes the wrong thing at one op (relu becomes neg), on its own copy of the graph. */
const reluIsNeg: Backend = (gm) => {
  const g = new fx.Graph();
  g.output(g.graphCopy(gm.graph, new Map())!);
  for (const n of g.nodes) if (n.op === 'call_method' && n.target === 'relu') n.target = 'neg';
  const copy = new fx.GraphModule(gm, g, gm.className);
  return (...args) => copy.forward(...args);
};

test('differential: a model compiled on both backends, grad on and off, train and eval, matches eager on given and random inputs', (t) => {
  manualSeed(0);
  const report = testing.differential(new Net().eval(), [randn([8, 4])], { modes: ['eval', 'train'], randomInputs: 2 });
  t.true(report.ok, String(report));
  t.is(report.runs, 2 * 2 * 2 * 3, 'backends × grad modes × train/eval × input sets');
  t.is(report.graphs, 1);
  t.regex(String(report), /^differential check: 24 compiled runs against eager, up to 1 graph each: all match$/);
});

test('differential leaves the model as it was: parameters, buffers, grads, training flags, plain attributes and the random stream', (t) => {
  manualSeed(1);
  const m = new Net();
  m.eval();
  m.drop.train(); // mixed flags must come back as they were
  const sentinel = randn([6, 4]);
  m.fc.weight.grad = sentinel;
  const tensors = () => [...m.namedParameters(), ...m.namedBuffers()];
  const state = tensors().map(([k, v]) => [k, v, v.toArray()] as const);
  const x = randn([8, 4]);
  manualSeed(5);
  const expectedNext = randn([3]).toArray();
  manualSeed(5);
  const report = testing.differential(m, [x], { modes: ['train', 'eval'], backends: ['eager'] });
  t.true(report.ok, String(report));
  t.deepEqual(randn([3]).toArray(), expectedNext, 'the global generator continues where it was');
  for (const [k, v, data] of state) {
    t.is(new Map(tensors()).get(k), v, `${k} is the same tensor object`);
    t.deepEqual(v.toArray(), data, `${k} holds the same values`);
  }
  t.is(m.fc.weight.grad, sentinel);
  t.is(m.out.weight.grad, null);
  t.deepEqual(
    m.modules().map((x) => x.training),
    [false, false, false, true, false],
  );
  t.is(m.scale, 0.5);
});

test('differential names the backend, mode, what differs, the graph and the node that diverged with its source line', (t) => {
  manualSeed(2);
  const report = testing.differential(new Net().eval(), [randn([8, 4])], {
    backends: ['eager', { name: 'relu-is-neg', backend: reluIsNeg }],
    randomInputs: 0,
  });
  t.false(report.ok);
  t.true(
    report.mismatches.every((m) => m.backend === 'relu-is-neg'),
    'the correct backend has no mismatch',
  );
  const out = report.mismatches.find((m) => m.what === 'output' && !m.grad)!;
  t.like(out, { backend: 'relu-is-neg', grad: false, mode: 'eval', inputs: 'given', graph: 0, node: 'relu' });
  t.regex(out.detail, /^\d+ of 24 elements differ; worst at \d+: \S+, eager \S+$/);
  t.regex(
    out.nodeSource!,
    new RegExp(`call_method relu.* at Net\\.forward \\(.*differential\\.test\\.ts:${lineOf('<- relu line')}:\\d+\\)$`),
  );
  const grads = report.mismatches.filter((m) => m.grad).map((m) => m.what);
  t.true(grads.includes('grad of input 0'));
  t.true(grads.includes("grad of parameter 'fc.weight'"));
  const text = String(report);
  t.regex(text, /^differential check: 4 compiled runs against eager, up to 1 graph each: \d+ mismatches\n/);
  t.regex(text, /\n {2}relu-is-neg {2}noGrad {2}eval {2}given {2}output +\d+ of 24 elements differ/);
  t.regex(text, /\n {4,}graph 0 node 'relu': call_method relu/);
});

test('differential reports a compiled run that throws where eager does not', (t) => {
  const failing: Backend = () => () => {
    throw new KilnError('backend exploded');
  };
  const fn = (x: Tensor) => x.relu().add(1);
  const report = testing.differential(fn, [randn([2, 3])], {
    backends: [{ name: 'failing', backend: failing }],
    grad: [false],
    randomInputs: 0,
  });
  t.is(report.mismatches.length, 1);
  t.like(report.mismatches[0], { what: 'error', detail: 'eager: no error; compiled: KilnError: backend exploded', mode: undefined });
});

test("differential on a function over a module compares that module's parameter gradients and restores them", (t) => {
  manualSeed(3);
  const lin = new nn.Linear(3, 2);
  const fn = (x: Tensor) => x.tanh().matmul(lin.weight.t()).sum(-1);
  const ok = testing.differential(fn, [randn([4, 3])], { module: lin });
  t.true(ok.ok, String(ok));
  t.is(lin.weight.grad, null);
  // Run-time compile() runs a function that closes over `lin` eagerly (it cannot guard the free variable), so the
  // failing backend would never run: the same function traced by symbolicTrace is a GraphModule it captures.
  const traced = fx.symbolicTrace((x: Tensor) => F.linear(x.relu(), lin.weight));
  const bad = testing.differential(traced, [randn([4, 3])], {
    module: lin,
    backends: [{ name: 'relu-is-neg', backend: reluIsNeg }],
    randomInputs: 0,
    grad: [true],
  });
  t.true(bad.mismatches.some((m) => /^grad of parameter '(weight|_tensor_constant0)'$/.test(m.what)));
});

test('differential rejects bad arguments with a ValueError naming them', (t) => {
  const m = new Net();
  t.throws(() => testing.differential(3 as never, []), { instanceOf: ValueError, message: /expected an nn\.Module or a function/ });
  t.throws(() => testing.differential(m, randn([2]) as never), { instanceOf: ValueError, message: /inputs must be an array/ });
  t.throws(() => testing.differential(m, [randn([2, 4])], { backends: ['tpu' as never] }), {
    instanceOf: ValueError,
    message: /unknown backend "tpu"/,
  });
  t.throws(() => testing.differential(m, [randn([2, 4])], { randomInputs: -1 }), { instanceOf: ValueError, message: /randomInputs/ });
  t.throws(() => testing.differential(m, [randn([2, 4])], { modes: ['test' as never] }), { instanceOf: ValueError, message: /modes/ });
  t.throws(() => testing.differential(m, [randn([2, 4])], { grad: ['yes' as never] }), {
    instanceOf: ValueError,
    message: /grad takes booleans/,
  });
});

test('differential throws the eager error when the model does not run on the inputs (nothing to compare)', (t) => {
  const m = new Net();
  t.throws(() => testing.differential(m, [randn([2, 5])]), {
    instanceOf: ShapeError,
    message: /^Linear\(in_features=4, out_features=6\): expected input \[\.\.\., 4\], got \[2, 5\]/,
  });
});

test('differential fuzz: 300 seeded generated programs (modules and functions) compiled at run time match eager', (t) => {
  const failures: string[] = [];
  let captured = 0;
  let capturable = 0;
  process.removeAllListeners('warning'); // programs with free variables warn that they run eagerly: expected here
  for (let i = 0; i < 300; i++) {
    manualSeed(i);
    const p = generateProgram(13, i);
    const logged = sideLog.length;
    const report = testing.differential(p.model, p.inputs, { randomInputs: 0, seed: i });
    if (!report.ok) failures.push(`program ${i} (${p.mode}) ${p.description}\n${String(report)}`);
    // Free variables (the side-effect step's log, scale and closure layer) make run-time capture run eagerly.
    if (!p.description.includes('log.push')) {
      capturable++;
      if (report.graphs > 0) captured++;
    } else t.true(sideLog.length > logged, `program ${i}: the side effect ran`);
  }
  t.deepEqual(failures, []);
  t.is(captured, capturable, 'every program without free variables was captured into a graph');
  t.true(capturable >= 200);
});

test('differential fuzz can fail: generated programs that use relu are flagged when the backend gets relu wrong', (t) => {
  let withRelu = 0;
  for (let i = 0; i < 80; i++) {
    const p = generateProgram(13, i);
    const report = testing.differential(p.model, p.inputs, {
      randomInputs: 0,
      seed: i,
      grad: [false],
      backends: [{ name: 'relu-is-neg', backend: reluIsNeg }],
    });
    // relu() method calls (ReLU layers are call_module nodes, which this backend leaves alone).
    if (report.graphs === 0 || !p.description.includes('relu()')) continue;
    withRelu++;
    t.false(report.ok, p.description);
  }
  t.true(withRelu >= 5, `only ${withRelu} programs with relu()`);
});
