import test from 'ava';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AutogradError,
  FunctionCtx,
  TraceError,
  Tensor,
  compile,
  defineFunction,
  manualSeed,
  nn,
  noGrad,
  ones,
  randn,
  tensor,
  testing,
  zeros,
} from '../src/index.js';
import { symbolicTrace } from '../src/fx.js';
import { targetName } from '../src/graph/node.js';
import * as jit from '../src/jit.js';
import { setTraceDispatch } from '../src/runtime/dispatch.js';
import { TraceabilityCheck } from './traceability-check.js';

/** Ports of PyTorch's test_autograd.py tests of torch.autograd.Function, plus kiln's multi-output and tracing checks. */

const close = (t: { true(c: boolean, m?: string): void }, a: Tensor, b: Tensor, msg?: string) =>
  t.true(testing.allclose(a, b, { rtol: 1e-5, atol: 1e-6 }), msg ?? `${a.toString()} != ${b.toString()}`);

// test_function: a python scalar among the inputs, saved tensors, a null gradient for the scalar.
const MyFunction = defineFunction({
  name: 'MyFunction',
  forward(ctx, tensor1: Tensor, pyscalar: number, tensor2: Tensor) {
    ctx.pyscalar = pyscalar;
    ctx.saveForBackward(tensor1, tensor2);
    return tensor1.add(tensor2.mul(pyscalar)).add(tensor1.mul(tensor2));
  },
  backward(ctx, gradOutput) {
    const [var1, var2] = ctx.savedTensors as [Tensor, Tensor];
    const g = gradOutput!;
    return [g.add(g.mul(var2)), null, g.mul(ctx.pyscalar as number).add(g.mul(var1))];
  },
});

test('test_function: saved tensors, a scalar input and its null gradient', (t) => {
  manualSeed(0);
  const x = randn([5, 5], { requiresGrad: true });
  const y = randn([5, 5], { requiresGrad: true });
  const result = MyFunction(x, 2, y);
  t.is(result.gradFn?.name, 'MyFunctionBackward');
  result.sum().backward();
  close(t, x.grad!, ones([5, 5]).add(y.detach()));
  close(t, y.grad!, x.detach().add(2));
});

test('test_function: forward runs without recording, so its ops leave no tape', (t) => {
  let sawGradMode: boolean | undefined;
  let innerRequiresGrad: boolean | undefined;
  const fn = defineFunction({
    forward(_ctx, x: Tensor) {
      const y = x.mul(2);
      innerRequiresGrad = y.requiresGrad;
      sawGradMode = y.gradFn === null;
      return y;
    },
    backward: (_ctx, g) => g!.mul(2),
  });
  const x = randn([3], { requiresGrad: true });
  const y = fn(x);
  t.false(innerRequiresGrad);
  t.true(sawGradMode);
  t.true(y.requiresGrad);
  t.is(y.gradFn?.name, 'CustomFunctionBackward');
});

test('test_function_returns_input: an input returned as is gets the custom gradient, and the input stays a leaf', (t) => {
  const fn = defineFunction({ name: 'MyFunction', forward: (_ctx, x: Tensor) => x, backward: (_ctx, g) => g!.mul(2) });
  for (const shape of [[1], []]) {
    const v = ones(shape, { requiresGrad: true });
    const out = fn(v);
    t.not(out, v);
    t.true(v.isLeaf);
    out.backward();
    close(t, v.grad!, ones(shape).mul(2));
  }
});

test('test_inplace_on_view_of_custom_function_output: writing in place into an output that is a view is refused', (t) => {
  const Identity = defineFunction({ name: 'Identity', forward: (_ctx, x: Tensor) => x, backward: (_ctx, g) => g });
  const ViewOf = defineFunction({ name: 'ViewOf', forward: (_ctx, x: Tensor) => x.view([2, 2]), backward: (_ctx, g) => g!.reshape([4]) });
  const text =
    /^Output 0 of (Identity|ViewOf)Backward is a view and is being modified inplace\. This view was created inside a custom Function .* You can fix this by cloning the output of the custom Function\.$/;
  const leaf = randn([4], { requiresGrad: true });
  t.throws(() => Identity(leaf.mul(1)).mul_(2), { instanceOf: AutogradError, message: text });
  t.throws(() => ViewOf(leaf.mul(1)).mul_(2), { instanceOf: AutogradError, message: text });
  t.throws(() => ViewOf(leaf.mul(1)).select(0, 1).mul_(2), { instanceOf: AutogradError, message: text });
  // A clone may be written, and the gradient goes through the custom backward.
  const y = ViewOf(leaf).clone();
  y.mul_(3);
  y.sum().backward();
  t.deepEqual(leaf.grad!.toArray(), [3, 3, 3, 3]);
});

