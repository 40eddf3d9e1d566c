import test from 'ava';
import * as kiln from 'kiln';
import { TENSOR_ONLY_METHODS } from '../src/analysis/classify.js';
import { classifySource } from '../src/analysis/source-classify.js';
import { transformSource } from '../src/register/transform-file.js';
import { loadRewritten } from './plugin-helpers.js';

/**
 * Issue 17, item 2: tensor-ness is decided from evidence (annotations, the type checker, how a value is
 * used, the actual value at run time), never from the absence of a type. Helpers that take modules or
 * lists of modules without annotations (ports of PyTorch's test/dynamo/test_modules.py, named after the
 * test they port) are captured, not broken at `[...modules]` or `[...module.parameters()]`.
 */
type Module = InstanceType<typeof kiln.nn.Module>;
type Tensor = kiln.Tensor;
const FIXTURE = 'test/fixtures/untyped-params/input.ts';

/** The plan report of a source written to no file (the analysis reads only the text). */
function reportOf(source: string) {
  return transformSource(source, `${process.cwd()}/test/fixtures/untyped-params/inline.ts`, { sourceMaps: false }).report!;
}
const breaksOf = (source: string) => reportOf(source).plans.flatMap((p) => p.segments.filter((s) => s.kind !== 'graph'));

/** Compiled (with a CompileCounter) against the same class loaded without the plugin, three calls. */
async function capturedWhole(t: import('ava').ExecutionContext, name: string, breaks = 0) {
  const { mod, report } = await loadRewritten<Record<string, new () => Module>>(FIXTURE);
  const plan = report.plans.find((p) => p.name === `${name}.forward`)!;
  const found = plan.segments.filter((s) => s.kind !== 'graph');
  t.is(found.length, breaks);
  for (const b of found) t.notRegex(b.reason!, /tensor|data-dependent/, 'never a break for taking a module for a tensor');
  const plain = (await import(`../${FIXTURE}`)) as Record<string, new () => Module>;
  // the same seed for both: plain arrays of layers are not in a state dict
  kiln.manualSeed(3);
  const m = new mod[name]!();
  kiln.manualSeed(3);
  const ref = new plain[name]!();
  const counter = new kiln.testing.CompileCounter();
  const compiled = kiln.compile(m, { backend: counter });
  for (let i = 0; i < 3; i++) {
    const x = kiln.randn([2 + i, 10]);
    t.true(kiln.allclose(compiled.call(x) as Tensor, ref.forward(x) as Tensor, { atol: 1e-5 }), `call ${i}`);
  }
  const report2 = kiln.explain(m)(kiln.randn([2, 10]));
  t.is(report2.graphBreakCount, breaks);
  t.true(counter.frameCount >= 1);
}

// Traces list the real Parameters (issue 17 item 3), so a helper spreading `module.parameters()` is captured whole.
test('test_parameters1: requires_grad1(module) spreading module.parameters() is not taken for a tensor', (t) =>
  capturedWhole(t, 'ParametersModule1', 0));

test('test_parameters2: the same helper imported from another file is not taken for a tensor', (t) =>
  capturedWhole(t, 'ParametersModule2', 0));

test('test_layerlist: a helper looping over a plain array of layers, and [...modules].length, are captured', (t) =>
  capturedWhole(t, 'LayerList'));

test('test_children: a helper looping over module.children() is captured', (t) => capturedWhole(t, 'Children'));

test('an untyped parameter used with a tensor-only method is a tensor: comparing it is a data-dependent break', (t) => {
  const breaks = breaksOf(`
    import { nn } from 'kiln';
    export class A extends nn.Module {
      forward(x) {
        const y = x.relu();
        if (x.sum() > 0) return y;
        return y.neg();
      }
    }`);
  t.is(breaks.length, 1);
  t.regex(breaks[0]!.reason!, /data-dependent control flow: '>' on tensor x\.sum\(\)/);
});

test('an untyped parameter nothing shows to be a tensor is not taken for one (the trace decides at run time)', (t) => {
  // `n > 0` for an unknown `n`: no static break; were it a tensor, the run-time trace refuses to read it
  const breaks = breaksOf(`
    import { nn } from 'kiln';
    export class A extends nn.Module {
      lin = new nn.Linear(4, 4);
      forward(x, n) {
        const h = this.lin.call(x);
        return n > 0 ? h : h.neg();
      }
    }`);
  t.deepEqual(breaks, []);
});

test('an untyped parameter that is spread or iterated is not a tensor even where it is also passed to a kiln op', (t) => {
  const breaks = breaksOf(`
    import { nn, cat } from 'kiln';
    function joinAll(parts) {
      const all = [...parts];
      for (const p of parts) all.push(p);
      return cat(all, 0);
    }
    export class A extends nn.Module {
      forward(x) {
        return joinAll([x, x.neg()]);
      }
    }`);
  t.deepEqual(breaks, []);
});

test('annotations still decide: a Tensor-typed parameter spread is a break, a number-typed one compared is not', (t) => {
  const breaks = breaksOf(`
    import { nn, type Tensor } from 'kiln';
    export class A extends nn.Module {
      forward(x: Tensor, k: number) {
        const h = k > 1 ? x.mul(k) : x;
        const n = [...x].length;
        return h.mul(n);
      }
    }`);
  t.is(breaks.length, 1);
  t.regex(breaks[0]!.reason!, /spreads tensor x/);
});

test('run time: the actual arguments decide an untyped forward parameter in code the plugin never saw', (t) => {
  const fn = 'forward(x) { if (x > 0) { return x; } return x; }';
  const base = { fn, classes: [], isKilnName: () => false };
  t.is(classifySource(base).brk, undefined, 'no evidence: no static break');
  t.regex(classifySource({ ...base, paramKinds: ['tensor'] }).brk!.reason, /'>' on tensor x/);
  t.is(classifySource({ ...base, paramKinds: ['number'] }).brk, undefined, 'a number compared is no break');
});

test('run time: compile() of an unrewritten module whose forward compares an untyped tensor argument runs it eagerly, matching eager', (t) => {
  // Written as tsc would emit it: no annotations, no plugin.
  class Gate extends kiln.nn.Module {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    override forward(x: any): any {
      if (x.sum().item() > 0) return x.mul(2);
      return x.neg();
    }
  }
  const m = new Gate();
  const c = kiln.compile(m, { backend: 'eager' });
  for (const s of [1, -1]) {
    const x = kiln.ones([2, 3]).mul(s);
    t.true(kiln.allclose(c.call(x) as Tensor, m.forward(x) as Tensor));
  }
});

test('TENSOR_ONLY_METHODS are Tensor methods that arrays, maps, sets, strings, functions and modules do not have', (t) => {
  const others = [Array, Map, Set, String, Function, Object, kiln.nn.Module, kiln.nn.ModuleList, kiln.nn.Sequential, kiln.nn.ModuleDict];
  const shared = new Set(others.flatMap((c) => Object.getOwnPropertyNames(c.prototype)));
  const tensor = kiln.ones([1]) as unknown as Record<string, unknown>;
  for (const m of TENSOR_ONLY_METHODS) {
    t.is(typeof tensor[m], 'function', `${m} is a Tensor method`);
    t.false(shared.has(m), `${m} is not a method of a container or module`);
  }
});
