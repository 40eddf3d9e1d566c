import test, { type ExecutionContext } from 'ava';
import { aotFunction, AotError, compilationContext, type Compiler } from '../src/aot/index.js';
import type { GraphModule } from '../src/fx.js';
import { kernelsBackend } from '../src/kernels/program.js';
import { allclose, noGrad, ones, randn, tensor, Tensor, zerosLike } from '../src/index.js';

/**
 * Aliased inputs that require grad (issue 15 item 3): inputs that share memory and are written in place are
 * traced as `asStrided` views of their common differentiable base, whose gradient reaches the caller's graph
 * through asStrided's gradient. Cases ported from PyTorch's test/functorch/test_aotdispatch.py with
 * requires_grad=True (and False), each named after the test it ports. Like PyTorch's verify_aot_autograd, eager
 * and aotFunction run on fresh inputs built by the same callable, and the outputs, the caller's tensors after the
 * in-place writes (values and layouts) and the gradients of the bases must agree. Then outputs that are views
 * under dynamic shapes: rebuilt from their input (or intermediate) at each call's sizes, so they alias it.
 */

const nop: Compiler =
  (gm) =>
  (...args) =>
    gm.forward(...args);
const kernels: Compiler = (gm, inputs) => kernelsBackend(gm, inputs) as unknown as (...args: Tensor[]) => unknown;

/** PyTorch's inp_callable: the leaves to read gradients from, and the program's arguments (views of them). */
type InpCallable = (requiresGrad: boolean) => { bases: Tensor[]; args: Tensor[] };

const outputsOf = (x: unknown): Tensor[] => (x instanceof Tensor ? [x] : Array.isArray(x) ? x.flatMap(outputsOf) : []);

/** Every output and every input that has a history (mutated inputs), weighted apart, summed. */
function lossOf(outs: Tensor[], ins: Tensor[]): Tensor | null {
  return [...outs, ...ins.filter((x) => !x.isLeaf)]
    .filter((o) => o.requiresGrad)
    .map((o, i) => o.mul(i + 1).sum())
    .reduce((a: Tensor | null, b) => (a ? a.add(b) : b), null);
}

/** PyTorch's verify_aot_autograd with test_mutation=True; returns the forward (or inference) graph. */
function verifyAot(
  t: ExecutionContext,
  fn: (...a: Tensor[]) => unknown,
  make: InpCallable,
  requiresGrad: boolean,
  compiler: Compiler = nop,
): GraphModule {
  let graph: GraphModule | undefined;
  const compiled = aotFunction(fn, {
    fwCompiler: (gm, inputs) => {
      graph = gm;
      return compiler(gm, inputs);
    },
    bwCompiler: compiler,
  });
  const ref = make(requiresGrad);
  const got = make(requiresGrad);
  const want = outputsOf(fn(...ref.args));
  const outs = outputsOf(compiled(...got.args));
  t.is(outs.length, want.length, 'number of outputs');
  want.forEach((w, i) => {
    t.deepEqual(outs[i]!.shape, w.shape, `output ${i} shape`);
    t.true(allclose(outs[i]!, w), `output ${i}`);
    t.is(outs[i]!.requiresGrad, w.requiresGrad, `output ${i} requiresGrad`);
  });
  ref.args.forEach((r, i) => {
    const g = got.args[i]!;
    t.deepEqual([g.shape, g.strides, g.offset], [r.shape, r.strides, r.offset], `input ${i} layout after the call`);
    t.true(allclose(g, r), `input ${i} after the call`);
    t.is(g._storage === got.args[0]!._storage, r._storage === ref.args[0]!._storage, `input ${i} still aliases input 0 as eagerly`);
  });
  const lw = lossOf(want, ref.args);
  const lg = lossOf(outs, got.args);
  t.is(lg === null, lw === null, 'some output requires grad');
  if (lw && lg) {
    lw.backward();
    lg.backward();
    ref.bases.forEach((b, i) => {
      t.truthy(got.bases[i]!.grad, `base ${i} gets a gradient`);
      t.true(allclose(got.bases[i]!.grad!, b.grad!), `gradient of base ${i}`);
    });
  }
  t.truthy(graph, 'a graph was compiled');
  return graph!;
}

