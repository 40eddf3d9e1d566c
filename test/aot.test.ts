import test from 'ava';
import {
  aotFunction,
  aotModule,
  aotModuleSimplified,
  AotError,
  compilationContext,
  makeFx,
  minCutRematerializationPartition,
  type Compiler,
} from '../src/aot/index.js';
import type { GraphModule } from '../src/fx.js';
import { allclose, manualSeed, nn, noGrad, ops, randn, tensor, type Tensor } from '../src/index.js';

/**
 * kiln/aot's runtime, ported from PyTorch's test/functorch/test_aotdispatch.py (each test is named after the
 * one it ports): joint graphs, the compiler-call log, functionalisation of input mutations and of outputs that
 * are views, the run-time checks of aotModuleSimplified, and the errors of bad compilers.
 */

/** PyTorch's `nop`: run the graph as it is. */
const nop: Compiler =
  (gm) =>
  (...args) =>
    gm.forward(...args);

/** A compiler that keeps the graph it was given and logs `compilationContext()`. */
function recording(log: string[], graphs?: Map<string, GraphModule>): Compiler {
  return (gm) => {
    const [id] = compilationContext();
    log.push(id!);
    graphs?.set(id!.replace(/^\d+_/, ''), gm);
    return (...args) => gm.forward(...args);
  };
}

const leaf = (t: Tensor) => t.detach().clone().requiresGrad_(true);
const insOuts = (gm: GraphModule) => {
  const out = gm.graph.outputNode!.args[0];
  return [gm.graph.nodes.filter((n) => n.op === 'placeholder').length, Array.isArray(out) ? out.length : 1];
};

/** Outputs and input gradients of `fn` compiled equal eager's, on fresh copies of `inputs`. */
function verify(
  t: import('ava').ExecutionContext,
  fn: (...a: Tensor[]) => Tensor,
  inputs: Tensor[],
  compiled = aotFunction(fn, { fwCompiler: nop }),
): void {
  const ref = inputs.map((x) => (x.requiresGrad ? leaf(x) : x.clone()));
  const got = inputs.map((x) => (x.requiresGrad ? leaf(x) : x.clone()));
  const want = fn(...ref);
  const out = compiled(...got);
  t.true(allclose(out, want, { rtol: 1e-5, atol: 1e-6 }), 'outputs');
  if (want.requiresGrad) {
    const g = randn([...want.shape]);
    want.backward(g);
    out.backward(g);
    ref.forEach((r, i) => {
      if (!r.requiresGrad) return;
      t.truthy(got[i]!.grad, `input ${i} gets a gradient`);
      t.true(allclose(got[i]!.grad!, r.grad!, { rtol: 1e-4, atol: 1e-5 }), `gradient of input ${i}`);
    });
  }
  ref.forEach((r, i) => t.true(allclose(got[i]!, r), `input ${i} after the call`));
}

test('test_min_cut_partitioner: x.cos().cos().cos() gives forward [1, 2] and backward [2, 1]', (t) => {
  const graphs = new Map<string, GraphModule>();
  const f = aotFunction((x: Tensor) => x.cos().cos().cos(), {
    fwCompiler: recording([], graphs),
    partitionFn: minCutRematerializationPartition,
  });
  f(randn([3]).requiresGrad_(true))
    .sum()
    .backward();
  t.deepEqual(insOuts(graphs.get('forward')!), [1, 2]);
  t.deepEqual(insOuts(graphs.get('backward')!), [2, 1]);

  const g = aotFunction((a: Tensor, b: Tensor, c: Tensor, d: Tensor) => a.add(b).add(c).add(d).cos().cos(), {
    fwCompiler: recording([], graphs),
    partitionFn: minCutRematerializationPartition,
  });
  g(...([0, 1, 2, 3].map(() => randn([3]).requiresGrad_(true)) as [Tensor, Tensor, Tensor, Tensor]))
    .sum()
    .backward();
  t.deepEqual(insOuts(graphs.get('forward')!), [4, 2]);
  t.deepEqual(insOuts(graphs.get('backward')!), [2, 4]);
});

