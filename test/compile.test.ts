import test from 'ava';
import { same } from './helpers.js';
import {
  F,
  GraphBreakError,
  KilnError,
  RecompileError,
  ValueError,
  compile,
  explain,
  formatExplain,
  graphBreak,
  manualSeed,
  nn,
  noGrad,
  randn,
  resetCompileCaches,
  testing,
  type Tensor,
} from '../src/index.js';

class MLP extends nn.Module {
  fc1 = new nn.Linear(8, 16);
  fc2 = new nn.Linear(16, 4);
  override forward(x: Tensor): Tensor {
    return this.fc2.call(F.relu(this.fc1.call(x))).softmax(-1);
  }
}

class Scaled extends nn.Module {
  fc = new nn.Linear(4, 4);
  scale = 2;
  override forward(x: Tensor): Tensor {
    return this.fc.call(x).mul(this.scale);
  }
}

test('compile(module) equals eager over several calls, shares parameters, compiles one graph', (t) => {
  manualSeed(0);
  const m = new MLP();
  const cnt = new testing.CompileCounter();
  const opt = compile(m, { backend: cnt });
  t.is(opt.origMod, m);
  t.deepEqual(opt.parameters(), m.parameters());
  t.is(opt.parameters()[0], m.fc1.weight);
  t.deepEqual(Object.keys(opt.stateDict()), ['origMod.fc1.weight', 'origMod.fc1.bias', 'origMod.fc2.weight', 'origMod.fc2.bias']);
  for (let i = 0; i < 3; i++) {
    const x = randn([5, 8]);
    same(t, opt.call(x) as Tensor, m.call(x));
  }
  t.is(cnt.frameCount, 1);
  t.is(cnt.opCount, 4); // fc1, relu, fc2, softmax
  cnt.clear();
  t.is(cnt.frameCount + cnt.opCount, 0);
});

test('gradients through a compiled module equal eager gradients', (t) => {
  manualSeed(1);
  const m = new MLP();
  const opt = compile(m, { backend: 'eager' });
  const x = randn([3, 8]);
  (opt.call(x) as Tensor).pow(2).sum().backward();
  const g1 = m.fc1.weight.grad!.clone();
  m.zeroGrad();
  m.call(x).pow(2).sum().backward();
  same(t, g1, m.fc1.weight.grad!);
});

test('an int attribute is guarded: frameCount 1, 2 after a change, 3 after another; the failure names it', (t) => {
  const m = new Scaled();
  const cnt = new testing.CompileCounter();
  const failures: string[] = [];
  const opt = compile(m, { backend: cnt, onGuardFail: (f) => failures.push(f) });
  const x = randn([2, 4]);
  same(t, opt.call(x) as Tensor, m.call(x));
  t.is(cnt.frameCount, 1);
  m.scale = 3;
  same(t, opt.call(x) as Tensor, m.call(x));
  t.is(cnt.frameCount, 2);
  m.scale = 4;
  same(t, opt.call(x) as Tensor, m.call(x));
  t.is(cnt.frameCount, 3);
  m.scale = 2; // an earlier specialisation still in the cache: no recompile
  same(t, opt.call(x) as Tensor, m.call(x));
  t.is(cnt.frameCount, 3);
  t.deepEqual(failures, ['self.scale == 2', 'self.scale == 2']);
});

test('a self-mutating counter matches eager over 3 calls on two instances', (t) => {
  class Counter extends nn.Module {
    layer = new nn.Linear(3, 3);
    counter = 0;
    override forward(x: Tensor): Tensor {
      const r = this.layer.call(x).add(this.counter);
      this.counter++;
      return r;
    }
  }
  manualSeed(2);
  const a = new Counter();
  const b = new Counter();
  const eagerA = new Counter();
  eagerA.loadStateDict(a.stateDict());
  const ca = compile(a, { backend: 'eager' });
  const cb = compile(b, { backend: 'eager' });
  const x = randn([2, 3]);
  for (let i = 0; i < 3; i++) {
    same(t, ca.call(x) as Tensor, eagerA.call(x));
    cb.call(x);
  }
  t.is(a.counter, 3);
  t.is(b.counter, 3);
  t.is(eagerA.counter, 3);
});

