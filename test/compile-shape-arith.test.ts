import test from 'ava';
import { compile, explain, manualSeed, randn, testing, type Tensor } from 'kiln';
import { resolve } from 'node:path';
import { loadRewritten } from './plugin-helpers.js';

/**
 * compile() of code kiln/plugin rewrote, where forward does arithmetic on sizes (issue 16 item 2): the plugin's
 * shape helpers answer compile's trace with graph nodes (`sym_size`, `sym_mul`, …), so the graph computes its
 * sizes from the input it gets and one graph serves every batch; comparisons on the input's sizes are guards.
 * Code the plugin never saw is the other route: there `x.shape[0] * 2` is plain JavaScript on a proxy, and the
 * segment runs eagerly (compile.test.ts and runtime-capture.test.ts cover it).
 */

type Models = Record<string, new () => InstanceType<typeof import('kiln').nn.Module>>;
const load = () => loadRewritten<Models>(resolve('test/fixtures/compile-shapes/models.ts')).then((r) => r.mod);

function close(t: import('ava').ExecutionContext, got: unknown, want: unknown, what: string) {
  const g = got as Tensor;
  const w = want as Tensor;
  t.deepEqual(g.shape, w.shape, what);
  t.true(g.sub(w).abs().max().item() <= 1e-5, `${what}: values differ`);
}

test('shape arithmetic on input and inner sizes is captured whole, on the kernels backend, and matches eager at every batch', async (t) => {
  const { Arithmetic } = await load();
  manualSeed(1);
  const m = new Arithmetic!();
  const report = explain(m)(randn([4, 4]));
  t.is(report.graphBreakCount, 0, report.breakReasons.map((b) => b.reason).join('; '));
  const compiled = compile(m, { dynamic: true });
  for (const b of [4, 5, 12, 31]) {
    const x = randn([b, 4]);
    close(t, compiled.call(x), m.call(x), `batch ${b}`);
  }
  t.regex(report.graphs[0]!.code, /sym_size\(/);
});

test('one recompile for a new batch (automatic dynamic), then the same graph at every other batch', async (t) => {
  const { Arithmetic } = await load();
  const counter = new testing.CompileCounter();
  const failed: string[] = [];
  const m = new Arithmetic!();
  const compiled = compile(m, { backend: counter, onGuardFail: (g) => failed.push(g) });
  for (const b of [4, 6, 9, 20, 3]) {
    const x = randn([b, 4]);
    close(t, compiled.call(x), m.call(x), `batch ${b}`);
  }
  t.is(counter.frameCount, 2);
  t.deepEqual(failed, ['x.shape[0] == 4']);
});

test('a comparison on an input size inside the segment is decided when traced and guarded', async (t) => {
  const { InputCondition } = await load();
  const counter = new testing.CompileCounter();
  const failed: string[] = [];
  const m = new InputCondition!();
  const compiled = compile(m, { backend: counter, dynamic: true, onGuardFail: (g) => failed.push(g) });
  for (const b of [3, 5, 6, 7, 40, 2]) {
    const x = randn([b, 3]);
    close(t, compiled.call(x), m.call(x), `batch ${b}`);
  }
  t.is(counter.frameCount, 2, 'one graph per outcome');
  t.deepEqual(failed, ['x.shape[0] <= 6']);
});

test('comparing the size of a tensor computed inside the segment runs that segment eagerly, with the reason and line', async (t) => {
  const { InnerCondition } = await load();
  const m = new InnerCondition!();
  const report = explain(m)(randn([4, 4]));
  t.is(report.graphCount, 0);
  t.regex(report.breakReasons[0]!.reason, /comparing the size 'sym_size\w*' needs its value/);
  t.regex(report.breakReasons[0]!.loc, /compile-shapes\/(models\.ts|\.rewritten-\w+\.mjs):\d+/); // the module as loaded
  const compiled = compile(m);
  for (const b of [4, 5]) {
    const x = randn([b, 4]);
    close(t, compiled.call(x), m.call(x), `batch ${b}`);
  }
});

test('a dynamic size used as a plain number (>>) runs eagerly instead of specialising the graph per size', async (t) => {
  const { ShiftedSize } = await load();
  const counter = new testing.CompileCounter();
  const m = new ShiftedSize!();
  const compiled = compile(m, { backend: counter });
  for (const b of [4, 6, 9, 20]) {
    const x = randn([b, 3]);
    close(t, compiled.call(x), m.call(x), `batch ${b}`);
  }
  t.is(counter.frameCount, 1, 'the static first graph only');
  const error = t.throws(() => compile(new ShiftedSize!(), { dynamic: true, fullgraph: true }).call(randn([8, 3])));
  t.regex(error!.message, /x\.shape\[0\]/);
});

test('finding a rank inside the trace never runs a module with effects twice: batch norm statistics update once per call', async (t) => {
  const { NormThenShape } = await load();
  manualSeed(3);
  const compiledModel = new NormThenShape!();
  const eagerModel = new NormThenShape!();
  const compiled = compile(compiledModel);
  for (const b of [4, 4, 7]) {
    const x = randn([b, 4]);
    close(t, compiled.call(x), eagerModel.call(x), `batch ${b}`);
  }
  const stats = (m: InstanceType<typeof NormThenShape>) => m.stateDict();
  const a = stats(compiledModel);
  const e = stats(eagerModel);
  for (const k of Object.keys(e)) t.true(a[k]!.sub(e[k]!).abs().max().item() <= 1e-6, k);
});
