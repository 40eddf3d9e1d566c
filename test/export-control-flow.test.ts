import test from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { aotFunction, makeFx } from '../src/aot/index.js';
import { exportProgram, load, save, type ExportedProgram } from '../src/export/index.js';
import { SerializationError, ShapeError, TraceError, ValueError } from '../src/errors.js';
import { GraphModule } from '../src/graph/graph-module.js';
import { writeSealed } from '../src/graph/sealed-file.js';
import {
  CondOpArgsMismatchError,
  UnsupportedAliasMutationError,
  cond,
  manualSeed,
  map,
  nn,
  ones,
  randn,
  tensor,
  withGradMode,
  type Tensor,
} from '../src/index.js';
import { opNames, routes } from './export-helpers.js';
import { close } from './helpers.js';

/**
 * `cond` and `map` (API §6, issue 16 item 7), ported from PyTorch's test/export/test_export.py (test_export_cond,
 * test_cond_buffers, test_map, test_map_buffers) and test/functorch/test_control_flow.py's checks: plain code
 * eagerly; under export a tensor predicate keeps both branches as subgraphs (`true_graph_0`, `false_graph_0`)
 * with the state they close over lifted to operands, and `map` becomes one `map_impl` node over `body_graph_0`.
 * Every exported case also runs saved and loaded, and re-exported from `ep.module()` (export-helpers.ts).
 */

test.beforeEach(() => manualSeed(0));

/** The subgraph an exported program keeps under `name`. */
function subgraph(ep: ExportedProgram, name: string): GraphModule {
  const gm = ep.graphModule.resolveTarget(name);
  if (!(gm instanceof GraphModule)) throw new Error(`${name} is not a subgraph`);
  return gm;
}

function placeholderNames(gm: GraphModule): string[] {
  return gm.graph.nodes.filter((n) => n.op === 'placeholder').map((n) => n.name);
}

class A extends nn.Module {
  constructor() {
    super();
    this.registerBuffer('buffer', ones([6, 4]));
  }
  declare buffer: Tensor;
  override forward(): Tensor {
    return this.buffer.cos();
  }
}

/** test_export_cond's module, with a predicate of the caller's choosing. */
class CondFoo extends nn.Module {
  a = new A();
  constructor(private readonly pred: (x: Tensor) => boolean | Tensor) {
    super();
  }
  override forward(x: Tensor): Tensor {
    const trueFn = (x: Tensor) => x.cos().add(this.a.call().sum());
    const falseFn = (x: Tensor) => x.sin();
    return cond(this.pred(x), trueFn, falseFn, [x]);
  }
}

test('test_export_cond: a predicate already decided (x.shape[0] > 4) traces the taken branch inline', (t) => {
  const make = () => new CondFoo((x) => x.shape[0]! > 4);
  const x = randn([6, 4]);
  const want = make().call(x);
  close(t, want, x.cos().add(ones([6, 4]).cos().sum()), 'eager takes the true branch');
  for (const [route, ep] of routes(make, [x])) {
    close(t, ep.module().call(x) as Tensor, want, route);
    t.deepEqual(opNames(ep), ['cos', 'cos', 'sum', 'add'], route);
    t.deepEqual(
      ep.graphSignature.inputSpecs.map((s) => [s.kind, s.name]),
      [
        ['BUFFER', 'b_a_buffer'],
        ['USER_INPUT', 'x'],
      ],
      route,
    );
  }
});

