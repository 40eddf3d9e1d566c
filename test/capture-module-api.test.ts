import test, { type ExecutionContext } from 'ava';
import * as kiln from 'kiln';
import { fixture, loadRewritten } from './plugin-helpers.js';

/**
 * Issue 17, capture items 3 and 6-10, on both routes: the classes of test/fixtures/plugin/capture-module-api
 * rewritten by the plugin, and the same file loaded as plain code (tsx strips types, applies no plugin),
 * which compile() captures at run time. Every case compares with eager results.
 */
type Module = InstanceType<typeof kiln.nn.Module>;
type Tensor = kiln.Tensor;
type Ctor = new (...a: never[]) => Module;
type Classes = Record<string, Ctor>;
type Route = 'plugin' | 'run-time';

const FILE = fixture('capture-module-api');
let rewritten: Promise<Classes> | undefined;
const classes = (route: Route): Promise<Classes> =>
  route === 'plugin'
    ? (rewritten ??= loadRewritten<Classes>(FILE).then((r) => r.mod))
    : (import('./fixtures/plugin/capture-module-api/input.js') as unknown as Promise<Classes>);

const eager = <T>(f: () => T): T => kiln.testing.eagerly(f);
const close = (a: unknown, b: unknown) => kiln.allclose(a as Tensor, b as Tensor, { atol: 1e-5 });

/** One test per route. */
function bothRoutes(title: string, body: (t: ExecutionContext, c: Classes, route: Route) => Promise<void> | void): void {
  for (const route of ['plugin', 'run-time'] as const) test(`${title} (${route})`, async (t) => body(t, await classes(route), route));
}

// ---- item 3: parameters(), buffers(), modules() inside captured code ----

bothRoutes('parameters(), buffers(), modules(), namedParameters() in forward count as eagerly; the parameter is read live', (t, c) => {
  const m = new c.MemberCounts!() as Module & { fc: { weight: Tensor } };
  const counter = new kiln.testing.CompileCounter();
  const om = kiln.compile(m, { backend: counter });
  const x = kiln.randn([2, 4]);
  t.true(
    close(
      om.call(x),
      eager(() => m.call(x)),
    ),
  );
  t.is(counter.frameCount, 1);
  // `w.sum()` of the first parameter is an op on it, not a constant frozen at trace time.
  kiln.noGrad(() => m.fc.weight.mul_(3));
  t.true(
    close(
      om.call(x),
      eager(() => m.call(x)),
    ),
  );
  t.is(counter.frameCount, 1, 'an in-place update of a parameter needs no recompile');
});

bothRoutes('requiresGrad read from parameters() is a guarded constant: turning it off recompiles and matches eager', (t, c, route) => {
  const m = new c.ParametersModule1!();
  const failures: string[] = [];
  const counter = new kiln.testing.CompileCounter();
  const om = kiln.compile(m, { backend: counter, onGuardFail: (f) => failures.push(f) });
  const x = kiln.randn([2, 10]);
  t.true(
    close(
      om.call(x),
      eager(() => m.call(x)),
    ),
  );
  for (const p of m.parameters(false)) p.requiresGrad_(false);
  t.true(
    close(
      om.call(x),
      eager(() => m.call(x)),
    ),
  );
  for (const p of m.parameters(false)) p.requiresGrad_(true);
  t.true(
    close(
      om.call(x),
      eager(() => m.call(x)),
    ),
  );
  if (route === 'plugin') {
    t.is(counter.frameCount, 2);
    t.regex(failures[0]!, /requiresGrad == true/);
  } else {
    // requiresGrad1 is a free function: run-time capture cannot guard it, so this forward runs eagerly.
    t.is(counter.frameCount, 0);
  }
});

bothRoutes('parameters(false)[0].dtype sets a factory dtype: one graph of 5 ops (ones, linear, relu, mul, add)', (t, c) => {
  const m = new c.ParametersModule4!();
  const counter = new kiln.testing.CompileCounter();
  const om = kiln.compile(m, { backend: counter });
  const x = kiln.randn([3, 10]);
  t.true(
    close(
      om.call(x),
      eager(() => m.call(x)),
    ),
  );
  t.is(counter.frameCount, 1);
  t.is(counter.opCount, 5);
});

