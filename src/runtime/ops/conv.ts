import { im2row, row2imAdd, type Window2d } from '../cpu/conv.js';
import { gemm } from '../cpu/matmul.js';
import { convolutionBackwardWasm } from '../../kernels/conv/backward.js';
import { simdGemmWorks } from '../../kernels/gemm/strided.js';
import { defineOp, type GradResult, type OpContext } from '../op.js';
import { pairOf, optionalTensor } from './lowering-helpers.js';
import { NUMBER_ARITH } from '../size-arith.js';
import { as2d, checkConv1dShapes, checkConvBackwardArgs, checkConvGradOutput, conv2dGeometry, type Pair } from '../shape-rules/conv.js';
import { Tensor } from '../tensor.js';

/** Convolution via im2row + the blocked matmul kernel; pooling with direct loops. */

export { pair, type Pair } from '../shape-rules/conv.js';

/**
 * How many images one convolution GEMM covers: as many as keep their im2row rows within ~1M floats (a
 * 4 MiB buffer, copied into wasm memory, which never shrinks), at least one.
 */
function imagesPerChunk(N: number, rowsPerImage: number): number {
  return Math.max(1, Math.min(N, Math.floor((1 << 20) / Math.max(1, rowsPerImage))));
}

function floatData(t: Tensor): Float32Array {
  return t.contiguous().data() as Float32Array;
}

/** A 2-d convolution's arguments checked and resolved: the input as [N, C, H, W] and the window geometry. */
interface Conv2dPlan {
  x: Tensor;
  batched: boolean;
  geo: Window2d;
  groups: number;
  N: number;
  C: number;
  O: number;
  Cg: number;
}

/** Check a 2-d convolution's input, weight and bias shape and resolve its geometry; errors name `op`. */
function planConv2d(
  op: string,
  input: Tensor,
  weight: Tensor,
  biasShape: readonly number[] | null,
  stride: Pair,
  padding: Pair | string,
  dilation: Pair,
  groups: number,
): Conv2dPlan {
  // the shape rule's checks and window geometry (src/runtime/shape-rules/conv.ts)
  const { batched, N, C, O, Cg, kh, kw, sh, sw, ph, pw, dh, dw, H, W, OH, OW } = conv2dGeometry(
    NUMBER_ARITH,
    op,
    input,
    weight,
    biasShape,
    stride,
    padding,
    dilation,
    groups,
  );
  const x = batched ? input : input.unsqueeze(0);
  return { x, batched, groups, N, C, O, Cg, geo: { kh, kw, sh, sw, ph, pw, dh, dw, H, W, OH, OW } };
}

/** The forward kernel: im2row per image chunk and group, one GEMM each, then the bias. */
function conv2dKernel(plan: Conv2dPlan, weight: Tensor, bias: Tensor | null): Tensor {
  const { x, geo, groups, N, C, O, Cg } = plan;
  const { kh, kw, H, W, OH, OW } = geo;
  const xs = floatData(x);
  const ws = floatData(weight);
  const Og = O / groups;
  const K = Cg * kh * kw;
  const L = OH * OW;
  const out = new Float32Array(N * O * L);
  const chunk = imagesPerChunk(N, L * K);
  const rows = new Float32Array(chunk * L * K);
  const part = new Float32Array(chunk * L * Og);
  for (let n0 = 0; n0 < N; n0 += chunk) {
    const nc = Math.min(chunk, N - n0);
    for (let g = 0; g < groups; g++) {
      for (let n = 0; n < nc; n++) im2row(xs, ((n0 + n) * C + g * Cg) * H * W, Cg, geo, rows.subarray(n * L * K));
      // part [nc·L, Og] = rows [nc·L, K] · W_gᵀ [K, Og]: one GEMM for the chunk's images, W_g packed once
      gemm(
        { data: rows, offset: 0, rowStride: K, colStride: 1 },
        { data: ws, offset: g * Og * K, rowStride: 1, colStride: K },
        nc * L,
        Og,
        K,
        part,
      );
      for (let n = 0; n < nc; n++) {
        for (let o = 0; o < Og; o++) {
          const dst = ((n0 + n) * O + g * Og + o) * L;
          for (let l = 0, src = n * L * Og + o; l < L; l++, src += Og) out[dst + l] = part[src]!;
        }
      }
    }
  }
  if (bias) {
    const b = floatData(bias);
    for (let n = 0; n < N; n++)
      for (let o = 0; o < O; o++) {
        const base = (n * O + o) * L;
        for (let l = 0; l < L; l++) out[base + l] += b[o]!;
      }
  }
  const y = Tensor.fromData(out, [N, O, OH, OW], 'float32');
  return plan.batched ? y : y.squeeze(0);
}