test('test_export_cond: a tensor predicate keeps both branches as subgraphs that take the closed-over buffer', (t) => {
  const make = () => new CondFoo((x) => x.sum().gt(0));
  const pos = randn([6, 4]).abs();
  const neg = pos.neg();
  const m = make();
  const wantTrue = m.call(pos);
  const wantFalse = m.call(neg);
  close(t, wantTrue, pos.cos().add(ones([6, 4]).cos().sum()), 'eager: true branch');
  close(t, wantFalse, neg.sin(), 'eager: false branch');
  for (const [route, ep] of routes(make, [pos])) {
    close(t, ep.run(pos) as Tensor, wantTrue, `${route}: true branch`);
    close(t, ep.run(neg) as Tensor, wantFalse, `${route}: false branch (not the example's)`);
    close(t, ep.module().call(neg) as Tensor, wantFalse, `${route}: module(), false branch`);
    t.deepEqual(
      ep.graphModule.graph.nodes.map((n) => [n.op, n.name]),
      [
        ['placeholder', 'b_a_buffer'],
        ['placeholder', 'x'],
        ['call_function', 'sum'],
        ['call_function', 'gt'],
        ['get_attr', 'true_graph_0'],
        ['get_attr', 'false_graph_0'],
        ['call_function', 'cond'],
        ['call_function', 'getitem'],
        ['output', 'output'],
      ],
      route,
    );
    const node = ep.graphModule.graph.nodes.find((n) => n.name === 'cond')!;
    t.deepEqual(
      (node.args[3] as { name: string }[]).map((a) => a.name),
      ['x', 'b_a_buffer'],
      `${route}: operands, then the lifted buffer`,
    );
    t.deepEqual(placeholderNames(subgraph(ep, 'true_graph_0')), ['arg0_1', 'arg1_1'], route);
    t.deepEqual(placeholderNames(subgraph(ep, 'false_graph_0')), ['arg0_1', 'arg1_1'], `${route}: the same operands`);
    t.deepEqual(
      subgraph(ep, 'false_graph_0')
        .graph.nodes.filter((n) => n.op === 'call_function')
        .map((n) => n.name),
      ['sin'],
      route,
    );
    t.false(
      [ep.graphModule, subgraph(ep, 'true_graph_0'), subgraph(ep, 'false_graph_0')].some((gm) =>
        gm.graph.nodes.some((n) => n.op === 'get_attr' && !(gm.resolveTarget(n.target as string) instanceof GraphModule)),
      ),
      `${route}: no tensor is read through get_attr (all lifted)`,
    );
  }
});

class CondBuffers extends nn.Module {
  param = new nn.Parameter(ones([2, 3]), false);
  constructor() {
    super();
    this.registerBuffer('buffer', ones([2, 3]).add(1));
  }
  declare buffer: Tensor;
  trueFn(x: Tensor): Tensor {
    return x.add(this.param);
  }
  falseFn(x: Tensor): Tensor {
    return x.add(this.buffer);
  }
  override forward(x: Tensor): Tensor {
    return cond(
      x.sum().gt(0),
      (x: Tensor) => this.trueFn(x),
      (x: Tensor) => this.falseFn(x),
      [x],
    );
  }
}

test('test_cond_buffers: each branch reads its own state; both subgraphs take the parameter and the buffer', (t) => {
  const pos = randn([2, 3]).abs().add(0.1);
  const neg = pos.neg();
  const m = new CondBuffers();
  close(t, m.call(pos), pos.add(1), 'eager: param');
  close(t, m.call(neg), neg.add(2), 'eager: buffer');
  for (const [route, ep] of routes(() => new CondBuffers(), [pos])) {
    close(t, ep.run(pos) as Tensor, pos.add(1), `${route}: true branch`);
    close(t, ep.module().call(neg) as Tensor, neg.add(2), `${route}: false branch`);
    t.deepEqual(
      ep.graphSignature.inputSpecs.map((s) => [s.kind, s.name]),
      [
        ['PARAMETER', 'p_param'],
        ['BUFFER', 'b_buffer'],
        ['USER_INPUT', 'x'],
      ],
      route,
    );
    const operands = ep.graphModule.graph.nodes.find((n) => n.name === 'cond')!.args[3] as { name: string }[];
    t.deepEqual(
      operands.map((a) => a.name),
      ['x', 'p_param', 'b_buffer'],
      route,
    );
    for (const name of ['true_graph_0', 'false_graph_0'])
      t.is(placeholderNames(subgraph(ep, name)).length, 3, `${route}: ${name} takes x and the lifted state`);
  }
});

