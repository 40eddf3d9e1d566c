import test from 'ava';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExportError, exportProgram, load, save, unflatten } from '../src/export/index.js';
import { SerializationError, ValueError } from '../src/errors.js';
import { writeSealed } from '../src/graph/sealed-file.js';
import { manualSeed, nn, randn, tensor, type Tensor } from '../src/index.js';
import { opNames, roundTrip, routes } from './export-helpers.js';
import { close } from './helpers.js';

/**
 * kiln/export's programs, ported from PyTorch's test/export/test_export.py (each test is named after the one it
 * ports): lifted state and its names, pytree inputs, mutations, constants, the run-time input checks,
 * runDecompositions, unflatten and save/load. Every case runs on the program as exported, saved and loaded,
 * and re-exported from `ep.module()` (export-helpers.ts).
 */

test.beforeEach(() => manualSeed(0));

class TwoLayer extends nn.Module {
  fc1 = new nn.Linear(4, 8);
  fc2 = new nn.Linear(8, 3);
  override forward(inp: Tensor): Tensor {
    return this.fc2.call(this.fc1.call(inp).relu());
  }
}

test('test_basic: the program, its module() and every route give eager results; the graph is op calls only', (t) => {
  const m = new TwoLayer();
  const x = randn([5, 4]);
  const want = m.call(x);
  for (const [route, ep] of routes(m, [x])) {
    close(t, ep.run(x) as Tensor, want, `${route}: run`);
    close(t, ep.module().call(x) as Tensor, want, `${route}: module()`);
    t.false(
      ep.graphModule.graph.nodes.some((n) => n.op === 'call_module' || n.op === 'get_attr'),
      `${route}: no submodule calls or attributes`,
    );
    t.deepEqual(
      ep.graphSignature.inputSpecs.map((s) => [s.kind, s.name, s.target]),
      [
        ['PARAMETER', 'p_fc1_weight', 'fc1.weight'],
        ['PARAMETER', 'p_fc1_bias', 'fc1.bias'],
        ['PARAMETER', 'p_fc2_weight', 'fc2.weight'],
        ['PARAMETER', 'p_fc2_bias', 'fc2.bias'],
        ['USER_INPUT', 'inp', undefined],
      ],
      route,
    );
    t.deepEqual(Object.keys(ep.stateDict), ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias'], route);
  }
});

class PytreeInputs extends nn.Module {
  override forward(x: { a: Tensor[]; b: Tensor }, y: Tensor | null, scale: number): { sum: Tensor; parts: Tensor[] } {
    const s = x.a[0]!.add(x.a[1]!).mul(x.b);
    return { sum: y === null ? s.mul(scale) : s.add(y), parts: [x.a[0]!.neg()] };
  }
}

test('test_export_func_with_pytree_args: nested arrays, objects, null and numbers; outputs keep their structure', (t) => {
  const m = new PytreeInputs();
  const args = [{ a: [randn([2, 3]), randn([2, 3])], b: randn([3]) }, null, 2];
  const want = m.call(...(args as [never, never, never]));
  for (const [route, ep] of routes(m, args)) {
    const got = ep.run(...args) as { sum: Tensor; parts: Tensor[] };
    close(t, got.sum, want.sum, `${route}: sum`);
    close(t, got.parts[0]!, want.parts[0]!, `${route}: parts[0]`);
    t.deepEqual(
      ep.graphSignature.inputSpecs.map((s) => s.name),
      ['x_a_0', 'x_a_1', 'x_b'],
      route,
    );
  }
});

test('test_export_func_with_pytree_args: a wrong structure or a changed baked-in number is refused with the input path', (t) => {
  const m = new PytreeInputs();
  const a = [randn([2, 3]), randn([2, 3])];
  const args = [{ a, b: randn([3]) }, null, 2];
  for (const [route, ep] of routes(m, args)) {
    const flat = t.throws(() => ep.run({ a: [a[0]], b: randn([3]) }, null, 2), { instanceOf: ExportError }, route);
    t.regex(
      flat.message,
      /^Trying to flatten user inputs with exported input tree spec:\n {2}\[\{ a: \[Tensor, Tensor\], b: Tensor \}, null, 2\]\nbut actually got inputs with tree spec of:\n {2}\[\{ a: \[Tensor\], b: Tensor \}, null, 2\]$/,
      route,
    );
    t.throws(
      () => ep.run({ a, b: randn([3]) }, null, 3),
      { instanceOf: ValueError, message: 'Expected input at *args[2] to be equal to 2, but got 3' },
      route,
    );
    t.throws(
      () => ep.module().call({ a, b: randn([4]) }, null, 2),
      { instanceOf: ValueError, message: /^Expected input at \*args\[0\]\["b"\]\.shape\[0\] to be equal to 3, but got 4/ },
      route,
    );
  }
});

test('test_placeholder_naming_collisions: nested user inputs get distinct names', (t) => {
  class Foo extends nn.Module {
    override forward(x: { foo: Tensor[] }, x_foo: Tensor[], x_foo_0: Tensor): Tensor {
      return x.foo[0]!.add(x_foo[0]!).add(x_foo_0);
    }
  }
  const args = [{ foo: [randn([4, 4])] }, [randn([4, 4])], randn([4, 4])];
  for (const [route, ep] of routes(new Foo(), args)) {
    t.deepEqual(
      ep.graphSignature.inputSpecs.map((s) => s.name),
      ['x_foo_0', 'x_foo_0_1', 'x_foo_0_2'],
      route,
    );
  }
});

test('test_placeholder_naming_collisions: user inputs keep their names, lifted state is renamed', (t) => {
  class Foo extends nn.Module {
    param = new nn.Parameter(randn([4]));
    gamma = randn([4]);
    constructor() {
      super();
      this.registerBuffer('alpha', randn([4]), true);
      this.registerBuffer('beta', randn([4]), false);
    }
    override forward(p: { param: Tensor }, b_alpha: Tensor, b: { beta: Tensor }, c_gamma: Tensor): Tensor[] {
      const self = this as unknown as { alpha: Tensor; beta: Tensor };
      return [p.param.add(this.param), self.alpha.add(self.beta).add(b_alpha).add(b.beta), this.gamma.add(c_gamma)];
    }
  }
  const m = new Foo();
  const args = [{ param: randn([4]) }, randn([4]), { beta: randn([4]) }, randn([4])];
  const ep = exportProgram(m, args);
  t.deepEqual(
    ep.graphSignature.inputSpecs.map((s) => [s.name, s.kind]),
    [
      ['p_param_1', 'PARAMETER'],
      ['b_alpha_1', 'BUFFER'],
      ['b_beta_1', 'BUFFER'],
      ['c_gamma_1', 'CONSTANT_TENSOR'],
      ['p_param', 'USER_INPUT'],
      ['b_alpha', 'USER_INPUT'],
      ['b_beta', 'USER_INPUT'],
      ['c_gamma', 'USER_INPUT'],
    ],
  );
  for (const [route, p] of [
    ['exported', ep],
    ['saved and loaded', roundTrip(ep)],
  ] as const) {
    const got = p.run(...args) as Tensor[];
    const want = m.call(...(args as [never, never, never, never]));
    got.forEach((g, i) => close(t, g, want[i]!, `${route}: output ${i}`));
  }
});

test('test_non_persistent_buffer: a non-persistent buffer is lifted as a BUFFER but kept with the constants', (t) => {
  class Foo extends nn.Module {
    constructor() {
      super();
      this.registerBuffer('foo', randn([4, 4]), false);
    }
    override forward(x: Tensor): Tensor {
      return (this as unknown as { foo: Tensor }).foo.add(x);
    }
  }
  const m = new Foo();
  const x = randn([4, 4]);
  for (const [route, ep] of routes(m, [x])) {
    t.deepEqual(ep.graphSignature.inputSpecs[0], { kind: 'BUFFER', name: 'b_foo', target: 'foo', persistent: false }, route);
    t.deepEqual(Object.keys(ep.stateDict), [], route);
    t.deepEqual(Object.keys(ep.constants), ['foo'], route);
    close(t, ep.run(x) as Tensor, m.call(x), route);
    t.deepEqual(Object.keys(ep.module().stateDict()), [], `${route}: module() keeps it out of its state dict`);
  }
});

test('test_lifted_constants / test_constant_fqn: tensors held as plain attributes and made in forward become CONSTANT_TENSOR inputs', (t) => {
  class Inner extends nn.Module {
    scale = tensor([2, 3, 4]);
  }
  class Foo extends nn.Module {
    inner = new Inner();
    override forward(inp: Tensor): Tensor {
      return inp.mul(this.inner.scale).add(tensor([1, 1, 1]));
    }
  }
  const m = new Foo();
  const x = randn([2, 3]);
  const ep = exportProgram(m, [x]);
  t.deepEqual(
    ep.graphSignature.inputSpecs.map((s) => [s.kind, s.name, s.target]),
    [
      ['CONSTANT_TENSOR', 'c_inner_scale', 'inner.scale'],
      ['CONSTANT_TENSOR', 'c_lifted_tensor_0', 'lifted_tensor_0'],
      ['USER_INPUT', 'inp', undefined],
    ],
  );
  for (const [route, p] of [
    ['exported', ep],
    ['saved and loaded', roundTrip(ep)],
    ['re-exported', exportProgram(ep.module(), [x])],
  ] as const) {
    close(t, p.run(x) as Tensor, m.call(x), route);
    t.deepEqual(
      p.graphSignature.inputSpecs.map((s) => s.name),
      ['c_inner_scale', 'c_lifted_tensor_0', 'inp'],
      route,
    );
  }
});

class Counter extends nn.Module {
  constructor() {
    super();
    this.registerBuffer('count', tensor([0]));
  }
  override forward(x: Tensor): Tensor {
    const self = this as unknown as { count: Tensor };
    self.count.add_(1);
    return x.add(self.count);
  }
}

test('test_to_module_with_mutated_buffer: a buffer update is a BUFFER_MUTATION output that module() applies on every call', (t) => {
  const x = randn([3]);
  for (const [route, ep] of routes(() => new Counter(), [x])) {
    t.deepEqual(
      ep.graphSignature.outputSpecs.map((s) => [s.kind, s.target]),
      [
        ['BUFFER_MUTATION', 'count'],
        ['USER_OUTPUT', undefined],
      ],
      route,
    );
    t.false(
      opNames(ep).some((n) => n.endsWith('_')),
      `${route}: no in-place nodes (${opNames(ep).join(', ')})`,
    );
    const mod = ep.module();
    mod.call(x);
    close(t, mod.call(x) as Tensor, x.add(2), `${route}: second call sees the first call's update`);
    t.deepEqual([...(mod.stateDict().count!.data() as Float32Array)], [2], route);
  }
});

test('test_to_module_with_mutated_buffer_multiple: buffers of nested modules are updated under their own paths', (t) => {
  class Outer extends nn.Module {
    a = new Counter();
    b = new Counter();
    override forward(x: Tensor): Tensor {
      return this.b.call(this.a.call(x));
    }
  }
  const x = randn([3]);
  for (const [route, ep] of routes(() => new Outer(), [x])) {
    t.deepEqual(
      ep.graphSignature.outputSpecs.filter((s) => s.kind === 'BUFFER_MUTATION').map((s) => s.target),
      ['a.count', 'b.count'],
      route,
    );
    const mod = ep.module();
    mod.call(x);
    close(t, mod.call(x) as Tensor, x.add(4), route);
    t.deepEqual(Object.keys(mod.stateDict()), ['a.count', 'b.count'], route);
  }
});

test('test_export_input_mutation_static_shape: a write through a view of an input is copied back; the graph stays functional', (t) => {
  class Foo extends nn.Module {
    override forward(x: Tensor, y: Tensor): Tensor {
      x.view([3, 2]).narrow(0, 0, 1).add_(y);
      return x.mul(2);
    }
  }
  const make = () => tensor([1, 2, 3, 4, 5, 6], { shape: [2, 3] });
  const y = tensor([10, 20]);
  const eager = make();
  const want = new Foo().call(eager, y);
  for (const [route, ep] of routes(new Foo(), [make(), y])) {
    t.deepEqual(
      ep.graphSignature.outputSpecs.map((s) => [s.kind, s.target]),
      [
        ['USER_INPUT_MUTATION', 'x'],
        ['USER_OUTPUT', undefined],
      ],
      route,
    );
    t.false(
      opNames(ep).some((n) => n.endsWith('_')),
      `${route}: no in-place nodes`,
    );
    const x = make();
    close(t, ep.run(x, y) as Tensor, want, `${route}: output`);
    close(t, x, eager, `${route}: the caller's input was written as eagerly`);
  }
});

test('test_export_decomps_simple: Linear is core ops already; runDecompositions lowers LayerNorm, with equal results', (t) => {
  class Net extends nn.Module {
    fc = new nn.Linear(4, 6);
    norm = new nn.LayerNorm(6);
    override forward(inp: Tensor): Tensor {
      return this.norm.call(this.fc.call(inp)).relu();
    }
  }
  const m = new Net();
  const x = randn([5, 4]);
  const ep = exportProgram(m, [x]);
  // linear is a composite of the op table: traced into t + matmul + add, as PyTorch's core decomposition gives
  t.false(opNames(ep).includes('linear'), opNames(ep).join(', '));
  t.true(opNames(ep).includes('nativeLayerNorm'), opNames(ep).join(', '));
  const core = ep.runDecompositions();
  t.false(opNames(core).includes('nativeLayerNorm'), opNames(core).join(', '));
  t.deepEqual(
    core.graphSignature.inputSpecs.map((s) => s.name),
    ep.graphSignature.inputSpecs.map((s) => s.name),
  );
  close(t, core.run(x) as Tensor, m.call(x), 'decomposed');
  close(t, roundTrip(core).run(x) as Tensor, m.call(x), 'decomposed, saved and loaded');
});

test('test_unflatten: the module tree comes back with its paths, class names and state', (t) => {
  class Block extends nn.Module {
    fc = new nn.Linear(4, 4);
    override forward(x: Tensor): Tensor {
      return this.fc.call(x).relu();
    }
  }
  class Net extends nn.Module {
    blocks = new nn.Sequential(new Block(), new Block());
    head = new nn.Linear(4, 2);
    override forward(x: Tensor): Tensor {
      return this.head.call(this.blocks.call(x));
    }
  }
  const m = new Net();
  const x = randn([3, 4]);
  for (const [route, ep] of routes(m, [x])) {
    const u = unflatten(ep);
    t.deepEqual(Object.keys(u.stateDict()), Object.keys(m.stateDict()), route);
    t.is(u.getSubmodule('blocks.1').constructor.name, 'Block', route);
    t.is(u.getSubmodule('blocks.1.fc').constructor.name, 'Linear', route);
    close(t, u.call(x) as Tensor, m.call(x), route);
  }
});

test('re-export of ep.module() keeps the graph and specialises to the new example', (t) => {
  const m = new TwoLayer();
  const x = randn([5, 4]);
  const ep = exportProgram(m, [x]);
  const again = exportProgram(ep.module(), [x]);
  t.deepEqual(opNames(again), opNames(ep));
  t.deepEqual(
    again.graphSignature.inputSpecs.map((s) => s.name),
    ep.graphSignature.inputSpecs.map((s) => s.name),
  );
  t.throws(() => again.run(randn([6, 4])), {
    instanceOf: ValueError,
    message: /^Expected input at \*args\[0\]\.shape\[0\] to be equal to 5, but got 6/,
  });
});

test('bad input: not a module, args not an array, a parameter written in place, a wrong dtype', (t) => {
  t.throws(() => exportProgram((() => 1) as never, []), { message: /exportProgram: expected an nn.Module, got function/ });
  t.throws(() => exportProgram(new TwoLayer(), randn([5, 4]) as never), { message: /args must be an array/ });
  class WritesParam extends nn.Module {
    w = new nn.Parameter(randn([3]));
    override forward(x: Tensor): Tensor {
      this.w.detach().add_(1);
      return x.add(this.w);
    }
  }
  t.throws(() => exportProgram(new WritesParam(), [randn([3])]), { instanceOf: ExportError, message: /writes the parameter 'w' in place/ });
  const ep = exportProgram(new TwoLayer(), [randn([5, 4])]);
  t.throws(() => ep.run(tensor([[1, 2, 3, 4]], { dtype: 'int32' })), {
    instanceOf: ValueError,
    message: 'Expected input at *args[0].dtype to be float32, but got int32',
  });
});

function withTemp<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-export-'));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('save/load: a truncated, foreign, newer-version or tampered file is a SerializationError', (t) => {
  withTemp((dir) => {
    const ep = exportProgram(new Counter(), [randn([3])]);
    const path = join(dir, 'p.kiln');
    save(ep, path);
    const text = readFileSync(path, 'utf8');
    const bad = join(dir, 'bad.kiln');
    writeFileSync(bad, text.slice(0, text.length >> 1));
    t.throws(() => load(bad), { instanceOf: SerializationError, message: /not valid JSON/ });
    writeFileSync(bad, JSON.stringify({ format: 'kiln.jit', version: 1 }));
    t.throws(() => load(bad), { instanceOf: SerializationError, message: /is not a kiln.exported_program file/ });
    writeFileSync(bad, text.replace('"version":1', '"version":2'));
    t.throws(() => load(bad), { instanceOf: SerializationError, message: /is version 2; this kiln reads version 1/ });
    writeFileSync(bad, text.replace('"count"', '"counx"'));
    t.throws(() => load(bad), { instanceOf: SerializationError, message: /corrupt/ });
    t.throws(() => load(join(dir, 'missing.kiln')), { instanceOf: SerializationError, message: /cannot read/ });
  });
});