/** Each change must cause exactly one recompile (and a second call with the change must not). */
function oneRecompile(t: import('ava').ExecutionContext, name: string, change: (m: MLP) => void, expectFailure: RegExp): void {
  manualSeed(3);
  const m = new MLP();
  const cnt = new testing.CompileCounter();
  const failures: string[] = [];
  const opt = compile(m, { backend: cnt, onGuardFail: (f) => failures.push(f) });
  const x = randn([2, 8]);
  opt.call(x);
  t.is(cnt.frameCount, 1, name);
  change(m);
  const y = m.call(x);
  same(t, opt.call(x) as Tensor, y);
  opt.call(x);
  t.is(cnt.frameCount, 2, name);
  t.regex(failures.join('; '), expectFailure, name);
}

test('reordering, replacing forward, hooks, dtype and resetCompileCaches each cause exactly one recompile', (t) => {
  oneRecompile(
    t,
    'submodule order',
    (m) => {
      const { fc1, fc2 } = m;
      delete (m as Partial<MLP>).fc1;
      delete (m as Partial<MLP>).fc2;
      m.fc2 = fc2;
      m.fc1 = fc1;
    },
    /submodules/,
  );
  oneRecompile(
    t,
    'parameter order',
    (m) => {
      const w = m.fc1.weight;
      delete (m.fc1 as Partial<nn.Linear>).weight;
      m.fc1.weight = w;
    },
    /parameters/,
  );
  oneRecompile(t, 'buffer registered', (m) => m.registerBuffer('extra', randn([1])), /buffers/);
  oneRecompile(
    t,
    'forward replaced',
    (m) => {
      // no closure: a free variable (such as the old forward) would make run-time capture run it eagerly
      m.forward = function (this: MLP, x: Tensor) {
        return this.fc2
          .call(F.relu(this.fc1.call(x)))
          .softmax(-1)
          .neg();
      };
    },
    /forward/,
  );
  let calls = 0;
  oneRecompile(t, 'hook added', (m) => void m.fc1.registerForwardHook(() => void calls++), /forwardHooks/);
  t.true(calls > 0);
  oneRecompile(t, 'training flag', (m) => void m.fc2.eval(), /fc2\.training/);
  oneRecompile(t, 'cache reset', () => resetCompileCaches(), /^$/);

  // removing a hook is a change too
  const m = new MLP();
  const h = m.fc2.registerForwardHook(() => undefined);
  const cnt = new testing.CompileCounter();
  const opt = compile(m, { backend: cnt });
  const x = randn([2, 8]);
  opt.call(x);
  h.remove();
  opt.call(x);
  opt.call(x);
  t.is(cnt.frameCount, 2);

  // a dtype change on the input
  const f = compile((a: Tensor) => a.add(1), { backend: cnt });
  cnt.clear();
  f(randn([3]));
  f(randn([3]).int());
  f(randn([3]).int());
  t.is(cnt.frameCount, 2);
});

test('automatic dynamic shapes: the first shape change recompiles once with that dim free', (t) => {
  const cnt = new testing.CompileCounter();
  const failures: string[] = [];
  const f = compile((x: Tensor) => x.relu().sum(1), { backend: cnt, onGuardFail: (s) => failures.push(s) });
  f(randn([2, 5]));
  f(randn([3, 5]));
  f(randn([7, 5]));
  const z = randn([9, 5]);
  same(t, f(z) as Tensor, z.relu().sum(1));
  t.is(cnt.frameCount, 2);
  t.deepEqual(failures, ['x.shape[0] == 2']);
  f(randn([9, 6])); // the other dim is still specialised
  t.is(cnt.frameCount, 3);

  const fixed = new testing.CompileCounter();
  const g = compile((x: Tensor) => x.neg(), { backend: fixed, dynamic: false });
  [1, 2, 3].forEach((n) => g(randn([n])));
  t.is(fixed.frameCount, 3);
  const free = new testing.CompileCounter();
  const h = compile((x: Tensor) => x.neg(), { backend: free, dynamic: true });
  [1, 2, 3].forEach((n) => h(randn([n])));
  t.is(free.frameCount, 1);
});

test('cacheSizeLimit: past the limit it runs eagerly, with one warning naming the guard', async (t) => {
  const m = new Scaled();
  const cnt = new testing.CompileCounter();
  const opt = compile(m, { backend: cnt, cacheSizeLimit: 2 });
  const warnings: Error[] = [];
  const onWarning = (w: Error) => warnings.push(w);
  process.on('warning', onWarning);
  const x = randn([1, 4]);
  for (let s = 1; s <= 5; s++) {
    m.scale = s;
    same(t, opt.call(x) as Tensor, m.call(x));
  }
  await new Promise((r) => setImmediate(r));
  process.off('warning', onWarning);
  t.is(cnt.frameCount, 2);
  const mine = warnings.filter((w) => w.name === 'KilnRecompileWarning');
  t.is(mine.length, 1);
  t.regex(mine[0]!.message, /Scaled\.forward hit cacheSizeLimit \(2\).*'self\.scale == 1'/);
});