test('test_cond_buffers: a buffer update made outside the program reaches the branch (the state is an operand)', (t) => {
  const m = new CondBuffers();
  const x = randn([2, 3]).abs();
  const ep = exportProgram(m, [x]);
  const epm = ep.module();
  (epm as unknown as { buffer: Tensor }).buffer.fill_(10);
  close(t, epm.call(x.neg()) as Tensor, x.neg().add(10), 'the false branch reads the new buffer');
});

test('cond: branches returning arrays and objects are bound through getitem nodes', (t) => {
  class Pair extends nn.Module {
    override forward(x: Tensor, y: Tensor): { sum: Tensor; parts: Tensor[] } {
      return cond(
        x.max().gt(y.max()),
        (a: Tensor, b: Tensor) => ({ sum: a.add(b), parts: [a.mul(2), b.neg()] }),
        (a: Tensor, b: Tensor) => ({ sum: a.sub(b), parts: [b.mul(2), a.neg()] }),
        [x, y],
      );
    }
  }
  const x = randn([3]);
  const y = randn([3]);
  const m = new Pair();
  for (const [route, ep] of routes(m, [x, y])) {
    for (const [a, b] of [
      [x, y],
      [y, x],
      [x.add(10), y],
      [x, y.add(10)],
    ] as const) {
      const want = m.call(a, b);
      const got = ep.run(a, b) as typeof want;
      close(t, got.sum, want.sum, `${route}: sum`);
      close(t, got.parts[0]!, want.parts[0]!, `${route}: parts[0]`);
      close(t, got.parts[1]!, want.parts[1]!, `${route}: parts[1]`);
    }
    t.deepEqual(opNames(ep).slice(-4), ['cond', 'getitem', 'getitem', 'getitem'], `${route}: one getitem per flat output`);
  }
});

test('cond: a cond inside a branch nests its subgraphs, saved and loaded with them', (t) => {
  class Nested extends nn.Module {
    scale = tensor([3]);
    override forward(x: Tensor): Tensor {
      const inner = (v: Tensor) =>
        cond(
          v.min().gt(0),
          (w: Tensor) => w.mul(this.scale),
          (w: Tensor) => w.neg(),
          [v],
        );
      return cond(x.sum().gt(0), inner, (v: Tensor) => v.exp(), [x]);
    }
  }
  const m = new Nested();
  const cases = [tensor([1, 2]), tensor([-1, 5]), tensor([-3, -4])];
  for (const [route, ep] of routes(m, [cases[0]!])) {
    for (const c of cases) close(t, ep.run(c) as Tensor, m.call(c), `${route}: [${String(c.toArray())}]`);
    const outer = subgraph(ep, 'true_graph_0');
    t.true(outer.resolveTarget('true_graph_0') instanceof GraphModule, `${route}: the inner cond's subgraphs live in the branch`);
    t.deepEqual(
      ep.graphSignature.inputSpecs.map((s) => s.kind),
      ['CONSTANT_TENSOR', 'USER_INPUT'],
      `${route}: the tensor the inner branch closes over is lifted through both levels`,
    );
  }
});

test('cond: eagerly, a boolean, a number or a one-element tensor picks the branch', (t) => {
  const x = tensor([1, 2]);
  const neg = (v: Tensor) => v.neg();
  const twice = (v: Tensor) => v.mul(2);
  t.deepEqual((cond(true, twice, neg, [x]) as Tensor).toArray(), [2, 4]);
  t.deepEqual((cond(0, twice, neg, [x]) as Tensor).toArray(), [-1, -2]);
  t.deepEqual((cond(tensor([true], { dtype: 'bool' }), twice, neg, [x]) as Tensor).toArray(), [2, 4]);
  t.deepEqual((cond(tensor(0), twice, neg, [x]) as Tensor).toArray(), [-1, -2]);
  t.deepEqual((cond(x.sum().gt(2), twice, neg, [x]) as Tensor).toArray(), [2, 4]);
  t.deepEqual((cond(x.sum().gt(3), twice, neg, [x]) as Tensor).toArray(), [-1, -2]);
  t.deepEqual(
    cond(true, () => 'plain code', neg),
    'plain code',
    'a decided predicate just calls the branch',
  );
});

