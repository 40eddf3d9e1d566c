import { DTypeError, ShapeError, ValueError } from '../../errors.js';
import { im2row, row2imAdd, windowOut, type Window2d } from '../cpu/conv.js';
import { gemm } from '../cpu/matmul.js';
import { convolutionBackwardWasm } from '../../kernels/conv/backward.js';
import { simdGemmWorks } from '../../kernels/gemm/strided.js';
import { defineOp, type GradResult, type OpContext } from '../op.js';
import { pairOf, optionalTensor } from './lowering-helpers.js';
import { checkNumel, fmt } from '../shape.js';
import { Tensor } from '../tensor.js';

/** Convolution via im2row + the blocked matmul kernel; pooling with direct loops. */

export type Pair = number | readonly number[];

export function pair(op: string, name: string, v: Pair, min: number): [number, number] {
  const p = typeof v === 'number' ? [v, v] : [...v];
  if (p.length === 1) p.push(p[0]!);
  if (p.length !== 2 || p.some((x) => !Number.isInteger(x) || x < min)) {
    throw new ValueError(`${op}: ${name} must be an integer ≥ ${min} or a pair of them, got ${JSON.stringify(v)}`);
  }
  return p as [number, number];
}

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

/**
 * Resolve PyTorch's string paddings ('valid', 'same' for stride 1) to numbers: the padding before each
 * spatial dim, and the padding after it when that differs. 'same' pads d·(k-1) in total; when that is odd
 * the extra one goes after (right/bottom), as PyTorch does for even kernels.
 */
function resolvePadding(
  op: string,
  padding: Pair | string,
  k: [number, number],
  d: [number, number],
  s: [number, number],
): { before: [number, number]; after: [number, number] } {
  if (padding === 'valid') return { before: [0, 0], after: [0, 0] };
  if (padding === 'same') {
    if (s[0] !== 1 || s[1] !== 1) throw new ValueError(`${op}: padding='same' is not supported for strided convolutions`);
    const total = [d[0] * (k[0] - 1), d[1] * (k[1] - 1)] as const;
    const before: [number, number] = [Math.floor(total[0] / 2), Math.floor(total[1] / 2)];
    return { before, after: [total[0] - before[0], total[1] - before[1]] };
  }
  if (typeof padding === 'string') throw new ValueError(`${op}: padding must be a number, a pair, 'valid' or 'same', got '${padding}'`);
  const p = pair(op, 'padding', padding, 0);
  return { before: p, after: p };
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
  if (input.dtype !== 'float32' || weight.dtype !== 'float32') {
    throw new DTypeError(`${op}: expected float32 input and weight, got ${input.dtype} and ${weight.dtype}`);
  }
  const batched = input.ndim === 4;
  if (input.ndim !== 3 && input.ndim !== 4) {
    throw new ShapeError(`${op}: expected a 3-D [C, H, W] or 4-D [N, C, H, W] input, got ${fmt(input.shape)}`);
  }
  if (weight.ndim !== 4) throw new ShapeError(`${op}: weight must be 4-D [out, in/groups, kh, kw], got ${fmt(weight.shape)}`);
  const x = batched ? input : input.unsqueeze(0);
  const [N, C, H, W] = x.shape as [number, number, number, number];
  const [O, Cg, kh, kw] = weight.shape as [number, number, number, number];
  if (!Number.isInteger(groups) || groups < 1 || C % groups !== 0 || O % groups !== 0) {
    throw new ValueError(`${op}: groups=${groups} must divide both in_channels (${C}) and out_channels (${O})`);
  }
  if (Cg * groups !== C) {
    throw new ShapeError(
      `${op}: weight ${fmt(weight.shape)} expects ${Cg * groups} input channels (groups=${groups}), but the input ${fmt(input.shape)} has ${C}`,
    );
  }
  if (biasShape && (biasShape.length !== 1 || biasShape[0] !== O)) {
    throw new ShapeError(`${op}: bias must have shape [${O}], got ${fmt(biasShape)}`);
  }
  const [sh, sw] = pair(op, 'stride', stride, 1);
  const [dh, dw] = pair(op, 'dilation', dilation, 1);
  const pads = resolvePadding(op, padding, [kh, kw], [dh, dw], [sh, sw]);
  const [ph, pw] = pads.before;
  // Extra padding after the image only adds output positions: im2row reads zeros past H and W.
  const OH = windowOut(H + pads.after[0] - ph, kh, sh, ph, dh, false);
  const OW = windowOut(W + pads.after[1] - pw, kw, sw, pw, dw, false);
  if (OH <= 0 || OW <= 0) {
    throw new ShapeError(
      `${op}: input ${fmt(input.shape)} (padded by ${fmt([ph, pw])}) is smaller than the kernel ${fmt([kh, kw])} with dilation ${fmt([dh, dw])}`,
    );
  }
  checkNumel(op, [N, O, OH, OW]);
  checkNumel(op, [OH * OW, Cg * kh * kw]);
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
    if (input.ndim !== 2 && input.ndim !== 3) {
      throw new ShapeError(`conv1d: expected a 2-D [C, L] or 3-D [N, C, L] input, got ${fmt(input.shape)}`);
    }
    if (weight.ndim !== 3) throw new ShapeError(`conv1d: weight must be 3-D [out, in/groups, k], got ${fmt(weight.shape)}`);
    const [stride2, padding2, dilation2] = as2d(stride, padding, dilation);
    // A 1-d convolution is a 2-d one over a height-1 image (conv2d's checks and messages).
    const y = conv2d(input.unsqueeze(-2), weight.unsqueeze(2), bias, stride2, padding2, dilation2, groups);
    convArgs(ctx, input, weight, bias, { stride, padding, dilation, groups });
    return y.squeeze(-2);
  },
  backward: convBackwardOf,
  lower: { eager: 'conv1d: no 1-d convolution kernel yet' },
});

