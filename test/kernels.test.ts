import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import test, { type ExecutionContext } from 'ava';
import {
  F,
  IndexError,
  ShapeError,
  Tensor,
  ValueError,
  cat,
  compile,
  explain,
  formatExplain,
  getKernelBackend,
  kernelCacheStats,
  manualSeed,
  nn,
  noGrad,
  randn,
  setKernelBackend,
  tensor,
} from '../src/index.js';
import { kernelsBackend, type KernelProgramCallable } from '../src/kernels/index.js';
import { setAotMinElements } from '../src/kernels/program.js';
import { useSimdGemm } from '../src/kernels/matmul.js';
import { planSlots } from '../src/kernels/memory.js';
import { symbolicTrace, type GraphModule } from '../src/fx.js';
import { close } from './helpers.js';

/**
 * The 'kernels' backend against the eager runtime: every lowered op and fusion pattern at awkward shapes,
 * whole models, the kernel cache, eager fallback inside a compiled graph, and backend selection.
 */

type Fn = (...xs: Tensor[]) => Tensor;

/** The plan table of the one program compiled so far. */
function plan(programs: KernelProgramCallable[]): string {
  return programs.map((p) => p.pprint()).join('\n');
}

/** One input through `layer` and then `fn`, as a module (layers must be submodules to be captured). */
class Applied extends nn.Module {
  constructor(
    readonly layer: nn.Module,
    readonly fn: (y: Tensor, x: Tensor) => Tensor = (y) => y,
  ) {
    super();
  }
  override forward(x: Tensor): Tensor {
    return this.fn(this.layer.call(x) as Tensor, x);
  }
}

/** `fn` (or a module) compiled vs eager, twice (the first call plans and compiles, the second runs the cached plan). */
function differential(
  t: ExecutionContext,
  name: string,
  fn: Fn | nn.Module,
  inputs: Tensor[],
  expectPlan?: RegExp,
  { eagerSteps = false } = {},
): string {
  const programs: KernelProgramCallable[] = [];
  const backend = (gm: GraphModule) => programs[programs.push(kernelsBackend(gm)) - 1]!;
  const eager = fn instanceof nn.Module ? (...xs: Tensor[]) => fn.call(...xs) as Tensor : fn;
  // A function here closes over test tensors: run-time compile() would run it eagerly (it cannot guard free
  // variables), so it is traced directly. Lowering, not capture policy, is what these tests check.
  const opt = fn instanceof nn.Module ? compile(fn, { backend }) : (backend(symbolicTrace(fn)) as unknown as Fn);
  const compiled = (...xs: Tensor[]) => (opt instanceof nn.Module ? opt.call(...xs) : opt(...xs)) as Tensor;
  noGrad(() => {
    const want = eager(...inputs);
    close(t, compiled(...inputs), want, `${name} (first call)`);
    close(t, compiled(...inputs), want, `${name} (cached plan)`);
  });
  const text = plan(programs);
  t.true(programs.length > 0, `${name}: captured`);
  if (expectPlan) t.regex(text, expectPlan, name);
  if (!eagerSteps) t.notRegex(text, /not lowered/, `${name}: everything lowered\n${text}`);
  return text;
}

const oneKernel = /: 1 kernel, 0 eager steps/;

test('element-wise chains fuse into one kernel: broadcasting, size-1 dims, odd sizes, scalars', (t) => {
  manualSeed(1);
  const chain: Fn = (x, y) => x.mul(2).add(y).relu().sub(0.5).mul(y).add(1).abs().sqrt();
  differential(t, 'chain [7, 5] + [5]', chain, [randn([7, 5]), randn([5])], oneKernel);
  differential(t, 'chain [3, 1, 5] + [4, 1]', chain, [randn([3, 1, 5]), randn([4, 1])], oneKernel);
  differential(t, 'size 1', chain, [randn([1]), randn([1, 1])], oneKernel);
  differential(t, '0-d operands', chain, [randn([]), randn([])], oneKernel);
  differential(t, 'scalar on the left', (x) => x.neg().add(3).div(x.abs().add(1)).pow(2).sub(x.pow(3)), [randn([13])], oneKernel);
  differential(
    t,
    'diamond: a value used twice is one kernel',
    (x) => {
      const y = x.mul(x).add(1);
      return y.sqrt().mul(y.log());
    },
    [randn([9, 3])],
    oneKernel,
  );
});

