import test from 'ava';
import * as kiln from 'kiln';
import { fixture, loadRewritten } from './plugin-helpers.js';

/**
 * Plugin-rewritten modules under the PyTorch test_modules.py counters: graphs per break, recompiles on
 * exactly the guards that changed, side effects as eager, hooks, fullgraph errors with a code frame.
 */
type Module = InstanceType<typeof kiln.nn.Module>;
type Tensor = kiln.Tensor;
type Ctor = new (...a: never[]) => Module;

const load = async () => (await loadRewritten<Record<string, Ctor>>(fixture('dynamo-modules'))).mod;
const x4 = () => kiln.randn([3, 4]);
const close = (a: unknown, b: unknown) => kiln.allclose(a as Tensor, b as Tensor, { atol: 1e-5 });

/** The same module's eager result: the plan's original code, with compilation switched off. */
const eager = <T>(f: () => T): T => kiln.testing.eagerly(f);

test('an unsupported call between ops gives two graphs and the total opCount of both', async (t) => {
  const { UnsupportedBetween } = await load();
  const m = new UnsupportedBetween!();
  const counter = new kiln.testing.CompileCounter();
  const c = kiln.compile(m, { backend: counter });
  const x = x4();
  t.true(
    close(
      c.call(x),
      eager(() => m.call(x)),
    ),
  );
  t.is(counter.frameCount, 2);
  t.is(counter.opCount, 3 + 3); // linear, relu, mul | linear, sigmoid, add
  c.call(x4());
  t.is(counter.frameCount, 2, 'the second call reuses both graphs');
  const r = kiln.explain(m)(x);
  t.is(r.graphBreakCount, 1);
  t.regex(r.breakReasons[0]!.reason, /performance\.mark\(\).*does not know/);
  t.regex(r.breakReasons[0]!.loc, /dynamo-modules\/input\.ts:12:5$/);
});

test('an int attribute that changes: frameCount 2, then 3 after a further change; the failure names it', async (t) => {
  const { IntAttr } = await load();
  const m = new IntAttr!() as Module & { scale: number };
  const counter = new kiln.testing.CompileCounter();
  const failures: string[] = [];
  const c = kiln.compile(m, { backend: counter, onGuardFail: (f) => failures.push(f) });
  const x = x4();
  c.call(x);
  c.call(x);
  t.is(counter.frameCount, 1);
  m.scale = 3;
  t.true(
    close(
      c.call(x),
      eager(() => m.call(x)),
    ),
  );
  t.is(counter.frameCount, 2);
  m.scale = 4;
  t.true(
    close(
      c.call(x),
      eager(() => m.call(x)),
    ),
  );
  t.is(counter.frameCount, 3);
  t.deepEqual(failures, ['self.scale == 2', 'self.scale == 2']);
});

test('a self-mutating counter matches eager over 3 calls on two instances', async (t) => {
  const { SelfMutating } = await load();
  const layer = new kiln.nn.Linear(4, 4);
  const ref = new SelfMutating!(layer as never) as Module & { counter: number };
  const x = x4();
  const want = eager(() => [ref.call(x), ref.call(x), ref.call(x)]);
  const a = new SelfMutating!(layer as never) as Module & { counter: number };
  const b = new SelfMutating!(layer as never) as Module & { counter: number };
  const counter = new kiln.testing.CompileCounter();
  const ca = kiln.compile(a, { backend: counter });
  const cb = kiln.compile(b, { backend: counter });
  const got = [ca.call(x), cb.call(x), ca.call(x), cb.call(x), ca.call(x), cb.call(x)];
  for (let i = 0; i < 3; i++) {
    t.true(close(got[2 * i], want[i]), `instance a, call ${i}`);
    t.true(close(got[2 * i + 1], want[i]), `instance b, call ${i}`);
  }
  t.is(a.counter, 3);
  t.is(b.counter, 3);
});