/** A 1-d convolution's stride, padding and dilation as those of the 2-d convolution over a height-1 image. */
function as2d(stride: Pair, padding: Pair | string, dilation: Pair): [Pair, Pair | string, Pair] {
  const one = (v: Pair) => (typeof v === 'number' ? v : v[0]!);
  return [[1, one(stride)], typeof padding === 'string' ? padding : [0, one(padding)], [1, one(dilation)]];
}

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
    if (transposed) throw new ValueError(`${op}: transposed convolutions are not supported`);
    if ((typeof outputPadding === 'number' ? [outputPadding] : outputPadding).some((p) => p !== 0)) {
      throw new ValueError(`${op}: outputPadding must be 0 for a convolution that is not transposed, got ${JSON.stringify(outputPadding)}`);
    }
    if (!Array.isArray(outputMask) || outputMask.length !== 3 || !outputMask.every((m) => typeof m === 'boolean')) {
      throw new ValueError(`${op}: outputMask must be 3 booleans [input, weight, bias], got ${JSON.stringify(outputMask)}`);
    }
    const mask = outputMask as unknown as ConvGradMask;
    if (mask[2] && !biasSizes) throw new ValueError(`${op}: outputMask asks for a bias gradient but biasSizes is null`);
    if (g.dtype !== 'float32') throw new DTypeError(`${op}: expected a float32 gradOutput, got ${g.dtype}`);
    if (weight.ndim === 3) {
      // 1-d: the 2-d kernels over a height-1 image
      if (input.ndim !== 2 && input.ndim !== 3) {
        throw new ShapeError(`${op}: expected a 2-D [C, L] or 3-D [N, C, L] input for a 3-D weight, got ${fmt(input.shape)}`);
      }
      if (g.ndim !== input.ndim) throw new ShapeError(`${op}: gradOutput ${fmt(g.shape)} must have the rank of input ${fmt(input.shape)}`);
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
  const want = plan.batched ? [N, O, geo.OH, geo.OW] : [O, geo.OH, geo.OW];
  if (g.shape.join() !== want.join()) {
    throw new ShapeError(`${op}: gradOutput must have shape ${fmt(want)} for input ${fmt(input.shape)}, got ${fmt(g.shape)}`);
  }
}