test('activations and the rest of the element-wise table match eager', (t) => {
  manualSeed(2);
  const x = randn([6, 7]).mul(4);
  const y = randn([7]);
  const cases: [string, Fn][] = [
    ['exp', (a) => a.exp()],
    ['exp of extremes', (a) => a.mul(30).exp()],
    ['log', (a) => a.abs().add(0.1).log()],
    ['tanh', (a) => a.tanh()],
    ['tanh near 0', (a) => a.mul(0.001).tanh()],
    ['sigmoid', (a) => a.sigmoid()],
    ['gelu', (a) => F.gelu(a)],
    ['gelu tanh', (a) => F.gelu(a, { approximate: 'tanh' })],
    ['clamp', (a) => a.clamp(-1, 0.5)],
    ['clamp min', (a) => a.clamp(0.25)],
    ['pow tensor', (a, b) => a.abs().add(0.5).pow(b)],
    ['pow 0.5 and -2', (a) => a.abs().add(1).pow(0.5).add(a.add(20).pow(-2))],
    ['where', (a, b) => a.where(b.gt(0), 0).add(a.lt(b).float())],
    ['comparisons', (a, b) => a.ge(b).float().add(a.le(0).float()).add(a.eq(a).float()).add(a.ne(b).float())],
    ['sub alpha and add alpha', (a, b) => a.sub(b, 2).add(b, 0.5)],
  ];
  for (const [name, fn] of cases) differential(t, name, fn, [x, y], oneKernel);
});

test('views on the way in are index maps: transposed, permuted, expanded, sliced, reshaped inputs', (t) => {
  manualSeed(3);
  const a = randn([4, 6]);
  const b = randn([2, 3, 4]);
  differential(t, 'transposed input', (x, y) => x.t().mul(2).add(y), [a, randn([6, 1])], oneKernel);
  differential(t, 'non-contiguous argument', (x) => x.exp().add(1), [a.t()], oneKernel);
  differential(t, 'permute + reshape', (x) => x.permute([2, 0, 1]).reshape([4, 6]).relu(), [b], oneKernel);
  differential(t, 'reshape of a transposed input (no strides express it)', (x) => x.t().reshape([24]).add(1), [a], oneKernel);
  differential(t, 'expand and unsqueeze', (x, y) => x.unsqueeze(0).expand([3, 4, 6]).mul(y.unsqueeze(-1)), [a, randn([3, 4])], oneKernel);
  differential(
    t,
    'narrow, select, squeeze',
    (x) =>
      x
        .narrow(1, 1, 3)
        .select(0, 2)
        .add(x.squeeze().sum(0).narrow(0, 0, 3)),
    [a],
  );
  differential(t, 'flatten', (x) => x.flatten().sigmoid(), [b], oneKernel);
});

test('reductions fuse their element-wise producers: sum, mean, amax, amin over dims, keepdim', (t) => {
  manualSeed(4);
  const x = randn([5, 7, 3]);
  differential(t, 'sum of a product over the last dim', (a) => a.mul(a).sum(-1), [x], oneKernel);
  differential(t, 'sum over dim 0, keepdim', (a) => a.exp().sum(0, true), [x], oneKernel);
  differential(t, 'mean over two dims', (a) => a.abs().mean([0, 2]), [x], oneKernel);
  differential(t, 'sum of everything', (a) => a.relu().sum(), [x], oneKernel);
  differential(t, 'amax and amin', (a) => a.max().sub(a.min()), [x]);
  differential(t, 'reduce a transposed input', (a) => a.transpose(0, 2).sum(2), [x], oneKernel);
  differential(t, 'long row (Kahan)', (a) => a.add(1000).sum(1), [randn([2, 20000])], oneKernel);
});

test('softmax, logSoftmax and layerNorm: a kernel per reduction, the normalisation fused with what follows', (t) => {
  manualSeed(5);
  const x = randn([4, 9]).mul(3);
  const sm = differential(t, 'softmax last dim', (a) => a.softmax(-1), [x]);
  t.regex(sm, /reduce max[\s\S]*reduce sum[\s\S]*elementwise/);
  t.regex(sm, /: 3 kernels, 0 eager steps/);
  differential(t, 'softmax dim 0', (a) => a.softmax(0), [x]);
  differential(t, 'logSoftmax', (a) => a.logSoftmax(1), [x]);
  differential(t, 'softmax of a producer, then a consumer', (a) => a.mul(2).relu().softmax(1).mul(10), [x]);
  const ln = new nn.LayerNorm([9]);
  noGrad(() => {
    ln.weight!.copy_(randn([9]));
    ln.bias!.copy_(randn([9]));
  });
  const lnText = differential(t, 'layerNorm', new Applied(ln), [randn([3, 5, 9])]);
  t.regex(lnText, /reduce sum[\s\S]*reduce sum[\s\S]*elementwise/);
  differential(t, 'F.layerNorm over two dims', (a) => F.layerNorm(a, [5, 9]), [randn([3, 5, 9])]);
});

test('matmul and linear call the GEMM with bias and relu fused; batched and transposed operands', (t) => {
  manualSeed(6);
  const lin = new nn.Linear(7, 5);
  const fused = differential(t, 'linear + relu', new Applied(lin, (y) => y.relu()), [randn([3, 7])]);
  t.regex(fused, /1 kernel, 0 eager[\s\S]*matmul\+bias\+relu/);
  differential(t, 'linear on a 3-D input', new Applied(lin), [randn([2, 3, 7])], /matmul\+bias/);
  differential(
    t,
    'F.linear with the weight as an argument, then gelu',
    (a, w, b) => F.gelu(F.linear(a, w, b)),
    [randn([4, 7]), lin.weight, lin.bias!],
    /matmul\+bias/,
  );
  differential(
    t,
    'matmul then residual add: epilogue in the next kernel',
    (a, b) =>
      a
        .matmul(b)
        .add(a.narrow(1, 0, 4))
        .relu(),
    [randn([5, 6]), randn([6, 4])],
  );
  differential(t, 'matmul with a transposed operand', (a, b) => a.matmul(b.t()), [randn([3, 5]), randn([4, 5])], /matmul/);
  differential(t, 'batched matmul', (a, b) => a.matmul(b), [randn([2, 3, 5]), randn([2, 5, 4])], /matmul/);
  differential(t, 'matmul + bias tensor + relu', (a, b, c) => a.matmul(b).add(c).relu(), [randn([1, 3]), randn([3, 1]), randn([1])]);
});