test('test_save_none_for_backward: null among the saved tensors comes back as null', (t) => {
  const MyFn = defineFunction({
    forward(ctx, input: Tensor) {
      ctx.saveForBackward(null, input, undefined);
      return input.mul(input);
    },
    backward(ctx, gradOutput) {
      const [n1, input, n2] = ctx.savedTensors;
      if (n1 !== null || n2 !== null) throw new Error('expected null');
      return input!.mul(2).mul(gradOutput!);
    },
  });
  manualSeed(1);
  const x = randn([5, 5], { requiresGrad: true });
  MyFn(x).sum().backward();
  close(t, x.grad!, x.detach().mul(2));
});

test('needsInputGrad says which inputs need a gradient (PyTorch needs_input_grad)', (t) => {
  let seen: readonly boolean[] = [];
  const fn = defineFunction({
    forward(ctx, a: Tensor, _k: number, b: Tensor) {
      seen = ctx.needsInputGrad;
      return a.mul(b);
    },
    backward: (_ctx, g) => [g, null, g],
  });
  fn(randn([2], { requiresGrad: true }), 3, randn([2]));
  t.deepEqual(seen, [true, false, false]);
  noGrad(() => fn(randn([2], { requiresGrad: true }), 3, randn([2])));
  t.deepEqual(seen, [false, false, false]);
});

test('under noGrad, or with no input that requires grad, no node is recorded', (t) => {
  const fn = defineFunction({ forward: (_ctx, x: Tensor) => x.exp(), backward: (_ctx, g) => g });
  const x = randn([3], { requiresGrad: true });
  t.false(noGrad(() => fn(x)).requiresGrad);
  t.false(fn(randn([3])).requiresGrad);
  t.is(fn(randn([3])).gradFn, null);
});

test('inputs that do not require grad get no gradient even when backward returns one', (t) => {
  const fn = defineFunction({ forward: (_ctx, a: Tensor, b: Tensor) => a.mul(b), backward: (_ctx, g) => [g, g] });
  const a = randn([3], { requiresGrad: true });
  const b = randn([3]);
  fn(a, b).sum().backward();
  close(t, a.grad!, ones([3]));
  t.is(b.grad, null);
});

test('test_mark_non_differentiable: a mask output does not require grad', (t) => {
  const fn = defineFunction({
    forward(ctx, input: Tensor) {
      const output = input.gt(0).float();
      ctx.markNonDifferentiable(output);
      return output;
    },
    backward: (_ctx, g) => g!.mul(0),
  });
  manualSeed(2);
  const x = randn([5, 5], { requiresGrad: true });
  const mask = fn(x);
  t.false(mask.requiresGrad);
  x.mul(mask).sum().backward();
  close(t, x.grad!, mask);
});

test('test_mark_non_differentiable_mixed: backward gets zeros for the non-differentiable output', (t) => {
  const fn = defineFunction({
    forward(ctx, input: Tensor) {
      const a = input.add(1);
      const b = input.add(2);
      ctx.markNonDifferentiable(a);
      return [a, b];
    },
    backward(_ctx, gradA, gradB) {
      if (!testing.allclose(gradA!, zeros([5, 5])) || !testing.allclose(gradB!, ones([5, 5]))) throw new Error('wrong grads');
      return gradB;
    },
  });
  const x = randn([5, 5], { requiresGrad: true });
  const [a, b] = fn(x);
  t.false(a!.requiresGrad);
  t.true(b!.requiresGrad);
  b!.sum().backward();
  close(t, x.grad!, ones([5, 5]));
});

test('integer outputs are non-differentiable by themselves', (t) => {
  const fn = defineFunction({
    forward: (_ctx, x: Tensor) => [x.mul(2), x.argmax()],
    backward: (_ctx, g) => g!.mul(2),
  });
  const [y, i] = fn(randn([4], { requiresGrad: true }));
  t.true(y!.requiresGrad);
  t.false(i!.requiresGrad);
});

/** Two outputs of one call: y1 = x * w, y2 = x + w, with a counter of backward calls. */
function twoOutputs() {
  const calls = { n: 0 };
  const fn = defineFunction({
    name: 'TwoOut',
    forward(ctx, x: Tensor, w: Tensor) {
      ctx.saveForBackward(x, w);
      return [x.mul(w), x.add(w)];
    },
    backward(ctx, g1, g2) {
      calls.n++;
      const [x, w] = ctx.savedTensors as [Tensor, Tensor];
      return [g1!.mul(w).add(g2!), g1!.mul(x).add(g2!)];
    },
  });
  return { fn, calls };
}

