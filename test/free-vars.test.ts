import test from 'ava';
import * as kiln from 'kiln';
import { loadRewritten } from './plugin-helpers.js';

/**
 * Issue 13, items 1, 2 and 4 on the plugin route: free variables of captured code (module-level `let`, object
 * consts, closures, and the layers they hold) are guarded; nondeterminism and state changes outside the graph
 * are breaks that run every call. Each case: compiled equals eager after the change, the recompile is counted,
 * and the failed guard's text reaches onGuardFail. (TorchDynamo: test_modules.py's global and closure cases.)
 */
type Tensor = kiln.Tensor;
type Module = InstanceType<typeof kiln.nn.Module>;
interface Fixture {
  Tempered: new () => Module;
  Logged: new () => Module & { hist: number[] };
  Stacked: new () => Module;
  DottedAttr: new () => Module;
  Noisy: new () => Module;
  makeScaler: (factor: { value: number }) => Module & { bump(): void };
  setTemperature: (v: number) => void;
  cfg: { scale: number; nested: { bias: number } };
  layers: Module[];
  log: string[];
  blocks: Module[];
  encoder: Module & { weight: Tensor };
}

const load = async () => (await loadRewritten<Fixture>('test/fixtures/free-vars/module-state.ts')).mod;
const eager = <T>(f: () => T): T => kiln.testing.eagerly(f);
const same = (a: Tensor, b: Tensor) => kiln.allclose(a, b, { atol: 1e-5 });

/** The compiled module's result equals the eager one's on `x`. */
const agrees = (c: Module, m: Module, x: Tensor) =>
  same(
    c.call(x) as Tensor,
    eager(() => m.call(x) as Tensor),
  );

function counted(m: Module) {
  const counter = new kiln.testing.CompileCounter();
  const failures: string[] = [];
  const c = kiln.compile(m, { backend: counter, onGuardFail: (f) => failures.push(f) });
  return { c, counter, failures };
}

test('module-level let and const object fields are guarded: temperature = 5 and cfg.scale = 10 recompile and match eager', async (t) => {
  const mod = await load();
  const m = new mod.Tempered();
  const { c, counter, failures } = counted(m);
  const x = kiln.randn([2, 4]);
  t.true(agrees(c, m, x));
  c.call(x);
  t.is(counter.frameCount, 1, 'the second call reuses the graph');
  mod.setTemperature(5);
  t.true(agrees(c, m, x));
  t.is(counter.frameCount, 2);
  t.deepEqual(failures, ['temperature == 1']);
  mod.cfg.scale = 10;
  mod.cfg.nested.bias = 2; // read by a module-level helper the graph inlines
  t.true(agrees(c, m, x));
  t.is(counter.frameCount, 3);
  const guards = kiln.explain(m)(x).guards;
  for (const g of ['temperature == 5', 'cfg.scale == 10', 'cfg.nested.bias == 2', 'layers[0] is the Linear that was captured']) {
    t.true(guards.includes(g), `explain lists ${g}`);
  }
  mod.setTemperature(1);
  mod.cfg.scale = 1;
  mod.cfg.nested.bias = 0;
});

test('a layer in a module-level array is traced, and replacing it or hooking it recompiles', async (t) => {
  const mod = await load();
  const m = new mod.Tempered();
  const { c, counter, failures } = counted(m);
  const x = kiln.randn([2, 4]);
  c.call(x);
  const before = mod.layers[0]!;
  mod.layers[0] = new kiln.nn.Linear(4, 4);
  t.true(agrees(c, m, x));
  t.is(counter.frameCount, 2);
  t.is(failures.at(-1), 'layers[0] is the Linear that was captured');
  const fresh = counted(m);
  fresh.c.call(x);
  const hook = mod.layers[0].registerForwardHook((_m, _i, out) => (out as Tensor).mul(0));
  t.true(agrees(fresh.c, m, x));
  t.deepEqual(fresh.failures, ['layers_0.forwardHooks']);
  hook.remove();
  t.true(agrees(fresh.c, m, x));
  t.is(fresh.counter.frameCount, 2, 'the unhooked graph is reused after remove()');
  mod.layers[0] = before;
});

