import test, { type ExecutionContext } from 'ava';
import { KilnError, compile, manualSeed, nn, noGrad, ops, randn, tensor, type Tensor } from '../src/index.js';
import type { GraphModule } from '../src/fx.js';
import { convWeights, fromChannelsLast, toChannelsLast } from '../src/kernels/conv-host.js';
import {
  PackedConvWeight,
  avgPool2d,
  avgPool2dBackward,
  conv2dBiasGrad,
  conv2dForward,
  conv2dInputGrad,
  conv2dWeightGrad,
  maxPool2d,
  maxPool2dBackward,
  type ConvShape,
  type PoolShape,
} from '../src/kernels/conv/conv-wasm.js';
import { getGemmThreads, packB, setGemmThreads } from '../src/kernels/gemm/index.js';
import { lastConvJobChunks } from '../src/kernels/conv/threads.js';
import { WinogradWeight, winogradApplies, winogradCallCount } from '../src/kernels/conv/winograd.js';
import { avgPool2dBackwardWasm, convolutionBackwardWasm, maxPool2dBackwardWasm } from '../src/kernels/conv/backward.js';
import { kernelsBackend, type KernelProgramCallable } from '../src/kernels/index.js';
import type { Window2d } from '../src/runtime/cpu/conv.js';
import { close } from './helpers.js';

/**
 * The wasm SIMD convolution and pooling kernels of the 'kernels' backend (src/kernels/conv): each kernel
 * against the eager runtime's forward and its gradients (conv2d and the pools, backward through autograd),
 * on channels-last data, over strides, paddings, dilations, groups, odd sizes, one image and channel counts
 * that are not multiples of 4; then compiled models against eager; then bad input.
 */

type Pair = [number, number];

/** NCHW tensor → channels-last array. */
function nhwc(x: Tensor): Float32Array {
  const [N, C, H, W] = x.shape as [number, number, number, number];
  const out = new Float32Array(N * C * H * W);
  toChannelsLast(x.contiguous().data() as Float32Array, 0, N, C, H, W, out);
  return out;
}

/** channels-last array → NCHW tensor of `shape`. */
function nchw(a: Float32Array, shape: readonly number[]): Tensor {
  const [N, C, H, W] = shape as [number, number, number, number];
  const out = new Float32Array(N * C * H * W);
  fromChannelsLast(a, 0, N, C, H, W, out);
  return tensor(out, { shape: [...shape] });
}

function windowOf(k: Pair, s: Pair, p: Pair, d: Pair, H: number, W: number, out: readonly number[]): Window2d {
  return { kh: k[0], kw: k[1], sh: s[0], sw: s[1], ph: p[0], pw: p[1], dh: d[0], dw: d[1], H, W, OH: out[2]!, OW: out[3]! };
}

interface ConvCase {
  name: string;
  x: [number, number, number, number];
  O: number;
  k: Pair;
  stride?: Pair;
  padding?: Pair;
  dilation?: Pair;
  groups?: number;
}

const convCases: ConvCase[] = [
  { name: '3×3 pad 1, 3 → 16 channels (the first conv of a CNN)', x: [2, 3, 8, 8], O: 16, k: [3, 3], padding: [1, 1] },
  { name: 'one image, odd sizes, 5 → 7 channels', x: [1, 5, 9, 7], O: 7, k: [3, 3], padding: [1, 1] },
  { name: 'stride 2, asymmetric padding, non-square kernel', x: [2, 6, 9, 8], O: 10, k: [3, 2], stride: [2, 1], padding: [1, 0] },
  { name: 'dilation 2 with padding 2', x: [2, 4, 9, 9], O: 9, k: [3, 3], padding: [2, 2], dilation: [2, 2] },
  {
    name: 'stride, padding and dilation all differ by axis',
    x: [1, 5, 11, 10],
    O: 6,
    k: [2, 3],
    stride: [2, 3],
    padding: [1, 2],
    dilation: [3, 1],
  },
  { name: '1×1 window', x: [3, 8, 5, 5], O: 9, k: [1, 1] },
  { name: 'groups 2', x: [2, 6, 7, 9], O: 10, k: [3, 3], stride: [2, 2], padding: [2, 1], dilation: [2, 1], groups: 2 },
  { name: 'depthwise (groups = channels = 5)', x: [2, 5, 6, 6], O: 5, k: [3, 3], padding: [1, 1], groups: 5 },
  { name: 'groups 3, 3 output channels per group', x: [1, 9, 5, 7], O: 9, k: [2, 2], groups: 3 },
  { name: 'a window as large as the padded image', x: [2, 3, 4, 5], O: 4, k: [4, 5], padding: [0, 0] },
  { name: 'many channels (K = 9·40 spans more than one GEMM K block)', x: [1, 40, 6, 6], O: 33, k: [3, 3], padding: [1, 1] },
];

