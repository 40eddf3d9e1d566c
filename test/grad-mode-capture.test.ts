import test from 'ava';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as kiln from 'kiln';
import * as fx from 'kiln/fx';
import * as jit from 'kiln/jit';
import { loadRewritten } from './plugin-helpers.js';

/**
 * Issue 13 item 5, grad mode is part of the graph: `noGrad`/`withGradMode` regions inside captured code are
 * recorded as `_set_grad_enabled` nodes (as TorchDynamo records `with torch.no_grad():`), so the generated
 * code, the Interpreter and the kernels backend switch grad mode where the eager code does, and put the
 * caller's mode back even when the graph throws. Every model runs on both routes — a `forward` the plugin
 * rewrote into segments, and the same source loaded without the plugin, which `compile` captures by
 * symbolic tracing — and on both backends, against the same source run eagerly.
 */
type Tensor = kiln.Tensor;
type Module = InstanceType<typeof kiln.nn.Module>;
type Ctor = new () => Module;
type Models = Record<string, Ctor>;

const SOURCE = `import { nn, noGrad, withGradMode, type Tensor } from 'kiln';

/** The issue's repro: 2x is computed without grad, so d(sum)/dx is 1, not 3. */
export class NoGradMul extends nn.Module {
  override forward(x: Tensor): Tensor {
    return noGrad(() => x.mul(2)).add(x);
  }
}

/** The same through withGradMode(false, …). */
export class GradModeOff extends nn.Module {
  override forward(x: Tensor): Tensor {
    return withGradMode(false, () => x.mul(2)).add(x);
  }
}

/** Grad turned back on inside a noGrad region: only lin(x) records; lin(exp(x)) in the outer region does not. */
export class Nested extends nn.Module {
  lin = new nn.Linear(4, 4);
  override forward(x: Tensor): Tensor {
    const h = noGrad(() => {
      const off = this.lin.call(x.exp()).mul(3);
      return withGradMode(true, () => this.lin.call(x).mul(2).add(off));
    });
    return h.add(x.mul(x));
  }
}

/** Under noGrad overall, a region that records gradients (3x outside it does not). */
export class ForcesGrad extends nn.Module {
  override forward(x: Tensor): Tensor {
    const y = x.mul(3);
    return withGradMode(true, () => x.mul(2).add(y));
  }
}

/** A region whose op throws when the graph runs at other shapes (matmul of mismatched inner dims). */
export class ThrowsInside extends nn.Module {
  override forward(x: Tensor, w: Tensor): Tensor {
    return noGrad(() => x.matmul(w)).add(x.sum());
  }
}

/** A region that reads a value: a graph break on the plugin route, a failed trace (eager) on the other. */
export class ReadsValue extends nn.Module {
  override forward(x: Tensor): Tensor {
    return noGrad(() => x.mul(x.sum().item())).add(x);
  }
}
`;

const dir = resolve('test/.tmp/grad-mode-capture');
mkdirSync(dir, { recursive: true });
const file = join(dir, 'models.ts');
writeFileSync(file, SOURCE);
const rewritten = (await loadRewritten<Models>(file)).mod;
/** The same source loaded as written (tsx strips the types): code the plugin never saw. */
const plain = (await import(pathToFileURL(file).href)) as Models;

const ROUTES = { plugin: rewritten, 'run-time capture': plain } as const;
const BACKENDS = ['eager', 'kernels'] as const;

/** Gradients of `sum(run(x))` for x and the model's parameters, from a fresh leaf copy of `x0`. */
function grads(m: Module, run: (x: Tensor) => Tensor, x0: Tensor): { out: Tensor; grads: Tensor[] } {
  m.zeroGrad();
  const x = x0.detach().clone().requiresGrad_();
  const out = run(x);
  out.sum().backward();
  return { out, grads: [x.grad!, ...m.parameters().map((p) => p.grad!)] };
}

function sameGrads(t: { true(v: boolean, msg?: string): void; is(a: unknown, b: unknown): void }, got: Tensor[], want: Tensor[]) {
  t.is(got.length, want.length);
  got.forEach((g, i) => t.true(want[i] ? Boolean(g) && kiln.allclose(g, want[i]!, { atol: 1e-5 }) : !g, `gradient ${i}`));
}

const eagerly = <T>(f: () => T): T => kiln.testing.eagerly(f);