test('errorOnRecompile throws RecompileError naming the guard', (t) => {
  const m = new Scaled();
  const opt = compile(m, { backend: 'eager', errorOnRecompile: true });
  opt.call(randn([1, 4]));
  m.scale = 5;
  t.throws(() => opt.call(randn([1, 4])), { instanceOf: RecompileError, message: /'self\.scale == 2'/ });
});

test('data-dependent control flow falls back to eager; fullgraph turns it into GraphBreakError with file, line and code frame', (t) => {
  class Branchy extends nn.Module {
    fc = new nn.Linear(2, 2);
    override forward(x: Tensor): Tensor {
      const h = this.fc.call(x);
      if (h.sum().item() > 0) return h.relu();
      return h.neg();
    }
  }
  const m = new Branchy();
  const cnt = new testing.CompileCounter();
  const opt = compile(m, { backend: cnt });
  for (let i = 0; i < 3; i++) {
    const x = randn([3, 2]);
    same(t, opt.call(x) as Tensor, m.call(x));
  }
  t.is(cnt.frameCount, 0);
  const strict = compile(new Branchy(), { fullgraph: true });
  const e = t.throws(() => strict.call(randn([3, 2])), { instanceOf: GraphBreakError });
  t.regex(e.message, /compile\.test\.ts:\d+:\d+: symbolic tracing: \.item\(\)/);
  t.regex(e.message, /> *\d+ \| +if \(h\.sum\(\)\.item\(\) > 0\)/);
});

test('graphBreak() does nothing eagerly and is reported by explain with its location', (t) => {
  const fn = (x: Tensor) => {
    const y = x.exp();
    graphBreak();
    return y.log();
  };
  const v = randn([2]).abs();
  same(t, fn(v), v.exp().log());
  const report = explain(fn)(randn([4]));
  t.is(report.graphCount, 0);
  t.is(report.graphBreakCount, 1);
  t.regex(report.breakReasons[0]!.reason, /graphBreak\(\) was called/);
  t.regex(report.breakReasons[0]!.loc, /compile\.test\.ts:\d+:\d+$/);
  t.regex(formatExplain(report), /break at .*compile\.test\.ts:\d+:\d+:\n {2}graphBreak\(\) was called/);
  t.throws(() => compile(fn, { fullgraph: true })(randn([4])), { instanceOf: GraphBreakError, message: /graphBreak/ });
});

test('explain reports graphs, op count and guards of a clean model', (t) => {
  const m = new Scaled();
  const report = explain(m)(randn([2, 4]));
  t.is(report.graphCount, 1);
  t.is(report.graphBreakCount, 0);
  t.is(report.opCount, 2);
  t.is(report.graphs[0]!.graph.nodes.length, 4);
  for (const g of [
    'x.shape[0] == 2',
    'x.dtype == float32',
    'self.scale == 2',
    'self.fc.forwardHooks',
    'self.training == true',
    'isGradEnabled() == true',
  ]) {
    t.true(report.guards.includes(g), g);
  }
  const text = formatExplain(report);
  t.regex(text, /\n {2}x: Tensor \[2, 4\] float32, requiresGrad false\n/);
  t.regex(text, /\n {2}forward hooks unchanged: self and 1 submodule\n/);
  t.regex(text, /\n {2}self\.scale == 2/);
});

test('a plain attribute forward never reads is not guarded: changing it does not recompile', (t) => {
  class Counting extends nn.Module {
    fc = new nn.Linear(4, 4);
    steps = 0;
    override forward(x: Tensor): Tensor {
      return this.fc.call(x).relu();
    }
  }
  const m = new Counting();
  const counter = new testing.CompileCounter();
  const c = compile(m, { backend: counter });
  c.call(randn([2, 4]));
  m.steps = 5;
  c.call(randn([2, 4]));
  t.is(counter.frameCount, 1);
  t.false(explain(m)(randn([2, 4])).guards.some((g) => g.includes('steps')));
});

