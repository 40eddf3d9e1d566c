import test from 'ava';
import { F, KilnError, Tensor, cat, compile, explain, formatExplain, manualSeed, nn, noGrad, ops, randn, tensor } from '../src/index.js';
import { GraphModule, Tracer, symbolicTrace } from '../src/fx.js';
import { kernelsBackend, type KernelProgramCallable } from '../src/kernels/index.js';
import { METHOD_ALIASES } from '../src/kernels/method-aliases.js';
import { isEager, type Eager, type LayerForm } from '../src/runtime/lowering.js';
import { defineOp, type OpSpec } from '../src/runtime/op.js';
import { close } from './helpers.js';

/**
 * The op table drives the kernels (issue 14, items 1 and 2): every op states its lowering or why it runs
 * eagerly, every standard layer reaches the kernels as the op call it declares, and the plan and `explain`
 * print the declared reasons. The lists are computed from the registry and from `nn`, so a new op or layer
 * without a rule fails here.
 */

/** Ops that run eagerly inside compiled programs; every other op lowers (whether it may depend on its arguments). */
const EAGER_OPS = [
  'max',
  'min',
  'argmax',
  'dropoutMask',
  'split',
  'unbind',
  'gather',
  'indexSelect',
  'scatterAdd',
  'sliceScatter',
  'selectScatter',
  'cat',
  'stack',
  'index',
  'viewScatter',
  'conv1d',
  'adaptiveAvgPool2d',
  'embeddingBag',
  'nllLoss',
  'crossEntropy',
  'mseLoss',
  // native and backward ops of the nn, convolution and pooling rules (issue 15, item 1): kernels come later
  'convolutionBackward',
  'maxPool2dWithIndices',
  'maxPool2dWithIndicesBackward',
  'avgPool2dBackward',
  'adaptiveAvgPool2dBackward',
  'nativeLayerNorm',
  'nativeLayerNormBackward',
  'nativeBatchNorm',
  'nativeBatchNormBackward',
  'nativeDropout',
  'nativeDropoutBackward',
  'embeddingDenseBackward',
  'embeddingBagBackward',
  'nllLossForward',
  'nllLossBackward',
  'nllLossWeightBackward',
  // AOT autograd's synthetic bases
  'asStrided',
].sort();

test('every op in the registry is lowered or eager with a reason that names it', (t) => {
  const eager: string[] = [];
  for (const [name, op] of ops.registry) {
    const lower = op.lower as unknown;
    if (isEager(lower)) {
      t.regex(lower.eager, new RegExp(`^${name}: \\S`), `${name}'s eager reason names the op`);
      eager.push(name);
    } else t.is(typeof lower, 'function', `${name} has a lowering`);
  }
  t.deepEqual(eager.sort(), EAGER_OPS);
  t.true(ops.registry.size > EAGER_OPS.length + 40);
});

// @ts-expect-error: an op's spec must state its lowering or why it runs eagerly
const NO_LOWERING: OpSpec<(x: Tensor) => Tensor> = { schema: 'noLowering(Tensor input)', forward: (_ctx, x) => x };

test('an op defined without a lowering or an eager reason is refused (and does not compile)', (t) => {
  const err = t.throws(() => defineOp(NO_LOWERING), { instanceOf: KilnError });
  t.regex(err!.message, /^defineOp noLowering: 'lower' must be a lowering or \{ eager: 'why it runs eagerly' \}, got undefined/);
  t.throws(() => defineOp<(x: Tensor) => Tensor>({ ...NO_LOWERING, lower: { eager: ' ' } }), {
    instanceOf: KilnError,
    message: /defineOp noLowering/,
  });
  t.false(ops.registry.has('noLowering'));
});

test("method aliases are keyed by Tensor's own methods, and detach is no op", (t) => {
  for (const name of Object.keys(METHOD_ALIASES)) {
    t.is(typeof (Tensor.prototype as unknown as Record<string, unknown>)[name], 'function', `Tensor.${name} is a method`);
  }
  t.false(ops.registry.has('detach'));
});