test('several outputs: backward runs once per backward pass with every output gradient', (t) => {
  const { fn, calls } = twoOutputs();
  const x = tensor([1, 2, 3], { requiresGrad: true });
  const w = tensor([4, 5, 6], { requiresGrad: true });
  const [y1, y2] = fn(x, w);
  t.is(y1!.gradFn?.name, 'TwoOutBackward');
  y1!.mul(2).add(y2!.mul(3)).sum().backward();
  t.is(calls.n, 1);
  // d/dx = 2w + 3, d/dw = 2x + 3 (PyTorch gives the same)
  t.deepEqual(x.grad!.toArray(), [11, 13, 15]);
  t.deepEqual(w.grad!.toArray(), [5, 7, 9]);
});

test('several outputs: an unused output gets a zero gradient (materialised)', (t) => {
  const { fn, calls } = twoOutputs();
  const x = tensor([1, 2, 3], { requiresGrad: true });
  const w = tensor([4, 5, 6], { requiresGrad: true });
  const [y1] = fn(x, w);
  y1!.sum().backward();
  t.is(calls.n, 1);
  t.deepEqual(x.grad!.toArray(), [4, 5, 6]);
  t.deepEqual(w.grad!.toArray(), [1, 2, 3]);
});

test('setMaterializeGrads(false): backward gets null for an output that got no gradient', (t) => {
  let got: (Tensor | null)[] = [];
  const fn = defineFunction({
    forward(ctx, x: Tensor) {
      ctx.setMaterializeGrads(false);
      return [x.mul(2), x.mul(3)];
    },
    backward(_ctx, g1, g2) {
      got = [g1!, g2!];
      return g1!.mul(2);
    },
  });
  const x = randn([2], { requiresGrad: true });
  fn(x)[0]!.sum().backward();
  t.true(got[0] instanceof Tensor);
  t.is(got[1], null);
  close(t, x.grad!, tensor([2, 2]));
});

test('several outputs: each output seeded on its own gets its own backward pass', (t) => {
  const { fn, calls } = twoOutputs();
  const x = tensor([1, 2], { requiresGrad: true });
  const w = tensor([3, 4], { requiresGrad: true });
  const [y1, y2] = fn(x, w);
  y1!.sum().backward();
  y2!.sum().backward();
  t.is(calls.n, 2);
  t.deepEqual(x.grad!.toArray(), [4, 5]);
  t.deepEqual(w.grad!.toArray(), [2, 3]);
});

test('a null gradient from backward does not stop gradients that reach the input another way', (t) => {
  // Regression: a node that received no gradient never released the nodes after it, so x.grad stayed null.
  const blocks = defineFunction({ forward: (_ctx, a: Tensor) => a.mul(1), backward: () => null });
  const x = tensor([1, 2], { requiresGrad: true });
  const a = x.mul(2);
  blocks(a).sum().add(x.mul(5).sum()).backward();
  t.deepEqual(x.grad!.toArray(), [5, 5]);
});

test('retainGrad on an output of a several-output function sees that output gradient', (t) => {
  const { fn } = twoOutputs();
  const x = tensor([1, 2], { requiresGrad: true });
  const [y1, y2] = fn(x, tensor([3, 4], { requiresGrad: true }));
  y2!.retainGrad();
  y1!.add(y2!.mul(7)).sum().backward();
  t.deepEqual(y2!.grad!.toArray(), [7, 7]);
});

test('gradcheck of custom functions: a custom exp and a custom x * w + x', (t) => {
  const Exp = defineFunction({
    name: 'Exp',
    forward(ctx, x: Tensor) {
      const result = x.exp();
      ctx.saveForBackward(result);
      return result;
    },
    backward(ctx, g) {
      const [result] = ctx.savedTensors as [Tensor];
      return g!.mul(result);
    },
  });
  manualSeed(3);
  t.true(testing.gradcheck((x) => Exp(x), [randn([3, 4], { requiresGrad: true })]));
  const { fn } = twoOutputs();
  t.true(
    testing.gradcheck(
      (x, w) => {
        const [a, b] = fn(x!, w!);
        return a!.mul(b!.sin());
      },
      [randn([5], { requiresGrad: true }), randn([5], { requiresGrad: true })],
    ),
  );
});

test('a gradient broadcastable to the input shape is summed down to it, as PyTorch does', (t) => {
  const fn = defineFunction({ forward: (_ctx, x: Tensor) => x.mul(2), backward: () => ones([2, 3]) });
  const x = randn([3], { requiresGrad: true });
  fn(x).sum().backward();
  t.deepEqual(x.grad!.toArray(), [2, 2, 2]);
});

