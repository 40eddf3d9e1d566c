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