test('the gpu.js GEMM fallback (no wasm SIMD) gives the same results', (t) => {
  manualSeed(7);
  useSimdGemm(false);
  try {
    const lin = new nn.Linear(9, 6);
    differential(t, 'linear + relu on the fallback', new Applied(lin, (y) => y.relu()), [randn([5, 9])], /matmul\+bias\+relu/);
    differential(t, 'matmul on the fallback', (a, b) => a.matmul(b), [randn([2, 4, 3]), randn([2, 3, 7])]);
    // the fallback's gpu.js kernel follows setKernelBackend like every generated kernel
    const mode = getKernelBackend();
    t.is(setKernelBackend('cpu'), 'cpu');
    try {
      const text = differential(t, 'linear + relu on the cpu fallback', new Applied(lin, (y) => y.relu()), [randn([6, 9])]);
      t.regex(text, /1 kernel, 0 eager steps on cpu[\s\S]*matmul\+bias\+relu/);
    } finally {
      setKernelBackend(mode);
    }
  } finally {
    useSimdGemm(undefined);
  }
});

class Mlp extends nn.Module {
  fc1 = new nn.Linear(20, 32);
  fc2 = new nn.Linear(32, 32);
  fc3 = new nn.Linear(32, 3);
  override forward(x: Tensor): Tensor {
    return this.fc3.call(this.fc2.call(this.fc1.call(x).relu()).relu()).logSoftmax(-1);
  }
}

class SmallCnn extends nn.Module {
  features = new nn.Sequential(
    new nn.Conv2d(3, 8, 3, { padding: 1 }),
    new nn.BatchNorm2d(8),
    new nn.ReLU(),
    new nn.Conv2d(8, 8, 3, { padding: 1 }),
    new nn.BatchNorm2d(8),
    new nn.ReLU(),
    new nn.Conv2d(8, 8, 3, { padding: 1, stride: 2 }),
    new nn.BatchNorm2d(8),
    new nn.ReLU(),
    new nn.MaxPool2d(2),
  );
  head = new nn.Linear(8 * 4 * 4, 5);
  override forward(x: Tensor): Tensor {
    return this.head.call(this.features.call(x).flatten(1));
  }
}

/** Give batch norms running statistics that are not the identity. */
function randomiseBatchNorms(m: nn.Module): void {
  noGrad(() => {
    for (const mod of m.modules()) {
      if (mod instanceof nn.BatchNorm2d) {
        mod.running_mean!.copy_(randn([mod.numFeatures]).mul(0.1));
        mod.running_var!.copy_(randn([mod.numFeatures]).abs().add(0.5));
        mod.weight?.copy_(randn([mod.numFeatures]));
        mod.bias?.copy_(randn([mod.numFeatures]));
      }
    }
  });
}

test('an MLP compiled with the kernels backend equals eager', (t) => {
  manualSeed(8);
  const m = new Mlp();
  const programs: KernelProgramCallable[] = [];
  const opt = compile(m, { backend: (gm) => programs[programs.push(kernelsBackend(gm)) - 1]! });
  noGrad(() => {
    for (const batch of [4, 1]) {
      const x = randn([batch, 20]);
      close(t, opt.call(x) as Tensor, m.call(x), `MLP batch ${batch}`);
      close(t, opt.call(x) as Tensor, m.call(x), `MLP batch ${batch}, cached`);
    }
  });
  const text = plan(programs);
  t.regex(text, /matmul\+bias\+relu[\s\S]*matmul\+bias\+relu[\s\S]*matmul\+bias/);
  t.notRegex(text, /eager step[^s]|not lowered/);
});

test('a small CNN (conv-bn-relu ×3, max pool, linear) compiled in eval mode equals eager', (t) => {
  manualSeed(9);
  const m = new SmallCnn().eval();
  randomiseBatchNorms(m);
  const programs: KernelProgramCallable[] = [];
  const opt = compile(m, { backend: (gm) => programs[programs.push(kernelsBackend(gm)) - 1]! });
  const x = randn([2, 3, 16, 16]);
  noGrad(() => {
    close(t, opt.call(x) as Tensor, m.call(x), 'CNN');
    close(t, opt.call(x) as Tensor, m.call(x), 'CNN, cached plan');
  });
  const text = plan(programs);
  // each batch norm and relu went into its conv's GEMM: no element-wise kernel is left
  t.regex(text, /5 kernels, 0 eager steps/, text);
  t.regex(text, /(conv2d\+bias\+bn\+relu[\s\S]*){3}maxPool2d[\s\S]*matmul\+bias/, text);
  t.notRegex(text, /elementwise/, text);
});