/** The backward kernels: GEMMs for the weight (dY · rows) and input (dYᵀ · W, then row2im) gradients, a sum for the bias. */
function conv2dBackwardKernel(
  plan: Conv2dPlan,
  weight: Tensor,
  gradOutput: Tensor,
  mask: readonly [boolean, boolean, boolean],
): [Tensor | null, Tensor | null, Tensor | null] {
  if (plan.groups === 1 && simdGemmWorks()) return conv2dBackwardWasm(plan, weight, gradOutput, mask);
  const { x, geo, groups, N, C, O, Cg } = plan;
  const { kh, kw, H, W } = geo;
  const Og = O / groups;
  const K = Cg * kh * kw;
  const L = geo.OH * geo.OW;
  const gs = floatData(plan.batched ? gradOutput : gradOutput.unsqueeze(0));
  const xs = mask[1] ? floatData(x) : null;
  const ws = floatData(weight);
  const gx = mask[0] ? new Float32Array(N * C * H * W) : null;
  const gw = mask[1] ? new Float32Array(O * K) : null;
  if (gx || gw) {
    const chunk = imagesPerChunk(N, L * K);
    const rows = new Float32Array(chunk * L * K);
    const dRows = new Float32Array(chunk * L * K);
    const dYt = new Float32Array(chunk * L * Og);
    const gwPart = new Float32Array(Og * K);
    for (let n0 = 0; n0 < N; n0 += chunk) {
      const nc = Math.min(chunk, N - n0);
      for (let gi = 0; gi < groups; gi++) {
        // dYt [nc·L, Og]: the chunk's output gradient for this group, one row per output position
        for (let n = 0; n < nc; n++) {
          if (xs) im2row(xs, ((n0 + n) * C + gi * Cg) * H * W, Cg, geo, rows.subarray(n * L * K));
          for (let o = 0; o < Og; o++) {
            const src = ((n0 + n) * O + gi * Og + o) * L;
            for (let l = 0, dst = n * L * Og + o; l < L; l++, dst += Og) dYt[dst] = gs[src + l]!;
          }
        }
        if (gw) {
          // dW_g += dY_g [Og, nc·L] · rows [nc·L, K]
          gemm(
            { data: dYt, offset: 0, rowStride: 1, colStride: Og },
            { data: rows, offset: 0, rowStride: K, colStride: 1 },
            Og,
            K,
            nc * L,
            gwPart,
          );
          for (let i = 0; i < gwPart.length; i++) gw[gi * Og * K + i] += gwPart[i]!;
        }
        if (gx) {
          // dRows [nc·L, K] = dY_gᵀ [nc·L, Og] · W_g [Og, K], then scattered back to each image
          gemm(
            { data: dYt, offset: 0, rowStride: Og, colStride: 1 },
            { data: ws, offset: gi * Og * K, rowStride: K, colStride: 1 },
            nc * L,
            K,
            Og,
            dRows,
          );
          for (let n = 0; n < nc; n++) row2imAdd(dRows.subarray(n * L * K), Cg, geo, gx, ((n0 + n) * C + gi * Cg) * H * W);
        }
      }
    }
  }
  let gb: Tensor | null = null;
  if (mask[2]) {
    const b = new Float32Array(O);
    for (let n = 0; n < N; n++)
      for (let o = 0; o < O; o++) {
        let s = 0;
        const base = (n * O + o) * L;
        for (let l = 0; l < L; l++) s += gs[base + l]!;
        b[o] += s;
      }
    gb = Tensor.fromData(b, [O], 'float32');
  }
  const gxT = gx && Tensor.fromData(gx, [N, C, H, W], 'float32');
  return [gxT && (plan.batched ? gxT : gxT.squeeze(0)), gw && Tensor.fromData(gw, weight.shape, 'float32'), gb];
}

