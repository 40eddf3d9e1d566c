import test from 'ava';
import { KilnError, compile, manualSeed, nn, noGrad, randn, tensor, type Tensor } from '../src/index.js';
import type { GraphModule } from '../src/fx.js';
import { kernelsBackend, type KernelProgramCallable } from '../src/kernels/index.js';
import type { IRNode } from '../src/kernels/ir.js';
import type { Group } from '../src/kernels/partition.js';
import { Plan } from '../src/kernels/plan.js';
import { STEP_BUILDERS, buildKernelStep, type ScratchHandle, type StepContext } from '../src/kernels/steps/index.js';
import { close } from './helpers.js';

/**
 * The kernel plan's executor and its step builders (src/kernels/steps): every IR kind has a builder or a stated
 * reason it never roots a step, a kind without one is a clear error, and one model running every step family
 * through the executor equals eager.
 */

/** Every step family in one eval-mode model: conv+bn+relu, max and average pooling, a view, linear, embedding, reductions, an eager node. */
class EveryStep extends nn.Module {
  conv = new nn.Conv2d(3, 4, 3, { padding: 1 });
  bn = new nn.BatchNorm2d(4);
  maxPool = new nn.MaxPool2d(2);
  avgPool = new nn.AvgPool2d(2);
  fc = new nn.Linear(16, 5);
  emb = new nn.Embedding(9, 5);
  override forward(x: Tensor, ids: Tensor): Tensor {
    const y = this.avgPool.call(this.maxPool.call(this.bn.call(this.conv.call(x)).relu())) as Tensor;
    const h = this.fc.call(y.flatten(1)) as Tensor;
    // an int32 result stays eager: the embedding reads an eager step's value
    const e = (this.emb.call(ids.add(1)) as Tensor).mean(1);
    return h.add(e).softmax(-1);
  }
}

function everyStepModel(): { model: EveryStep; x: Tensor; ids: Tensor } {
  manualSeed(3);
  const model = new EveryStep();
  // running statistics away from 0 and 1, so a wrongly folded batch norm shows
  model.bn.running_mean!.copy_(randn([4]).mul(0.5));
  model.bn.running_var!.copy_(randn([4]).abs().add(0.5));
  model.eval();
  const ids = tensor(
    [
      [0, 7, 3],
      [5, 5, 1],
    ],
    { dtype: 'int32' },
  );
  return { model, x: randn([2, 3, 8, 8]), ids };
}

test('one model through every step family (conv+bn+relu, pools, linear, embedding, reductions, eager) equals eager', (t) => {
  const { model, x, ids } = everyStepModel();
  const programs: KernelProgramCallable[] = [];
  const opt = compile(model, { backend: (gm: GraphModule) => programs[programs.push(kernelsBackend(gm)) - 1]! });
  noGrad(() => {
    const want = model.call(x, ids);
    close(t, opt.call(x, ids) as Tensor, want, 'first call (plans, replays the eager run)');
    close(t, opt.call(x, ids) as Tensor, want, 'cached plan');
  });
  t.is(programs.length, 1);
  const text = programs[0]!.pprint();
  for (const kind of [
    'conv2d+bias+bn+relu',
    'maxPool2d',
    'avgPool2d',
    'matmul+bias',
    'embedding',
    'reduce sum',
    'reduce max',
    'elementwise',
    'eager',
  ]) {
    t.true(text.includes(` ${kind} `), `${kind} in\n${text}`);
  }
});

/** The kernel plan of everyStepModel's first compiled call (or whatever the program holds instead). */
function everyStepPlan(): unknown {
  const { model, x, ids } = everyStepModel();
  const programs: KernelProgramCallable[] = [];
  const opt = compile(model, { backend: (gm: GraphModule) => programs[programs.push(kernelsBackend(gm)) - 1]! });
  noGrad(() => opt.call(x, ids));
  return [...programs[0]!.program.plans.values()][0];
}

test('every IR kind a lowered graph holds has a step builder, or a stated reason it never roots a step', (t) => {
  const plan = everyStepPlan();
  if (!(plan instanceof Plan)) return t.fail(`no plan: ${String(plan)}`);
  const kinds = new Set(plan.ir.map((n) => n.kind));
  // the model above covers every kind: a new IR kind gets a builder (the table's type demands it) and a place here
  t.deepEqual([...kinds].sort(), Object.keys(STEP_BUILDERS).sort());
  for (const [kind, entry] of Object.entries(STEP_BUILDERS)) {
    if (typeof entry === 'function') continue;
    t.true(entry.notAStep.length > 20, `${kind} says why it never roots a step`);
  }
  for (const g of plan.src.groups) t.is(typeof STEP_BUILDERS[plan.ir[g.root]!.kind], 'function', `group root ${g.root}`);
});

test('scratch buffers steps share hold what was reserved while planning; asking for more is a KilnError, not a short buffer', (t) => {
  const plan = everyStepPlan();
  if (!(plan instanceof Plan)) return t.fail(`no plan: ${String(plan)}`);
  // the conv2d step (an NCHW input) reserved its channels-last copy of the input, [2, 8, 8, 3]
  const nhwc = 0 as ScratchHandle;
  t.is(plan.scratch(nhwc, 384).length, 384);
  t.throws(() => plan.scratch(nhwc, 385), {
    instanceOf: KilnError,
    message: "kernels: a step asked for 385 floats of scratch 'channels-last input', which was reserved at 384",
  });
});

/** A step context holding just `ir`: a builder lookup that fails must fail before asking anything else. */
function contextOf(ir: readonly unknown[]): StepContext {
  return { ir: ir as readonly IRNode[] } as StepContext;
}

const group = (kind: Group['kind']): Group => ({ kind, root: 0, members: [0] });

test('a group rooted at an IR kind without a step builder is a KilnError naming the kind, the node and the known kinds', (t) => {
  const scatter = { kind: 'scatter', id: 0, shape: [2], dtype: 'float32', origin: null, isOriginValue: true };
  t.throws(() => buildKernelStep(contextOf([scatter]), group('elementwise')), {
    instanceOf: KilnError,
    message:
      /^kernels: no step builder for IR kind "scatter" of IR #0 \(known kinds: value, view, ew, reduce, matmul, conv2d, pool2d, gather\)$/,
  });
  // inherited names are not builders
  const proto = { ...scatter, kind: 'toString' };
  t.throws(() => buildKernelStep(contextOf([proto]), group('elementwise')), { instanceOf: KilnError, message: /IR kind "toString"/ });
});

test('a group rooted at a view or an input value is a KilnError saying why such nodes never root a step', (t) => {
  const value = { kind: 'value', id: 0, shape: [2], dtype: 'float32', origin: null, isOriginValue: true, source: { from: 'node' } };
  t.throws(() => buildKernelStep(contextOf([value]), group('elementwise')), {
    instanceOf: KilnError,
    message: /^kernels: a value node \(IR #0\) cannot root a kernel step: values exist before the steps that read them/,
  });
  const view = {
    kind: 'view',
    id: 1,
    shape: [2],
    dtype: 'float32',
    origin: null,
    isOriginValue: true,
    arg: 0,
    view: { op: 'reshape', shape: [2] },
  };
  t.throws(() => buildKernelStep(contextOf([value, view]), { kind: 'elementwise', root: 1, members: [1] }), {
    instanceOf: KilnError,
    message: /^kernels: a view node \(IR #1\) cannot root a kernel step: views never compute/,
  });
});
