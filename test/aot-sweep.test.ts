import test, { type ExecutionContext } from 'ava';
import { aotFunction, compilationContext, defaultPartition, type Compiler } from '../src/aot/index.js';
import type { GraphModule } from '../src/fx.js';
import { kernelsBackend } from '../src/kernels/program.js';
import { allclose, manualSeed, noGrad, ops, randn, tensor, type Tensor } from '../src/index.js';
import { GRAD_CASES, NOT_DIFFERENTIABLE } from './grad-cases.js';

/**
 * The op sweep of AOT autograd (PyTorch's TestEagerFusionOpInfo in test/functorch/test_aotdispatch.py): every
 * case of grad-cases.ts (one or more per differentiable op) runs through `aotFunction` with a nop compiler
 * ('aot_eager') and with the kernels backend as compiler ('kernels'), at the traced shapes and, with
 * `dynamic: true`, at a second size, and its outputs and every input gradient equal eager's on fresh leaf
 * copies. Tolerance as gradcheck's neighbours: rtol 1e-4, atol 1e-5 (kernels may round differently).
 */

const TOL = { rtol: 1e-4, atol: 1e-5 };

type CompilerName = 'aot_eager' | 'kernels';

const nop: Compiler =
  (gm) =>
  (...args) =>
    gm.forward(...args);
const kernels: Compiler = (gm, inputs) => kernelsBackend(gm, inputs) as unknown as (...args: Tensor[]) => unknown;

/**
 * Second input sizes for `dynamic: true`, by case name: the shapes to call with after the first call, or why
 * the case has none. Cases not listed move every size ≥ 2 by two (sizes none of the generalising retraces
 * saw: they move sizes by one, or spread them by three and more); values are the first inputs' repeated, so
 * index inputs stay in range.
 */
const TIED = 'the second size is tied to a constant of the case';
const SECOND_SIZE: Record<string, number[][] | string> = {
  view: `${TIED}: the target shape [3, 2] and the multiplier arange(1..2)`,
  reshape: `${TIED}: the multiplier arange(1..6) fixes the element count`,
  flatten: `${TIED}: the multiplier arange(1..6) fixes the element count`,
  transpose: `${TIED}: dim 0 meets the multiplier arange(1..2)`,
  t: `${TIED}: dim 0 meets the multiplier arange(1..2)`,
  't (1-D)': `${TIED}: the multiplier arange(1..3)`,
  permute: `${TIED}: dim 2 meets the multiplier arange(1..4)`,
  squeeze: `${TIED}: the multiplier arange(1..3)`,
  expand: `${TIED}: the target shape [2, 3, 4]`,
  split: `${TIED}: the split sizes [1, 2, 1] fix dim 0`,
  viewScatter: `${TIED}: narrow(0, 1, 2) in the view chain fixes src's dim 0`,
  asStrided: `${TIED}: the sizes and strides of the view`,
  'asStrided (overlapping output)': `${TIED}: the sizes and strides of the view`,
  'asStrided (expanded output)': `${TIED}: the sizes and strides of the view`,
  'asStrided (overlapping input)': `${TIED}: the sizes and strides of the view`,
  layerNorm: `${TIED}: the normalized shape [4]`,
  nativeLayerNorm: `${TIED}: the normalized shape [3, 4]`,
  // src's dim 1 is ceil((n - 1) / 2) of input's: the trace at independently moved sizes keeps dim 1 static,
  // and the leading dim, which this second size moves, is symbolic.
  sliceScatter: [
    [3, 5],
    [3, 2],
  ],
  conv2d: [[3, 4, 7, 8], [4, 2, 3, 2], [4]],
  embeddingBag: [[5, 2], [6], [6], [2]],
  maxPool2dWithIndicesBackward: 'the indices input is the pooling of a fixed 5×5 input (made by the case)',
  // The gradient output's shape follows the pooled input's: the second size moves both consistently.
  avgPool2dBackward: [
    [4, 4, 4],
    [4, 7, 7],
  ],
  adaptiveAvgPool2dBackward: [
    [3, 4, 2, 3],
    [3, 4, 7, 7],
  ],
};