type ConvGradMask = [boolean, boolean, boolean];

/** What a convolution's backward needs from its forward: the hyper-parameters and which gradients to compute. */
interface ConvArgs {
  stride: Pair;
  padding: Pair | string;
  dilation: Pair;
  groups: number;
  biasSizes: number[] | null;
  mask: ConvGradMask;
}

function convArgs(ctx: OpContext, input: Tensor, weight: Tensor, bias: Tensor | null, args: Omit<ConvArgs, 'biasSizes' | 'mask'>): void {
  ctx.conv = {
    ...args,
    biasSizes: bias ? [...bias.shape] : null,
    mask: [input.requiresGrad, weight.requiresGrad, bias?.requiresGrad ?? false],
  } satisfies ConvArgs;
  ctx.input = ctx.save(input);
  ctx.weight = ctx.save(weight);
}

function convBackwardOf(ctx: OpContext, g: Tensor): readonly GradResult[] {
  const a = ctx.conv as ConvArgs;
  return convolutionBackward(
    g,
    ctx.input as Tensor,
    ctx.weight as Tensor,
    a.biasSizes,
    a.stride,
    a.padding,
    a.dilation,
    false,
    0,
    a.groups,
    a.mask,
  );
}

export const conv2d = defineOp<
  (input: Tensor, weight: Tensor, bias?: Tensor | null, stride?: Pair, padding?: Pair | string, dilation?: Pair, groups?: number) => Tensor
>({
  schema:
    'conv2d(Tensor input, Tensor weight, Tensor? bias=null, int|int[] stride=1, int|int[]|str padding=0, int|int[] dilation=1, int groups=1)',
  forward(ctx, input, weight, bias = null, stride = 1, padding = 0, dilation = 1, groups = 1) {
    const plan = planConv2d('conv2d', input, weight, bias?.shape ?? null, stride, padding, dilation, groups);
    convArgs(ctx, input, weight, bias, { stride, padding, dilation, groups });
    return conv2dKernel(plan, weight, bias);
  },
  backward: convBackwardOf,
  lower(k, a, out) {
    const x = k.tensor(a.input);
    const w = k.tensor(a.weight);
    if (x === null || w === null) return null;
    if (a.groups !== 1) return { eager: `conv2d: groups=${String(a.groups)} (the GEMM kernel takes groups=1)` };
    if (k.shape(x).length !== 4) return { eager: 'conv2d: an unbatched 3-d input' };
    const [, , kh, kw] = k.shape(w) as [number, number, number, number];
    const dilation = pairOf(a.dilation);
    let padding: [number, number];
    if (a.padding === 'valid') padding = [0, 0];
    else if (a.padding === 'same') {
      // An odd total pads one more after than before (PyTorch); these kernels pad symmetrically.
      if ((dilation[0] * (kh - 1)) % 2 !== 0 || (dilation[1] * (kw - 1)) % 2 !== 0) {
        return { eager: "conv2d: padding='same' with an even kernel (asymmetric padding)" };
      }
      padding = [(dilation[0] * (kh - 1)) / 2, (dilation[1] * (kw - 1)) / 2];
    } else padding = pairOf(a.padding);
    const bias = optionalTensor(k, a.bias);
    return bias === false ? null : k.conv2d(x, w, bias, { stride: pairOf(a.stride), padding, dilation }, out.shape);
  },
});

export const conv1d = defineOp<
  (input: Tensor, weight: Tensor, bias?: Tensor | null, stride?: Pair, padding?: Pair | string, dilation?: Pair, groups?: number) => Tensor