test('cond: arguments are checked with PyTorch texts', (t) => {
  const x = tensor([1, 2]);
  const f = (v: Tensor) => v.neg();
  t.throws(() => cond('yes' as never, f, f, [x]), {
    instanceOf: ValueError,
    message: 'cond: Expected pred to be bool or tensor, but got "yes".',
  });
  t.throws(() => cond(x, f, f, [x]), {
    instanceOf: ValueError,
    message: 'cond: Expected pred to be bool or single-element tensor, but got a float32 [2] tensor.',
  });
  t.throws(() => cond(tensor(1), f, 3 as never, [x]), {
    instanceOf: ValueError,
    message: 'cond: Expect both branches to be callable, got function f and number 3.',
  });
  t.throws(() => cond(tensor(1), f, f, [x, 2] as never), {
    instanceOf: ValueError,
    message: 'cond: Expect operands to be an array of tensors, but got [Tensor(float32 [2]), number 2].',
  });
  t.throws(() => cond(true, f, f, x as never), { instanceOf: ValueError, message: /Expect operands to be an array of tensors/ });
});

class Mismatch extends nn.Module {
  constructor(private readonly falseFn: (x: Tensor) => unknown) {
    super();
  }
  override forward(x: Tensor): unknown {
    return cond(x.sum().gt(0), (v: Tensor) => v.cos(), this.falseFn as (v: Tensor) => Tensor, [x]);
  }
}

test('cond: branches with different outputs are refused at trace time (CondOpArgsMismatchError)', (t) => {
  const x = randn([4, 3]);
  t.throws(() => exportProgram(new Mismatch((v) => v.sum(0)), [x]), {
    instanceOf: CondOpArgsMismatchError,
    message:
      'Expected each tensor to have same metadata but got:\n  true_fn returns TensorMetadata(shape=[4, 3], dtype=float32)\n  false_fn returns TensorMetadata(shape=[3], dtype=float32)',
  });
  t.throws(() => exportProgram(new Mismatch((v) => v.gt(0)), [x]), {
    instanceOf: CondOpArgsMismatchError,
    message:
      /true_fn returns TensorMetadata\(shape=\[4, 3\], dtype=float32\)\n {2}false_fn returns TensorMetadata\(shape=\[4, 3\], dtype=bool\)/,
  });
  t.throws(() => exportProgram(new Mismatch((v) => [v.sin(), v.cos()]), [x]), {
    instanceOf: CondOpArgsMismatchError,
    message: 'Expected to return same number of outputs but got:\n  true branch returns 1 item(s)\n  false branch returns 2 item(s)',
  });
  t.throws(() => exportProgram(new Mismatch((v) => [v.sin()]), [x]), {
    instanceOf: CondOpArgsMismatchError,
    message: 'Expected both branches to return the same structure but got:\n  true_fn returns Tensor\n  false_fn returns [Tensor]',
  });
  t.throws(() => exportProgram(new Mismatch(() => 3), [x]), {
    instanceOf: TraceError,
    message: /^Expect outputs of false_fn to only contains tensors/,
  });
  // eagerly only one branch runs: the mismatch is the traced program's concern
  close(t, new Mismatch((v) => v.sum(0)).call(x.abs()) as Tensor, x.abs().cos(), 'eager');
});