test('test_compilation_context: forward, inference under noGrad, then the lazy backward', (t) => {
  const log: string[] = [];
  const before = compilationContext();
  const f = aotFunction((x: Tensor) => x.sin().sin(), { fwCompiler: recording(log) });
  const x = randn([3]).requiresGrad_(true);
  const out = f(x);
  noGrad(() => f(x));
  t.is(log.length, 2, 'the backward is not compiled before backward()');
  out.sum().backward();
  const n = Number(log[0]!.split('_')[0]);
  t.deepEqual(log, [`${n}_forward`, `${n + 1}_inference`, `${n}_backward`]);
  t.deepEqual(before, []);
  t.deepEqual(compilationContext(), [], 'empty outside a compiler');
});

test('test_input_mutation_simple: the forward has no in-place node and the caller sees the write', (t) => {
  const graphs = new Map<string, GraphModule>();
  const fn = (a: Tensor) => {
    a.mul_(2);
    return a.mul(3);
  };
  const f = aotFunction(fn, { fwCompiler: recording([], graphs) });
  for (const requiresGrad of [false, true]) {
    const base = randn([3, 3]);
    const leafA = leaf(base);
    const leafRef = leaf(base);
    const a = requiresGrad ? leafA.clone() : base.clone(); // a non-leaf may be written in place, as eagerly
    const ref = requiresGrad ? leafRef.clone() : base.clone();
    const out = f(a);
    const want = fn(ref);
    t.true(allclose(out, want));
    t.true(allclose(a, ref), "the caller's input holds the new value");
    const fw = graphs.get(requiresGrad ? 'forward' : 'inference')!;
    t.false(
      fw.graph.nodes.some((n) => n.op === 'call_function' && String((n.target as { opName?: string }).opName).endsWith('_')),
      fw.code,
    );
    t.is(insOuts(fw)[1], 2, 'the new value of a, then the output (the backward saves nothing: 6 × the tangent)');
    if (requiresGrad) {
      // a's tape was rebased onto the compiled function by the copy back: both a and the output reach the leaf
      out.add(a).sum().backward();
      want.add(ref).sum().backward();
      t.true(allclose(leafA.grad!, leafRef.grad!));
      t.deepEqual(leafA.grad!.toArray(), [
        [8, 8, 8],
        [8, 8, 8],
        [8, 8, 8],
      ]);
    }
  }
});

test('test_output_aliases_intermediate_multiple: two views of one intermediate alias each other, as eagerly', (t) => {
  const fn = (a: Tensor) => {
    const out = a.mul(2);
    return [out.view([-1]), out.view([-1])] as const;
  };
  const f = aotFunction(fn, { fwCompiler: nop });
  const a = randn([2, 2]).requiresGrad_(true);
  const [o1, o2] = f(a);
  t.true(allclose(o1, fn(a)[0]));
  t.is(o1._storage, o2._storage, 'both outputs are views of the same intermediate');
  o1.add(o2).sum().backward();
  t.deepEqual(a.grad!.toArray(), [
    [4, 4],
    [4, 4],
  ]);
});

test('test_output_op_depending_on_input_view: an output that is a view of an input aliases the input', (t) => {
  const f = aotFunction((a: Tensor) => a.view([-1]), { fwCompiler: nop });
  const a = randn([2, 3]);
  const out = f(a);
  t.is(out._storage, a._storage);
  out.zero_();
  t.deepEqual(a.toArray(), [
    [0, 0, 0],
    [0, 0, 0],
  ]);
});

test('test_invalid_dupe / test_invalid_requires_grad: aotModuleSimplified checks what it was compiled under', (t) => {
  class F extends nn.Module {
    override forward(x: Tensor, y: Tensor) {
      return [x.add(y)];
    }
  }
  const x = randn([3, 3]).requiresGrad_(true);
  const y = randn([3, 3]).requiresGrad_(true);
  const z = randn([3, 3]);
  const fxx = aotModuleSimplified(new F(), [x, x], { fwCompiler: nop });
  t.true(allclose((fxx(x, x) as Tensor[])[0]!, x.add(x)));
  const dupe = t.throws(() => fxx(x, y), { instanceOf: AotError })!;
  t.regex(
    dupe.message,
    /^At compilation time, graph \d+ was compiled under the assumption that input 1 would be a duplicate of input 0, but at runtime this was not the case\./,
  );
  const fxz = aotModuleSimplified(new F(), [x, z], { fwCompiler: nop });
  t.true(allclose((fxz(x, z) as Tensor[])[0]!, x.add(z)));
  const grad = t.throws(() => fxz(x, y), { instanceOf: AotError })!;
  t.regex(
    grad.message,
    /^At compilation time, graph \d+ was compiled under the assumption that input 1 would not require grad, but at runtime this was not the case\./,
  );
  const fxy = aotModuleSimplified(new F(), [x, y], { fwCompiler: nop });
  t.true(allclose((fxy(x, z) as Tensor[])[0]!, x.add(z)), 'compiled for inputs that require grad, called with one that does not: fine');
});