/** Eager conv2d forward and its three gradients, for a random output gradient. */
function eagerConv(c: ConvCase) {
  const [N, C, H, W] = c.x;
  const groups = c.groups ?? 1;
  const x = randn(c.x).requiresGrad_(true);
  const w = randn([c.O, C / groups, ...c.k]).requiresGrad_(true);
  const b = randn([c.O]).requiresGrad_(true);
  const stride = c.stride ?? [1, 1];
  const padding = c.padding ?? [0, 0];
  const dilation = c.dilation ?? [1, 1];
  const y = ops.conv2d(x, w, b, stride, padding, dilation, groups);
  const gy = randn(y.shape as number[]);
  y.mul(gy).sum().backward();
  const shape: ConvShape = { N, C, O: c.O, groups, g: windowOf(c.k, stride, padding, dilation, H, W, y.shape) };
  return { x, w, b, y, gy, shape };
}

for (const c of convCases) {
  test(`conv2d kernels equal eager conv2d and its gradients: ${c.name}`, (t) => {
    manualSeed(7);
    const { x, w, b, y, gy, shape } = eagerConv(c);
    const { N, C, O, groups, g } = shape;
    const K = (C / groups) * g.kh * g.kw;
    const P = N * g.OH * g.OW;
    const folded = convWeights(w.data() as Float32Array, null, null, w.shape as [number, number, number, number], true).weight;
    const packed = new PackedConvWeight(folded, O, K, groups);
    try {
      const out = conv2dForward(nhwc(x), packed, b.data() as Float32Array, shape, new Float32Array(P * O));
      close(t, nchw(out, y.shape), y.detach(), 'forward');
      const relu = conv2dForward(nhwc(x), packed, b.data() as Float32Array, shape, new Float32Array(P * O), true);
      close(t, nchw(relu, y.shape), y.detach().relu(), 'forward with relu');
    } finally {
      packed.dispose();
    }
    const go = nhwc(gy);
    const gx = conv2dInputGrad(go, w.data() as Float32Array, shape, new Float32Array(x.shape.reduce((p, q) => p * q, 1)));
    close(t, nchw(gx, x.shape), x.grad!, 'input gradient');
    const gw = conv2dWeightGrad(nhwc(x), go, shape);
    close(t, tensor(gw, { shape: [...w.shape] }), w.grad!, 'weight gradient');
    close(t, tensor(conv2dBiasGrad(go, P, O)), b.grad!, 'bias gradient');
  });
}

test('conv2dForward takes a PackedB for one group and writes no further than the result', (t) => {
  manualSeed(3);
  const c: ConvCase = { name: '', x: [2, 5, 6, 7], O: 6, k: [3, 3], padding: [1, 1] };
  const { x, w, shape } = eagerConv(c);
  const K = 5 * 9;
  const b = packB(convWeights(w.data() as Float32Array, null, null, [6, 5, 3, 3], true).weight, K, 6, { transposed: true });
  const P = 2 * 6 * 7;
  const out = new Float32Array(P * 6 + 5).fill(42);
  conv2dForward(nhwc(x), b, null, shape, out.subarray(0, P * 6));
  b.dispose();
  const want = ops.conv2d(x.detach(), w.detach(), null, 1, [1, 1]);
  close(t, nchw(out.subarray(0, P * 6), want.shape), want, 'forward without bias');
  t.deepEqual([...out.subarray(P * 6)], [42, 42, 42, 42, 42]);
});

