import test, { type ExecutionContext } from 'ava';
import * as kiln from 'kiln';
import { fixture, loadRewritten } from './plugin-helpers.js';

/**
 * Cases of PyTorch's test/dynamo/test_modules.py for issue 17's capture items 3 (parameters(), buffers(),
 * modules() in captured code), 6 (a break only where it runs), 7 (OptimizedModule forwards to origMod),
 * 8 (default parameter values), 9 (factory calls are nodes) and 10 (hooks on the compiled root), each
 * named after the PyTorch test it ports and run on both routes: the classes of
 * test/fixtures/plugin/capture-module-api rewritten by the plugin, and the same file as plain code,
 * captured at run time. `standard_test` is PyTorch's helper: four calls on two inputs, compared with
 * eager, one frame (no graph break) and optionally an op count.
 */
type Module = InstanceType<typeof kiln.nn.Module>;
type Tensor = kiln.Tensor;
type Ctor = new (...a: never[]) => Module;
type Classes = Record<string, Ctor> & Record<string, unknown>;
type Route = 'plugin' | 'run-time';

let rewritten: Promise<Classes> | undefined;
const classes = (route: Route): Promise<Classes> =>
  route === 'plugin'
    ? (rewritten ??= loadRewritten<Classes>(fixture('capture-module-api')).then((r) => r.mod))
    : (import('./fixtures/plugin/capture-module-api/input.js') as unknown as Promise<Classes>);

const eager = <T>(f: () => T): T => kiln.testing.eagerly(f);
const close = (a: unknown, b: unknown) => kiln.allclose(a as Tensor, b as Tensor, { atol: 1e-5 });

function bothRoutes(title: string, body: (t: ExecutionContext, c: Classes, route: Route) => Promise<void> | void): void {
  for (const route of ['plugin', 'run-time'] as const) test(`${title} (${route})`, async (t) => body(t, await classes(route), route));
}

/** torch._dynamo.testing.standard_test(fn=m, nargs=1, expected_ops) on a module in eval mode, under fullgraph. */
function standardTest(t: ExecutionContext, m: Module, expectedOps?: number): void {
  m.eval();
  const args1 = kiln.randn([10, 10]);
  const args2 = kiln.randn([10, 10]);
  const correct1 = eager(() => m.call(args1));
  const correct2 = eager(() => m.call(args2));
  const counter = new kiln.testing.CompileCounter();
  const opt = kiln.compile(m, { backend: counter, fullgraph: true });
  const results = [opt.call(args1), opt.call(args2), opt.call(args1), opt.call(args2)];
  t.true(close(results[0], correct1) && close(results[1], correct2) && close(results[2], correct1) && close(results[3], correct2));
  t.is(counter.frameCount, 1);
  if (expectedOps !== undefined) t.is(counter.opCount, expectedOps);
}

// ---- item 3: parameters(), buffers(), modules() inside captured code ----

/** requires_grad1/2 are free functions: run-time capture cannot guard them, so that route runs forward eagerly. */
function parametersBranch(t: ExecutionContext, c: Classes, route: Route, name: string): void {
  const m = new c[name]!();
  if (route === 'plugin') return standardTest(t, m);
  m.eval();
  const x = kiln.randn([10, 10]);
  const counter = new kiln.testing.CompileCounter();
  t.true(
    close(
      kiln.compile(m, { backend: counter }).call(x),
      eager(() => m.call(x)),
    ),
  );
  t.is(counter.frameCount, 0);
  t.regex(kiln.explain(m)(x).breakReasons[0]!.reason, /requiresGrad[12]\(\)/);
}

bothRoutes('test_parameters1', (t, c, route) => parametersBranch(t, c, route, 'ParametersModule1'));
bothRoutes('test_parameters2', (t, c, route) => parametersBranch(t, c, route, 'ParametersModule2'));
bothRoutes('test_parameters3', (t, c) => standardTest(t, new c.ParametersModule3!(), 5));
bothRoutes('test_parameters4', (t, c) => standardTest(t, new c.ParametersModule4!()));
bothRoutes('test_parameters5', (t, c) => standardTest(t, new c.ParametersModule5!()));

bothRoutes('test_module_forward_has_graph_break', (t, c) => {
  const m = new c.ModuleForwardHasGraphBreak!();
  const x = kiln.rand([10, 10]);
  const ref = eager(() => m.call(x));
  const opt = kiln.compile(m, { backend: 'eager' });
  t.true(close(opt.call(x), ref));
  t.true(close(opt.call(x), ref), 'the cached graphs give the same result');
});

