import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import { same } from './helpers.js';
import {
  F,
  GraphBreakError,
  ValueError,
  compile,
  explain,
  formatExplain,
  nn,
  noGrad,
  ops,
  randn,
  testing,
  type Tensor,
} from '../src/index.js';

/**
 * Run-time capture of code the kiln plugin never rewrote (issue 13, item 3): ava runs this file through tsx,
 * which strips types but applies no Babel plugin, so every class and function here reaches `compile()` as
 * plain JavaScript, as tsc output or `npx tsx` would. Each case runs four calls compiled and four eagerly
 * and compares results and side-effect counts.
 */

test('this file is not rewritten by the plugin (the route under test is run-time capture)', (t) => {
  class Plain extends nn.Module {
    override forward(x: Tensor): Tensor {
      return x.neg();
    }
  }
  t.is((Plain.prototype.forward as unknown as Record<symbol, unknown>)[Symbol.for('kiln.plan')], undefined);
  t.notRegex(Plain.prototype.forward.toString(), /_kiln/);
});

/** The warnings emitted while `f` runs (process 'warning' events are delivered on a later tick). */
async function warningsOf<T>(f: () => T): Promise<{ result: T; warnings: Error[] }> {
  const warnings: Error[] = [];
  const listen = (w: Error) => void warnings.push(w);
  process.on('warning', listen);
  try {
    const result = f();
    await new Promise((r) => setImmediate(r));
    return { result, warnings };
  } finally {
    process.off('warning', listen);
  }
}
/** KilnWarnings about `name` (tests in this file run concurrently, so others' warnings arrive too). */
const kilnWarnings = (ws: Error[], name: string) => ws.filter((w) => w.name === 'KilnWarning' && w.message.includes(` ${name} `));

/** Four calls of `compiled` and four of `eager` on the same inputs: equal results, equal side-effect counts. */
function fourCalls(
  t: ExecutionContext,
  compiled: (x: Tensor) => Tensor,
  eager: (x: Tensor) => Tensor,
  effects: () => number,
  shape = [3, 4],
): void {
  const inputs = Array.from({ length: 4 }, () => randn(shape));
  const before = effects();
  const got = inputs.map((x) => compiled(x));
  const compiledEffects = effects() - before;
  const want = inputs.map((x) => eager(x));
  const eagerEffects = effects() - before - compiledEffects;
  got.forEach((g, i) => same(t, g, want[i]!));
  t.is(compiledEffects, eagerEffects, 'side effects run as often as eagerly');
}

