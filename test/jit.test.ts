import test from 'ava';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { F, KilnError, allclose, manualSeed, nn, ops, rand, randn, tensor, type Tensor } from '../src/index.js';
import { TracedModule, TracingCheckError, TracingError, load, trace, traceModule } from '../src/jit.js';

/** kiln/jit: runtime tracing after PyTorch's test/jit/test_tracer.py. */
const close = (a: unknown, b: unknown) => allclose(a as Tensor, b as Tensor, { atol: 1e-5 });

class MLP extends nn.Module {
  fc1 = new nn.Linear(4, 8);
  fc2 = new nn.Linear(8, 3);
  override forward(inp: Tensor): Tensor {
    return this.fc2.call(F.relu(this.fc1.call(inp))).softmax(-1);
  }
}

/** Collect the TracerWarnings `f` emits, in order (process.emitWarning stubbed: its events arrive a tick later). */
function tracerWarnings(f: () => void): string[] {
  const seen: string[] = [];
  const emit = process.emitWarning;
  process.emitWarning = ((w: string, type?: string) => void (type === 'TracerWarning' && seen.push(w))) as typeof process.emitWarning;
  try {
    f();
  } finally {
    process.emitWarning = emit;
  }
  return seen;
}

test('trace(module) records the ops it ran, reads weights by path, and reproduces eager on new inputs and gradients', (t) => {
  manualSeed(0);
  const m = new MLP();
  const traced = trace(m, [randn([2, 4])]);
  const ops_ = traced.graph.nodes.filter((n) => n.op === 'call_function').map((n) => (n.target as { name: string }).name);
  t.deepEqual(ops_, ['linear', 'relu', 'linear', 'softmax']);
  t.deepEqual(
    traced.graph.nodes.filter((n) => n.op === 'get_attr').map((n) => n.target),
    ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias'],
  );
  t.regex(traced.code, /ops\.linear\(inp, fc1_weight, fc1_bias\)/, 'the graph input is named after forward’s parameter');
  const x = randn([5, 4]);
  t.true(close(traced.call(x), m.call(x)));
  // gradients through the traced program land on the original parameters, equal to eager's
  const g1 = (() => {
    traced.call(x).sum().backward();
    const g = m.fc1.weight.grad!.clone();
    m.zeroGrad();
    return g;
  })();
  m.call(x).sum().backward();
  t.true(close(g1, m.fc1.weight.grad));
});

test('item() and toArray() on traced values warn once per site, in program order, naming the read', (t) => {
  const f = (x: Tensor) => {
    const s = x.sum().item();
    const first = x.toArray();
    void first;
    return x.mul(s);
  };
  const warnings = tracerWarnings(() => void trace(f, [randn([3])], { checkTrace: false }));
  t.is(warnings.length, 2);
  t.regex(warnings[0]!, /^item\(\): Converting a tensor to a JavaScript value might cause the trace to be incorrect/);
  t.regex(warnings[1]!, /^toArray\(\): /);
  t.regex(warnings[0]!, /jit\.test\.ts:\d+/);
});