test('hooks on every submodule run as often as eager under fullgraph', (t) => {
  class Deep extends nn.Module {
    block = new MLP();
    head = new nn.Linear(4, 2);
    override forward(x: Tensor): Tensor {
      return this.head.call(this.block.call(x));
    }
  }
  const count = (m: nn.Module) => {
    const seen: Record<string, number> = {};
    for (const [name, sub] of m.namedModules()) {
      sub.registerForwardPreHook(() => void (seen[`pre:${name}`] = (seen[`pre:${name}`] ?? 0) + 1));
      sub.registerForwardHook(() => void (seen[`post:${name}`] = (seen[`post:${name}`] ?? 0) + 1));
    }
    return seen;
  };
  manualSeed(4);
  const eager = new Deep();
  manualSeed(4);
  const compiled = new Deep();
  const a = count(eager);
  const b = count(compiled);
  const opt = compile(compiled, { fullgraph: true, backend: 'eager' });
  for (let i = 0; i < 3; i++) {
    const x = randn([2, 8]);
    same(t, opt.call(x) as Tensor, eager.call(x));
  }
  t.deepEqual(b, a);
  t.is(a['post:block.fc1'], 3);
});

test('functions, compiled-of-compiled and a compiled module inside another compiled module', (t) => {
  const cnt = new testing.CompileCounter();
  const f = compile(
    function gelu2(x: Tensor, y: Tensor) {
      return F.gelu(x).mul(y);
    },
    { backend: cnt },
  );
  t.is(f.name, 'gelu2');
  const x = randn([3]);
  const y = randn([3]);
  same(t, f(x, y) as Tensor, F.gelu(x).mul(y));
  manualSeed(5);
  const inner = new MLP();
  const innerOpt = compile(inner, { backend: 'eager' });
  class Outer extends nn.Module {
    inner = innerOpt;
    override forward(x: Tensor) {
      return this.inner.call(x).neg();
    }
  }
  const outer = compile(new Outer(), { backend: cnt });
  const z = randn([2, 8]);
  same(t, outer.call(z) as Tensor, inner.call(z).neg());
  const twice = compile(compile(inner, { backend: 'eager' }), { backend: 'eager' });
  same(t, twice.call(z) as Tensor, inner.call(z));
  noGrad(() => same(t, outer.call(z) as Tensor, inner.call(z).neg()));
});

test('testing.eagerly runs compiled functions and modules as written (what KILN_COMPILE=0 does for a process)', (t) => {
  const cnt = new testing.CompileCounter();
  const f = compile((x: Tensor) => x.neg(), { backend: cnt });
  const m = compile(new MLP(), { backend: cnt });
  const x = randn([2, 8]);
  testing.eagerly(() => {
    same(t, f(x) as Tensor, x.neg());
    same(t, m.call(x) as Tensor, m.origMod.call(x) as Tensor);
  });
  t.is(cnt.frameCount, 0);
  f(x);
  t.is(cnt.frameCount, 1, 'compiled again once eagerly() returns');
});

test('bad options give clear errors', (t) => {
  t.throws(() => compile(new MLP(), { bakend: 'eager' } as never), { instanceOf: ValueError, message: /unknown option 'bakend'/ });
  t.throws(() => compile(new MLP(), { backend: 'tpu' as never }), { instanceOf: ValueError, message: /unknown backend "tpu"/ });
  t.throws(() => compile(new MLP(), { cacheSizeLimit: -1 }), { instanceOf: ValueError, message: /cacheSizeLimit/ });
  t.throws(() => compile(42 as never), { instanceOf: KilnError, message: /expected an nn.Module or a function/ });
});

test('a standard layer compiled on its own is captured (its input check is skipped on proxies); bad input still gets the layer’s error', (t) => {
  const cases: [nn.Module, number[]][] = [
    [new nn.Linear(4, 2), [3, 4]],
    [new nn.Conv1d(3, 4, 3), [2, 3, 8]],
    [new nn.Conv2d(3, 4, 3, { padding: 1 }), [2, 3, 6, 6]],
    [new nn.BatchNorm2d(3).eval(), [2, 3, 4, 4]],
  ];
  for (const [layer, shape] of cases) {
    const cnt = new testing.CompileCounter();
    const opt = compile(layer, { backend: cnt });
    const x = randn(shape);
    same(t, opt.call(x) as Tensor, layer.call(x));
    t.is(cnt.frameCount, 1, `${layer.constructor.name}: one graph`);
  }
  t.throws(() => new nn.Conv2d(3, 4, 3).call(randn([2, 5, 6, 6])), {
    instanceOf: KilnError,
    message: 'Conv2d(3, 4, kernel_size=(3, 3), stride=1): expected input [N, 3, H, W] or [3, H, W], got [2, 5, 6, 6]',
  });
});