test('console.log in a plain forward runs on every call, with one KilnWarning naming it; explain reports the break', async (t) => {
  let printed = 0;
  const log = console.log;
  class Logged extends nn.Module {
    lin = new nn.Linear(4, 4);
    override forward(x: Tensor): Tensor {
      const h = this.lin.call(x);
      console.log('h', h.shape);
      return F.relu(h);
    }
  }
  const m = new Logged();
  const counter = new testing.CompileCounter();
  const opt = compile(m, { backend: counter });
  console.log = () => void printed++;
  try {
    const { warnings } = await warningsOf(() =>
      fourCalls(
        t,
        (x) => opt.call(x) as Tensor,
        (x) => m.call(x),
        () => printed,
      ),
    );
    t.is(printed, 8);
    t.is(counter.frameCount, 0, 'the whole forward runs eagerly');
    const kw = kilnWarnings(warnings, 'Logged.forward');
    t.is(kw.length, 1, 'one warning');
    t.regex(kw[0]!.message, /Logged\.forward runs eagerly: `console\.log\("h", ?h\.shape\);`: console\.log\(\) is a side effect/);
    t.regex(kw[0]!.message, /node --import kiln\/register/);
    t.regex(kw[0]!.message, /kiln\/plugin/);
    const report = explain(m)(randn([3, 4]));
    t.is(report.graphCount, 0);
    t.is(report.graphBreakCount, 1);
    t.regex(report.breakReasons[0]!.reason, /console\.log\(\) is a side effect/);
    t.is(report.breakReasons[0]!.loc, 'Logged.forward');
    t.regex(formatExplain(report), /break at Logged\.forward:\n {2}`console\.log/);
  } finally {
    console.log = log;
  }
});

test('a side effect in a submodule runs that submodule alone eagerly (the caller stays captured); in a helper method it sends the whole forward eager', async (t) => {
  const seen: string[] = [];
  class Inner extends nn.Module {
    override forward(x: Tensor): Tensor {
      seen.push('inner');
      return x.tanh();
    }
  }
  class Outer extends nn.Module {
    inner = new Inner();
    override forward(x: Tensor): Tensor {
      return this.scale(this.inner.call(x));
    }
    scale(x: Tensor): Tensor {
      return x.mul(2);
    }
  }
  class WithHelper extends nn.Module {
    override forward(x: Tensor): Tensor {
      return this.note(x).exp();
    }
    note(x: Tensor): Tensor {
      console.warn('note');
      return x;
    }
  }
  const outer = new Outer();
  const opt = compile(outer, { backend: 'eager' });
  const { warnings } = await warningsOf(() =>
    fourCalls(
      t,
      (x) => opt.call(x) as Tensor,
      (x) => outer.call(x),
      () => seen.length,
    ),
  );
  t.is(seen.length, 8);
  // Issue 17 capture item 5: the graph is cut at the call, as TorchDynamo resumes after a break in a callee.
  t.is(kilnWarnings(warnings, 'Inner.forward').length, 0);
  const graphs = (opt._compiled.entries[0]?.graph?.graph.nodes ?? []).map((n) => `${n.op}:${String(n.target)}`);
  t.deepEqual(
    graphs.filter((n) => !n.startsWith('placeholder') && !n.startsWith('output')),
    ['call_module:inner', 'call_method:mul'],
  );
  const report = explain(new WithHelper())(randn([2]));
  t.regex(report.breakReasons[0]!.reason, /calls this\.note\(\), which breaks: console\.warn\(\) is a side effect/);
  t.notRegex(report.breakReasons[0]!.reason, /line \d+/, 'no line numbers of the synthetic program');
});

test('Math.random() in a plain function is not frozen into a graph (fresh value every call, as eagerly)', (t) => {
  const noisy = (x: Tensor) => x.add(Math.random());
  const f = compile(noisy, { backend: 'eager' });
  const x = randn([3]);
  const a = f(x) as Tensor;
  const b = f(x) as Tensor;
  t.false(a.sub(b).abs().max().item() === 0, 'two calls draw two numbers');
  t.regex(explain(noisy)(x).breakReasons[0]?.reason ?? '', /Math\.random/);
});

test('a trace that gives up never leaves side effects run twice (trace, then eager)', (t) => {
  let entries = 0;
  class Branchy extends nn.Module {
    lin = new nn.Linear(4, 4);
    override forward(x: Tensor): Tensor {
      entries++;
      const h = this.lin.call(x);
      if (h.sum().item() > 0) return h.relu();
      return h.neg();
    }
  }
  const m = new Branchy();
  const opt = compile(m, { backend: 'eager' });
  fourCalls(
    t,
    (x) => opt.call(x) as Tensor,
    (x) => m.call(x),
    () => entries,
  );
  t.is(entries, 8);
});

test('a non-Kiln error while tracing code that runs fine eagerly falls back to eager once, cached', (t) => {
  const tags: string[] = [];
  class Tagged extends nn.Module {
    override forward(x: Tensor): Tensor {
      const tag = x.shape.join('x');
      return x.mul(tag.length);
    }
  }
  const m = new Tagged();
  const counter = new testing.CompileCounter();
  const opt = compile(m, { backend: counter });
  fourCalls(
    t,
    (x) => opt.call(x) as Tensor,
    (x) => m.call(x),
    () => tags.length,
  );
  t.is(counter.frameCount, 0);
  t.is(opt._compiled.compileCount, 1, 'captured once: the eager fallback is the cached entry');
  const report = explain(m)(randn([3, 4]));
  t.regex(report.breakReasons[0]!.reason, /tracing threw TypeError/);
  t.regex(report.breakReasons[0]!.loc, /runtime-capture\.test\.ts:\d+:\d+$/);
  t.throws(() => compile(m, { fullgraph: true }).call(randn([2, 2])), { instanceOf: GraphBreakError, message: /TypeError/ });
});

test('a KilnError that also happens eagerly still surfaces', (t) => {
  const empty = (x: Tensor) => ops.cat([]).add(x);
  t.throws(() => empty(randn([2])), { instanceOf: ValueError });
  t.throws(() => compile(empty, { backend: 'eager' })(randn([2])), { instanceOf: ValueError, message: /non-empty/ });
});

test('free variables cannot be guarded: run eagerly, named in one KilnWarning and in explain', async (t) => {
  let temperature = 1;
  const cfg = { scale: 1 };
  class Tempered extends nn.Module {
    override forward(x: Tensor): Tensor {
      return x.mul(temperature).mul(cfg.scale);
    }
  }
  const m = new Tempered();
  const opt = compile(m, { backend: 'eager' });
  const x = randn([2, 3]);
  const { warnings } = await warningsOf(() => {
    same(t, opt.call(x) as Tensor, x);
    temperature = 5;
    cfg.scale = 10;
    same(t, opt.call(x) as Tensor, x.mul(5).mul(10));
  });
  const kw = kilnWarnings(warnings, 'Tempered.forward');
  t.is(kw.length, 1);
  t.regex(kw[0]!.message, /Tempered\.forward runs eagerly: it reads cfg, temperature, free variables/);
  t.regex(kw[0]!.message, /Pass them as an argument or a module attribute/);
  const report = explain(m)(x);
  t.is(report.graphCount, 0);
  t.regex(report.breakReasons[0]!.reason, /reads cfg, temperature/);
  // kiln's own names (F, ops, …) are not free variables: ordinary kiln calls are still captured
  const counter = new testing.CompileCounter();
  const g = compile((y: Tensor) => ops.add(F.relu(y), 1), { backend: counter });
  same(t, g(x) as Tensor, F.relu(x).add(1));
  t.is(counter.frameCount, 1);
});

test('fullgraph: a side effect found in the source is a GraphBreakError naming the statement', (t) => {
  const logged = (x: Tensor) => {
    console.info('x');
    return x.neg();
  };
  const info = console.info;
  console.info = () => {};
  try {
    const e = t.throws(() => compile(logged, { fullgraph: true })(randn([2])), { instanceOf: GraphBreakError });
    t.regex(e.message, /cannot be captured as one graph: in function logged, `console\.info\("x"\);`: console\.info\(\) is a side effect/);
    t.regex(e.message, /node --import kiln\/register/);
  } finally {
    console.info = info;
  }
});

test('this.lin.forward(x) runs no hooks, compiled as eagerly; this.lin.call(x) runs them', (t) => {
  let hooks = 0;
  class Direct extends nn.Module {
    lin = new nn.Linear(4, 4);
    override forward(x: Tensor): Tensor {
      return this.lin.forward(x).relu();
    }
  }
  class Called extends nn.Module {
    lin = new nn.Linear(4, 4);
    override forward(x: Tensor): Tensor {
      return this.lin.call(x).relu();
    }
  }
  for (const M of [Direct, Called]) {
    const m = new M();
    m.lin.registerForwardHook(() => void hooks++);
    const counter = new testing.CompileCounter();
    const opt = compile(m, { backend: counter });
    fourCalls(
      t,
      (x) => opt.call(x) as Tensor,
      (x) => m.call(x),
      () => hooks,
    );
    t.is(counter.frameCount, 1, `${M.name}: captured`);
  }
  t.is(hooks, 8, 'Called ran its hook on every call, compiled and eager; Direct never');
});

test('node --import kiln/register rewrites compile(constArrow): the log is a break run every call, the rest one graph', (t) => {
  const r = spawnSync(process.execPath, ['--import', 'kiln/register', 'test/fixtures/runtime-capture/register.js'], {
    encoding: 'utf8',
  });
  t.is(r.status, 0, r.stderr);
  t.deepEqual(JSON.parse(r.stdout), { logs: 4, graphs: 1, warnings: [] });
});

test('importing kiln loads no Babel parser or traverse; capturing code the plugin never saw loads them', (t) => {
  const script = `
    import { createRequire } from 'node:module';
    const loaded = () => Object.keys(createRequire(import.meta.url).cache).filter((k) => /@babel[\\\\/](parser|core|traverse)[\\\\/]/.test(k)).length > 0;
    const kiln = await import('kiln');
    const atImport = loaded();
    kiln.compile((x) => x.neg(), { backend: 'eager' })(kiln.randn([2]));
    console.log(JSON.stringify({ atImport, afterCapture: loaded() }));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  t.deepEqual(JSON.parse(r.stdout), { atImport: false, afterCapture: true });
});

test('a user module held in a plain array is checked before the trace enters it: its side effect runs once per call', (t) => {
  let steps = 0;
  class Step extends nn.Module {
    override forward(x: Tensor): Tensor {
      steps++;
      return x.mul(2);
    }
  }
  class Chain extends nn.Module {
    steps: Step[] = [new Step(), new Step()];
    override forward(x: Tensor): Tensor {
      for (const s of this.steps) x = s.call(x);
      return x;
    }
  }
  const m = new Chain();
  const opt = compile(m, { backend: 'eager' });
  fourCalls(
    t,
    (x) => opt.call(x) as Tensor,
    (x) => m.call(x),
    () => steps,
  );
  t.is(steps, 16);
  t.regex(explain(m)(randn([2])).breakReasons[0]!.reason, /Step\.forward/);
});

test('noGrad inside a plain function is not dropped by run-time capture: gradients equal eager (grad 1, not 3)', (t) => {
  const f = (x: Tensor) => noGrad(() => x.mul(2)).add(x);
  const x = randn([3], { requiresGrad: true });
  (compile(f, { backend: 'eager' })(x) as Tensor).sum().backward();
  same(t, x.grad!, randn([3]).mul(0).add(1));
});