test('test_preserve_random: dropout draws the same mask as eager', (t) => {
  const fn = (x: Tensor) => ops.dropout(x, 0.5).add(x);
  const x = randn([16]);
  manualSeed(0);
  const want = fn(x);
  manualSeed(0);
  const got = aotFunction(fn, { fwCompiler: nop })(x);
  t.true(allclose(got, want));
  manualSeed(0);
  const again = aotFunction(fn, { fwCompiler: nop })(x.clone().requiresGrad_(true));
  t.true(allclose(again, want), 'the joint trace leaves the generator as it found it');
});

test('test_recompute_partitioning and friends: outputs and gradients equal eager', (t) => {
  verify(t, (a, b) => a.sin().sin().add(b), [randn([10, 10]).requiresGrad_(true), randn([10, 10]).requiresGrad_(true)]);
  verify(t, (a, b) => a.mm(b).relu().sum(1), [randn([4, 5]).requiresGrad_(true), randn([5, 3]).requiresGrad_(true)]);
  verify(
    t,
    (a, b) => a.mul(b).sum(),
    [randn([4]).requiresGrad_(true), randn([4])],
    aotFunction((a: Tensor, b: Tensor) => a.mul(b).sum(), { fwCompiler: nop, partitionFn: minCutRematerializationPartition }),
  );
});

test('aotModule shares the module parameters; training BatchNorm updates running statistics as eager', (t) => {
  manualSeed(1);
  const make = () =>
    new nn.Sequential(
      new nn.Conv2d(3, 4, 3, { padding: 1 }),
      new nn.BatchNorm2d(4),
      new nn.ReLU(),
      new nn.Flatten(),
      new nn.Linear(4 * 5 * 5, 2),
    );
  const eager = make();
  const twin = make();
  twin.loadStateDict(eager.stateDict());
  const m = aotModule(twin, { fwCompiler: nop, partitionFn: minCutRematerializationPartition });
  t.deepEqual(
    m.parameters().map((p) => p.shape),
    twin.parameters().map((p) => p.shape),
  );
  t.is(m.parameters()[0], twin.parameters()[0]);
  for (let step = 0; step < 3; step++) {
    const x = randn([2, 3, 5, 5]);
    const want = eager.call(x) as Tensor;
    const got = m.call(x) as Tensor;
    t.true(allclose(got, want, { rtol: 1e-4, atol: 1e-5 }), `output, step ${step}`);
    want.sum().backward();
    got.sum().backward();
  }
  const sd = twin.stateDict();
  for (const [k, v] of Object.entries(eager.stateDict())) t.true(allclose(sd[k]!, v, { rtol: 1e-4, atol: 1e-5 }), k);
  eager.parameters().forEach((p, i) => t.true(allclose(twin.parameters()[i]!.grad!, p.grad!, { rtol: 1e-3, atol: 1e-4 }), `grad ${i}`));
});

test('makeFx: op-table nodes only, functional, each with tensorMeta; running it equals running the function', (t) => {
  const lin = new nn.Linear(4, 3);
  const fn = (x: Tensor) => {
    const h = lin.call(x).relu();
    h.narrow(0, 0, 1).mul_(2);
    return h.sum(1);
  };
  const x = randn([2, 4]);
  const gm = makeFx(fn)(x);
  for (const n of gm.graph.nodes) {
    t.not(n.op, 'call_module');
    t.not(n.op, 'call_method');
    if (n.op === 'call_function') t.false(String((n.target as { opName?: string }).opName ?? '').endsWith('_'), n.format());
    if (n.op !== 'output') t.truthy(n.meta.tensorMeta, n.format());
  }
  t.true(allclose(gm.forward(x) as Tensor, fn(x)));
});