test('cond: a branch that writes its operand is refused eagerly and under export', (t) => {
  class Writes extends nn.Module {
    override forward(x: Tensor): Tensor {
      return cond(
        x.sum().gt(0),
        (v: Tensor) => v.add_(1),
        (v: Tensor) => v.sub(1),
        [x],
      );
    }
  }
  const x = randn([3]).abs();
  t.throws(() => exportProgram(new Writes(), [x]), {
    instanceOf: UnsupportedAliasMutationError,
    message: /^One of cond's branches might be modifying the input! true_fn writes its input 0 \(float32 \[3\]\) in place/,
  });
  const before = x.toArray();
  t.deepEqual(x.toArray(), before, 'export wrote a copy, never the caller’s tensor');
  t.throws(() => new Writes().call(x.clone()), {
    instanceOf: UnsupportedAliasMutationError,
    message: /^One of cond's branches might be modifying the input! true_fn wrote its input 0/,
  });
  // a write through a view of the operand is a write to it
  const viaView = (v: Tensor) => {
    v.select(0, 0).mul_(2);
    return v.neg();
  };
  t.throws(() => exportProgram(new Mismatch(viaView), [x.neg()]), {
    instanceOf: UnsupportedAliasMutationError,
    message: /false_fn writes its input 0/,
  });
  // so is a change of its layout (t_)
  const transposes = (v: Tensor) => {
    v.t_();
    return v.neg();
  };
  t.throws(() => exportProgram(new Mismatch(transposes), [randn([3, 3]).abs().neg()]), {
    instanceOf: UnsupportedAliasMutationError,
    message: /false_fn writes its input 0/,
  });
});

test('cond: a branch that writes a buffer it closes over, or returns its operand, is refused under export', (t) => {
  class WritesBuffer extends nn.Module {
    constructor() {
      super();
      this.registerBuffer('count', tensor([0]));
    }
    declare count: Tensor;
    override forward(x: Tensor): Tensor {
      return cond(
        x.sum().gt(0),
        (v: Tensor) => {
          this.count.add_(1);
          return v.cos();
        },
        (v: Tensor) => v.sin(),
        [x],
      );
    }
  }
  const m = new WritesBuffer();
  t.throws(() => exportProgram(m, [randn([3])]), {
    instanceOf: UnsupportedAliasMutationError,
    message: /^One of cond's branches might be modifying the input! true_fn writes a float32 \[1\] tensor it closes over/,
  });
  t.deepEqual(m.count.toArray(), [0], 'the module state is restored');
  const identity = (v: Tensor) => v;
  t.throws(() => exportProgram(new Mismatch(identity), [randn([3])]), {
    instanceOf: UnsupportedAliasMutationError,
    message: /^One of cond's branches might be aliasing the input! false_fn's output 0/,
  });
  t.throws(() => cond(tensor(0), (v: Tensor) => v.neg(), identity, [randn([3])]), {
    instanceOf: UnsupportedAliasMutationError,
    message: /might be aliasing the input!/,
  });
});

test('cond: an intermediate written in place inside a branch is functionalised', (t) => {
  const m = new Mismatch((v) => {
    const y = v.mul(2);
    y.add_(1);
    return y;
  });
  const x = randn([4, 3]).abs().neg();
  for (const [route, ep] of routes(m, [x])) {
    close(t, ep.run(x) as Tensor, x.mul(2).add(1), route);
    t.false(
      subgraph(ep, 'false_graph_0').graph.nodes.some(
        (n) => n.op === 'call_function' && String((n.target as { opName?: string }).opName).endsWith('_'),
      ),
      `${route}: no in-place node`,
    );
  }
});

test('cond: makeFx records it; a joint trace (aotFunction) refuses it rather than differentiate one branch', (t) => {
  const f = (x: Tensor, w: Tensor) =>
    cond(
      x.sum().gt(0),
      (a: Tensor) => a.mul(w),
      (a: Tensor) => a.add(w),
      [x],
    );
  const x = randn([3]);
  const w = randn([3]);
  const gm = makeFx(f)(x, w);
  t.deepEqual(
    gm.graph.nodes.filter((n) => n.op === 'call_function').map((n) => n.name),
    ['sum', 'gt', 'cond', 'getitem'],
  );
  for (const v of [x.abs(), x.abs().neg()]) close(t, gm.forward(v, w) as Tensor, f(v, w), 'makeFx graph');
  const compiled = aotFunction(f, {
    fwCompiler:
      (g) =>
      (...args) =>
        g.forward(...args),
  });
  t.throws(() => compiled(x, w.clone().requiresGrad_(true)), {
    instanceOf: TraceError,
    message: /^cond: a traced cond cannot be differentiated yet \(operand 1, float32 \[3\], requires grad\)/,
  });
  close(
    t,
    withGradMode(false, () => compiled(x.abs().neg(), w)),
    x.abs().neg().add(w),
    'without gradients it compiles',
  );
});