test('reordering submodules, parameters or buffers, replacing forward and resetCompileCaches() each recompile once', async (t) => {
  const { Structured } = await load();
  kiln.manualSeed(3);
  const m = new Structured!() as Module & Record<string, unknown>;
  const counter = new kiln.testing.CompileCounter();
  const failures: string[] = [];
  const c = kiln.compile(m, { backend: counter, onGuardFail: (f) => failures.push(f) });
  const x = x4();
  const frames = () => counter.frameCount;
  const step = (what: string, change: () => void, expectFailure: RegExp) => {
    const before = frames();
    change();
    const got = c.call(x);
    t.true(
      close(
        got,
        eager(() => m.call(x)),
      ),
      `${what}: same result as eager`,
    );
    c.call(x);
    t.is(frames(), before + 1, `${what}: exactly one recompile`);
    t.regex(failures[failures.length - 1] ?? '', expectFailure, what);
  };
  c.call(x);
  t.is(frames(), 1);
  const reinsert = (name: string) => {
    const v = m[name];
    delete m[name];
    m[name] = v;
  };
  step('submodule order', () => reinsert('first'), /submodules, parameters and buffers/);
  step('parameter order', () => reinsert('bias'), /submodules, parameters and buffers/);
  step('buffer order', () => reinsert('offset'), /submodules, parameters and buffers/);
  // no closure over m: run-time capture cannot see a free variable's value, so such a forward runs eagerly
  step(
    'replaced forward',
    () =>
      (m.forward = function (this: Module & Record<string, unknown>, y: Tensor) {
        return (this.first as Module).call(y);
      }),
    /forward/,
  );
  const before = frames();
  kiln.resetCompileCaches();
  c.call(x);
  c.call(x);
  t.is(frames(), before + 1, 'resetCompileCaches: one recompile');
});

test('a dtype change recompiles once, naming the dtype guard', async (t) => {
  const { Casting } = await load();
  const m = new Casting!();
  const counter = new kiln.testing.CompileCounter();
  const failures: string[] = [];
  const c = kiln.compile(m, { backend: counter, onGuardFail: (f) => failures.push(f) });
  const x = kiln.randn([2, 4]).mul(3);
  c.call(x);
  const xi = x.int();
  t.true(
    close(
      c.call(xi),
      eager(() => m.call(xi)),
    ),
  );
  c.call(xi);
  t.is(counter.frameCount, 2);
  t.deepEqual(failures, ['x.dtype == float32']);
});

test('adding and removing a forward hook recompiles once each, naming forwardHooks; hooks run as often as eager under fullgraph', async (t) => {
  const { Hooked } = await load();
  const m = new Hooked!();
  const counter = new kiln.testing.CompileCounter();
  const failures: string[] = [];
  const c = kiln.compile(m, { backend: counter, fullgraph: true, onGuardFail: (f) => failures.push(f) });
  const x = x4();
  c.call(x);
  const calls = { eager: 0, compiled: 0 };
  let mode: 'eager' | 'compiled' = 'compiled';
  const handles = m.modules().map((sub) => sub.registerForwardHook(() => void calls[mode]++));
  const got = c.call(x);
  t.is(counter.frameCount, 2);
  t.regex(failures[0]!, /forwardHooks/);
  c.call(x);
  mode = 'eager';
  const want = eager(() => [m.call(x), m.call(x)]);
  t.true(close(got, want[0]));
  t.is(calls.compiled, calls.eager, 'every hook runs once per call, compiled or eager');
  t.is(calls.eager, 2 * m.modules().length);
  // Removing them: a module compiled while they were present recompiles once.
  const counter2 = new kiln.testing.CompileCounter();
  const failures2: string[] = [];
  const c2 = kiln.compile(m, { backend: counter2, fullgraph: true, onGuardFail: (f) => failures2.push(f) });
  c2.call(x);
  for (const h of handles) h.remove();
  c2.call(x);
  c2.call(x);
  t.is(counter2.frameCount, 2, 'removing the hooks recompiles once');
  t.regex(failures2[0]!, /forwardHooks/);
});

test('fullgraph on a module with a break throws GraphBreakError with the file, line, reason and a code frame', async (t) => {
  const { UnsupportedBetween } = await load();
  const c = kiln.compile(new UnsupportedBetween!(), { fullgraph: true });
  const e = t.throws(() => c.call(x4()), { instanceOf: kiln.GraphBreakError });
  t.regex(
    e!.message,
    /UnsupportedBetween\.forward cannot be captured as one graph at test\/fixtures\/plugin\/dynamo-modules\/input\.ts:12:5/,
  );
  t.regex(e!.message, /performance\.mark/);
  t.regex(e!.message, /> 12 \|\s+performance\.mark\('between'\);/);
});

test('compiled functions: /** @compile */ runs captured, compile(fn) uses the plan, explain reports its break', async (t) => {
  const { mod } = await loadRewritten<{
    gelu: (x: Tensor) => Tensor;
    residual: (x: Tensor, y: Tensor) => Tensor;
    fastResidual: (x: Tensor, y: Tensor) => Tensor;
  }>(fixture('compile-function'));
  const x = x4();
  const y = x4();
  t.true(
    close(
      mod.gelu(x),
      eager(() => mod.gelu(x)),
    ),
  );
  t.true(kiln.allclose(mod.gelu(x), kiln.F.gelu(x), { atol: 1e-2 }), 'the tanh approximation of gelu');
  const counter = new kiln.testing.CompileCounter();
  const c = kiln.compile(mod.residual, { backend: counter });
  const logs: unknown[] = [];
  const orig = console.log;
  console.log = (...a: unknown[]) => void logs.push(a);
  try {
    t.true(close(c(x, y), x.add(y).relu()));
    t.true(close(mod.fastResidual(x, y), x.add(y).relu()));
    const r = kiln.explain(mod.residual)(x, y);
    t.is(r.graphCount, 2);
    t.is(r.graphBreakCount, 1);
  } finally {
    console.log = orig;
  }
  t.is(counter.frameCount, 2);
  t.is(logs.length, 3, 'the log in the break ran once per call');
});