for (const [route, models] of Object.entries(ROUTES)) {
  for (const backend of BACKENDS) {
    const where = `${route}, ${backend}`;

    test(`the issue's repro: noGrad(() => x.mul(2)).add(x) gives x.grad 1, one graph, no break (${where})`, (t) => {
      for (const name of ['NoGradMul', 'GradModeOff']) {
        const m = new models[name]!();
        const c = kiln.compile(m, { backend });
        const x = kiln.randn([5]);
        const got = grads(m, (v) => c.call(v) as Tensor, x);
        t.deepEqual(got.grads[0]!.toArray(), [1, 1, 1, 1, 1], name);
        t.true(kiln.allclose(got.out, x.mul(3), { atol: 1e-6 }));
        t.true(kiln.isGradEnabled());
        const counter = new kiln.testing.CompileCounter();
        kiln.compile(m, { backend: counter }).call(x.clone().requiresGrad_());
        t.is(counter.frameCount, 1, `${name}: the region is captured, not a graph break`);
        t.is(counter.opCount, 4, `${name}: mul, add and the two _set_grad_enabled switches`);
      }
    });

    test(`nested regions: gradients of input and weights equal eager (${where})`, (t) => {
      const m = new models.Nested!();
      const c = kiln.compile(m, { backend });
      const x = kiln.randn([3, 4]);
      const want = eagerly(() => grads(m, (v) => m.call(v) as Tensor, x));
      t.true(want.grads.every(Boolean), 'input, weight and bias all get gradients');
      for (let call = 0; call < 2; call++) {
        const got = grads(m, (v) => c.call(v) as Tensor, x);
        t.true(kiln.allclose(got.out, want.out, { atol: 1e-5 }));
        sameGrads(t, got.grads, want.grads);
      }
      t.true(kiln.isGradEnabled());
    });

    test(`under noGrad, a region that turns grad on records gradients as eager does (${where})`, (t) => {
      const m = new models.ForcesGrad!();
      const c = kiln.compile(m, { backend });
      const x = kiln.randn([4]).requiresGrad_();
      const want = kiln.noGrad(() => eagerly(() => m.call(x) as Tensor));
      t.true(want.requiresGrad);
      for (let call = 0; call < 2; call++) {
        const out = kiln.noGrad(() => c.call(x) as Tensor);
        t.true(out.requiresGrad, 'the graph recorded the region with grad on');
        t.true(kiln.isGradEnabled());
        x.grad = null;
        out.sum().backward();
        t.deepEqual(x.grad!.toArray(), [2, 2, 2, 2]);
      }
    });

    test(`a graph that throws inside a region leaves grad mode as the caller had it (${where})`, (t) => {
      const m = new models.ThrowsInside!();
      const counter = new kiln.testing.CompileCounter();
      const c = kiln.compile(m, { backend: backend === 'eager' ? counter : backend, dynamic: true });
      const [x, w] = [kiln.randn([2, 3]), kiln.randn([3, 4])];
      t.true(kiln.allclose(c.call(x, w) as Tensor, eagerly(() => m.call(x, w)) as Tensor, { atol: 1e-5 }));
      for (const enabled of [true, false]) {
        kiln.withGradMode(enabled, () => {
          t.throws(() => c.call(kiln.randn([2, 5]), kiln.randn([3, 4])), { instanceOf: kiln.ShapeError });
          t.is(kiln.isGradEnabled(), enabled);
        });
      }
      if (backend === 'eager') t.is(counter.frameCount, 2, 'the graph itself threw (one graph per grad mode, no retrace per shape)');
    });

    test(`a region that cannot be captured runs eagerly with its grad mode, and the mode is restored (${where})`, (t) => {
      const m = new models.ReadsValue!();
      const c = kiln.compile(m, { backend });
      const x = kiln.randn([4]);
      const want = eagerly(() => grads(m, (v) => m.call(v) as Tensor, x));
      const got = grads(m, (v) => c.call(v) as Tensor, x);
      t.true(kiln.allclose(got.out, want.out, { atol: 1e-5 }));
      sameGrads(t, got.grads, want.grads);
      t.deepEqual(got.grads[0]!.toArray(), [1, 1, 1, 1]);
      t.true(kiln.isGradEnabled());
    });
  }

  test(`the grad-mode guard stays: a call under noGrad recompiles and names it (${route})`, (t) => {
    const m = new models.NoGradMul!();
    const counter = new kiln.testing.CompileCounter();
    const failures: string[] = [];
    const c = kiln.compile(m, { backend: counter, onGuardFail: (f) => failures.push(f) });
    const x = kiln.randn([3]).requiresGrad_();
    c.call(x);
    const out = kiln.noGrad(() => c.call(x) as Tensor);
    t.false(out.requiresGrad);
    t.is(counter.frameCount, 2);
    t.deepEqual(failures, ['isGradEnabled() == true']);
  });

  test(`explain: one graph, no break, the switches in its code and in the kernel plan (${route})`, (t) => {
    const m = new models.Nested!();
    const r = kiln.explain(m)(kiln.randn([2, 4]));
    t.is(r.graphCount, 1);
    t.is(r.graphBreakCount, 0);
    t.true(r.guards.includes('isGradEnabled() == true'));
    t.is(r.opCount, 8 + 4, 'exp, lin, mul, lin, mul, add, mul, add, and four switches');
    const text = kiln.formatExplain(r);
    t.regex(text, /const _set_grad_enabled = fx\._set_grad_enabled\(false\);/);
    t.regex(text, /const _set_grad_enabled_1 = fx\._set_grad_enabled\(true\);/);
    // the weights require grad and a region turns grad on: kernels run only when nothing requires grad
    t.regex(r.kernels![0]!, /runs eagerly while gradients are recorded; when nothing requires grad: /);
    t.regex(r.kernels![0]!, /eager +\[\] +_set_grad_enabled +\(switches grad mode\)/);
    const off = kiln.noGrad(() => kiln.explain(new models.NoGradMul!())(kiln.randn([2, 4])));
    t.true(off.guards.includes('isGradEnabled() == false'));
    t.regex(off.kernels![0]!, /^kiln kernels: NoGradMul: 1 kernels?, 2 eager steps/);
  });
}