/** test_map's module: `map(body, xs, y, z)`. */
class MapModule extends nn.Module {
  override forward(xs: Tensor, y: Tensor, z: Tensor): Tensor {
    return map((x: Tensor, y: Tensor, z: Tensor) => x.add(y).add(z), xs, y, z);
  }
}

test('test_map: one map_impl node over body_graph_0; the node runs at any leading size', (t) => {
  const inps = [ones([6, 4]), tensor(5), tensor(4)] as const;
  const m = new MapModule();
  close(t, m.call(...inps), ones([6, 4]).mul(10), 'eager');
  for (const [route, ep] of routes(m, [...inps])) {
    const xs = randn([6, 4]);
    close(t, ep.run(xs, tensor(1), tensor(2)) as Tensor, xs.add(3), route);
    close(t, ep.module().call(xs, tensor(5), tensor(4)) as Tensor, m.call(xs, tensor(5), tensor(4)), `${route}: module()`);
    t.deepEqual(
      ep.graphModule.graph.nodes.map((n) => [n.op, n.name]),
      [
        ['placeholder', 'xs'],
        ['placeholder', 'y'],
        ['placeholder', 'z'],
        ['get_attr', 'body_graph_0'],
        ['call_function', 'map_impl'],
        ['call_function', 'getitem'],
        ['output', 'output'],
      ],
      route,
    );
    t.deepEqual(placeholderNames(subgraph(ep, 'body_graph_0')), ['arg0_1', 'arg1_1', 'arg2_1'], route);
    // the graph itself is generic over the leading size (the exported program's input checks hold it to 6)
    const three = randn([3, 4]);
    const [out] = ep.graphModule.forward(three, tensor(1), tensor(1)) as Tensor[];
    close(t, out!, three.add(2), `${route}: the graph at 3 slices`);
  }
});

test('test_map: xs as an array of tensors and an object output, eagerly and exported', (t) => {
  class Pairs extends nn.Module {
    override forward(a: Tensor, b: Tensor, c: Tensor): { s: Tensor; p: Tensor[] } {
      return map(([x, y]: Tensor[], c: Tensor) => ({ s: x!.add(y!.sum()), p: [x!.mul(c)] }), [a, b], c);
    }
  }
  const a = randn([5, 3]);
  const b = randn([5, 2]);
  const c = randn([3]);
  const m = new Pairs();
  const want = m.call(a, b, c);
  close(t, want.s, a.add(b.sum(1).unsqueeze(1)), 'eager: s');
  close(t, want.p[0]!, a.mul(c), 'eager: p');
  for (const [route, ep] of routes(m, [a, b, c])) {
    const got = ep.run(a, b, c) as typeof want;
    close(t, got.s, want.s, `${route}: s`);
    close(t, got.p[0]!, want.p[0]!, `${route}: p`);
  }
});

test('test_map_buffers: state the body closes over (outside the module) is lifted; its in-place add on an intermediate is functional', (t) => {
  class M1 extends nn.Module {
    param = new nn.Parameter(tensor(5), false);
    constructor() {
      super();
      this.registerBuffer('buffer', tensor(6).add(1));
    }
    declare buffer: Tensor;
  }
  const m1 = new M1();
  const mapFn = (x: Tensor, y: Tensor) => {
    const z = x.add(y).add(m1.param).add(m1.buffer);
    z.add_(4);
    return z;
  };
  class M extends nn.Module {
    override forward(xs: Tensor, y: Tensor): Tensor {
      return map(mapFn, xs, y);
    }
  }
  const m = new M();
  close(t, m.call(ones([3, 2]), tensor(3)), ones([3, 2]).mul(20), 'eager');
  for (const [route, ep] of routes(m, [ones([3, 2]), tensor(3)])) {
    const xs = randn([3, 2]);
    close(t, ep.module().call(xs, tensor(3)) as Tensor, m.call(xs, tensor(3)), route);
    t.deepEqual(
      ep.graphSignature.inputSpecs.map((s) => s.kind),
      ['CONSTANT_TENSOR', 'CONSTANT_TENSOR', 'USER_INPUT', 'USER_INPUT'],
      route,
    );
    const body = subgraph(ep, 'body_graph_0');
    t.is(placeholderNames(body).length, 4, `${route}: x, y, then the lifted param and buffer`);
    t.false(
      body.graph.nodes.some((n) => n.op === 'get_attr'),
      `${route}: nothing read through get_attr`,
    );
  }
});