bothRoutes('test_attr', (t, c) => {
  const mod = new c.DirModule!();
  const opt = kiln.compile(mod, { backend: 'eager' });
  const [p1, p2] = [mod.parameters(), opt.parameters()];
  t.is(p1.length, p2.length);
  p1.forEach((p, i) => t.is(p, p2[i]));
  const [b1, b2] = [mod.buffers(), opt.buffers()];
  t.is(b1.length, b2.length);
  b1.forEach((b, i) => t.is(b, b2[i]));
  const getParameterDtype = c.getParameterDtype as unknown as (m: Module) => string;
  t.is(kiln.compile(getParameterDtype, { backend: 'eager' })(mod), 'float32');
});

// ---- item 7: OptimizedModule forwards to origMod ----

bothRoutes('test_nn_module', (t, c) => {
  const mod = new c.MockModule!();
  const counter = new kiln.testing.CompileCounter();
  const opt = kiln.compile(mod, { backend: counter });
  t.true(opt instanceof kiln.OptimizedModule);
  const x = kiln.randn([10, 10]);
  t.true(
    close(
      eager(() => mod.call(x)),
      opt.call(x),
    ),
  );
  t.is(counter.frameCount, 1);
});

bothRoutes('test_dir', (t, c) => {
  const mod = new c.DirModule!();
  const modKeys = Object.keys(mod);
  const optKeys = Object.keys(kiln.compile(mod, { backend: 'eager' }));
  for (const k of ['linear', 'buf0', 'param0']) t.true(optKeys.includes(k), k);
  t.deepEqual(
    modKeys.filter((k) => !optKeys.includes(k)),
    [],
  );
});

// ---- item 8: default parameter values ----

bothRoutes('test_attr_precedence', (t, c) => {
  const mod = new c.PrecedenceMod!();
  const x = kiln.ones([3, 3]);
  const ref = eager(() => mod.call(x));
  const counter = new kiln.testing.CompileCounter();
  const opt = kiln.compile(mod, { backend: counter });
  opt.call(kiln.ones([3, 3]));
  const res = opt.call(kiln.ones([3, 3]));
  t.is(counter.frameCount, 1);
  t.true(close(ref, res));
});

// ---- item 10: hooks on the compiled root ----

bothRoutes('test_hooks_outer', (t, c) => {
  const m = new c.TwiceXPlusOne!();
  const handle = m.registerForwardHook((_m, _inputs, output) => (output as Tensor).mul(2).add(1));
  const inp = kiln.tensor(1, { requiresGrad: true });
  let failureReason: string | undefined;
  const compiledM = kiln.compile(m, { backend: 'eager', onGuardFail: (f) => (failureReason = f) });
  t.true(
    close(
      compiledM.call(inp),
      eager(() => m.call(inp)),
    ),
  );
  t.is(compiledM.call(inp).item(), 7);
  t.is(failureReason, undefined);
  handle.remove();
  t.true(
    close(
      compiledM.call(inp),
      eager(() => m.call(inp)),
    ),
  );
  t.is(compiledM.call(inp).item(), 3);
});

bothRoutes('test_hooks_inner', (t, c) => {
  const TestModule = c.TwiceXPlusOne!;
  const forwardHook = (_m: Module, _inputs: unknown[], output: unknown) => (output as Tensor).mul(2).add(1);
  let m = new TestModule();
  let handle = m.registerForwardHook(forwardHook);
  const outerFunc = c.outerFunc as unknown as (x: Tensor, m: Module) => Tensor;
  const inp = kiln.tensor(1, { requiresGrad: true });
  let failureReason: string | undefined;
  const cc = new kiln.testing.CompileCounter();
  const compiledFunc = kiln.compile(outerFunc, { backend: cc, onGuardFail: (f) => (failureReason = f) });
  t.true(
    close(
      compiledFunc(inp, m),
      eager(() => outerFunc(inp, m)),
    ),
  );
  t.is(compiledFunc(inp, m).item(), 15);
  // One graph of 3 functions, the hook included.
  t.is(cc.frameCount, 1);
  t.is(cc.opCount, 6);

  handle.remove();
  t.true(
    close(
      compiledFunc(inp, m),
      eager(() => outerFunc(inp, m)),
    ),
  );
  t.is(compiledFunc(inp, m).item(), 7);
  t.regex(failureReason!, /forwardHooks/);
  t.is(cc.frameCount, 1 + 1);
  t.is(cc.opCount, 6 + 4);

  // A changed hook (PyTorch replaces it in m._forward_hooks; here: remove, register another).
  kiln.resetCompileCaches();
  m = new TestModule();
  handle = m.registerForwardHook(forwardHook);
  failureReason = undefined;
  t.true(
    close(
      compiledFunc(inp, m),
      eager(() => outerFunc(inp, m)),
    ),
  );
  t.is(compiledFunc(inp, m).item(), 15);
  handle.remove();
  m.registerForwardHook((_m, _inputs, output) => (output as Tensor).mul(2).add(2));
  t.true(
    close(
      compiledFunc(inp, m),
      eager(() => outerFunc(inp, m)),
    ),
  );
  t.is(compiledFunc(inp, m).item(), 16);
  t.regex(failureReason!, /forwardHooks/);
});
