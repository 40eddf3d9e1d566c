import test from 'ava';
import * as kiln from 'kiln';
import { loadRewritten } from './plugin-helpers.js';

/**
 * PyTorch's test/dynamo/test_modules.py, the cases of issue 17 capture items 1 (pytree inputs), 4 (module
 * state written in forward) and 5 (resume after a break inside a submodule or helper), each named after the
 * test it ports and run on both routes: the fixture rewritten by the plugin, and the same file as tsx loads
 * it (no plugin: run-time capture). `optimize("eager", nopython=True)` is `fullgraph: true`; a
 * CompileCounter stands in for torch._dynamo.testing.CompileCounter. Every case compares with eager.
 *
 * Not expressible: LazyModuleMixin's parameter initialisation (kiln has no lazy modules: the lazy tests port
 * their forwards' list and nested inputs), keyword arguments (test_lazy_module_kwargs passes `y` by position).
 */
type Module = InstanceType<typeof kiln.nn.Module>;
type Tensor = kiln.Tensor;
type Mod = Record<string, new (...a: never[]) => Module>;

const FIXTURE = 'test/fixtures/capture/dynamo-modules-a.ts';
const routes: [string, () => Promise<Mod>][] = [
  ['plugin', async () => (await loadRewritten<Mod>(FIXTURE)).mod],
  ['run-time', async () => (await import('./fixtures/capture/dynamo-modules-a.js')) as unknown as Mod],
];
const same = (a: unknown, b: unknown) => kiln.allclose(a as Tensor, b as Tensor, { atol: 1e-5 });
const eager = <T>(f: () => T): T => kiln.testing.eagerly(f);
const rand = (...shape: number[]) => kiln.rand(shape);