test('map: xs are checked with PyTorch texts', (t) => {
  const f = (x: Tensor) => x.neg();
  t.throws(() => map(f, [ones([3, 2]), ones([4, 2])]), {
    instanceOf: ShapeError,
    message: 'map: Leading dimensions of mapped xs must be consistent. Got shapes [[3, 2], [4, 2]].',
  });
  t.throws(() => map(f, ones([0, 2])), { instanceOf: ShapeError, message: 'map: Leading dimensions of mapped xs cannot be 0.' });
  t.throws(() => map(f, [ones([2]), 3]), {
    instanceOf: ValueError,
    message: 'map: Mapped xs can only consist of tensors. Got xs [Tensor, 3].',
  });
  t.throws(() => map(f, ones([2]), 3 as never), { instanceOf: ValueError, message: /^map: extra args must be tensors/ });
  t.throws(() => map(() => 1, ones([2])), { instanceOf: TraceError, message: /^map: Expect outputs of map only contains tensors/ });
});

test('map: a body that writes or returns its input is refused, eagerly and under export', (t) => {
  class Body extends nn.Module {
    constructor(private readonly body: (x: Tensor, y: Tensor) => Tensor) {
      super();
    }
    override forward(xs: Tensor, y: Tensor): Tensor {
      return map(this.body, xs, y);
    }
  }
  const writes = (x: Tensor, y: Tensor) => x.mul_(y);
  const writesArg = (x: Tensor, y: Tensor) => {
    y.add_(1);
    return x.add(y);
  };
  const returnsArg = (_x: Tensor, y: Tensor) => y;
  for (const [body, message] of [
    [writes, /^map is mutating the input! body_fn writes its input 0/],
    [writesArg, /^map is mutating the input! body_fn writes its input 1/],
    [returnsArg, /^map is aliasing the input!/],
  ] as const) {
    t.throws(() => exportProgram(new Body(body), [randn([3, 2]), randn([2])]), { instanceOf: UnsupportedAliasMutationError, message });
    t.throws(() => new Body(body).call(randn([3, 2]), randn([2])), {
      instanceOf: UnsupportedAliasMutationError,
      message: /^map is (mutating|aliasing) the input!/,
    });
  }
});

/** A saved program's JSON (the seal dropped) and a writer that seals an edited copy of it. */
function savedJSON(ep: ExportedProgram): { json: Record<string, unknown>; reload: (json: unknown) => ExportedProgram } {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-cf-'));
  const path = join(dir, 'p.kiln');
  save(ep, path);
  const json = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  delete json.sha256;
  return {
    json,
    reload: (edited) => {
      try {
        writeSealed(join(dir, 'edited.kiln'), edited as object);
        return load(join(dir, 'edited.kiln'));
      } finally {
        rmSync(join(dir, 'edited.kiln'), { force: true });
      }
    },
  };
}