const winogradCases: ConvCase[] = [
  { name: '4 → 8 channels, pad 1', x: [2, 4, 6, 6], O: 8, k: [3, 3], padding: [1, 1] },
  { name: 'odd output sizes (partial tiles), 8 → 12 channels', x: [1, 8, 7, 5], O: 12, k: [3, 3], padding: [1, 1] },
  { name: 'no padding, 16 → 4 channels', x: [3, 16, 9, 8], O: 4, k: [3, 3] },
  { name: 'padding 2 by 0', x: [2, 4, 5, 6], O: 4, k: [3, 3], padding: [2, 0] },
  { name: '32 → 32 channels over more tiles than one round', x: [3, 32, 18, 20], O: 32, k: [3, 3], padding: [1, 1] },
];

for (const c of winogradCases) {
  test(`Winograd F(2×2, 3×3) equals eager conv2d: ${c.name}`, (t) => {
    manualSeed(8);
    const { x, w, b, y, shape } = eagerConv(c);
    t.true(winogradApplies(shape));
    const folded = convWeights(w.data() as Float32Array, null, null, w.shape as [number, number, number, number], true).weight;
    const ww = new WinogradWeight(folded, c.O, c.x[1]);
    try {
      const P = shape.N * shape.g.OH * shape.g.OW;
      const out = conv2dForward(nhwc(x), ww, b.data() as Float32Array, shape, new Float32Array(P * c.O));
      close(t, nchw(out, y.shape), y.detach(), 'forward');
      const relu = conv2dForward(nhwc(x), ww, null, shape, new Float32Array(P * c.O), true);
      close(t, nchw(relu, y.shape), ops.conv2d(x.detach(), w.detach(), null, 1, c.padding ?? 0).relu(), 'no bias, relu');
    } finally {
      ww.dispose();
    }
  });
}

test('Winograd applies to 3×3, stride-1, undilated, ungrouped convs of channels in multiples of 4 only; its weight refuses others', (t) => {
  const g: Window2d = { kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1, dh: 1, dw: 1, H: 6, W: 6, OH: 6, OW: 6 };
  const s: ConvShape = { N: 1, C: 8, O: 8, groups: 1, g };
  t.true(winogradApplies(s));
  t.false(winogradApplies({ ...s, C: 6 }));
  t.false(winogradApplies({ ...s, O: 10 }));
  t.false(winogradApplies({ ...s, groups: 2 }));
  t.false(winogradApplies({ ...s, g: { ...g, sh: 2, OH: 3 } }));
  t.false(winogradApplies({ ...s, g: { ...g, dw: 2, OW: 4 } }));
  t.false(winogradApplies({ ...s, g: { ...g, kh: 1, kw: 1, ph: 0, pw: 0 } }));
  const ww = new WinogradWeight(new Float32Array(8 * 9 * 8), 8, 8);
  try {
    t.throws(() => conv2dForward(new Float32Array(6 * 6 * 8), ww, null, { ...s, g: { ...g, sh: 2, OH: 3 } }, new Float32Array(3 * 6 * 8)), {
      instanceOf: KilnError,
      message: 'conv2dForward: a Winograd weight takes 3×3, stride-1, undilated, ungrouped convs of channels in multiples of 4',
    });
    t.throws(() => conv2dForward(new Float32Array(6 * 6 * 4), ww, null, { ...s, C: 4 }, new Float32Array(36 * 8)), {
      instanceOf: KilnError,
      message: 'conv2dForward: the Winograd weight is [8, 8, 3, 3], the conv wants [8, 4, 3, 3]',
    });
  } finally {
    ww.dispose();
  }
  t.throws(() => new WinogradWeight(new Float32Array(10), 8, 8), {
    instanceOf: KilnError,
    message: 'winogradWeight: weight has 10 elements, needs 576',
  });
});