>({
  schema:
    'conv1d(Tensor input, Tensor weight, Tensor? bias=null, int|int[] stride=1, int|int[]|str padding=0, int|int[] dilation=1, int groups=1)',
  forward(ctx, input, weight, bias = null, stride = 1, padding = 0, dilation = 1, groups = 1) {
    checkConv1dShapes(input.shape, weight.shape);
    const [stride2, padding2, dilation2] = as2d(stride, padding, dilation);
    // A 1-d convolution is a 2-d one over a height-1 image (conv2d's checks and messages).
    const y = conv2d(input.unsqueeze(-2), weight.unsqueeze(2), bias, stride2, padding2, dilation2, groups);
    convArgs(ctx, input, weight, bias, { stride, padding, dilation, groups });
    return y.squeeze(-2);
  },
  backward: convBackwardOf,
  lower: { eager: 'conv1d: no 1-d convolution kernel yet' },
});

/**
 * PyTorch's convolution_backward: the gradients of a 1-d or 2-d convolution (by the weight's rank) with
 * respect to its input, weight and bias, each computed only where `outputMask` asks (null elsewhere).
 * Transposed convolutions are not supported (kiln has none).
 */
export const convolutionBackward = defineOp<
  (
    gradOutput: Tensor,
    input: Tensor,
    weight: Tensor,
    biasSizes: readonly number[] | null,
    stride: Pair,
    padding: Pair | string,
    dilation: Pair,
    transposed: boolean,
    outputPadding: Pair,
    groups: number,
    outputMask: readonly boolean[],
  ) => [Tensor | null, Tensor | null, Tensor | null]
>({
  schema:
    'convolutionBackward(Tensor gradOutput, Tensor input, Tensor weight, int[]? biasSizes, int|int[] stride, int|int[]|str padding, int|int[] dilation, bool transposed, int|int[] outputPadding, int groups, any outputMask)',
  forward(_ctx, g, input, weight, biasSizes, stride, padding, dilation, transposed, outputPadding, groups, outputMask) {
    const op = 'convolutionBackward';
    const mask = checkConvBackwardArgs(g, input.shape, weight.shape, biasSizes, transposed, outputPadding, outputMask);
    if (weight.ndim === 3) {
      // 1-d: the 2-d kernels over a height-1 image
      const [s2, p2, d2] = as2d(stride, padding, dilation);
      const w2 = weight.unsqueeze(2);
      const plan = planConv2d(op, input.unsqueeze(-2), w2, biasSizes, s2, p2, d2, groups);
      checkConvGrad(op, g.unsqueeze(-2), plan, input);
      const [gi, gw, gb] = conv2dBackwardKernel(plan, w2, g.unsqueeze(-2), mask);
      return [gi && gi.squeeze(-2), gw && gw.squeeze(2), gb];
    }
    const plan = planConv2d(op, input, weight, biasSizes, stride, padding, dilation, groups);
    checkConvGrad(op, g, plan, input);
    return conv2dBackwardKernel(plan, weight, g, mask);
  },
  lower: { eager: 'convolutionBackward: no convolution-backward kernel yet' },
});

/** The same gradients on kiln's wasm SIMD kernels (col2im, the weight-gradient product, bias sums): 3–4× faster. */
function conv2dBackwardWasm(
  plan: Conv2dPlan,
  weight: Tensor,
  gradOutput: Tensor,
  mask: readonly [boolean, boolean, boolean],
): [Tensor | null, Tensor | null, Tensor | null] {
  const { x, geo, groups, N, C, O } = plan;
  const g = floatData(plan.batched ? gradOutput : gradOutput.unsqueeze(0));
  const [gi, gw, gb] = convolutionBackwardWasm(
    g,
    mask[1] ? floatData(x) : new Float32Array(0),
    floatData(weight),
    { N, C, O, groups, g: geo },
    mask,
  );
  const inputShape = plan.batched ? [N, C, geo.H, geo.W] : [C, geo.H, geo.W];
  return [
    gi && Tensor.fromData(gi, inputShape, 'float32'),
    gw && Tensor.fromData(gw, weight.shape, 'float32'),
    gb && Tensor.fromData(gb, [O], 'float32'),
  ];
}

function checkConvGrad(op: string, g: Tensor, plan: Conv2dPlan, input: Tensor): void {
  const { N, O, geo } = plan;
  checkConvGradOutput(NUMBER_ARITH, op, g.shape, plan.batched ? [N, O, geo.OH, geo.OW] : [O, geo.OH, geo.OW], input.shape);
}