test('save/load: subgraphs are checked like the main graph; their names and the nodes that call them cannot reach code', (t) => {
  const ep = exportProgram(new CondBuffers(), [randn([2, 3])]);
  const { json, reload } = savedJSON(ep);
  t.notThrows(() => reload(json), 'the untouched file loads');
  type Sub = { name: string; graph: { nodes: { name: string; op: string; target: string; args: unknown[] }[] }; subgraphs: unknown[] };
  const edit = (f: (j: { graph: Sub['graph']; subgraphs: Sub[] }) => void) => {
    const copy = structuredClone(json) as { graph: Sub['graph']; subgraphs: Sub[] };
    f(copy);
    return copy;
  };
  const refused = (j: unknown, message: RegExp, what: string) =>
    t.throws(() => reload(j), { instanceOf: SerializationError, message }, what);
  refused(
    edit((j) => (j.subgraphs[0]!.name = 'forward')),
    /subgraphs\[0\]\.name 'forward' is a member of every module/,
    'a subgraph named like a member',
  );
  refused(
    edit((j) => (j.subgraphs[0]!.name = 'a.b')),
    /subgraphs\[0\]\.name must be an identifier/,
    'a dotted name',
  );
  refused(
    edit((j) => (j.graph.nodes.find((n) => n.op === 'get_attr' && n.target === 'true_graph_0')!.target = 'forward')),
    /reads 'forward', which is not one of the file's subgraphs/,
    'a get_attr of a method, which cond would call',
  );
  refused(
    edit((j) => (j.subgraphs = j.subgraphs.slice(1))),
    /reads 'true_graph_0', which is not one of the file's subgraphs/,
    'a missing subgraph',
  );
  refused(
    edit((j) => {
      const node = j.graph.nodes.find((n) => n.name === 'cond')!;
      (node.args[3] as unknown[]).pop();
    }),
    /subgraph 'true_graph_0' takes 3 inputs but is given 2/,
    'operands that do not fit the subgraph',
  );
  refused(
    edit((j) => {
      const node = j.graph.nodes.find((n) => n.name === 'cond')!;
      node.args[1] = { node: 'x' };
    }),
    /argument 1 must be a get_attr of one of the file's subgraphs/,
    'a branch that is not a subgraph',
  );
  refused(
    edit((j) => (j.subgraphs[0]!.graph.nodes[0]!.op = 'bogus')),
    /unknown opcode/,
    'a malformed subgraph',
  );
});

test('cond: a graph with subgraphs is not generalised over sizes (its subgraphs hold the example sizes)', (t) => {
  // the branch's narrow length follows the input size: a subgraph traced at 3 rows bakes 2
  const f = (x: Tensor) =>
    cond(
      x.sum().gt(0),
      (a: Tensor) => a.narrow(0, 0, a.shape[0]! - 1).mul(2),
      (a: Tensor) => a.narrow(0, 1, a.shape[0]! - 1).neg(),
      [x],
    );
  const compiled = aotFunction(f, {
    fwCompiler:
      (g) =>
      (...args) =>
        g.forward(...args),
    dynamic: true,
  });
  withGradMode(false, () => {
    for (const rows of [3, 4, 5]) {
      const x = randn([rows, 2]).abs();
      close(t, compiled(x), f(x), `${rows} rows`);
    }
  });
});

test("cond: runDecompositions decomposes inside the subgraphs too; the branch layer's parameters are lifted", (t) => {
  class Branchy extends nn.Module {
    fc = new nn.Linear(4, 4);
    override forward(x: Tensor): Tensor {
      return cond(
        x.mean().gt(0),
        (v: Tensor) => this.fc.call(v),
        (v: Tensor) => v.relu(),
        [x],
      );
    }
  }
  const m = new Branchy();
  const input = randn([2, 4]).abs();
  const ep = exportProgram(m, [input]);
  const ops = (gm: GraphModule) =>
    gm.graph.nodes.filter((n) => n.op === 'call_function').map((n) => (n.target as { opName?: string }).opName);
  t.deepEqual(ops(subgraph(ep, 'false_graph_0')), ['relu']);
  const operands = ep.graphModule.graph.nodes.find((n) => n.name === 'cond')!.args[3] as { name: string }[];
  t.deepEqual(
    operands.map((a) => a.name),
    ['x', 'p_fc_weight', 'p_fc_bias'],
  );
  // relu(v) = (|v| + v) / 2
  const core = ep.runDecompositions({ relu: (v: Tensor) => v.abs().add(v).mul(0.5) });
  t.deepEqual(ops(subgraph(core, 'false_graph_0')), ['abs', 'add', 'mul'], 'the decomposition applies in the branch');
  for (const v of [input, input.neg()]) close(t, core.run(v) as Tensor, m.call(v), 'decomposed program');
});