test('the conv kernel split over threads gives exactly the one-thread result', (t) => {
  manualSeed(9);
  const c: ConvCase = { name: '', x: [8, 16, 16, 16], O: 32, k: [3, 3], padding: [1, 1] };
  const { x, w, shape } = eagerConv(c);
  const K = 16 * 9;
  const packed = new PackedConvWeight(convWeights(w.data() as Float32Array, null, null, [32, 16, 3, 3], true).weight, 32, K, 1);
  const before = getGemmThreads();
  try {
    const P = 8 * 16 * 16;
    setGemmThreads(1);
    const one = conv2dForward(nhwc(x), packed, null, shape, new Float32Array(P * 32));
    t.is(lastConvJobChunks().chunks, 0, 'one thread: no chunked job');
    setGemmThreads(2);
    for (let i = 0; i < 5; i++) {
      const two = conv2dForward(nhwc(x), packed, null, shape, new Float32Array(P * 32));
      t.deepEqual(two, one);
    }
    // 2·P·K·O = 38M flops: a chunked job (unless a busy machine made the policy keep it on this thread)
    t.true(lastConvJobChunks().chunks === 0 || lastConvJobChunks().chunks >= 8, JSON.stringify(lastConvJobChunks()));
  } finally {
    setGemmThreads(before);
    packed.dispose();
  }
});

interface PoolCase {
  name: string;
  x: [number, number, number, number];
  k: Pair;
  stride?: Pair;
  padding?: Pair;
  dilation?: Pair;
  ceilMode?: boolean;
}

const poolCases: PoolCase[] = [
  { name: '2×2 stride 2 (the CNN pool), 32 channels', x: [2, 32, 8, 8], k: [2, 2] },
  { name: 'odd sizes, 7 channels, 3×3 stride 2 pad 1', x: [1, 7, 9, 7], k: [3, 3], stride: [2, 2], padding: [1, 1] },
  { name: 'non-square window, stride by axis, one channel', x: [2, 1, 7, 8], k: [3, 2], stride: [1, 2], padding: [1, 1] },
  { name: 'ceil mode leaves a partial last window', x: [2, 5, 7, 7], k: [2, 2], ceilMode: true },
  { name: 'three channels, overlapping windows', x: [3, 3, 6, 6], k: [3, 3], stride: [1, 1] },
];