/** The standard layers, as the tracer counts them: every nn class but the containers. */
const CONTAINERS: unknown[] = [nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict];
const STANDARD_LAYERS = Object.entries(nn).filter(
  ([, v]) => typeof v === 'function' && v.prototype instanceof nn.Module && !CONTAINERS.includes(v),
);

/** An instance of each standard layer (in the mode it is checked in) with an input; a new layer needs one. */
const LAYER_CASES: Record<string, () => [nn.Module, Tensor]> = {
  Linear: () => [new nn.Linear(4, 3), randn([2, 4])],
  Conv1d: () => [new nn.Conv1d(2, 3, 3), randn([1, 2, 8])],
  Conv2d: () => [new nn.Conv2d(2, 3, 3), randn([1, 2, 6, 6])],
  BatchNorm1d: () => [new nn.BatchNorm1d(3).eval(), randn([4, 3])],
  BatchNorm2d: () => [new nn.BatchNorm2d(3), randn([2, 3, 4, 4])], // training mode: eager
  LayerNorm: () => [new nn.LayerNorm(5), randn([2, 5])],
  Embedding: () => [
    new nn.Embedding(6, 3),
    tensor(
      [
        [1, 5],
        [0, 2],
      ],
      { dtype: 'int32' },
    ),
  ],
  EmbeddingBag: () => [
    new nn.EmbeddingBag(6, 3),
    tensor(
      [
        [1, 5],
        [0, 2],
      ],
      { dtype: 'int32' },
    ),
  ],
  Dropout: () => [new nn.Dropout(0.3).eval(), randn([3, 4])],
  ReLU: () => [new nn.ReLU(), randn([3, 4])],
  GELU: () => [new nn.GELU({ approximate: 'tanh' }), randn([3, 4])],
  Sigmoid: () => [new nn.Sigmoid(), randn([3, 4])],
  Tanh: () => [new nn.Tanh(), randn([3, 4])],
  Softmax: () => [new nn.Softmax(1), randn([3, 4])],
  Flatten: () => [new nn.Flatten(), randn([2, 3, 4])],
  Identity: () => [new nn.Identity(), randn([3, 4])],
  MaxPool2d: () => [new nn.MaxPool2d(2), randn([1, 2, 6, 6])],
  AvgPool2d: () => [new nn.AvgPool2d(2, { stride: 1 }), randn([1, 2, 5, 5])],
  AdaptiveAvgPool2d: () => [new nn.AdaptiveAvgPool2d(2), randn([1, 2, 6, 6])],
};

/** The layer applied to the input and then an element-wise step, so the graph has a lowered neighbour. */
class Applied extends nn.Module {
  constructor(readonly layer: nn.Module) {
    super();
  }
  override forward(x: Tensor): Tensor {
    return (this.layer.call(x) as Tensor).mul(2);
  }
}

/** The reason a layer's declared form gives for running eagerly (its own, or its op's), or null when it lowers. */
function declaredReason(form: LayerForm): string | null {
  if (isEager(form)) return form.eager;
  if ('identity' in form) return null;
  return isEager(form.op.lower) ? form.op.lower.eager : null;
}

test('every standard layer reaches the kernels as the op call it declares: lowered, or eager with the declared reason', (t) => {
  manualSeed(5);
  t.deepEqual(
    STANDARD_LAYERS.map(([n]) => n).filter((n) => !(n in LAYER_CASES)),
    [],
    'a case for every standard layer',
  );
  const lowered: string[] = [];
  for (const [name, make] of Object.entries(LAYER_CASES)) {
    const [layer, input] = make();
    const form = (layer as unknown as { functional(x: unknown): LayerForm }).functional(input);
    const reason = declaredReason(form);
    const programs: KernelProgramCallable[] = [];
    const m = new Applied(layer);
    if (!layer.training) m.eval();
    const opt = compile(m, { backend: (gm) => programs[programs.push(kernelsBackend(gm)) - 1]! });
    noGrad(() => {
      const want = m.call(input);
      close(t, opt.call(input), want, name);
    });
    const plan = programs.map((p) => p.pprint()).join('\n');
    if (reason === null) {
      t.notRegex(plan, /^ *\d+ +eager /m, `${name} lowers\n${plan}`);
      lowered.push(name);
    } else t.true(plan.includes(`(not lowered: ${reason})`), `${name} is eager: ${reason}\n${plan}`);
  }
  // the layers whose op lowers (BatchNorm1d in eval, Dropout in eval; BatchNorm2d here in training)
  t.deepEqual(lowered.sort(), [
    'AvgPool2d',
    'BatchNorm1d',
    'Conv2d',
    'Dropout',
    'Embedding',
    'Flatten',
    'GELU',
    'Identity',
    'LayerNorm',
    'Linear',
    'MaxPool2d',
    'ReLU',
    'Sigmoid',
    'Softmax',
    'Tanh',
  ]);
});