const opNames = (gm: GraphModule) =>
  gm.graph.nodes.filter((n) => n.op === 'call_function').map((n) => (n.target as { opName?: string }).opName ?? '');

test('test_input_mutation_aliases_other_input', (t) => {
  const f = (a: Tensor, b: Tensor) => {
    a.add_(1);
    return a.add(b);
  };
  const inp: InpCallable = (requiresGrad) => {
    const base = ones([4, 2]).requiresGrad_(requiresGrad);
    // the add() makes the inputs non-leaves, so the program may write them in place
    const x = base.add(1);
    return { bases: [base], args: [x.select(0, 0), x.select(0, 0)] };
  };
  verifyAot(t, f, inp, false);
  const fw = verifyAot(t, f, inp, true);
  verifyAot(t, f, inp, true, kernels);
  // PyTorch's graph: the inputs are asStrided views of the one base, which comes back written
  t.true(opNames(fw).includes('asStrided'), fw.code);
  t.false(opNames(fw).includes('add_'), fw.code);
});

test('test_input_mutation_aliases_other_input2', (t) => {
  const f = (a: Tensor, b: Tensor) => {
    a.add_(1);
    return a.add(b);
  };
  const inp: InpCallable = (requiresGrad) => {
    const base = ones([2, 2]).requiresGrad_(requiresGrad);
    const x = base.add(1);
    // one of the aliased inputs is the base itself
    return { bases: [base], args: [x.select(0, 0), x] };
  };
  verifyAot(t, f, inp, false);
  verifyAot(t, f, inp, true);
});

test('test_input_mutation_aliases_and_output_alias', (t) => {
  // a and b are aliased: the output view of b is taken off the updated base
  const f = (a: Tensor, b: Tensor) => {
    a.add_(1);
    return b.view(b.shape as number[]);
  };
  const inp: InpCallable = (requiresGrad) => {
    const base = ones([2, 2]).requiresGrad_(requiresGrad);
    const x = base.add(1);
    return { bases: [base], args: [x.view([-1]), x.view([-1])] };
  };
  verifyAot(t, f, inp, false);
  verifyAot(t, f, inp, true);
  // the output aliases the caller's memory, as eagerly
  const { args } = inp(true);
  const out = aotFunction(f, { fwCompiler: nop })(args[0]!, args[1]!);
  t.is(out._storage, args[0]!._storage);
});

test('test_input_mutation_aliases_bases_out_of_order', (t) => {
  // b and d alias and are mutated (d's metadata only); a and c alias but neither is mutated
  const f = (a: Tensor, b: Tensor, c: Tensor, d: Tensor) => {
    b.add_(1);
    d.unsqueeze_(0);
    return [a.add(c).add(d), b.view([-1])];
  };
  const inp: InpCallable = (requiresGrad) => {
    const base1 = ones([2, 2]).requiresGrad_(requiresGrad);
    const base2 = ones([2, 2]).requiresGrad_(requiresGrad);
    const x1 = base1.add(1);
    const x2 = base2.add(1);
    return { bases: [base1, base2], args: [x1.view([-1]), x2.view([-1]), x1.view([-1]), x2.view([-1])] };
  };
  verifyAot(t, f, inp, false);
  verifyAot(t, f, inp, true);
  verifyAot(t, f, inp, true, kernels);
});

test('test_input_data_and_metadata_mutation_aliases_other_input', (t) => {
  const f = (a: Tensor, b: Tensor) => {
    a.mul_(2);
    b.t_();
    return a.mul(b);
  };
  const inp: InpCallable = (requiresGrad) => {
    const base = ones([2, 2]).requiresGrad_(requiresGrad);
    const x = base.add(1);
    return { bases: [base], args: [x.select(0, 0), x.select(0, 0)] };
  };
  verifyAot(t, f, inp, false);
  verifyAot(t, f, inp, true);
  // and PyTorch 1.13's numbers: base = ones(2, 2, requires_grad=True); x = base.add(1); a, b = x[0], x[0];
  // out = f(a, b); (out.sum() + a.mul(2).sum() + b.mul(3).sum()).backward() → base.grad = [[26, 26], [0, 0]]
  const { bases, args } = inp(true);
  const [a, b] = args as [Tensor, Tensor];
  const out = aotFunction(f, { fwCompiler: nop })(a, b);
  t.true(allclose(out, tensor([16, 16])));
  t.true(allclose(a, tensor([4, 4])) && allclose(b, tensor([4, 4])));
  out.sum().add(a.mul(2).sum()).add(b.mul(3).sum()).backward();
  t.true(allclose(bases[0]!.grad!, tensor([26, 26, 0, 0], { shape: [2, 2] })), String(bases[0]!.grad?.data()));
});