test("makeFx tracingMode 'symbolic': sizes become sym_size arithmetic and the graph runs at other sizes", (t) => {
  const fn = (x: Tensor) => x.reshape([x.shape[0]!, -1]).mul(2).sum(1);
  const gm = makeFx(fn, { tracingMode: 'symbolic' })(randn([5, 2, 3]));
  t.regex(gm.code, /sym_size\(arg0_1, 0\)/);
  const x = randn([7, 2, 3]);
  t.true(allclose(gm.forward(x) as Tensor, fn(x)));
});

test('bad input: compilers that throw or return a non-function, a backward run twice, bad options', (t) => {
  const f = (x: Tensor) => x.mul(2).sum();
  const x = randn([3]).requiresGrad_(true);
  let fail = true;
  const flaky = aotFunction(f, {
    fwCompiler: (gm) => {
      if (fail) throw new Error('out of registers');
      return (...a) => gm.forward(...a);
    },
  });
  const e = t.throws(() => flaky(x), { instanceOf: AotError })!;
  t.regex(e.message, /aotFunction: the compiler failed on graph \d+_forward: out of registers/);
  fail = false;
  t.true(allclose(flaky(x), f(x)), 'nothing was left half-compiled: the next call works');

  const bad = aotFunction(f, { fwCompiler: () => 42 as never });
  t.throws(() => bad(x), {
    instanceOf: AotError,
    message: /compiler for graph \d+_forward returned 42; a compiler must return a function/,
  });

  const twice = aotFunction((a: Tensor) => a.mul(a).sum(), { fwCompiler: nop })(x);
  twice.backward();
  t.throws(() => twice.backward(), { instanceOf: AotError, message: /backward through graph \d+_backward a second time/ });

  t.throws(() => aotFunction(f, {} as never), { message: /fwCompiler must be a function/ });
  t.throws(() => aotFunction(f, { fwCompiler: nop, decompositions: { notAnOp: () => 0 } }), {
    message: /decompositions has a key that is not an op: notAnOp/,
  });
  t.throws(() => aotFunction((a: Tensor) => a.mul(tensor(a.sum().item())), { fwCompiler: nop })(x), {
    instanceOf: AotError,
    message: /reads the values of a tensor \(item\(\)\)/,
  });
});

test('common subexpressions of the joint graph are computed once; random ops are never merged', (t) => {
  const graphs = new Map<string, GraphModule>();
  const fn = (x: Tensor, w: Tensor) => x.mm(w).add(x.mm(w)).add(ops.dropout(x, 0.5).sum()).add(ops.dropout(x, 0.5).sum());
  const f = aotFunction(fn, { fwCompiler: recording([], graphs) });
  const [x, w] = [randn([4, 3]), randn([3, 5]).requiresGrad_(true)];
  manualSeed(3);
  const out = f(x, w);
  manualSeed(3);
  t.true(allclose(out, fn(x, w), { rtol: 1e-5 }));
  const count = (name: string) =>
    graphs.get('forward')!.graph.nodes.filter((n) => (n.target as { opName?: string }).opName === name).length;
  t.is(count('mm'), 1, graphs.get('forward')!.code);
  t.is(count('nativeDropout'), 2, 'two dropouts draw two masks');
});

test('a leaf keeps the gradient the compiled backward made (no copy), unless another leaf gets the same tensor', (t) => {
  const f = aotFunction((a: Tensor, b: Tensor, w: Tensor) => a.mul(2).add(b.mul(2)).add(w.mul(w)).sum(), { fwCompiler: nop });
  const [a, b, w] = [randn([3]), randn([3]), randn([3])].map((x) => x.requiresGrad_(true)) as [Tensor, Tensor, Tensor];
  f(a, b, w).backward();
  t.deepEqual(a.grad!.toArray(), [2, 2, 2]);
  t.not(a.grad!._storage, b.grad!._storage, 'one tensor for two leaves: each keeps its own copy');
  a.grad!.mul_(0);
  t.deepEqual(b.grad!.toArray(), [2, 2, 2]);
  t.true(allclose(w.grad!, w.mul(2)));
  f(a, b, w).backward();
  t.true(allclose(w.grad!, w.mul(4)), 'the second backward accumulates into the kept tensor');
});