for (const c of poolCases) {
  test(`max pooling kernels equal eager maxPool2d and its gradient: ${c.name}`, (t) => {
    manualSeed(11);
    const stride = c.stride ?? c.k;
    const padding = c.padding ?? [0, 0];
    for (const dilation of [[1, 1] as Pair, [2, 1] as Pair]) {
      const [N, C, H, W] = c.x;
      if (dilation[0] * (c.k[0] - 1) + 1 > H + 2 * padding[0]) continue;
      const x = randn(c.x).requiresGrad_(true);
      const y = ops.maxPool2d(x, c.k, stride, padding, dilation, c.ceilMode ?? false);
      const gy = randn(y.shape as number[]);
      y.mul(gy).sum().backward();
      const shape: PoolShape = { N, C, g: windowOf(c.k, stride, padding, dilation, H, W, y.shape) };
      const P = N * shape.g.OH * shape.g.OW;
      close(t, nchw(maxPool2d(nhwc(x), shape, new Float32Array(P * C)), y.shape), y.detach(), `forward, dilation ${dilation}`);
      const direct = tensor(maxPool2d(nhwc(x), shape, new Float32Array(P * C), true), { shape: [...y.shape] });
      close(t, direct, y.detach(), `forward written NCHW, dilation ${dilation}`);
      const gx = maxPool2dBackward(nhwc(x), nhwc(gy), shape, new Float32Array(N * C * H * W));
      close(t, nchw(gx, x.shape), x.grad!, `input gradient, dilation ${dilation}`);
    }
  });

  test(`average pooling kernels equal eager avgPool2d and its gradient: ${c.name}`, (t) => {
    manualSeed(12);
    const stride = c.stride ?? c.k;
    const padding = c.padding ?? [0, 0];
    const [N, C, H, W] = c.x;
    for (const [countIncludePad, divisorOverride] of [
      [true, null],
      [false, null],
      [true, 3],
    ] as [boolean, number | null][]) {
      const x = randn(c.x).requiresGrad_(true);
      const y = ops.avgPool2d(x, c.k, stride, padding, c.ceilMode ?? false, countIncludePad, divisorOverride);
      const gy = randn(y.shape as number[]);
      y.mul(gy).sum().backward();
      const shape: PoolShape = { N, C, g: windowOf(c.k, stride, padding, [1, 1], H, W, y.shape) };
      const P = N * shape.g.OH * shape.g.OW;
      const what = `countIncludePad ${String(countIncludePad)}, divisor ${String(divisorOverride)}`;
      const out = avgPool2d(nhwc(x), shape, new Float32Array(P * C), countIncludePad, divisorOverride);
      close(t, nchw(out, y.shape), y.detach(), `forward, ${what}`);
      const direct = avgPool2d(nhwc(x), shape, new Float32Array(P * C), countIncludePad, divisorOverride, true);
      close(t, tensor(direct, { shape: [...y.shape] }), y.detach(), `forward written NCHW, ${what}`);
      const gx = avgPool2dBackward(nhwc(gy), shape, new Float32Array(N * C * H * W), countIncludePad, divisorOverride);
      close(t, nchw(gx, x.shape), x.grad!, `input gradient, ${what}`);
    }
  });
}

test('max pooling backward sends each window gradient where eager does: the first of tied maxima, the last NaN', (t) => {
  // one image, 5 channels (a vector of 4 and a tail lane), 4×4, overlapping 3×3 windows at stride 1
  const vals = [0, 1, 1, 0, 1, 1, 0, 0, 2, 2, 2, 2, 0, 0, 0, 1];
  const planes = [
    vals,
    vals.map((v) => -v),
    vals.map(() => 0),
    vals.map((v, i) => (i === 5 || i === 10 ? NaN : v)),
    vals.map((v, i) => (i % 3 === 0 ? 5 : v)),
  ];
  const x = tensor(planes.flat(), { shape: [1, 5, 4, 4] }).requiresGrad_(true);
  const y = ops.maxPool2d(x, 3, 1);
  const gy = tensor(
    Array.from({ length: 20 }, (_, i) => i + 1),
    { shape: [1, 5, 2, 2] },
  );
  y.mul(gy).sum().backward();
  const shape: PoolShape = { N: 1, C: 5, g: windowOf([3, 3], [1, 1], [0, 0], [1, 1], 4, 4, y.shape) };
  close(t, nchw(maxPool2d(nhwc(x), shape, new Float32Array(20)), y.shape), y.detach(), 'forward');
  const gx = maxPool2dBackward(nhwc(x), nhwc(gy), shape, new Float32Array(80));
  t.deepEqual([...nchw(gx, x.shape).data()], [...x.grad!.data()]);
});

// ---------------------------------------------------------------------------------------------------------
// the backward ops (runtime/ops: convolutionBackward, maxPool2dWithIndicesBackward, avgPool2dBackward) on NCHW data

const masks: [boolean, boolean, boolean][] = [
  [true, true, true],
  [true, false, false],
  [false, true, true],
];