test('closure variables of a class made in a function are guarded (a parameter object and a let)', async (t) => {
  const mod = await load();
  const factor = { value: 2 };
  const m = mod.makeScaler(factor);
  const { c, counter, failures } = counted(m);
  const x = kiln.randn([3]);
  t.true(same(c.call(x) as Tensor, x.mul(2)));
  factor.value = 3;
  t.true(same(c.call(x) as Tensor, x.mul(3)));
  m.bump();
  t.true(same(c.call(x) as Tensor, x.mul(3).add(1)));
  t.is(counter.frameCount, 3);
  t.deepEqual(failures, ['factor.value == 2', 'factor.value == 2']);
});

test('console.log, this.hist.push, log.push and Math.random run every call, as eagerly', async (t) => {
  const mod = await load();
  const m = new mod.Logged();
  const { c, counter } = counted(m);
  const printed: unknown[] = [];
  const orig = console.log;
  console.log = (...a: unknown[]) => void printed.push(a);
  try {
    for (let i = 0; i < 4; i++) c.call(kiln.randn([2, 4]));
  } finally {
    console.log = orig;
  }
  t.is(printed.length, 4);
  t.deepEqual(m.hist, [2, 2, 2, 2]);
  t.is(mod.log.length, 4);
  // The random number enters the graph after it as a guarded argument, so that graph is specialised on it and
  // recompiles each call (as TorchDynamo specialises Python floats): never a stale value.
  t.is(counter.frameCount, 4);
  const reasons = kiln
    .explain(m)(kiln.randn([2, 4]))
    .breakReasons.map((b) => b.reason);
  t.true(reasons.some((r) => /this\.hist\.push\(\) changes state outside the graph/.test(r)));
  t.true(reasons.some((r) => /log\.push\(\) changes state outside the graph/.test(r)));
  t.true(reasons.some((r) => /Math\.random\(\) gives a different value every call/.test(r)));
});

test('Math.random and performance.now are breaks: two compiled calls differ, as eagerly', async (t) => {
  const mod = await load();
  const c = kiln.compile(new mod.Noisy());
  const x = kiln.zeros([2]);
  const a = (c.call(x) as Tensor).toArray() as number[];
  const b = (c.call(x) as Tensor).toArray() as number[];
  t.notDeepEqual(a, b);
  const r = kiln.explain(new mod.Noisy())(x);
  t.is(r.graphBreakCount, 3);
  t.regex(r.breakReasons[1]!.reason, /performance\.now\(\) gives a different value every call/);
  t.regex(r.breakReasons[2]!.reason, /reads process, host state that changes between calls/);
});

test('layers outside the tree (a module-level const and a plain array) are captured in one graph and guarded', async (t) => {
  const mod = await load();
  const m = new mod.Stacked();
  const { c, counter, failures } = counted(m);
  const x = kiln.randn([2, 4]);
  t.true(agrees(c, m, x));
  t.is(counter.frameCount, 1);
  t.is(counter.opCount, 4, 'encoder, three blocks');
  // In-place weight changes are seen without a recompile (the graph holds the parameter itself).
  kiln.noGrad(() => mod.encoder.weight.mul_(2));
  t.true(agrees(c, m, x));
  t.is(counter.frameCount, 1);
  mod.blocks.push(new kiln.nn.Sigmoid());
  t.true(agrees(c, m, x));
  t.is(counter.frameCount, 2);
  t.regex(failures[0]!, /^blocks/);
  mod.blocks.pop();
  (mod.blocks[1] as Module).eval();
  c.call(x);
  t.true(failures.includes('relU.training == true') || failures.some((f) => /training == true/.test(f)));
});