test('save/load fuzz: 300 random corruptions of a saved program each give a SerializationError', (t) => {
  withTemp((dir) => {
    const ep = exportProgram(new TwoLayer(), [randn([2, 4])]);
    const path = join(dir, 'p.kiln');
    save(ep, path);
    const bytes = readFileSync(path);
    let seed = 12345;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const bad = join(dir, 'bad.kiln');
    for (let i = 0; i < 300; i++) {
      const b = Buffer.from(bytes);
      const kind = i % 3;
      if (kind === 0) b[rand(b.length)] = rand(256); // one byte changed
      const out =
        kind === 1
          ? b.subarray(0, rand(b.length))
          : kind === 2
            ? Buffer.concat([b.subarray(0, rand(b.length)), b.subarray(rand(b.length))])
            : b;
      if (out.equals(bytes)) continue;
      writeFileSync(bad, out);
      t.throws(() => load(bad), { instanceOf: SerializationError }, `corruption ${i}`);
    }
  });
});

test('load refuses a file whose specs do not fit its graph, trees or tensors (each change re-sealed)', (t) => {
  withTemp((dir) => {
    const path = join(dir, 'p.kiln');
    save(exportProgram(new Counter(), [randn([3])]), path);
    const original = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
    const bad = join(dir, 'bad.kiln');
    const tamper = (change: (j: Record<string, Record<string, unknown>[]>) => void) => {
      const { sha256: _, ...payload } = structuredClone(original) as Record<string, Record<string, unknown>[]>;
      change(payload);
      writeSealed(bad, payload);
      return t.throws(() => load(bad), { instanceOf: SerializationError });
    };
    t.regex(
      tamper((j) => (j.outputSpecs![0] = { kind: 'USER_OUTPUT', name: j.outputSpecs![0]!.name })).message,
      /user outputs but outTree holds 1/,
    );
    t.regex(tamper((j) => (j.outputSpecs![0]!.target = 'nope')).message, /updates 'nope', which is no buffer/);
    t.regex(
      tamper((j) => (j.stateDict![0]!.tensor = { dtype: 'float32', shape: [2], data: 'AAAAAAAAAAA=' })).message,
      /traced with float32 \[1\]/,
    );
    t.regex(tamper((j) => (j.modules![0]!.path = '__proto__')).message, /must be a dotted path of attribute names/);
    t.regex(tamper((j) => (j.inputSpecs![0]!.target = 'a.__proto__')).message, /must be a dotted path of attribute names/);
  });
});