for (const c of convCases) {
  test(`convolutionBackwardWasm equals the convolutionBackward op for every output mask: ${c.name}`, (t) => {
    manualSeed(13);
    const { x, w, gy, shape } = eagerConv(c);
    const [stride, padding, dilation] = [c.stride ?? [1, 1], c.padding ?? [0, 0], c.dilation ?? [1, 1]];
    for (const mask of masks) {
      const want = ops.convolutionBackward(gy, x.detach(), w.detach(), [c.O], stride, padding, dilation, false, 0, shape.groups, mask);
      const got = convolutionBackwardWasm(gy.data() as Float32Array, x.data() as Float32Array, w.data() as Float32Array, shape, mask);
      for (let i = 0; i < 3; i++) {
        const what = `${['gradInput', 'gradWeight', 'gradBias'][i]!}, mask ${mask.join()}`;
        const [g, e] = [got[i], want[i]];
        if (!mask[i]) {
          t.is(g, null, what);
          continue;
        }
        if (!g || !e) return t.fail(`${what}: missing`);
        close(t, tensor(g, { shape: [...e.shape] }), e, what);
      }
    }
  });
}

for (const c of poolCases) {
  test(`the pool backward wasm functions equal maxPool2dWithIndicesBackward and avgPool2dBackward: ${c.name}`, (t) => {
    manualSeed(14);
    const stride = c.stride ?? c.k;
    const padding = c.padding ?? [0, 0];
    const ceil = c.ceilMode ?? false;
    const [N, C, H, W] = c.x;
    const x = randn(c.x);
    const [y, indices] = ops.maxPool2dWithIndices(x, c.k, stride, padding, 1, ceil);
    const gy = randn(y.shape as number[]);
    const shape: PoolShape = { N, C, g: windowOf(c.k, stride, padding, [1, 1], H, W, y.shape) };
    const want = ops.maxPool2dWithIndicesBackward(gy, x, c.k, stride, padding, 1, ceil, indices);
    close(t, tensor(maxPool2dBackwardWasm(gy.data() as Float32Array, x.data() as Float32Array, shape), { shape: c.x }), want, 'max');
    for (const [countIncludePad, divisorOverride] of [
      [true, null],
      [false, 2],
    ] as [boolean, number | null][]) {
      const avg = ops.avgPool2dBackward(gy, x, c.k, stride, padding, ceil, countIncludePad, divisorOverride);
      const got = avgPool2dBackwardWasm(gy.data() as Float32Array, shape, countIncludePad, divisorOverride);
      close(t, tensor(got, { shape: c.x }), avg, `avg, countIncludePad ${String(countIncludePad)}`);
    }
  });
}

// ---------------------------------------------------------------------------------------------------------
// compiled models against eager

function compiled(model: nn.Module): { run: (x: Tensor) => Tensor; text: () => string } {
  const programs: KernelProgramCallable[] = [];
  const opt = compile(model, { backend: (gm: GraphModule) => programs[programs.push(kernelsBackend(gm)) - 1]! });
  return { run: (x) => noGrad(() => opt.call(x) as Tensor), text: () => programs.map((p) => p.pprint()).join('\n') };
}

function againstEager(t: ExecutionContext, what: string, model: nn.Module, x: Tensor): string {
  const c = compiled(model);
  const want = noGrad(() => model.call(x) as Tensor);
  close(t, c.run(x), want, `${what}: first call`);
  close(t, c.run(x), want, `${what}: cached plan`);
  return c.text();
}

function randomiseBatchNorms(m: nn.Module): void {
  noGrad(() => {
    for (const mod of m.modules()) {
      if (!(mod instanceof nn.BatchNorm2d)) continue;
      mod.running_mean!.copy_(randn([mod.numFeatures]).mul(0.3));
      mod.running_var!.copy_(randn([mod.numFeatures]).abs().add(0.5));
      mod.weight?.copy_(randn([mod.numFeatures]));
      mod.bias?.copy_(randn([mod.numFeatures]));
    }
  });
}