test("an attribute named 'a.b' is guarded by owner and name, not split on the dot", async (t) => {
  const mod = await load();
  const m = new mod.DottedAttr() as Module & Record<string, number>;
  const { c, counter } = counted(m);
  const x = kiln.ones([2]);
  t.deepEqual((c.call(x) as Tensor).toArray(), [2, 2]);
  m['a.b'] = 3;
  t.deepEqual((c.call(x) as Tensor).toArray(), [3, 3]);
  t.is(counter.frameCount, 2);
});

// Run-time capture (code the plugin never saw: this file is not rewritten) of modules reached other ways.

test('run-time route: a module passed as an argument is traced and guarded (hooks, parameter order, forward)', (t) => {
  const counter = new kiln.testing.CompileCounter();
  const failures: string[] = [];
  const f = kiln.compile((m: Module, x: Tensor) => (m.call(x) as Tensor).relu(), {
    backend: counter,
    onGuardFail: (g) => failures.push(g),
  });
  const a = new kiln.nn.Sequential(new kiln.nn.Linear(4, 4), new kiln.nn.Linear(4, 2));
  const x = kiln.randn([3, 4]);
  const ref = () => eager(() => (a.call(x) as Tensor).relu());
  t.true(same(f(a, x) as Tensor, ref()));
  t.is(counter.frameCount, 1);
  t.is(counter.opCount, 3);
  const h = (a as unknown as Record<string, Module>)['1']!.registerForwardHook((_m, _i, out) => (out as Tensor).neg());
  t.true(same(f(a, x) as Tensor, ref()));
  t.true(failures.some((g) => /forwardHooks/.test(g)));
  h.remove();
  // Swapping two submodules' order (same shapes) must not reuse the graph.
  const b = new kiln.nn.Sequential(new kiln.nn.Linear(4, 4), new kiln.nn.Linear(4, 4));
  const y = kiln.randn([2, 4]);
  const out1 = f(b, y) as Tensor;
  t.true(
    same(
      out1,
      eager(() => (b.call(y) as Tensor).relu()),
    ),
  );
  const kids = b as unknown as Record<string, Module>;
  [kids['0'], kids['1']] = [kids['1']!, kids['0']!];
  t.true(
    same(
      f(b, y) as Tensor,
      eager(() => (b.call(y) as Tensor).relu()),
    ),
  );
  // A replaced forward is guarded too.
  const lin = kids['0']!;
  lin.forward = (z: Tensor) => z.mul(0);
  t.true(
    same(
      f(b, y) as Tensor,
      eager(() => (b.call(y) as Tensor).relu()),
    ),
  );
});

test('run-time route: a layer held in a closure gives compiled = eager after its hooks and weights change', (t) => {
  const lin = new kiln.nn.Linear(4, 4);
  const f = kiln.compile((x: Tensor) => (lin.call(x) as Tensor).tanh());
  const x = kiln.randn([2, 4]);
  const ref = () => eager(() => (lin.call(x) as Tensor).tanh());
  t.true(same(f(x) as Tensor, ref()));
  const h = lin.registerForwardHook((_m, _i, out) => (out as Tensor).mul(3));
  t.true(same(f(x) as Tensor, ref()));
  h.remove();
  t.true(same(f(x) as Tensor, ref()));
  lin.forward = (z: Tensor) => z.sigmoid();
  t.true(same(f(x) as Tensor, ref()));
});

test('run-time route: the same module-state file run without the plugin gives compiled = eager after each change, with one KilnWarning naming the free variables', async (t) => {
  const mod = (await import('./fixtures/free-vars/module-state.js')) as unknown as Fixture;
  const warnings: string[] = [];
  const onWarning = (w: Error) => {
    if (w.name === 'KilnWarning') warnings.push(w.message);
  };
  process.on('warning', onWarning);
  try {
    const m = new mod.Tempered();
    const c = kiln.compile(m);
    const x = kiln.randn([2, 4]);
    const check = () => t.true(agrees(c, m, x));
    check();
    mod.setTemperature(5);
    check();
    mod.cfg.scale = 10;
    check();
    mod.layers[0] = new kiln.nn.Linear(4, 4);
    check();
    await new Promise((r) => setImmediate(r)); // warnings are emitted on the next tick
    t.is(warnings.length, 1);
    t.regex(warnings[0]!, /layers/);
    t.regex(warnings[0]!, /temperature/);
    mod.setTemperature(1);
    mod.cfg.scale = 1;
  } finally {
    process.off('warning', onWarning);
  }
});