/**
 * Cases whose second size is traced again (correct, but not served by the first graph), and why: some of
 * their sizes stay specialised, because the generalising retraces (every size moved, or the leading ones)
 * are no valid call of the case, or a number of the graph is no shape arithmetic of the inputs.
 */
const STATIC = 'the generalising retraces (every size moved, or the leading ones) are no valid call of the case, so the graph stays static';
const RETRACED: Record<string, string> = {
  'crossEntropy (label smoothing)': 'labelSmoothing / C is a float constant of the graph, so the class count stays specialised',
  conv2d: `${STATIC}: groups=2 ties x's and w's channel counts`,
  embeddingBag: `${STATIC}: repeated offsets [0, 1, 0] do not increase`,
  // Regression: x[..., ::2, i] traced at sizes moved by one fitted ceil(n / 2) rows as another size, and the
  // graph threw at n = 6 (scatterAdd's index larger than src); now a third trace at spread sizes refutes that.
  index: 'ceil(n / 2) rows of the strided slice are no fit of shape arithmetic: only the leading dims are symbolic',
  avgPool2dBackward: `${STATIC}: the gradient's size is the pooled size of x's`,
  adaptiveAvgPool2dBackward: `${STATIC}: x's spatial size must stay at least the gradient's`,
};

const leafCopy = (x: Tensor) => (x.requiresGrad ? x.detach().clone().requiresGrad_(true) : x.clone());

/** `t`'s values repeated into `shape`, requiring grad as `t` does. */
function resized(t: Tensor, shape: readonly number[]): Tensor {
  return noGrad(() => {
    const flat = t.detach().reshape([-1]);
    const n = shape.reduce((a, b) => a * b, 1);
    const idx = tensor(
      Array.from({ length: n }, (_, i) => i % flat.shape[0]!),
      { dtype: 'int32' },
    );
    const out = ops
      .indexSelect(flat, 0, idx)
      .reshape([...shape])
      .contiguous()
      .clone();
    return t.requiresGrad ? out.requiresGrad_(true) : out;
  });
}

function secondInputs(inputs: readonly Tensor[], spec: number[][] | undefined): Tensor[] {
  const shapes = spec ?? inputs.map((x) => x.shape.map((s) => (s >= 2 ? s + 2 : s)));
  return inputs.map((x, i) => resized(x, shapes[i]!));
}

/** The compiler, logging the compilation context (`0_forward`, …) of each graph it compiles. */
function logged(name: CompilerName, ids: string[]): Compiler {
  const inner = name === 'kernels' ? kernels : nop;
  return (gm, inputs) => {
    ids.push(compilationContext()[0]!);
    return inner(gm, inputs);
  };
}

const kinds = (ids: readonly string[]) => ids.map((id) => id.replace(/^\d+_/, ''));

/**
 * Outputs and input gradients of `compiled` on fresh copies of `inputs` equal `fn`'s eagerly. Returns whether
 * the output is a view of an input (rebuilt outside the graph, so no backward graph is compiled).
 */
function compare(
  t: ExecutionContext,
  what: string,
  fn: (...xs: Tensor[]) => Tensor,
  compiled: (...xs: Tensor[]) => Tensor,
  inputs: Tensor[],
): boolean {
  const ref = inputs.map(leafCopy);
  const got = inputs.map(leafCopy);
  manualSeed(3); // the dropout cases seed inside fn: that side effect is not part of a graph
  const want = fn(...ref);
  manualSeed(3);
  const out = compiled(...got);
  t.deepEqual(out.shape, want.shape, `${what}: output shape`);
  t.true(allclose(out, want, TOL), `${what}: output`);
  const viewOfInput = got.some((x) => x._storage === out._storage);
  t.is(
    viewOfInput,
    ref.some((x) => x._storage === want._storage),
    `${what}: the output aliases an input as eagerly`,
  );
  if (!want.requiresGrad) return viewOfInput;
  const g = randn([...want.shape]);
  want.backward(g);
  out.backward(g);
  ref.forEach((r, i) => {
    if (!r.requiresGrad) return;
    const gi = got[i]!.grad;
    t.truthy(gi, `${what}: input ${i} gets a gradient`);
    if (gi) t.true(allclose(gi, r.grad!, TOL), `${what}: gradient of input ${i}`);
  });
  return viewOfInput;
}