for (const [route, load] of routes) {
  // ---- item 5: resume after a break inside a submodule or helper ----

  test(`${route}: test_unsupportedmodule`, async (t) => {
    const { UnsupportedModuleCall } = await load();
    const m = new UnsupportedModuleCall!();
    const i = kiln.randn([10]);
    const cnt = new kiln.testing.CompileCounter();
    const optM = kiln.compile(m, { backend: cnt });
    const r = optM.call(i);
    t.true(
      same(
        r,
        eager(() => m.call(i)),
      ),
    );
    // `x * 1.5` and `1 + …` stay captured around the call; the plugin also captures the submodule's ops
    // before its break (PyTorch's op_count 6); run-time capture runs that submodule eagerly, whole.
    t.is(cnt.opCount, route === 'plugin' ? 6 : 2);
    t.true(
      same(
        optM.call(i),
        eager(() => m.call(i)),
      ),
      'second call',
    );
    t.throws(() => kiln.compile(new UnsupportedModuleCall!(), { fullgraph: true, backend: 'eager' }).call(i), {
      instanceOf: kiln.GraphBreakError,
    });
  });

  test(`${route}: test_unsupportedmethod`, async (t) => {
    const { UnsupportedMethodCall } = await load();
    const m = new UnsupportedMethodCall!();
    const i = kiln.randn([10]);
    const cnt = new kiln.testing.CompileCounter();
    const optM = kiln.compile(m, { backend: cnt });
    const r = optM.call(i);
    t.true(
      same(
        r,
        eager(() => m.call(i)),
      ),
    );
    // The plugin splits forward at the helper's call and the helper at its break (PyTorch's op_count 5).
    // Run-time capture cannot cut a helper method: that forward runs eagerly (a break with a reason).
    if (route === 'plugin') t.is(cnt.opCount, 5);
    else t.is(kiln.explain(m)(i).graphBreakCount, 1);
  });

  test(`${route}: test_module_forward_has_graph_break`, async (t) => {
    const { ModuleForwardHasGraphBreak } = await load();
    const m = new ModuleForwardHasGraphBreak!();
    const x = rand(10, 10);
    const ref = eager(() => m.call(x));
    const optM = kiln.compile(m, { backend: 'eager' });
    t.true(same(optM.call(x), ref));
    t.true(same(optM.call(x), ref), 'second call');
  });

  // ---- item 4: module state written in forward ----

  test(`${route}: test_self_mutating1`, async (t) => {
    const { SelfMutatingModule } = await load();
    const m1 = new kiln.nn.Linear(10, 10);
    const m2 = new SelfMutatingModule!(m1 as never) as Module & { counter: number };
    const m3 = new SelfMutatingModule!(m1 as never) as Module & { counter: number };
    const m4 = new SelfMutatingModule!(m1 as never) as Module & { counter: number };
    const i = kiln.randn([10]);
    const out2 = eager(() => [m2.call(i), m2.call(i), m2.call(i)]);
    const cnt = new kiln.testing.CompileCounter();
    const optM3 = kiln.compile(m3, { backend: cnt, fullgraph: true });
    const optM4 = kiln.compile(m4, { backend: cnt, fullgraph: true });
    const out3 = [optM3.call(i), optM3.call(i), optM3.call(i)];
    const out4 = [optM4.call(i), optM4.call(i), optM4.call(i)];
    out2.forEach((o, k) => {
      t.true(same(out3[k], o), `m3 call ${k}`);
      t.true(same(out4[k], o), `m4 call ${k}`);
    });
    t.is(m3.counter, 3);
    t.is(m4.counter, 3);
    // PyTorch shares frames between m3 and m4 (frame_count 3); kiln's caches are per module: 3 each.
    t.is(cnt.frameCount, 6);
  });

  test(`${route}: test_assign_does_not_exist`, async (t) => {
    const { AssignsNewAttribute } = await load();
    const mod = new AssignsNewAttribute!() as Module & { textEncoding?: Tensor };
    const out = kiln.compile(mod, { fullgraph: true, backend: 'eager' }).call(kiln.randn([10]));
    t.is(mod.textEncoding, out);
  });

  test(`${route}: test_setattr_on_compiled_module`, async (t) => {
    const { ReplayMutation } = await load();
    const [N, DIn, H, inner] = [2, 2, 2, 4];
    const model = new ReplayMutation!(DIn as never, H as never, inner as never) as Module & { x: Tensor | null };
    const model2 = new ReplayMutation!(DIn as never, H as never, inner as never) as Module & { x: Tensor | null };
    model2.loadStateDict(model.stateDict());
    const input = kiln.ones([N, DIn]);
    model.x = kiln.tensor([
      [100, 100, 100, 100],
      [200, 200, 200, 200],
    ]);
    eager(() => model.call(input));
    const compiledModel = kiln.compile(model2, { backend: 'eager' }) as unknown as Module & { origMod: typeof model2 };
    compiledModel.origMod.x = kiln.tensor([
      [100, 100, 100, 100],
      [200, 200, 200, 200],
    ]);
    compiledModel.call(input);
    t.true(same(model.x, compiledModel.origMod.x));
  });

  test(`${route}: test_no_op_assignment`, async (t) => {
    const { NoOpAssignment } = await load();
    const ref = new NoOpAssignment!() as Module & { buffer: Tensor };
    const mod = new NoOpAssignment!() as Module & { buffer: Tensor };
    mod.loadStateDict(ref.stateDict());
    const compiled = kiln.compile(mod, { backend: 'eager', fullgraph: true });
    for (let k = 0; k < 2; k++) {
      const x = kiln.rand([4]);
      t.true(
        same(
          compiled.call(x),
          eager(() => ref.call(x)),
        ),
        `call ${k}`,
      );
      t.true(same(mod.buffer, ref.buffer), `buffer after call ${k}`);
    }
    t.is(mod.namedBuffers().length, 1, 'the buffer is still registered');
  });

  // ---- item 1: pytree inputs ----

  test(`${route}: test_lazy_module5`, async (t) => {
    const { ModuleWithListInput } = await load();
    const m = new ModuleWithListInput!();
    const r = rand(5, 5);
    const x = [r, r, r, null];
    const optM = kiln.compile(m, { backend: 'eager', fullgraph: true });
    const res = optM.call(x);
    const ref = eager(() => m.call(x));
    t.true(same(res, ref));
  });

  test(`${route}: test_lazy_module6`, async (t) => {
    const { ModuleWithListSubmodule } = await load();
    const m = new ModuleWithListSubmodule!();
    const r = rand(5, 5);
    const x = [r, r, r];
    const optM = kiln.compile(m, { backend: 'eager', fullgraph: true });
    t.true(
      same(
        optM.call(x),
        eager(() => m.call(x)),
      ),
    );
  });

  test(`${route}: test_lazy_module7`, async (t) => {
    const { ModuleWithNestedInput } = await load();
    const m = new ModuleWithNestedInput!();
    const r = rand(5, 5);
    const x = { x: { a: [r, r, r], b: rand(5, 5) }, y: rand(5, 5) };
    const optM = kiln.compile(m, { backend: 'eager', fullgraph: true });
    t.true(
      same(
        optM.call(x),
        eager(() => m.call(x)),
      ),
    );
  });

  test(`${route}: test_lazy_module_kwargs`, async (t) => {
    const { LayerWithInputs } = await load();
    const m = new LayerWithInputs!();
    const x = [rand(5, 5), rand(5, 5), rand(5, 5)];
    const y = [rand(5, 5), rand(5, 5)];
    const cnt = new kiln.testing.CompileCounter();
    const optM = kiln.compile(m, { backend: cnt, fullgraph: true });
    t.true(
      same(
        optM.call(x, y),
        eager(() => m.call(x, y)),
      ),
    );
    t.is(cnt.frameCount, 1);
    t.is(cnt.opCount, 4);
  });
}