test('a module-level Map read in forward is guarded by its entries: set() after capture recompiles', async (t) => {
  const { mod } = await loadRewritten<{ Lookup: new () => Module; table: Map<string, number> }>('test/fixtures/free-vars/lookup.ts');
  const m = new mod.Lookup();
  const { c, counter, failures } = counted(m);
  const x = kiln.ones([2]);
  t.deepEqual((c.call(x) as Tensor).toArray(), [2, 2]);
  mod.table.set('scale', 5);
  t.deepEqual((c.call(x) as Tensor).toArray(), [5, 5]);
  t.is(counter.frameCount, 2);
  t.regex(failures[0]!, /^table == \{"Map":\[\["scale",2\]\]\}$/);
});

// Cases a review of this change found unguarded (each failed before its fix): the value after the change must
// be eager's, through a guard that fails (or through a break, or by running eagerly).
interface Review {
  [name: string]: unknown;
  setMode(v: number): void;
  setScale(v: number): void;
  setActivation(f: (x: Tensor) => Tensor): void;
  makeBlockScoped(): { model: Module; set(v: number): void };
  useLarge(): void;
  DEFAULTS: { k: number };
  settings: { s: number };
  dotted: Record<string, unknown>;
  registry: { items: number[] };
}
const review = async () => (await loadRewritten<Review>('test/fixtures/free-vars/review-cases.ts')).mod;
const build = (mod: Review, name: string) => new (mod[name] as new () => Module)();
const first = (t: Tensor) => (t.toArray() as number[])[0];

async function staysEager(t: import('ava').ExecutionContext, name: string, change: (mod: Review) => void, want: [number, number]) {
  const mod = await review();
  const m = build(mod, name);
  const c = kiln.compile(m);
  const x = kiln.ones([1]);
  t.is(first(c.call(x) as Tensor), want[0], `${name} before`);
  change(mod);
  t.is(first(c.call(x) as Tensor), want[1], `${name} after`);
  t.is(first(eager(() => m.call(x) as Tensor)), want[1], `${name} eager`);
}

test('review: typeof of a module-level let is guarded', (t) => staysEager(t, 'TypeofRead', (mod) => mod.setMode(1), [2, 3]));
test("review: a helper's own state in a file the plugin leaves alone makes that call a break", async (t) => {
  const helper = await import('./fixtures/free-vars/plain-helper.js');
  await staysEager(t, 'OtherFileHelper', () => helper.setFactor(7), [2, 7]);
  helper.setFactor(2);
});
test('review: a class-field arrow reads through the guarded scope', (t) => staysEager(t, 'FieldArrow', (mod) => mod.setScale(9), [2, 9]));
test('review: a getter over a #private field is part of an instance guard', (t) =>
  staysEager(t, 'PrivateGetter', (mod) => (mod.settings.s = 13), [2, 13]));
test('review: a reassigned function declaration is guarded by identity', (t) =>
  staysEager(t, 'ReassignedFunction', (mod) => mod.setActivation((x) => x.mul(17)), [1, 17]));
test("review: a class's static field is guarded", (t) =>
  staysEager(t, 'Statics', (mod) => ((mod.Statics as { scale: number }).scale = 7), [2, 7]));
test("review: 'a.b' and a.b are two guards", (t) => staysEager(t, 'DottedKeys', (mod) => ((mod.dotted.a as { b: number }).b = 5), [2, 5]));
test('review: one object reached two ways is guarded both ways', (t) => staysEager(t, 'Aliased', (mod) => mod.useLarge(), [4, 12]));