test('a layer with forward hooks stays opaque, and the plan says so', (t) => {
  const layer = new nn.Linear(4, 4);
  let calls = 0;
  layer.registerForwardHook(() => void calls++);
  const programs: KernelProgramCallable[] = [];
  const opt = compile(new Applied(layer), { backend: (gm) => programs[programs.push(kernelsBackend(gm)) - 1]! });
  noGrad(() => opt.call(randn([2, 4])));
  t.is(calls, 1);
  t.regex(programs[0]!.pprint(), /\(not lowered: Linear: has forward hooks, which run with its eager forward\)/);
});

/** A model whose graph holds eager ops and layers next to lowered ones. */
class Mixed extends nn.Module {
  fc = new nn.Linear(6, 6);
  conv = new nn.Conv1d(1, 1, 3, { padding: 1 });
  bn = new nn.BatchNorm1d(6);
  override forward(x: Tensor): Tensor {
    const y = cat([x.relu(), x.sin()], 1).exp2();
    const z = this.bn.call(this.fc.call(y.narrow(1, 0, 6)));
    return this.conv.call(z.unsqueeze(1)).squeeze(1).add(x.argmax(1).float().unsqueeze(1));
  }
}

test('explain prints each eager node with the reason its op or layer declares', (t) => {
  manualSeed(6);
  // under noGrad the graph itself is planned (while gradients are recorded, AOT autograd's graphs are)
  const r = noGrad(() => explain(new Mixed())(randn([3, 3])));
  const text = formatExplain(r);
  const reasonOf = (op: string) => (ops.registry.get(op)!.lower as Eager).eager;
  for (const reason of [reasonOf('cat'), reasonOf('argmax'), reasonOf('conv1d'), 'BatchNorm1d: training mode uses batch statistics']) {
    t.true(text.includes(`(not lowered: ${reason}`), `${reason}\n${text}`);
  }
  // and the lowered neighbours are kernels: sin and exp2 on either side of the eager cat, linear a GEMM
  t.regex(text, /elementwise +\[3, 3\] +sin\n/);
  t.regex(text, /elementwise +\[3, 6\] +exp2\n/);
  t.regex(text, /matmul\+bias +\[3, 6\] +fc\n/);
  t.regex(text, /: 6 kernels, 4 eager steps/);
});

test('the GEMM epilogue folds max(x, 0) by its pattern: clamp(min=0) after linear is the relu epilogue', (t) => {
  // Regression: the fold matched the op name 'relu', so clamp(0) after a matmul was a separate kernel.
  manualSeed(7);
  const w = randn([5, 4]);
  const b = randn([5]);
  const cases: [string, (x: Tensor) => Tensor, RegExp][] = [
    ['clamp(0)', (x) => F.linear(x, w, b).clamp(0), /matmul\+bias\+relu/],
    ['relu', (x) => F.linear(x, w, b).relu(), /matmul\+bias\+relu/],
    ['matmul then clamp(0)', (x) => x.matmul(w.t()).clamp(0, null), /matmul\+relu/],
  ];
  for (const [name, fn, want] of cases) {
    const program = kernelsBackend(symbolicTrace(fn));
    const x = randn([3, 4]);
    noGrad(() => close(t, (program as unknown as (x: Tensor) => Tensor)(x), fn(x), name));
    const plan = program.pprint();
    t.regex(plan, want, `${name}\n${plan}`);
    t.regex(plan, /: 1 kernel, 0 eager steps/, `${name}\n${plan}`);
  }
  // max(x, 0.5) is not relu: it stays an element-wise kernel after the GEMM
  const notRelu = kernelsBackend(symbolicTrace((x: Tensor) => F.linear(x, w, b).clamp(0.5)));
  noGrad(() => (notRelu as unknown as (x: Tensor) => Tensor)(randn([3, 4])));
  t.notRegex(notRelu.pprint(), /\+relu/);
  t.regex(notRelu.pprint(), /: 2 kernels/);
});