test('in-place markDirty: the input history continues through the custom function', (t) => {
  const Double_ = defineFunction({
    name: 'Double_',
    forward(ctx, x: Tensor) {
      x.mul_(2);
      ctx.markDirty(x);
      return x;
    },
    backward: (_ctx, g) => g!.mul(2),
  });
  const leaf = tensor([1, 2], { requiresGrad: true });
  const a = leaf.mul(3);
  const out = Double_(a);
  t.is(out, a);
  t.is(a.gradFn?.name, 'Double_Backward');
  t.deepEqual(a.toArray(), [6, 12]);
  a.sum().backward();
  t.deepEqual(leaf.grad!.toArray(), [6, 6]);
  const err = t.throws(() => Double_(tensor([1], { requiresGrad: true })), { instanceOf: AutogradError });
  t.regex(err!.message, /Double_: a leaf tensor that requires grad is being used in an in-place operation/);
});

// ---- errors ----

test('test_function_returns_wrong_number_of_gradients: the text names the function and both counts', (t) => {
  const fn = defineFunction({ name: 'MyFn', forward: (_ctx, a: Tensor, b: Tensor) => a.mul(b), backward: (_ctx, g) => [g] });
  const err = t.throws(
    () =>
      fn(randn([3], { requiresGrad: true }), randn([3]))
        .sum()
        .backward(),
    { instanceOf: AutogradError },
  );
  t.is(err!.message, 'function MyFnBackward returned an incorrect number of gradients (expected 2, got 1)');
});

test('extra null gradients past the inputs are allowed', (t) => {
  const fn = defineFunction({ forward: (_ctx, a: Tensor) => a.mul(2), backward: (_ctx, g) => [g!.mul(2), null, undefined] });
  const x = randn([2], { requiresGrad: true });
  fn(x).sum().backward();
  t.deepEqual(x.grad!.toArray(), [2, 2]);
});

test('test_invalid_gradients: a gradient of the wrong shape names the function, index and shapes', (t) => {
  const fn = defineFunction({ name: 'MyFn', forward: (_ctx, x: Tensor) => x.mul(2), backward: () => randn([2, 4]) });
  const err = t.throws(
    () =>
      fn(randn([3], { requiresGrad: true }))
        .sum()
        .backward(),
    { instanceOf: AutogradError },
  );
  t.is(err!.message, 'Function MyFnBackward returned an invalid gradient at index 0 - got [2, 4] but expected shape compatible with [3]');
});

test('a gradient for an input that is not a tensor is an error naming its position', (t) => {
  const fn = defineFunction({ name: 'MyFn', forward: (_ctx, x: Tensor, k: number) => x.mul(k), backward: (_ctx, g) => [g, g] });
  const err = t.throws(
    () =>
      fn(randn([3], { requiresGrad: true }), 2)
        .sum()
        .backward(),
    { instanceOf: AutogradError },
  );
  t.regex(
    err!.message,
    /^function MyFnBackward returned a gradient different than null at position 1, but the corresponding forward input was not a Tensor/,
  );
});

test('a gradient that is not a tensor is an error', (t) => {
  const fn = defineFunction({ name: 'MyFn', forward: (_ctx, x: Tensor) => x.mul(2), backward: () => 3 as unknown as Tensor });
  const err = t.throws(
    () =>
      fn(randn([3], { requiresGrad: true }))
        .sum()
        .backward(),
    { instanceOf: AutogradError },
  );
  t.is(err!.message, 'function MyFnBackward returned 3 at index 0; expected a Tensor, null or undefined');
});

test('a saved tensor modified in place before backward is an error (PyTorch version counter)', (t) => {
  const fn = defineFunction({
    name: 'MyFn',
    forward(ctx, x: Tensor) {
      ctx.saveForBackward(x);
      return x.mul(x);
    },
    backward(ctx, g) {
      const [x] = ctx.savedTensors as [Tensor];
      return g!.mul(x).mul(2);
    },
  });
  const leaf = randn([2, 3], { requiresGrad: true });
  const a = leaf.add(1);
  const y = fn(a);
  a.mul_(2);
  const err = t.throws(() => y.sum().backward(), { instanceOf: AutogradError });
  t.regex(
    err!.message,
    /one of the tensors needed for gradient computation has been modified by an in-place operation: float32 \[2, 3\] saved by MyFnBackward is at version 1; expected version 0/,
  );
});