/** conv → batch norm (→ relu) as modules, each randomised so the fold has something to get wrong. */
function convBn(conv: nn.Conv2d, bn: nn.BatchNorm2d, relu = true): nn.Sequential {
  const m = new nn.Sequential(conv, bn, ...(relu ? [new nn.ReLU()] : []));
  randomiseBatchNorms(m);
  return m.eval();
}

test('an eval batch norm and its relu fold into the conv GEMM: odd channels, stride 2, no conv bias, no affine, every input layout', (t) => {
  manualSeed(21);
  const x = randn([2, 3, 7, 9]);
  differential(
    t,
    'odd channels',
    convBn(new nn.Conv2d(3, 5, 3, { padding: 1 }), new nn.BatchNorm2d(5)),
    [x],
    /1 kernel[\s\S]*conv2d\+bias\+bn\+relu/,
  );
  differential(
    t,
    'stride 2, dilation 2',
    convBn(new nn.Conv2d(3, 7, 3, { stride: 2, padding: 2, dilation: 2 }), new nn.BatchNorm2d(7)),
    [x],
    /conv2d\+bias\+bn\+relu/,
  );
  differential(t, 'no conv bias', convBn(new nn.Conv2d(3, 6, [3, 2], { bias: false }), new nn.BatchNorm2d(6)), [x], /conv2d\+bn\+relu/);
  const plain = new nn.BatchNorm2d(6, { affine: false, eps: 1e-3 });
  differential(t, 'batch norm without affine', convBn(new nn.Conv2d(3, 6, 3, { padding: 1 }), plain), [x], /conv2d\+bias\+bn\+relu/);
  differential(t, 'no relu after', convBn(new nn.Conv2d(3, 4, 1), new nn.BatchNorm2d(4), false), [x], /conv2d\+bias\+bn +\[/);
  // channels-last inputs (a conv's result, read in place by the indirect GEMM): few channels, many, stride 2, a
  // 1×1 window; then a contiguous NCHW input with many channels (copied to channels-last)
  const chain = new nn.Sequential(
    ...convBn(new nn.Conv2d(3, 5, 3, { padding: 1 }), new nn.BatchNorm2d(5)).children(),
    ...convBn(new nn.Conv2d(5, 9, 3, { padding: 1, bias: false }), new nn.BatchNorm2d(9)).children(),
    ...convBn(new nn.Conv2d(9, 11, 3, { stride: 2, padding: [0, 1] }), new nn.BatchNorm2d(11, { affine: false })).children(),
    ...convBn(new nn.Conv2d(11, 6, 1), new nn.BatchNorm2d(6), false).children(),
  ).eval();
  const text = differential(t, 'conv-bn chain', chain, [x], /4 kernels, 0 eager steps/);
  t.regex(text, /copied to channels-last[\s\S]*(channels-last, in place[\s\S]*){3}/, text);
  const wide = differential(t, 'NCHW input, 9 channels', convBn(new nn.Conv2d(9, 4, 3, { padding: 1 }), new nn.BatchNorm2d(4)), [
    randn([2, 9, 5, 6]),
  ]);
  t.regex(wide, /copied to channels-last/, wide);
  differential(t, 'channels-last input of one image', chain, [randn([1, 3, 6, 5])]);
  // larger images through both channels-last paths
  const big = new nn.Sequential(
    ...convBn(new nn.Conv2d(16, 16, 3, { padding: 1 }), new nn.BatchNorm2d(16)).children(),
    ...convBn(new nn.Conv2d(16, 12, 3, { padding: 1, bias: false }), new nn.BatchNorm2d(12)).children(),
  ).eval();
  const rounds = differential(t, 'larger images', big, [randn([3, 16, 48, 48])]);
  t.regex(rounds, /copied to channels-last[\s\S]*channels-last, in place/, rounds);
  // functional, with the statistics and the conv weight as graph inputs (folded on every call, not cached)
  const fn: Fn = (a, w, mean, variance, gamma) => F.batchNorm(F.conv2d(a, w, null, { padding: 1 }), mean, variance, gamma, null).relu();
  const stats = [randn([2, 3, 3, 3]), randn([2]), randn([2]).abs().add(0.1), randn([2])];
  differential(t, 'functional batch norm', fn, [x, ...stats], /conv2d\+bn\+relu/);
});

test('a batch norm stays unfolded when something else reads the conv result, and in training mode', (t) => {
  manualSeed(22);
  const x = randn([2, 3, 6, 6]);
  class Both extends nn.Module {
    conv = new nn.Conv2d(3, 4, 3, { padding: 1 });
    bn = new nn.BatchNorm2d(4);
    override forward(a: Tensor): Tensor {
      const y = this.conv.call(a);
      return this.bn.call(y).relu().add(y);
    }
  }
  const both = new Both();
  randomiseBatchNorms(both);
  both.eval();
  const text = differential(t, 'conv result read twice', both, [x], /conv2d\+bias +\[[\s\S]*elementwise/);
  t.notRegex(text, /\+bn/, text);
  // training mode: the batch norm runs eagerly (batch statistics, running statistics updated), never folded
  const m = convBn(new nn.Conv2d(3, 4, 3, { padding: 1 }), new nn.BatchNorm2d(4));
  const twin = convBn(new nn.Conv2d(3, 4, 3, { padding: 1 }), new nn.BatchNorm2d(4));
  twin.loadStateDict(m.stateDict());
  const programs: KernelProgramCallable[] = [];
  const opt = compile(m, { backend: (gm) => programs[programs.push(kernelsBackend(gm)) - 1]! });
  const bn = m.at(1) as nn.BatchNorm2d;
  const twinBn = twin.at(1) as nn.BatchNorm2d;
  noGrad(() => {
    close(t, opt.call(x) as Tensor, twin.call(x), 'eval');
    m.train();
    twin.train();
    const before = bn.running_mean!.clone();
    for (let i = 0; i < 2; i++) close(t, opt.call(x.mul(i + 1)) as Tensor, twin.call(x.mul(i + 1)), `training call ${i}`);
    close(t, bn.running_mean!, twinBn.running_mean!, 'running mean updated like eager');
    close(t, bn.running_var!, twinBn.running_var!, 'running var updated like eager');
    t.true(bn.running_mean!.sub(before).abs().max().item() > 1e-3, 'running mean moved');
  });
  const plans = plan(programs);
  t.regex(plans, /eager +\[2, 4, 6, 6\] +_1/, plans);
  t.regex(plans, /conv2d\+bias\+bn\+relu/, plans);
});

test('a folded batch norm follows in-place changes to every operand: running stats, affine, conv weight and bias', (t) => {
  manualSeed(23);
  const m = new nn.Sequential(
    ...convBn(new nn.Conv2d(3, 8, 3, { padding: 1 }), new nn.BatchNorm2d(8)).children(),
    ...convBn(new nn.Conv2d(8, 6, 3, { padding: 1 }), new nn.BatchNorm2d(6)).children(),
  ).eval();
  const opt = compile(m);
  const x = randn([2, 3, 5, 5]);
  const [conv1, bn1, , conv2, bn2] = [0, 1, 2, 3, 4].map((i) => m.at(i));
  const edits: [string, () => void][] = [
    ['bn running_mean', () => (bn2 as nn.BatchNorm2d).running_mean!.add_(0.7)],
    ['bn running_var', () => (bn1 as nn.BatchNorm2d).running_var!.mul_(3)],
    ['bn weight', () => (bn2 as nn.BatchNorm2d).weight!.mul_(-2)],
    ['bn bias', () => (bn1 as nn.BatchNorm2d).bias!.add_(1)],
    ['conv weight', () => (conv2 as nn.Conv2d).weight.mul_(0.5)],
    ['conv bias', () => (conv1 as nn.Conv2d).bias!.sub_(0.3)],
    ['load_state_dict', () => m.loadStateDict(Object.fromEntries(Object.entries(m.stateDict()).map(([k, v]) => [k, v.mul(1.1)])))],
  ];
  noGrad(() => {
    let prev = opt.call(x) as Tensor;
    close(t, prev, m.call(x), 'before');
    for (const [what, edit] of edits) {
      edit();
      const got = opt.call(x) as Tensor;
      close(t, got, m.call(x), `after an in-place change to ${what}`);
      t.true(got.sub(prev).abs().max().item() > 1e-3, `${what}: the change shows`);
      prev = got;
    }
  });
});

test('conv2d variants and pooling: stride, dilation, padding, relu epilogue, avg pooling options', (t) => {
  manualSeed(10);
  const w = randn([4, 3, 3, 2]);
  const b = randn([4]);
  const x = randn([2, 3, 9, 8]);
  differential(
    t,
    'conv2d stride/dilation + relu',
    (a, cw, cb) => F.conv2d(a, cw, cb, { stride: [2, 1], padding: [1, 2], dilation: [1, 2] }).relu(),
    [x, w, b],
    /conv2d\+bias\+relu/,
  );
  const w2 = randn([2, 3, 3, 3]);
  differential(t, "conv2d 'same' without bias", (a) => F.conv2d(a, w2, null, { padding: 'same' }).mul(2), [x]);
  differential(t, 'maxPool2d with padding', (a) => F.maxPool2d(a, 3, { stride: 2, padding: 1 }), [x], /maxPool2d/);
  differential(t, 'maxPool2d ceil mode', (a) => F.maxPool2d(a, 2, { ceilMode: true }), [x]);
  differential(t, 'avgPool2d', (a) => F.avgPool2d(a, 3, { stride: 2, padding: 1 }), [x], /avgPool2d/);
  differential(t, 'avgPool2d countIncludePad false', (a) => F.avgPool2d(a, 2, { padding: 1, countIncludePad: false }), [x]);
  differential(t, 'avgPool2d divisorOverride', (a) => F.avgPool2d(a, 2, { divisorOverride: 3 }), [x]);
  differential(t, 'pooling a transposed input', (a) => F.maxPool2d(a.transpose(2, 3), 2), [x]);
  // max pooling a conv result (channels-last in memory): the 2×2 loop, the general one, a ceil-mode edge
  const conv = (a: Tensor) => F.conv2d(a, w, b, { padding: 1 });
  differential(t, 'maxPool2d(2) of a conv result', (a) => F.maxPool2d(conv(a), 2), [x], /conv2d\+bias +\[[\s\S]*maxPool2d/);
  differential(t, 'maxPool2d 3/2/1 of a conv result', (a) => F.maxPool2d(conv(a), 3, { stride: 2, padding: 1, dilation: [1, 2] }), [x]);
  differential(t, 'maxPool2d ceil mode of a conv result', (a) => F.maxPool2d(conv(a), 2, { ceilMode: true }), [x]);
  const nan = x.clone();
  nan._storage.data[5] = NaN;
  nan._storage.data[40] = NaN;
  differential(t, 'NaN wins in max pooling', (a) => F.maxPool2d(a, 2), [nan]);
  differential(t, 'NaN wins in max pooling a conv result', (a) => F.maxPool2d(conv(a), 2), [nan]);
  const gathered = differential(t, 'conv2d of a transposed input (gpu.js im2row)', (a) => F.conv2d(a.transpose(2, 3), w, b), [x]);
  t.regex(gathered, /im2row \[\d+, 18\] \(gpu\.js\)/);
});

test('cache: a second call with the same shapes compiles nothing, and neither does a second compile of the same graph', (t) => {
  manualSeed(11);
  const m = new Mlp();
  const x = randn([6, 20]);
  noGrad(() => {
    const a = compile(m);
    a.call(x);
    const before = kernelCacheStats();
    a.call(x);
    const after = kernelCacheStats();
    t.is(after.compiled, before.compiled, 'second call compiles no kernel');
    t.is(after.plans, before.plans, 'second call makes no plan');
    const b = compile(m);
    close(t, b.call(x) as Tensor, m.call(x), 'second compiled copy');
    const third = kernelCacheStats();
    t.is(third.compiled, after.compiled, 'same graph, same shapes: kernels come from the cache');
    t.is(third.plans, after.plans + 1);
    b.call(randn([3, 20])); // new shapes: a new plan, new kernels
    t.true(kernelCacheStats().plans > third.plans);
  });
});

test('an op that is not lowered runs eagerly inside the compiled program', (t) => {
  manualSeed(12);
  const fn: Fn = (x) =>
    cat([x.relu(), x.mul(2)], 1)
      .exp()
      .sum(1)
      .add(x.argmax(1).float());
  const text = differential(t, 'cat and argmax stay eager', fn, [randn([4, 3])], undefined, { eagerSteps: true });
  t.regex(text, /eager +\[4, 6\] +cat/);
  t.regex(text, /eager +\[4\] +argmax/);
  t.regex(text, /elementwise/);
});

test('eager nodes run once per call: a forward hook and training-mode dropout inside a compiled model', (t) => {
  class Hooked extends nn.Module {
    fc = new nn.Linear(4, 4);
    drop = new nn.Dropout(0.5);
    override forward(x: Tensor): Tensor {
      return this.drop.call(this.fc.call(x).relu()).mul(3);
    }
  }
  const m = new Hooked();
  let calls = 0;
  m.fc.registerForwardHook(() => void calls++);
  const opt = compile(m);
  const x = randn([3, 4]);
  noGrad(() => {
    for (let i = 0; i < 3; i++) {
      manualSeed(100 + i);
      const got = opt.call(x) as Tensor;
      manualSeed(100 + i);
      const want = m.call(x);
      close(t, got, want, `call ${i}`);
    }
  });
  t.is(calls, 6, 'the hook ran once per compiled call and once per eager call');
});

test('gradients: with parameters requiring grad the program runs eagerly and gradients equal eager', (t) => {
  manualSeed(13);
  const m = new Mlp();
  const opt = compile(m);
  const x = randn([5, 20]);
  (opt.call(x) as Tensor).sum().backward();
  const g1 = m.fc1.weight.grad!.clone();
  m.zeroGrad();
  m.call(x).sum().backward();
  close(t, g1, m.fc1.weight.grad!, 'fc1.weight.grad');
  const xg = randn([2, 20], { requiresGrad: true });
  const f = compile((a: Tensor) => a.tanh().mul(a).sum());
  (f(xg) as Tensor).backward();
  const gx = xg.grad!.clone();
  xg.grad = null;
  xg.tanh().mul(xg).sum().backward();
  close(t, gx, xg.grad!, 'input gradient');
});

test('bool and float results, int inputs, and outputs that are views keep eager dtypes and shapes', (t) => {
  const idx = tensor([[1, 2, 3]], { dtype: 'int32' });
  differential(t, 'int input to float', (a, i) => a.add(i.float()).mul(0.5), [randn([2, 3]), idx]);
  const xs = randn([5]);
  differential(t, 'a bool result', (a) => a.gt(0), [xs], oneKernel);
  differential(t, 'a transposed output', (a) => a.mul(2).t(), [randn([2, 3])], oneKernel);
});

test.serial('setKernelBackend: an unavailable backend warns once and falls back; results stay correct', (t) => {
  const warnings: [string, string | undefined][] = [];
  const emit = process.emitWarning;
  process.emitWarning = ((w: string, type?: string) => void warnings.push([w, type])) as typeof process.emitWarning;
  try {
    t.is(setKernelBackend('headlessgl'), 'webasm');
    t.is(getKernelBackend(), 'webasm');
    t.is(warnings.length, 1);
    const [msg, type] = warnings[0]!;
    t.is(type, 'KilnWarning');
    t.regex(msg, /'headlessgl' is unavailable/);
    t.regex(msg, /'gl'/);
    t.regex(msg, /using 'webasm' instead/);
    differential(t, 'after the fallback', (a) => a.exp().add(1), [randn([3])], oneKernel);

    warnings.length = 0;
    t.is(setKernelBackend('webgpu'), 'webasm');
    t.is(warnings.length, 1);
    t.regex(warnings[0]![0], /'webgpu' is unavailable \(.+\); using 'webasm' instead/);

    warnings.length = 0;
    t.is(setKernelBackend('cpu'), 'cpu');
    t.is(warnings.length, 0);
    const text = differential(t, 'on the cpu backend', (a, b) => a.softmax(1).mul(b).sum(0), [randn([3, 4]), randn([4])]);
    t.regex(text, /on cpu/);
  } finally {
    process.emitWarning = emit;
    setKernelBackend('webasm');
  }
});

test('bad input: unknown backend names, and shape errors from the eager check with the op and shapes', (t) => {
  t.throws(() => setKernelBackend('cuda' as never), {
    instanceOf: ValueError,
    message: /unknown kernel backend "cuda" \(expected one of webasm, cpu, headlessgl, webgpu\)/,
  });
  const m = new Mlp();
  const opt = compile(m);
  noGrad(() => {
    t.throws(() => opt.call(randn([2, 19])), {
      instanceOf: ShapeError,
      message: /Linear\(in_features=20, out_features=32\): expected input \[\.\.\., 20\], got \[2, 19\]/,
    });
    const f = compile((a: Tensor, b: Tensor) => a.add(b).relu());
    t.throws(() => f(randn([2, 3]), randn([4])), { instanceOf: ShapeError, message: /add: shapes \[2, 3\] and \[4\] cannot be broadcast/ });
  });
});

test('KILN_LOG=kernels prints which nodes went into which kernel, as an aligned table on stderr', (t) => {
  mkdirSync('test/.tmp', { recursive: true });
  const script = 'test/.tmp/kernels-log.ts';
  writeFileSync(
    script,
    [
      "import { compile, nn, noGrad, randn } from '../../src/index.js';",
      'const m = new nn.Sequential(new nn.Linear(6, 8), new nn.ReLU(), new nn.Linear(8, 2), new nn.Softmax(1));',
      'noGrad(() => compile(m).call(randn([3, 6])));',
    ].join('\n'),
  );
  const r = spawnSync(process.execPath, ['--import', 'tsx', script], { encoding: 'utf8', env: { ...process.env, KILN_LOG: 'kernels' } });
  t.is(r.status, 0, r.stderr);
  const table = r.stderr.split('\n').filter((l) => l.startsWith('kiln kernels') || l.startsWith('  '));
  t.deepEqual(table, [
    'kiln kernels: Sequential: 5 kernels, 0 eager steps on webasm',
    '  #  kind              output  nodes',
    '  1  matmul+bias+relu  [3, 8]  _0, _1',
    '  2  matmul+bias       [3, 2]  _2',
    '  3  reduce max        [3, 1]  _3',
    '  4  reduce sum        [3, 1]  _3',
    '  5  elementwise       [3, 2]  _3',
  ]);
});

test("explain() shows each graph's kernel plan, the table pprint() prints, with user code run once", (t) => {
  manualSeed(17);
  const m = new Mlp();
  const x = randn([5, 20]);
  const report = noGrad(() => explain(m)(x));
  t.is(report.kernels?.length, 1);
  const programs: KernelProgramCallable[] = [];
  const opt = compile(m, { backend: (gm: GraphModule) => programs[programs.push(kernelsBackend(gm)) - 1]! });
  noGrad(() => opt.call(x));
  t.is(report.kernels![0], programs[0]!.pprint(), 'the same table as the compiled program');
  t.regex(report.kernels![0]!, /^kiln kernels: Mlp: \d+ kernels, 0 eager steps on webasm\n/);
  t.regex(
    report.kernels![0]!,
    /\n {2}1 {2}matmul\+bias\+relu +\[5, 32\] +fc1, relu\n {2}2 {2}matmul\+bias\+relu +\[5, 32\] +fc2, relu_1\n/,
  );
  const text = formatExplain(report);
  t.regex(text, /\n {2}}\n {2}kernels: \d+ kernels, 0 eager steps on webasm\n {4}# {2}kind +output +nodes\n {4}1 {2}matmul\+bias\+relu /);

  // while gradients are recorded AOT autograd's forward and backward graphs run; explain shows the forward plan
  // (this Mlp is below the size at which training calls go through AOT autograd: lower it for the test)
  const prevMin = setAotMinElements(0);
  const grad = explain(m)(x).kernels![0]!;
  setAotMinElements(prevMin);
  t.regex(explain(m)(x).kernels![0]!, /^kiln kernels: Mlp runs eagerly while gradients are recorded/, 'small: eager under grad');
  t.regex(
    grad,
    /^kiln kernels: Mlp while gradients are recorded: AOT autograd graph \d+, \d+ tensors \([\d.]+ K?i?B\) saved for backward\n/,
  );
  t.regex(grad, /\nkiln kernels: Mlp forward: \d+ kernels, 0 eager steps on webasm\n/);
  t.regex(grad, /\nkiln kernels: Mlp backward: compiled at the first backward\(\)/);

  // other backends: no kernels field
  t.false('kernels' in explain(compile(m, { backend: 'eager' }))(x));

  // capture only traces, so the graph's one run is explain's: a hooked submodule's hook runs once
  let calls = 0;
  const hooked = new Applied(new nn.Linear(3, 3), (y) => y.relu());
  hooked.layer.registerForwardHook(() => void calls++);
  const h = noGrad(() => explain(hooked)(randn([2, 3])));
  t.is(calls, 1);
  t.regex(h.kernels![0]!, /eager +\[2, 3\] +layer \(.+\)\n.*elementwise +\[2, 3\] +relu/);
});

test('liveness: GEMM results whose lifetimes do not overlap share a buffer; escaping ones get none', (t) => {
  // five chained GEMMs: 1→2→3→4→5, the last one the output
  const steps = [0, 1, 2, 3, 4].map((i) => ({ defines: 10 + i, reads: i === 0 ? [1] : [10 + i - 1], gemmOutput: true }));
  const plan = planSlots(
    steps,
    (id) => (id === 12 ? 300 : 200),
    (id) => id === 14,
  );
  t.deepEqual(
    [...plan.slotOf],
    [
      [10, 0],
      [11, 1],
      [12, 0],
      [13, 1],
    ],
  );
  t.deepEqual(plan.sizes, [300, 200]);
  // an MLP's plan reuses them on every call: results stay right
  manualSeed(14);
  const m = new nn.Sequential(...[0, 1, 2, 3].flatMap(() => [new nn.Linear(6, 6), new nn.ReLU()]), new nn.Linear(6, 2));
  differential(t, 'deep MLP with shared buffers', m, [randn([5, 6])], /5 kernels, 0 eager/);
});

test('several outputs, and graphs with in-place ops (which run eagerly, in order)', (t) => {
  const two = compile((x: Tensor) => [x.relu(), x.exp().sum(1)]);
  const x = randn([3, 4]);
  noGrad(() => {
    const [a, b] = two(x) as Tensor[];
    close(t, a!, x.relu(), 'first output');
    close(t, b!, x.exp().sum(1), 'second output');
  });
  const programs: KernelProgramCallable[] = [];
  const inPlace = compile(
    (y: Tensor) => {
      const z = y.mul(2);
      z.add_(1);
      return z.relu();
    },
    { backend: (gm) => programs[programs.push(kernelsBackend(gm)) - 1]! },
  );
  noGrad(() => close(t, inPlace(x) as Tensor, x.mul(2).add(1).relu(), 'in-place'));
  t.regex(plan(programs), /runs eagerly \(in-place op add_/);
});

test('embedding lookups are a kernel (with the eager index check); a transposed table is read in place', (t) => {
  manualSeed(15);
  const emb = new nn.Embedding(10, 6);
  const ids = tensor(
    [
      [1, 0, 9],
      [3, 3, 7],
    ],
    { dtype: 'int32' },
  );
  const text = differential(t, 'embedding then layer ops', new Applied(emb, (y) => y.mul(2).sum(-1)), [ids], /embedding/);
  t.regex(text, /embedding +\[2, 3, 6\]/);
  const table = randn([6, 10]);
  differential(t, 'F.embedding of a transposed table', (i, tab) => F.embedding(i, tab.t()).relu(), [ids, table], /embedding/);
  const opt = compile(new Applied(emb));
  noGrad(() => {
    opt.call(ids);
    // same shape: the cached plan's check; a new shape: the eager run that plans it
    const bad = tensor(
      [
        [1, 10, 2],
        [0, 0, 0],
      ],
      { dtype: 'int32' },
    );
    t.throws(() => opt.call(bad), {
      instanceOf: IndexError,
      // the node and its source line are added on the way out of the graph (ISSUE13 item 9)
      message: /^embedding: index 10 is out of range for an embedding table of 10 rows \(in graph node '\w+'\)\n {4}at /,
    });
    t.throws(() => opt.call(tensor([[1, -1, 2]], { dtype: 'int32' })), {
      instanceOf: IndexError,
      message: /^embedding: index -1 is out of range for an embedding table of 10 rows/,
    });
  });
});