test("eager: a view read after a write through another view of its base differentiates through the write (PyTorch's regenerated grad_fn)", (t) => {
  // Regression: b kept the history it had before a.mul_(2), so base.grad was [[12, 12], [0, 0]] (PyTorch: 16).
  const base = ones([2, 2]).requiresGrad_(true);
  const x = base.add(1);
  const a = x.select(0, 0);
  const b = x.select(0, 0);
  a.mul_(2);
  a.mul(b).sum().backward();
  t.true(allclose(base.grad!, tensor([16, 16, 0, 0], { shape: [2, 2] })), String(base.grad?.data()));
});

test('aliased inputs whose metadata is changed in place take the new layout, with and without gradients', (t) => {
  const g = (a: Tensor, b: Tensor) => {
    a.add_(2);
    b.t_();
    return a.add(1);
  };
  const inp: InpCallable = (requiresGrad) => {
    const base = ones([2, 3]).requiresGrad_(requiresGrad);
    const z = base.add(1);
    return { bases: [base], args: [z.view([2, 3]), z.view([2, 3])] };
  };
  verifyAot(t, g, inp, false);
  verifyAot(t, g, inp, true);
});

test('merge_view_inputs: aliased inputs that are not views of one differentiable base are refused when written, with PyTorch text', (t) => {
  const f = (a: Tensor, b: Tensor) => {
    a.add_(1);
    return a.add(b);
  };
  const x = ones([2, 2]).requiresGrad_(true).add(1);
  t.throws(() => aotFunction(f, { fwCompiler: nop })(x.select(0, 0), x.detach().select(0, 0)), {
    instanceOf: AotError,
    message: /^aot_autograd\(\) does not yet handle non-differentiable view input mutations\. \(inputs 0 and 1 share memory/,
  });
  // only read: nothing to merge, the program runs
  const h = aotFunction((a: Tensor, b: Tensor) => a.add(b), { fwCompiler: nop });
  t.true(allclose(h(x.select(0, 0), x.detach().select(0, 0)), tensor([4, 4])));
});

test('views of a leaf that requires grad: an in-place write is refused as eagerly', (t) => {
  const f = (a: Tensor, b: Tensor) => {
    a.add_(1);
    return a.add(b);
  };
  const leaf = ones([2, 2]).requiresGrad_(true);
  const eager = t.throws(() => f(leaf.select(0, 0), leaf.select(0, 0)));
  const compiled = t.throws(() => aotFunction(f, { fwCompiler: nop })(leaf.select(0, 0), leaf.select(0, 0)));
  t.is(compiled!.message, eager!.message);
});

// ---- output views under dynamic shapes ------------------------------------------------------------------

/** aotFunction with dynamic shapes and a nop compiler that logs the graphs it compiles. */
function dynamicAot<F extends (...a: Tensor[]) => unknown>(fn: F, log: string[]): F {
  return aotFunction(fn, {
    fwCompiler: (gm) => {
      log.push(compilationContext()[0]!.replace(/^\d+_/, ''));
      return nop(gm, []);
    },
    bwCompiler: nop,
    dynamic: true,
  });
}

/** Eager and compiled on fresh non-leaf copies of `shape` inputs: values, aliasing of the input, gradients. */
function checkDynamicViews(t: ExecutionContext, fn: (a: Tensor) => Tensor[], compiled: (a: Tensor) => Tensor[], shape: number[]): Tensor[] {
  const leafRef = randn(shape).requiresGrad_(true);
  const leafGot = leafRef.detach().clone().requiresGrad_(true);
  const ref = leafRef.mul(1);
  const got = leafGot.mul(1);
  const want = fn(ref);
  const outs = compiled(got);
  want.forEach((w, i) => {
    const o = outs[i]!;
    t.deepEqual(o.shape, w.shape, `[${shape}] output ${i} shape`);
    t.true(allclose(o, w), `[${shape}] output ${i}`);
    t.is(o._storage === got._storage, w._storage === ref._storage, `[${shape}] output ${i} aliases the input as eagerly`);
    if (w._base !== null) t.is(o.gradFn?.name, w.gradFn?.name, `[${shape}] output ${i} gradFn (a view's)`);
  });
  const loss = (os: Tensor[]) => os.map((o, i) => o.mul(i + 1).sum()).reduce((a, b) => a.add(b));
  loss(want).backward();
  loss(outs).backward();
  t.true(allclose(leafGot.grad!, leafRef.grad!), `[${shape}] input gradient`);
  return outs;
}

test('test_output_aliases_input_view_meta_replay (dynamic): a view of the input aliases it at two sizes from one graph', (t) => {
  const f = (a: Tensor) => [a.view([-1]), a.narrow(0, 1, a.shape[0]! - 1)];
  const log: string[] = [];
  const compiled = dynamicAot(f, log);
  for (const shape of [
    [4, 3],
    [7, 5],
  ]) {
    const outs = checkDynamicViews(t, f, compiled, shape);
    t.is(outs[0]!.gradFn?.name, 'viewBackward');
  }
  t.deepEqual(log, ['forward'], 'the graph traced at [4, 3] served [7, 5]');
  // Regression: under dynamic shapes the outputs were computed by the graph and did not alias the input.
  const x = randn([6, 2]);
  const [flat] = compiled(x);
  noGrad(() => flat!.mul_(0));
  t.true(allclose(x, zerosLike(x)), 'a write through the output view reaches the input');
});

test('test_output_aliases_intermediate_view_meta_replay (dynamic): two views of one intermediate share its storage at two sizes', (t) => {
  // Regression too: a non-leaf input was traced through a clone at the first size but not in the generalising
  // retraces (their resized inputs were leaves), so the graphs differed and every new size traced again.
  const f = (a: Tensor) => {
    const b = a.clone();
    return [b.view([-1]), b.view([-1])];
  };
  const log: string[] = [];
  const compiled = dynamicAot(f, log);
  for (const shape of [
    [2, 3],
    [5, 4],
  ]) {
    const [o1, o2] = checkDynamicViews(t, f, compiled, shape);
    t.is(o1!._storage, o2!._storage, `[${shape}] both views share the intermediate`);
  }
  t.deepEqual(log, ['forward']);
});

test('test_output_aliases_output_view_meta_replay (dynamic): an output and a view of it share storage at two sizes', (t) => {
  const f = (a: Tensor) => {
    const b = a.add(10);
    return [b, b.view([-1])];
  };
  const log: string[] = [];
  const compiled = dynamicAot(f, log);
  for (const shape of [
    [2, 3],
    [5, 4],
  ]) {
    const [b1, b2] = checkDynamicViews(t, f, compiled, shape);
    t.is(b1!._storage, b2!._storage, `[${shape}] the view shares the output's storage`);
    t.is(b2!.gradFn?.name, 'viewBackward');
  }
  t.deepEqual(log, ['forward']);
});

test('dynamic shapes: a view whose sizes are no shape arithmetic of the inputs keeps a static graph and still aliases', (t) => {
  // n % 3 + 1 rows fits no shape arithmetic: the graph stays static (traced again at the second size), never a copy
  const f = (a: Tensor) => [a.narrow(0, 0, (a.shape[0]! % 3) + 1)];
  const log: string[] = [];
  const compiled = dynamicAot(f, log);
  for (const shape of [
    [4, 3],
    [7, 3],
  ]) {
    checkDynamicViews(t, f, compiled, shape);
  }
  t.deepEqual(log, ['forward', 'forward']);
});