test('compiled conv chains run the indirect GEMM and equal eager: strides, paddings, dilations, odd channels, one image', (t) => {
  manualSeed(31);
  const chain = (): nn.Sequential => {
    const m = new nn.Sequential(
      new nn.Conv2d(3, 5, 3, { padding: 1 }),
      new nn.BatchNorm2d(5),
      new nn.ReLU(),
      new nn.Conv2d(5, 9, [3, 2], { stride: [2, 1], padding: [1, 0], bias: false }),
      new nn.ReLU(),
      new nn.Conv2d(9, 13, 3, { padding: 2, dilation: 2 }),
      new nn.BatchNorm2d(13),
      new nn.Conv2d(13, 6, 1),
    );
    randomiseBatchNorms(m);
    return m.eval();
  };
  const m = chain();
  for (const x of [randn([2, 3, 9, 11]), randn([1, 3, 7, 7]), randn([3, 3, 12, 5])]) {
    const text = againstEager(t, `input ${x.shape.join('×')}`, m, x);
    t.regex(text, /copied to channels-last[\s\S]*(channels-last, in place[\s\S]*){3}/, text);
  }
});

test('a compiled 3×3 conv chain takes Winograd on one thread and the threaded direct kernel on two, both equal to eager', (t) => {
  manualSeed(34);
  const m = new nn.Sequential(
    new nn.Conv2d(3, 16, 3, { padding: 1 }),
    new nn.BatchNorm2d(16),
    new nn.ReLU(),
    new nn.Conv2d(16, 32, 3, { padding: 1 }),
    new nn.BatchNorm2d(32),
    new nn.ReLU(),
    new nn.Conv2d(32, 8, 3),
  );
  randomiseBatchNorms(m);
  m.eval();
  const before = getGemmThreads();
  try {
    for (const threads of [1, 2]) {
      setGemmThreads(threads);
      const calls = winogradCallCount();
      const text = againstEager(t, `${threads} thread(s)`, m, randn([2, 3, 11, 10]));
      // two Winograd convs, run on both calls of the plan
      t.is(winogradCallCount() - calls, threads === 1 ? 4 : 0, `Winograd calls on ${threads} thread(s)`);
      // the first conv has 3 input channels: the direct kernel; the next two may take Winograd
      t.regex(text, /conv2d\+bias\+bn\+relu[^\n]*copied to channels-last[^\n]*\n[^\n]*Winograd[^\n]*\n[^\n]*Winograd/, text);
    }
  } finally {
    setGemmThreads(before);
  }
});