test('review regressions: closed-over tensors, cache keys, makeFx input writes, aotModuleSimplified checks, dynamic aotModule', (t) => {
  // a closed-over tensor that requires grad, under grad mode: refused (its gradient would be lost), not frozen
  const w = randn([3, 3]).requiresGrad_(true);
  t.throws(() => aotFunction((x: Tensor) => x.matmul(w), { fwCompiler: nop })(randn([2, 3])), {
    instanceOf: AotError,
    message: /requires grad but is not an input/,
  });
  // a closed-over constant is the tensor itself: later writes to it are seen
  const c = tensor([1, 2, 3]);
  const addC = aotFunction((x: Tensor) => x.add(c), { fwCompiler: nop });
  t.deepEqual(addC(tensor([0, 0, 0])).toArray(), [1, 2, 3]);
  c.mul_(10);
  t.deepEqual(addC(tensor([0, 0, 0])).toArray(), [10, 20, 30]);
  // writing a closed-over tensor in place is a side effect the graph would drop: refused
  t.throws(() => aotFunction((x: Tensor) => (c.add_(1), x.mul(2)), { fwCompiler: nop })(randn([3])), {
    message: /writes in place a \[3\] tensor it does not take/,
  });

  // overlapping inputs are part of the cache key: a program compiled for separate tensors is not reused
  const bump = aotFunction(
    (a: Tensor, b: Tensor) => {
      a.add_(1);
      return b.mul(2);
    },
    { fwCompiler: nop },
  );
  bump(ops.clone(tensor([0, 0])), ops.clone(tensor([0, 0])));
  const base = tensor([0, 0, 0, 0]);
  t.deepEqual(bump(base.narrow(0, 0, 2), base.narrow(0, 1, 2)).toArray(), [2, 0], 'traced again, through a synthetic base');
  t.deepEqual(base.toArray(), [1, 1, 0, 0]);

  // NaN, ±Infinity and -0 arguments do not share a compiled program
  const powE = aotFunction((x: Tensor, e: number) => x.pow(e), { fwCompiler: nop });
  t.deepEqual(powE(tensor([2]), Infinity).toArray(), [Infinity]);
  t.deepEqual(powE(tensor([2]), -Infinity).toArray(), [0]);

  // makeFx keeps a write to an input, as copy_ at the end
  const gm = makeFx((x: Tensor) => {
    x.add_(1);
    return x.mul(2);
  })(tensor([1, 2]));
  const y = tensor([5, 6]);
  t.deepEqual((gm.forward(y) as Tensor).toArray(), [12, 14]);
  t.deepEqual(y.toArray(), [6, 7]);

  // aotModuleSimplified checks shapes and dtypes against what it compiled for
  const lin = new nn.Linear(3, 2);
  const simple = aotModuleSimplified(lin, [randn([4, 3])], { fwCompiler: nop });
  t.throws(() => simple(randn([5, 3])), {
    instanceOf: AotError,
    message: /input 0 is float32 \[5, 3\], but graph \d+ was compiled for float32 \[4, 3\]/,
  });

  // an aotModule recompiles when a plain attribute the graph baked in changes (BatchNorm's momentum)
  const bn = new nn.BatchNorm1d(3);
  const bnTwin = new nn.BatchNorm1d(3);
  const am = aotModule(bn, { fwCompiler: nop });
  const xb = randn([4, 3]);
  am.call(xb);
  bnTwin.call(xb);
  (bn as unknown as { momentum: number }).momentum = 0.5;
  (bnTwin as unknown as { momentum: number }).momentum = 0.5;
  am.call(xb);
  bnTwin.call(xb);
  t.true(allclose(bn.stateDict()['running_mean']!, bnTwin.stateDict()['running_mean']!));

  // dynamic aotModule: one graph serves another batch size (the module's weights keep their sizes)
  const log: string[] = [];
  const dyn = aotModule(new nn.Linear(5, 3), { fwCompiler: recording(log), dynamic: true });
  noGrad(() => dyn.call(randn([4, 5])));
  noGrad(() => dyn.call(randn([9, 5])));
  t.is(log.length, 1, log.join(', '));
});