function constantsOf(gm: GraphModule): string[] {
  return gm.graph.nodes.filter((n) => n.op === 'get_attr' && String(n.target).startsWith('_tensor_constant')).map((n) => n.name);
}

for (const [name, make] of GRAD_CASES) {
  for (const compilerName of ['aot_eager', 'kernels'] as const) {
    test(`aot sweep ${name} (${compilerName}, static)`, (t) => {
      manualSeed(0);
      const { fn, inputs } = make();
      const ids: string[] = [];
      const joints: GraphModule[] = [];
      const compiled = aotFunction(fn, {
        fwCompiler: logged(compilerName, ids),
        partitionFn: (joint, opts) => (joints.push(joint), defaultPartition(joint, opts)),
      });
      const viewOfInput = compare(t, 'static', fn, compiled, inputs);
      t.is(joints.length, 1, 'one joint graph');
      t.deepEqual(
        kinds(ids),
        // an output that is a view of an input is rebuilt outside the graph (its gradient flows through the view)
        viewOfInput ? ['forward'] : ['forward', 'backward'],
      );
      t.deepEqual(constantsOf(joints[0]!), [], 'the joint graph computes every tensor it uses');
    });

    // Cases whose sizes are tied to their constants have no second size (SECOND_SIZE says why): no test.
    const second = SECOND_SIZE[name];
    if (typeof second === 'string') continue;
    test(`aot sweep ${name} (${compilerName}, dynamic)`, (t) => {
      manualSeed(0);
      const { fn, inputs } = make();
      const ids: string[] = [];
      const compiled = aotFunction(fn, { fwCompiler: logged(compilerName, ids), dynamic: true });
      const viewOfInput = compare(t, 'first size', fn, compiled, inputs);
      compare(t, 'second size', fn, compiled, secondInputs(inputs, second));
      // a view of an input is rebuilt outside the graph at each call's sizes, as at static shapes
      const expected = viewOfInput ? ['forward'] : ['forward', 'backward'];
      if (name in RETRACED) t.deepEqual(kinds(ids), [...expected, ...expected], `retraced: ${RETRACED[name]}`);
      else t.deepEqual(kinds(ids), expected, 'the graphs traced at the first size serve the second');
    });
  }
}

test('crossEntropy and nllLoss trace with a traced target; an out-of-range target still throws when the graph runs', (t) => {
  // Regression: their range check read the target's values while tracing, which a graph cannot depend on.
  for (const loss of [ops.crossEntropy, ops.nllLoss]) {
    const f = aotFunction((x: Tensor, target: Tensor) => loss(x, target), { fwCompiler: nop });
    const x = randn([2, 3]).requiresGrad_(true);
    const ok = tensor([2, 0], { dtype: 'int32' });
    t.true(allclose(f(x, ok), loss(x, ok)));
    t.throws(() => f(x, tensor([3, 0], { dtype: 'int32' })), { message: /target 3 is out of bounds for 3 classes/ });
  }
});

test('the second-size tables name cases that exist', (t) => {
  const names = new Set(GRAD_CASES.map(([n]) => n));
  t.deepEqual(
    [...Object.keys(SECOND_SIZE), ...Object.keys(RETRACED)].filter((n) => !names.has(n)),
    [],
  );
});

test('every differentiable op of the registry has a sweep entry', (t) => {
  const covered = new Set(GRAD_CASES.map(([n]) => n.split(' ')[0]!));
  const missing = [...ops.registry.keys()].filter((op) => !NOT_DIFFERENTIABLE.has(op) && !covered.has(op));
  t.deepEqual(missing, []);
});