test('review: an argument compared with === against a module-level object sees the same object, not a stand-in', async (t) => {
  const mod = await review();
  const m = build(mod, 'SameObject');
  const x = kiln.ones([1]);
  t.is(first(kiln.compile(m).call(x, mod.DEFAULTS) as Tensor), 2);
});

test('review: closure variables in a block around the class are guarded', async (t) => {
  const mod = await review();
  const { model, set } = mod.makeBlockScoped();
  const c = kiln.compile(model);
  const x = kiln.ones([1]);
  t.is(first(c.call(x) as Tensor), 2);
  set(17);
  t.is(first(c.call(x) as Tensor), 17);
});

test('review: a method of a user class instance held at module level is a break (its side effect runs every call)', async (t) => {
  const mod = await review();
  const c = kiln.compile(build(mod, 'RemembersCalls'));
  const before = mod.registry.items.length;
  for (let i = 0; i < 3; i++) c.call(kiln.ones([1]));
  t.is(mod.registry.items.length - before, 3);
});

test('review: Object.keys of an array guards its keys without recompiling on identical calls', async (t) => {
  const mod = await review();
  const counter = new kiln.testing.CompileCounter();
  const c = kiln.compile(build(mod, 'KeysOfArray'), { backend: counter });
  for (let i = 0; i < 4; i++) c.call(kiln.ones([1]));
  t.is(counter.frameCount, 1);
});

test('review: a Map too large to compare every call runs its segment eagerly', async (t) => {
  const mod = await review();
  const counter = new kiln.testing.CompileCounter();
  const c = kiln.compile(build(mod, 'BigTable'), { backend: counter });
  t.is(first(c.call(kiln.ones([1])) as Tensor), 3);
  t.is(counter.frameCount, 0);
  t.regex(kiln.explain(build(mod, 'BigTable'))(kiln.ones([1])).breakReasons[0]!.reason, /vocab holds 10000 entries, too many to compare/);
});

test("review: compile() of a rewritten class applies forward's default parameters", async (t) => {
  const mod = await review();
  const c = kiln.compile(build(mod, 'DefaultParam'));
  t.is(first(c.call(kiln.ones([1])) as Tensor), 2);
  t.is(first(c.call(kiln.ones([1]), 3) as Tensor), 3);
});

test('review: a method of a user-class object a module holds runs every call, on both routes', async (t) => {
  const mod = await review();
  const log = mod.trackerLog as number[];
  const counter = new kiln.testing.CompileCounter();
  const plain = kiln.compile(build(mod, 'PlainTracker'), { backend: counter });
  for (let i = 0; i < 3; i++) t.is(first(plain.call(kiln.ones([1])) as Tensor), 2);
  t.is(log.length, 3);
  t.is(counter.frameCount, 0, 'runs eagerly from the start (no recompile per call on the changed log)');
  for (const m of [build(mod, 'TracksCalls'), new RuntimeTracks()]) {
    const c = kiln.compile(m);
    for (let i = 0; i < 3; i++) t.is(first(c.call(kiln.ones([1])) as Tensor), 2);
    t.is((m as unknown as { tracker: { calls: number } }).tracker.calls, 3);
  }
});

/** The same shape of module, written in this file (not rewritten by the plugin). */
class RuntimeTracks extends kiln.nn.Module {
  tracker = {
    calls: 0,
    record() {
      this.calls++;
    },
  };
  override forward(x: Tensor): Tensor {
    this.tracker.record();
    return x.mul(2);
  }
}

test('review: a method of a module-level object literal is a break (its side effect runs every call)', async (t) => {
  const mod = await review();
  const c = kiln.compile(build(mod, 'BumpsCounter'));
  const counter = mod.counter as { n: number };
  const before = counter.n;
  for (let i = 0; i < 3; i++) c.call(kiln.ones([1]));
  t.is(counter.n - before, 3);
});