bothRoutes('a parameter read for its value in forward runs eagerly, never frozen', (t, c) => {
  const m = new c.ParametersModule5!();
  const counter = new kiln.testing.CompileCounter();
  const om = kiln.compile(m, { backend: counter });
  const x = kiln.randn([10, 10]);
  t.true(
    close(
      om.call(x),
      eager(() => m.call(x)),
    ),
  );
  t.is(counter.frameCount, 1);
  t.is(counter.opCount, 2);
});

// ---- item 6: a break only where it runs; numel(), ndim, dim() static ----

bothRoutes('fullgraph accepts a console break behind a false flag, and names it once the flag makes it run', (t, c) => {
  const m = new c.DebugBranch!() as Module & { debug: boolean };
  const counter = new kiln.testing.CompileCounter();
  const om = kiln.compile(m, { backend: counter, fullgraph: true });
  const x = kiln.randn([2, 4]);
  t.true(
    close(
      om.call(x),
      eager(() => m.call(x)),
    ),
  );
  t.is(counter.frameCount, 1);
  t.is(counter.opCount, 2);
  m.debug = true;
  const e = t.throws(() => om.call(x), { instanceOf: kiln.GraphBreakError });
  t.regex(e.message, /console\.log\(\) is a side effect/);
});

bothRoutes('without fullgraph, the console break behind a flag logs on every call once it runs, as eagerly', (t, c) => {
  const m = new c.DebugBranch!() as Module & { debug: boolean };
  const om = kiln.compile(m, { backend: 'eager' });
  const x = kiln.randn([2, 4]);
  const log = console.log;
  let lines = 0;
  console.log = () => void lines++;
  try {
    om.call(x);
    t.is(lines, 0);
    m.debug = true;
    for (let i = 0; i < 3; i++)
      t.true(
        close(
          om.call(x),
          eager(() => m.call(x)),
        ),
      );
    t.is(lines, 6, 'three compiled calls and three eager ones each logged once');
  } finally {
    console.log = log;
  }
});

bothRoutes('numel(), ndim and dim() of an input are numbers in a fullgraph capture (shapes guarded)', (t, c) => {
  const m = new c.StaticSizes!();
  const counter = new kiln.testing.CompileCounter();
  const om = kiln.compile(m, { backend: counter, fullgraph: true, dynamic: false });
  for (const shape of [
    [3, 2],
    [4, 5, 2],
  ]) {
    const x = kiln.randn(shape);
    t.true(
      close(
        om.call(x),
        eager(() => m.call(x)),
      ),
    );
  }
  t.is(counter.frameCount, 2, 'a new shape is a new specialisation');
  t.is(counter.opCount, 4);
});

// ---- item 7: OptimizedModule forwards to origMod ----

bothRoutes('an OptimizedModule reads, writes, lists and `in`-tests origMod attributes; a write is seen by the next call', (t, c) => {
  const m = new c.WithAttrs!() as Module & { a: number; tag: string; linear: Module };
  const om = kiln.compile(m, { backend: 'eager' }) as unknown as Module & {
    a: number;
    tag: string;
    linear: Module;
    double(x: Tensor): Tensor;
    missing?: number;
  };
  t.is(om.a, 2);
  t.is(om.linear, m.linear);
  t.true('tag' in om && 'linear' in om && 'double' in om);
  t.false('missing' in om);
  t.true(Object.keys(om).includes('tag') && Object.keys(om).includes('linear'));
  om.tag = 'second';
  t.is(m.tag, 'second');
  const x = kiln.randn([2, 4]);
  t.true(
    close(
      om.call(x),
      eager(() => m.call(x)),
    ),
  );
  om.a = 5;
  t.is(m.a, 5);
  t.true(
    close(
      om.call(x),
      eager(() => m.call(x)),
    ),
  );
  t.true(close(om.double(x), x.mul(2)));
  delete (om as { missing?: number }).missing;
  om.missing = 1;
  t.is((m as unknown as { missing: number }).missing, 1);
  // Its own bookkeeping is unchanged: members and state-dict keys through origMod only.
  t.deepEqual(Object.keys(om.stateDict()), ['origMod.linear.weight', 'origMod.linear.bias']);
  t.is(om.parameters().length, 2);
  t.true(om.parameters().every((p, i) => p === m.parameters()[i]));
});