test('compiled pooling of a conv result runs in wasm and equals eager: max and average, padding, ceil mode', (t) => {
  manualSeed(32);
  const pools: [string, nn.Module][] = [
    ['max 2', new nn.MaxPool2d(2)],
    ['max 3 stride 2 pad 1', new nn.MaxPool2d(3, { stride: 2, padding: 1 })],
    ['max ceil mode', new nn.MaxPool2d(2, { ceilMode: true })],
    ['max dilation 2', new nn.MaxPool2d(2, { stride: 1, dilation: 2 })],
    ['avg 2', new nn.AvgPool2d(2)],
    ['avg 3 pad 1 without the padding', new nn.AvgPool2d(3, { stride: 2, padding: 1, countIncludePad: false })],
    ['avg divisor override', new nn.AvgPool2d(2, { divisorOverride: 3 })],
  ];
  for (const [what, pool] of pools) {
    const m = new nn.Sequential(new nn.Conv2d(3, 6, 3, { padding: 1 }), new nn.ReLU(), pool, new nn.Flatten()).eval();
    const text = againstEager(t, what, m, randn([2, 3, 7, 9]));
    t.regex(text, /Pool2d +\[[^\n]*wasm SIMD/, `${what}\n${text}`);
  }
});

test('a conv over a view of its input still compiles (the gpu.js im2row) and equals eager', (t) => {
  manualSeed(33);
  class Sliced extends nn.Module {
    conv = new nn.Conv2d(4, 5, 3, { padding: 1 });
    override forward(x: Tensor): Tensor {
      return this.conv.call(x.narrow(1, 1, 4)) as Tensor;
    }
  }
  const text = againstEager(t, 'sliced channels', new Sliced().eval(), randn([2, 6, 6, 5]));
  t.regex(text, /gpu\.js/, text);
});

// ---------------------------------------------------------------------------------------------------------
// bad input

const g3: Window2d = { kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1, dh: 1, dw: 1, H: 4, W: 4, OH: 4, OW: 4 };

test('the conv kernels refuse short arrays, groups that do not divide and a packed weight of another shape', (t) => {
  const shape: ConvShape = { N: 1, C: 4, O: 6, groups: 1, g: g3 };
  const packed = new PackedConvWeight(new Float32Array(6 * 36), 6, 36, 1);
  try {
    t.throws(() => conv2dForward(new Float32Array(63), packed, null, shape, new Float32Array(96)), {
      instanceOf: KilnError,
      message: 'conv2dForward: x has 63 elements, needs 64',
    });
    t.throws(() => conv2dForward(new Float32Array(64), packed, null, shape, new Float32Array(95)), {
      instanceOf: KilnError,
      message: 'conv2dForward: out has 95 elements, needs 96',
    });
    t.throws(() => conv2dForward(new Float32Array(64), packed, null, { ...shape, O: 8 }, new Float32Array(128)), {
      instanceOf: KilnError,
      message: 'conv2dForward: the packed weight is not [1 × 36, 8] for this convolution',
    });
    t.throws(() => conv2dForward(new Float32Array(64), packed, null, { ...shape, groups: 3 }, new Float32Array(96)), {
      instanceOf: KilnError,
      message: 'conv2dForward: groups=3 must divide C=4 and O=6',
    });
    t.throws(() => conv2dForward(new Float32Array(64), packed, null, { ...shape, g: { ...g3, sh: 0 } }, new Float32Array(96)), {
      instanceOf: KilnError,
      message: 'conv2dForward: sh must be a positive integer, got 0',
    });
  } finally {
    packed.dispose();
  }
  t.throws(() => conv2dInputGrad(new Float32Array(96), new Float32Array(10), shape, new Float32Array(64)), {
    instanceOf: KilnError,
    message: 'conv2dInputGrad: weight has 10 elements, needs 216',
  });
  t.throws(() => conv2dWeightGrad(new Float32Array(64), new Float32Array(5), shape), {
    instanceOf: KilnError,
    message: 'conv2dWeightGrad: gOut has 5 elements, needs 96',
  });
  t.throws(() => new PackedConvWeight(new Float32Array(5), 6, 36, 1), {
    instanceOf: KilnError,
    message: 'packConvWeight: weight has 5 elements, needs 216',
  });
});

test('the pooling kernels refuse a padding over half the window and short arrays', (t) => {
  const shape: PoolShape = { N: 1, C: 2, g: { ...g3, kh: 2, kw: 2, ph: 2, pw: 0 } };
  t.throws(() => maxPool2d(new Float32Array(32), shape, new Float32Array(32)), {
    instanceOf: KilnError,
    message: 'maxPool2d: padding 2, 0 must be at most half the kernel 2×2',
  });
  const ok: PoolShape = { N: 1, C: 2, g: { ...g3, kh: 2, kw: 2, sh: 2, sw: 2, ph: 0, pw: 0, OH: 2, OW: 2 } };
  t.throws(() => avgPool2d(new Float32Array(31), ok, new Float32Array(8), true, null), {
    instanceOf: KilnError,
    message: 'avgPool2d: x has 31 elements, needs 32',
  });
  t.throws(() => maxPool2dBackward(new Float32Array(32), new Float32Array(7), ok, new Float32Array(32)), {
    instanceOf: KilnError,
    message: 'maxPool2dBackward: gOut has 7 elements, needs 8',
  });
  t.throws(() => avgPool2dBackward(new Float32Array(8), ok, new Float32Array(31), true, null), {
    instanceOf: KilnError,
    message: 'avgPool2dBackward: out has 31 elements, needs 32',
  });
});