test('testing.eagerly runs a rewritten class as written: no graphs', async (t) => {
  const { IntAttr } = await load();
  const counter = new kiln.testing.CompileCounter();
  const c = kiln.compile(new IntAttr!(), { backend: counter });
  eager(() => c.call(x4()));
  t.is(counter.frameCount, 0);
});

test('an early return on a guarded attribute: the segment returns or falls through as eager does', async (t) => {
  const { EarlyExit } = await load();
  const m = new EarlyExit!() as Module & { skip: boolean };
  const counter = new kiln.testing.CompileCounter();
  const c = kiln.compile(m, { backend: counter });
  const x = x4();
  const logs: unknown[] = [];
  const orig = console.log;
  console.log = (...a: unknown[]) => void logs.push(a);
  try {
    t.true(
      close(
        c.call(x),
        eager(() => m.call(x)),
      ),
    );
    t.is(logs.length, 2, 'not skipped: the log ran (compiled, then eager)');
    m.skip = true;
    t.true(
      close(
        c.call(x),
        eager(() => m.call(x)),
      ),
    );
    t.is(logs.length, 2, 'skipped: returned before the log');
  } finally {
    console.log = orig;
  }
  t.is(counter.frameCount, 3, 'graph before the break, graph after it, then the skip=true specialisation');
});

test('code rewritten by another kiln version (a malformed plan) is refused with a clear error at load', async (t) => {
  const { plan } = await import('kiln/plugin/runtime');
  const segment = { kind: 'graph', loc: '1:1', in: [0], out: [], fn: (x: unknown) => x };
  t.throws(() => plan({ name: 'Old.forward', file: 'old.ts', slots: ['x'], segments: [segment as never] }), {
    instanceOf: kiln.KilnError,
    message: 'kiln plugin runtime: malformed plan for Old.forward; rebuild with the same kiln version',
  });
  t.notThrows(() => plan({ name: 'New.forward', file: 'new.ts', slots: ['x'], segments: [{ ...segment, exit: 'return' } as never] }));
});

test('kiln/jit traces a plugin-rewritten module through its graph break: runtime tracing records what ran', async (t) => {
  const { trace } = await import('kiln/jit');
  const { UnsupportedBetween } = await load();
  const m = new UnsupportedBetween!();
  const traced = trace(m, [x4()], { checkTrace: false });
  t.deepEqual(
    traced.graph.nodes.filter((n) => n.op === 'call_function').map((n) => (n.target as { name: string }).name),
    ['linear', 'relu', 'mul', 'linear', 'sigmoid', 'add'],
  );
  const x = x4();
  t.true(
    close(
      traced.call(x),
      eager(() => m.call(x)),
    ),
  );
});

test('a data-dependent if: the condition runs eagerly, each arm is captured once, the graph before and after is reused', async (t) => {
  const { mod } = await loadRewritten<Record<string, Ctor>>(fixture('data-dependent-if'));
  const m = new mod.Gated!();
  const counter = new kiln.testing.CompileCounter();
  const c = kiln.compile(m, { backend: counter });
  // Bias the layer so the sign of the sum follows the input's sign.
  kiln.noGrad(() => (m as unknown as { fc: { bias: Tensor } }).fc.bias.fill_(0));
  const pos = kiln.ones([2, 4]);
  const neg = kiln.ones([2, 4]).neg();
  const sign = (x: Tensor) => eager(() => (m as unknown as { fc: { call(x: Tensor): Tensor } }).fc.call(x).sum().item() > 0);
  t.not(sign(pos), sign(neg), 'the two inputs take different arms');
  t.true(
    close(
      c.call(pos),
      eager(() => m.call(pos)),
    ),
  );
  t.is(counter.frameCount, 3, 'graph before, the arm taken, graph after');
  t.true(
    close(
      c.call(neg),
      eager(() => m.call(neg)),
    ),
  );
  t.is(counter.frameCount, 4, 'the other arm is captured on first use');
  c.call(pos);
  c.call(neg);
  t.is(counter.frameCount, 4, 'both arms reused');
  const r = kiln.explain(m)(pos);
  t.is(r.graphBreakCount, 1);
  t.is(r.graphCount, 3);
});