test('under noGrad, a graph whose regions only turn grad off runs as kernels, values equal eager', (t) => {
  const m = new plain.Nested!();
  for (const p of m.parameters()) p.requiresGrad_(false);
  const c = kiln.compile(m);
  const x = kiln.randn([3, 4]);
  kiln.noGrad(() => {
    t.true(kiln.allclose(c.call(x) as Tensor, m.call(x) as Tensor, { atol: 1e-5 }));
    t.true(kiln.allclose(c.call(x) as Tensor, m.call(x) as Tensor, { atol: 1e-5 }));
  });
  const r = kiln.noGrad(() => kiln.explain(m)(x));
  t.notRegex(r.kernels![0]!, /runs eagerly/);
  t.regex(r.kernels![0]!, /elementwise/);
});

/** fx.symbolicTrace of the repro. */
const traced = () => fx.symbolicTrace(new plain.NoGradMul!());

test('gm.code and printReadable show the switches, and the body after the first runs in try/finally', (t) => {
  const gm = traced();
  const want = [
    'forward(x) {',
    '  const _set_grad_enabled = fx._set_grad_enabled(false);',
    '  try {',
    '    const mul = x.mul(2);',
    '    const _set_grad_enabled_1 = fx._set_grad_enabled(_set_grad_enabled);',
    '    const add = mul.add(x);',
    '    return add;',
    '  } finally {',
    '    fx._set_grad_enabled(_set_grad_enabled);',
    '  }',
    '}',
  ].join('\n');
  t.is(gm.code, want);
  t.true(
    gm.printReadable(false).includes(
      want
        .split('\n')
        .map((l) => `  ${l}`)
        .join('\n'),
    ),
  );
  t.regex(gm.graph.toString(), /%_set_grad_enabled : \[#users=1\] = call_function\[target=_set_grad_enabled\]\(args = \(false\)/);
  t.regex(gm.graph.toString(), /call_function\[target=_set_grad_enabled\]\(args = \(%_set_grad_enabled\)/);
});

test('generated code, the Interpreter and a Transformer copy all give x.grad 1', (t) => {
  const gm = traced();
  const runs: Record<string, (x: Tensor) => Tensor> = {
    'generated code': (x) => gm.forward(x) as Tensor,
    Interpreter: (x) => new fx.Interpreter(gm).run(x) as Tensor,
    Transformer: (x) => new fx.Transformer(gm).transform().forward(x) as Tensor,
  };
  for (const [name, run] of Object.entries(runs)) {
    const x = kiln.randn([3]).requiresGrad_();
    run(x).sum().backward();
    t.deepEqual(x.grad!.toArray(), [1, 1, 1], name);
  }
  t.regex(new fx.Transformer(gm).transform().code, /_set_grad_enabled\(false\)/);
});

test('the Interpreter puts grad mode back when a node inside a region throws', (t) => {
  const gm = fx.symbolicTrace(new plain.ThrowsInside!());
  for (const enabled of [true, false]) {
    kiln.withGradMode(enabled, () => {
      t.throws(() => new fx.Interpreter(gm).run(kiln.randn([2, 5]), kiln.randn([3, 4])), { instanceOf: kiln.ShapeError });
      t.is(kiln.isGradEnabled(), enabled, 'Interpreter');
      t.throws(() => gm.forward(kiln.randn([2, 5]), kiln.randn([3, 4])), { instanceOf: kiln.ShapeError });
      t.is(kiln.isGradEnabled(), enabled, 'generated code');
    });
  }
});

test('leaving a region restores the mode the graph was called in, not the one it was traced in', (t) => {
  const gm = traced(); // traced with grad on
  const x = kiln.randn([3]).requiresGrad_();
  const out = kiln.noGrad(() => {
    const y = gm.forward(x) as Tensor;
    t.false(kiln.isGradEnabled());
    return y;
  });
  t.false(out.requiresGrad);
});

test('dead-code elimination keeps the switches (they are impure)', (t) => {
  const gm = traced();
  t.false(gm.graph.eliminateDeadCode());
  t.is(gm.graph.nodes.filter((n) => n.target === gm.graph.nodes[1]!.target).length, 2);
});

test('regions with nothing to record leave no nodes (constants, and the runtime’s own regions around ops)', (t) => {
  const f = (x: Tensor) => x.add(kiln.noGrad(() => kiln.ones([3]).mul(2)));
  const gm = fx.symbolicTrace(f);
  t.notRegex(gm.code, /_set_grad_enabled/);
  t.deepEqual((gm.forward(kiln.zeros([3])) as Tensor).toArray(), [2, 2, 2]);
});

test('save and load round-trip the switches; a switch that is not a boolean is refused at load and at run time', (t) => {
  const gm = traced();
  const path = join(dir, 'no-grad.kiln.json');
  gm.save(path);
  const loaded = fx.load(path);
  t.is(loaded.code, gm.code);
  const x = kiln.randn([3]).requiresGrad_();
  (loaded.forward(x) as Tensor).sum().backward();
  t.deepEqual(x.grad!.toArray(), [1, 1, 1]);
  const json = gm.graph.toJSON();
  const sw = json.nodes.find((n) => n.target === '_set_grad_enabled')!;
  t.deepEqual(sw.args, [false]);
  sw.args = ['false'];
  const e = t.throws(() => fx.Graph.fromJSON(json), { instanceOf: fx.SerializationError });
  t.regex(e?.message ?? '', /node 1 '_set_grad_enabled': _set_grad_enabled takes one boolean or node, got \["false"\]/);
  // a graph built by hand gets the same answer when it runs
  const g = new fx.Graph();
  g.callFunction(gm.graph.nodes[1]!.target as fx.FunctionTarget, ['false']);
  g.output(null);
  const run = t.throws(() => new fx.GraphModule(new kiln.nn.Module(), g).forward(), { instanceOf: kiln.ValueError });
  t.regex(run?.message ?? '', /_set_grad_enabled: expected a boolean, got false/);
  t.true(kiln.isGradEnabled());
});

test('kiln/jit records the regions too: x.grad 1 from the trace and from its saved file', (t) => {
  const f = (x: Tensor) => kiln.noGrad(() => x.mul(2)).add(x);
  const tr = jit.trace(f, [kiln.randn([3]).requiresGrad_()]);
  t.regex(tr.code, /_set_grad_enabled\(false\)[\s\S]*mul[\s\S]*_set_grad_enabled\(_set_grad_enabled\)[\s\S]*add/);
  const path = join(dir, 'no-grad.jit.json');
  tr.save(path);
  for (const [name, run] of [
    ['trace', tr],
    ['loaded', jit.load(path) as (x: Tensor) => unknown],
  ] as const) {
    const x = kiln.randn([3]).requiresGrad_();
    ((run as (x: Tensor) => Tensor)(x) as Tensor).sum().backward();
    t.deepEqual(x.grad!.toArray(), [1, 1, 1], name);
  }
});