test('forward must return tensors; bad specs and saveForBackward arguments are refused', (t) => {
  const bad = defineFunction({ name: 'Bad', forward: () => 3 as unknown as Tensor, backward: () => null });
  t.throws(() => bad(), { message: /Bad.forward must return a Tensor or a non-empty array of Tensors, got 3/ });
  t.throws(() => defineFunction({ forward: () => ones([1]) } as never), { message: /defineFunction: expected \{ forward/ });
  const saves = defineFunction({
    forward(ctx, x: Tensor) {
      ctx.saveForBackward(x, 3 as unknown as Tensor);
      return x;
    },
    backward: (_ctx, g) => g,
  });
  t.throws(() => saves(ones([1])), { message: /saveForBackward: argument 1 must be a Tensor, null or undefined, got 3/ });
  t.true(new FunctionCtx('F', []) instanceof FunctionCtx);
});

// ---- tracing ----

test('forward and backward of a custom function are ordinary op calls a joint-graph tracer records', (t) => {
  const { fn } = twoOutputs();
  const x = randn([3], { requiresGrad: true });
  const w = randn([3], { requiresGrad: true });
  const checker = new TraceabilityCheck();
  checker.know([x, w]);
  const prev = setTraceDispatch(checker);
  try {
    const [y1] = fn(x, w); // y2 unused: its zero gradient is made by an op too
    const seed = ones([3]);
    checker.know(seed);
    y1!.backward(seed);
  } finally {
    setTraceDispatch(prev);
  }
  t.deepEqual(checker.problems, []);
  t.true(checker.isTraced(x.grad) && checker.isTraced(w.grad));
  t.true(checker.called.includes('mul') && checker.called.includes('full'), checker.called.join(' '));
  close(t, x.grad!, w.detach());
});

test('symbolicTrace refuses a custom function rather than recording its forward without its backward', (t) => {
  const fn = defineFunction({ name: 'MyFn', forward: (_ctx, x: Tensor) => x.mul(2), backward: (_ctx, g) => g!.mul(2) });
  const err = t.throws(() => symbolicTrace((x: Tensor) => fn(x).add(1)), { instanceOf: TraceError });
  t.regex(err!.message, /custom-gradient function MyFn/);
});

test('compile runs a module calling a custom function with the custom gradient', (t) => {
  // The custom gradient (3g) is not the forward's true one, so a graph of the forward's ops would give other gradients.
  const RoundSTE = defineFunction({ name: 'RoundSTE', forward: (_ctx, x: Tensor) => x.mul(4).relu(), backward: (_ctx, g) => g!.mul(3) });
  class M extends nn.Module {
    fc = new nn.Linear(3, 3);
    override forward(x: Tensor): Tensor {
      return RoundSTE(this.fc.call(x)).sum();
    }
  }
  manualSeed(4);
  const m = new M();
  const x = randn([2, 3], { requiresGrad: true });
  m.call(x).backward();
  const eager = x.grad!.clone();
  x.grad = null;
  const out = compile(m, { backend: 'eager' }).call(x) as Tensor;
  close(t, out, m.call(x));
  out.backward();
  close(t, x.grad!, eager);
});

test('kiln/jit trace records a custom function as one opaque call that keeps its custom gradient', (t) => {
  // Recording the forward's ops alone (inside its no-grad region) would give the traced program no gradient through them.
  const Ste = defineFunction({ name: 'Ste', forward: (_ctx, x: Tensor) => x.mul(4), backward: (_ctx, g) => g!.mul(3) });
  class M extends nn.Module {
    fc = new nn.Linear(3, 3);
    override forward(x: Tensor): Tensor {
      return Ste(this.fc.call(x)).add(x).sum();
    }
  }
  manualSeed(5);
  const m = new M();
  const x = randn([2, 3], { requiresGrad: true });
  m.call(x).backward();
  const eager = x.grad!.clone();
  x.grad = null;
  const traced = jit.trace(m, [x]);
  t.deepEqual(
    traced.graph.nodes.filter((n) => n.op === 'call_function').map((n) => targetName(n.target)),
    ['linear', 'Ste', 'add', 'sum'],
  );
  (traced.call(x) as Tensor).backward();
  close(t, x.grad!, eager);
  // The opaque call cannot be saved: a clear error, not a program without the function.
  const file = join(tmpdir(), `kiln-custom-fn-${process.pid}.kjit`);
  t.throws(() => jit.save(traced, file), { message: /Ste/ });
  rmSync(file, { force: true });
});

test("the function's name comes from a named forward when no name option is given", (t) => {
  const fn = defineFunction({
    forward: function Cube(_ctx, x: Tensor) {
      return x.pow(3);
    },
    backward: (_ctx, g) => g,
  });
  t.is(fn(randn([2], { requiresGrad: true })).gradFn?.name, 'CubeBackward');
});