test('relu and clamp are max/min as in PyTorch: NaN stays NaN, and clamp gives max where min > max; compiled equals eager', (t) => {
  const x = tensor([NaN, -1, 0.25, 3]);
  t.true(Number.isNaN(x.relu().data()[0]!), 'torch.relu(nan) is nan');
  t.deepEqual(Array.from(x.clamp(2, 1).data()).slice(1), [1, 1, 1], 'torch.clamp(x, min=2, max=1) is 1');
  t.true(Number.isNaN(x.clamp(-0.5, 0.5).data()[0]!));
  for (const fn of [(a: Tensor) => a.relu().mul(1), (a: Tensor) => a.clamp(2, 1).mul(1), (a: Tensor) => a.clamp(-0.5, 0.5).mul(1)]) {
    const program = kernelsBackend(symbolicTrace(fn));
    noGrad(() => close(t, (program as unknown as (x: Tensor) => Tensor)(x), fn(x), String(fn)));
  }
});

test('a traced method call with an options object lowers with those keyword arguments (x.add(y, { alpha: 2 }))', (t) => {
  // Regression: the options object was bound as `alpha` itself and the kernel failed to compile (eager fallback).
  manualSeed(8);
  const fn = (x: Tensor, y: Tensor) =>
    x
      .add(y, { alpha: 2 } as unknown as number)
      .sub(x, { alpha: -0.5 } as unknown as number)
      .sum(1, { keepdim: true } as unknown as boolean);
  const program = kernelsBackend(symbolicTrace(fn));
  const x = randn([3, 4]);
  const y = randn([4]);
  noGrad(() => close(t, (program as unknown as typeof fn)(x, y), fn(x, y), 'alpha and keepdim as options'));
  t.regex(program.pprint(), /: 1 kernel, 0 eager steps/, program.pprint());
});

test('a subclass of a standard layer that overrides forward is not lowered by the parent form', (t) => {
  // A custom tracer may keep it as one call_module; the form beside Linear.forward does not describe it.
  class Doubled extends nn.Linear {
    override forward(x: Tensor): Tensor {
      return super.forward(x).mul(2);
    }
  }
  class LeafTracer extends Tracer {
    override isLeafModule(m: nn.Module, path: string): boolean {
      return m instanceof Doubled || super.isLeafModule(m, path);
    }
  }
  manualSeed(9);
  const m = new Applied(new Doubled(4, 3));
  const gm = new GraphModule(m, new LeafTracer().trace(m));
  const program = kernelsBackend(gm);
  const x = randn([2, 4]);
  noGrad(() => close(t, (program as unknown as (x: Tensor) => Tensor)(x), m.call(x), 'Doubled'));
  t.regex(program.pprint(), /\(not lowered: Doubled: its forward is not the one its functional form describes\)/);
});

test('an argument a trace recorded as undefined takes its default: a held tensor plus an input (this.bias.add(x))', (t) => {
  // Regression: `this.bias.add(x)` runs Tensor.add with alpha undefined, which the trace keeps; the lowering
  // multiplied by undefined and threw while planning.
  class Held extends nn.Module {
    bias = randn([4]);
    override forward(x: Tensor): Tensor {
      return this.bias.add(x).sub(x.relu());
    }
  }
  manualSeed(10);
  const programs: KernelProgramCallable[] = [];
  const m = new Held();
  const opt = compile(m, { backend: (gm) => programs[programs.push(kernelsBackend(gm)) - 1]! });
  const x = randn([3, 4]);
  noGrad(() => close(t, opt.call(x), m.call(x), 'held tensor plus input'));
  t.regex(programs[0]!.pprint(), /: 1 kernel, 0 eager steps/, programs[0]!.pprint());
});