// ---- item 8: default parameter values ----

bothRoutes('default parameter values apply when the compiled module runs (left out, given, undefined)', (t, c) => {
  const m = new c.DefaultOffset!() as Module & { forward(x: Tensor, offset?: number, scale?: number): Tensor };
  const om = kiln.compile(m, { backend: 'eager' }) as unknown as { call(...a: unknown[]): Tensor };
  const x = kiln.randn([2, 4]);
  t.true(
    close(
      om.call(x),
      eager(() => m.call(x)),
    ),
  );
  t.true(
    close(
      om.call(x),
      eager(() => (m as unknown as { call(...a: unknown[]): Tensor }).call(x, 1, 2)),
    ),
  );
  t.true(
    close(
      om.call(x, 3),
      eager(() => (m as unknown as { call(...a: unknown[]): Tensor }).call(x, 3, 2)),
    ),
  );
  t.true(
    close(
      om.call(x, undefined, 5),
      eager(() => (m as unknown as { call(...a: unknown[]): Tensor }).call(x, 1, 5)),
    ),
  );
});

// ---- item 9: factory calls are call_function nodes ----

bothRoutes('ones, zeros, arange, full and zerosLike in forward are call_function nodes, not constants', (t, c) => {
  const m = new c.Factories!();
  const r = kiln.explain(m)(kiln.randn([4]));
  t.is(r.graphCount, 1);
  const code = r.graphs[0]!.code;
  t.notRegex(code, /_tensor_constant/);
  t.regex(code, /full\(\[4\], 1/);
  t.regex(code, /arange\(4\)/);
  t.regex(code, /zerosLike\(x\)/);
  const counter = new kiln.testing.CompileCounter();
  const om = kiln.compile(m, { backend: counter });
  for (const n of [4, 4]) {
    const x = kiln.randn([n]);
    t.true(
      close(
        om.call(x),
        eager(() => m.call(x)),
      ),
    );
  }
  t.is(counter.opCount, 10);
});

bothRoutes('the default kernels backend runs a graph with factory nodes as eagerly', (t, c) => {
  const m = new c.Factories!();
  const om = kiln.compile(m);
  const x = kiln.randn([4]);
  t.true(
    close(
      om.call(x),
      eager(() => m.call(x)),
    ),
  );
});

// ---- item 10: hooks on the compiled root ----

bothRoutes('a forward hook on the compiled root is in the graph; removing it recompiles on the forwardHooks guard', (t, c) => {
  const m = new c.TwiceXPlusOne!();
  const handle = m.registerForwardHook((_m, _i, out) => (out as Tensor).mul(2).add(1));
  const failures: string[] = [];
  const counter = new kiln.testing.CompileCounter();
  const om = kiln.compile(m, { backend: counter, onGuardFail: (f) => failures.push(f) });
  const x = kiln.tensor(1);
  t.is(om.call(x).item(), 7);
  t.is(counter.frameCount, 1);
  t.is(counter.opCount, 4);
  handle.remove();
  t.is(om.call(x).item(), 3);
  t.true(
    close(
      om.call(x),
      eager(() => m.call(x)),
    ),
  );
});

bothRoutes('a pre-hook that replaces the input is captured with forward', (t, c) => {
  const m = new c.TwiceXPlusOne!();
  m.registerForwardPreHook((_m, args) => [(args[0] as Tensor).neg()]);
  const counter = new kiln.testing.CompileCounter();
  const om = kiln.compile(m, { backend: counter });
  const x = kiln.randn([3]);
  t.true(
    close(
      om.call(x),
      eager(() => m.call(x)),
    ),
  );
  t.is(counter.frameCount, 1);
  t.is(counter.opCount, 3);
});

bothRoutes('a hook with a side effect is not captured: it runs on every call, as eagerly', (t, c) => {
  const m = new c.TwiceXPlusOne!();
  const seen: number[] = [];
  m.registerForwardHook((_m, _i, out) => {
    seen.push(1);
    return out;
  });
  const om = kiln.compile(m, { backend: 'eager' });
  const x = kiln.randn([3]);
  for (let i = 0; i < 3; i++)
    t.true(
      close(
        om.call(x),
        eager(() => m.call(x)),
      ),
    );
  t.is(seen.length, 6);
});