test('errors with PyTorch’s meaning: dict outputs (unless strict: false), non-tensor outputs, number inputs, grad-requiring constants, a bare forward', (t) => {
  const x = randn([2]);
  t.throws(() => trace((a: Tensor) => ({ out: a.neg() }), [x]), {
    instanceOf: TracingError,
    message: /^Encountering a dict at the output of the tracer/,
  });
  const loose = trace((a: Tensor) => ({ out: a.neg(), twice: a.mul(2) }), [x], { strict: false });
  t.true(close((loose(x) as { twice: Tensor }).twice, x.mul(2)));
  t.throws(() => trace((a: Tensor) => [a, 3] as never, [x]), {
    message: /^Only tensors, arrays of tensors, or objects of tensors can be output from traced functions \(output\[1\]/,
  });
  t.throws(() => trace((a: Tensor, k: number) => a.mul(k), [x, 2]), { message: /^Type 'number' cannot be traced \(input\[1\]\)/ });
  const w = randn([2]).requiresGrad_();
  t.throws(() => trace((a: Tensor) => a.mul(w), [x]), { message: /^Cannot insert a Tensor that requires grad as a constant/ });
  const m = new MLP();
  t.throws(() => trace(m.forward, [randn([1, 4])]), { message: /trace doesn't support compiling individual module's functions/ });
  t.throws(() => traceModule(m, { nope: [x] }), { message: "traceModule: MLP has no method 'nope'" });
});

test('nested inputs and outputs: object key order does not matter later; a missing key is an error', (t) => {
  const f = (d: { a: Tensor; b: Tensor }, list: Tensor[]) => [d.a.add(list[0]!), d.b.mul(list[1]!)];
  const a = randn([3]);
  const b = randn([3]);
  const traced = trace(f, [{ a, b }, [randn([3]), randn([3])]]);
  const l = [randn([3]), randn([3])];
  const out = traced({ b, a }, l) as Tensor[];
  t.true(close(out[0], a.add(l[0]!)));
  t.true(close(out[1], b.mul(l[1]!)));
  t.throws(() => traced({ a }, l), {
    instanceOf: KilnError,
    message: "input[0]: key 'b' is missing (the trace was made with keys a, b)",
  });
});

test('the trace checker: a data-dependent branch gives “Graphs differed across invocations!” with a diff; a captured changing value is a constant that differs; rand is a nondeterministic node', (t) => {
  const branchy = (x: Tensor) => (x.sum().item() > 0 ? x.relu() : x.neg());
  const pos = ops.abs(randn([4]));
  const e = t.throws(() => tracerWarnings(() => void trace(branchy, [pos], { checkInputs: [[pos.neg()]] })), {
    instanceOf: TracingCheckError,
  });
  t.regex(e!.message, /^Graphs differed across invocations!\n/);
  t.regex(e!.message, /^- .*relu/m);
  t.regex(e!.message, /^\+ .*neg/m);
  let calls = 0;
  const drifting = (x: Tensor) => x.add(tensor([calls++]));
  t.throws(() => trace(drifting, [randn([4])]), {
    instanceOf: TracingCheckError,
    message: /^Tensor-valued Constant nodes differed in value across invocations/,
  });
  // rand inside the program is recorded as a call (a fresh sample each run), as PyTorch records aten::rand.
  const noisy = (x: Tensor) => x.add(rand([4]));
  const warnings = tracerWarnings(() => void trace(noisy, [randn([4])]));
  t.is(warnings.length, 2, 'nondeterministic nodes, then the output that differs (as PyTorch warns both)');
  t.regex(warnings[1]!, /^Output nr 1\. of the traced function does not match/);
  t.regex(warnings[0]!, /^Trace had nondeterministic nodes\. .*\n\t%rand : \[#users=1\] = call_function\[target=rand\]/);
});

test('hooks are inlined, a shared layer is read once, in-place ops are recorded', (t) => {
  class Shared extends nn.Module {
    fc = new nn.Linear(3, 3);
    override forward(x: Tensor): Tensor {
      const h = this.fc.call(this.fc.call(x));
      return h.clamp_(0, 10);
    }
  }
  const m = new Shared();
  m.fc.registerForwardHook((_mod, _inp, out) => (out as Tensor).mul(2));
  const traced = trace(m, [randn([2, 3])]);
  t.is(traced.graph.nodes.filter((n) => n.op === 'get_attr').length, 2, 'fc.weight and fc.bias once each');
  t.is(
    traced.graph.nodes.filter((n) => n.op === 'call_function' && (n.target as { name: string }).name === 'mul').length,
    2,
    'the hook ran twice',
  );
  const output = traced.graph.nodes.find((n) => n.op === 'output')!;
  t.is((output.args[0] as { name: string }[])[0]!.name, 'clamp', 'the in-place clamp_ is recorded as its out-of-place result');
  const x = randn([4, 3]);
  t.true(close(traced.call(x), m.call(x)));
});

test('traceModule traces several methods; the small CNN graph prints readably (snapshot)', (t) => {
  class CNN extends nn.Module {
    conv = new nn.Conv2d(1, 4, 3, { padding: 1 });
    pool = new nn.MaxPool2d(2);
    head = new nn.Linear(4 * 4 * 4, 2);
    features(x: Tensor): Tensor {
      return this.pool.call(F.relu(this.conv.call(x))) as Tensor;
    }
    override forward(x: Tensor): Tensor {
      return this.head.call(this.features(x).flatten(1));
    }
  }
  manualSeed(1);
  const m = new CNN();
  const x = randn([2, 1, 8, 8]);
  const traced = traceModule(m, { forward: [x], features: [x] });
  t.true(close(traced.call(x), m.call(x)));
  t.true(close((traced as unknown as { features(x: Tensor): Tensor }).features(x), m.features(x)));
  t.snapshot(traced.graph.toString(), 'CNN forward graph');
});

test('save/load round-trips outputs and gradients; 200 random byte corruptions each give a KilnError, never a wrong model', (t) => {
  manualSeed(2);
  const m = new MLP();
  const traced = trace(m, [randn([2, 4])]);
  const dir = mkdtempSync(join(tmpdir(), 'kiln-jit-'));
  const file = join(dir, 'mlp.kiln.json');
  traced.save(file);
  const back = load(file) as TracedModule;
  const x = randn([3, 4]);
  t.true(close(back.call(x), traced.call(x)));
  back.call(x).sum().backward();
  traced.call(x).sum().backward();
  const weightOf = (mod: nn.Module) => mod.getSubmodule('fc1') as nn.Linear;
  t.not(weightOf(back).weight, m.fc1.weight, 'the loaded program has its own weights');
  t.true(close(weightOf(back).weight.grad, m.fc1.weight.grad), 'and the same gradients');
  const bytes = readFileSync(file);
  let seed = 12345;
  const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  const bad = join(dir, 'bad.json');
  let refused = 0;
  for (let i = 0; i < 200; i++) {
    const copy = Buffer.from(bytes);
    const at = Math.floor(rnd() * copy.length);
    copy[at] = (copy[at]! + 1 + Math.floor(rnd() * 254)) % 256;
    writeFileSync(bad, copy);
    try {
      load(bad);
      t.fail(`corruption at byte ${at} loaded`);
    } catch (e) {
      if (!(e instanceof KilnError)) throw e;
      refused++;
    }
  }
  t.is(refused, 200);
  writeFileSync(bad, bytes.subarray(0, bytes.length >> 1));
  t.throws(() => load(bad), { instanceOf: KilnError, message: /not a kiln\.jit file \(not valid JSON/ });
  const json = JSON.parse(bytes.toString()) as Record<string, unknown>;
  writeFileSync(bad, JSON.stringify({ ...json, version: 9 }));
  t.throws(() => load(bad), { message: /is version 9; this kiln reads version 1/ });
});

test('detach and casts are one node each; dropout in training mode warns that the trace is nondeterministic, then that its output differs', (t) => {
  const f = (x: Tensor) => x.detach().int().float().mul(2);
  const traced = trace(f, [randn([3]).mul(10)]);
  t.deepEqual(
    traced.graph.nodes
      .filter((n) => n.op !== 'placeholder' && n.op !== 'output')
      .map((n) => `${n.op}:${typeof n.target === 'string' ? n.target : (n.target as { name: string }).name}`),
    ['call_method:detach', 'call_function:toDType', 'call_function:toDType', 'call_function:mul'],
  );
  const x = randn([3]).mul(10);
  t.true(close(traced(x), f(x)));
  t.regex(traced.code, /detach/);
  const dir = mkdtempSync(join(tmpdir(), 'kiln-jit-fn-'));
  traced.save(join(dir, 'f.json'));
  const back = load(join(dir, 'f.json')) as (x: Tensor) => Tensor;
  t.is(typeof back, 'function', 'a traced function loads back as a function');
  t.true(close(back(x), f(x)));
  class Drop extends nn.Module {
    drop = new nn.Dropout(0.5);
    override forward(x: Tensor): Tensor {
      return this.drop.call(x) as Tensor;
    }
  }
  const warnings = tracerWarnings(() => void trace(new Drop(), [randn([64])]));
  t.is(warnings.length, 2);
  t.regex(warnings[0]!, /^Trace had nondeterministic nodes\. Did you forget to call \.eval\(\) on your model\? Nodes:\n\t%dropout/);
  t.regex(warnings[1]!, /^Output nr 1\. of the traced function does not match the corresponding output of the Python function/);
  t.deepEqual(
    tracerWarnings(() => void trace(new Drop().eval(), [randn([64])])),
    [],
  );
});

test('the built package exposes runtime tracing as kiln/jit', async (t) => {
  const jit = await import('kiln/jit');
  t.is(typeof jit.trace, 'function');
  t.is(typeof jit.load, 'function');
  t.is(jit.JIT_FORMAT, 'kiln.jit');
});

test('index assignment through views (narrow(...).copy_, select(...).fill_) is recorded as viewScatter: outputs and gradients match eager; a write into a view of an input is replayed on the input', (t) => {
  const patch = (x: Tensor) => {
    const y = x.mul(2);
    y.narrow(1, 0, 2).copy_(x.narrow(1, 2, 2).neg()); // y[:, 0:2] = -x[:, 2:4]
    y.select(0, 0).fill_(7); // y[0] = 7
    return y.add(1);
  };
  const traced = trace(patch, [randn([3, 5])]);
  t.is(traced.graph.nodes.filter((n) => n.op === 'call_function' && (n.target as { name: string }).name === 'viewScatter').length, 2);
  t.regex(traced.code, /ops\.viewScatter\(y, expand, \[\["narrow", \[1, 0, 2\], \{\}\]\]\)/);
  const a = randn([3, 5]).requiresGrad_();
  const b = a.detach().requiresGrad_();
  const fromTrace = traced(a) as Tensor;
  const eager = patch(b);
  t.true(close(fromTrace, eager));
  fromTrace.mul(fromTrace).sum().backward();
  eager.mul(eager).sum().backward();
  t.true(close(a.grad, b.grad), 'gradients through the recorded writes equal eager ones');
  const dir = mkdtempSync(join(tmpdir(), 'kiln-jit-put-'));
  traced.save(join(dir, 'patch.json'));
  const back = load(join(dir, 'patch.json')) as (x: Tensor) => Tensor;
  const x = randn([3, 5]);
  t.true(close(back(x), patch(x)));
  const intoInput = (x: Tensor) => {
    x.narrow(0, 0, 1).zero_();
    return x.mul(3);
  };
  const warnings: string[] = [];
  const intoInputTraced = (() => {
    let tr: ((x: Tensor) => unknown) | undefined;
    warnings.push(...tracerWarnings(() => void (tr = trace(intoInput, [randn([2, 2])], { checkTrace: false }))));
    return tr!;
  })();
  t.deepEqual(warnings, [], 'a write into a view of an input is replayed, not warned about');
  const given = randn([2, 2]);
  const eagerCopy = given.clone();
  t.true(close(intoInputTraced(given), intoInput(eagerCopy)));
  t.true(close(given, eagerCopy), 'the traced program writes into its input as eagerly');
  t.throws(() => ops.viewScatter(x, x, [['relu', [], {}]]), {
    message: /^viewScatter: the chain \[\["relu",\[\],\{\}\]\] does not give a view of the input/,
  });
  t.throws(() => ops.viewScatter(x, x, [['nope', [], {}]]), { message: /^viewScatter: 'nope' is not an op/ });
});
