import { IndexError } from '../../errors.js';
import { defineOp, type GradResult } from '../op.js';
import type { Eager, KValue, LowerArgs, LowerContext, LowerResult, Pool2dAttrs } from '../lowering.js';
import { pairOf } from './lowering-helpers.js';
import { NUMBER_ARITH } from '../size-arith.js';
import {
  checkAdaptiveGrad,
  checkPoolGradOutput,
  checkPoolIndices,
  poolGeometry as poolGeometryOf,
  poolPlanes,
} from '../shape-rules/pool.js';
import { Tensor } from '../tensor.js';
import { pair, type Pair } from './conv.js';

/** 2-D pooling over the last two dims of a [C, H, W] or [N, C, H, W] tensor. */

/** max/avg pooling's lowering: one pool2d kernel over the float32 input. */
function pool2dIR(k: LowerContext, a: LowerArgs, out: LowerResult, kind: 'max' | 'avg'): KValue | Eager | null {
  const x = k.tensor(a.input);
  if (x === null) return null;
  if (k.dtype(x) !== 'float32') return { eager: `${kind}Pool2d: a ${k.dtype(x)} input (the kernel pools float32)` };
  const kernel = pairOf(a.kernelSize);
  const stride =
    a.stride === null || a.stride === undefined || (Array.isArray(a.stride) && a.stride.length === 0) ? kernel : pairOf(a.stride);
  const attrs: Pool2dAttrs = {
    kind,
    kernel,
    stride,
    padding: pairOf(a.padding ?? 0),
    dilation: pairOf(a.dilation ?? 1),
    countIncludePad: (a.countIncludePad as boolean | undefined) ?? true,
    divisorOverride: (a.divisorOverride as number | null | undefined) ?? null,
  };
  return k.pool2d(x, attrs, out.shape);
}

interface Planes {
  data: Float32Array;
  planes: number;
  H: number;
  W: number;
  lead: number[];
}

function planesOf(op: string, x: Tensor): Planes {
  const { lead, H, W } = poolPlanes(op, x);
  return { data: x.contiguous().data() as Float32Array, planes: lead.reduce((a, b) => a * b, 1), H, W, lead };
}

function poolGeometry(op: string, p: Planes, kernelSize: Pair, stride: Pair | null, padding: Pair, dilation: Pair, ceilMode: boolean) {
  return poolGeometryOf(NUMBER_ARITH, op, p, kernelSize, stride, padding, dilation, ceilMode);
}

/** A pooling backward's gradOutput must have the shape the forward produced from `input`. */
function checkGradOutput(op: string, g: Tensor, input: Tensor, want: readonly number[]): Float32Array {
  checkPoolGradOutput(NUMBER_ARITH, op, g, input.shape, want);
  return g.contiguous().data() as Float32Array;
}

/**
 * PyTorch's max_pool2d_with_indices: the window maxima and, for each, the flat position h·W + w of the
 * maximum within its plane (what the backward scatters the gradient to).
 */
export const maxPool2dWithIndices = defineOp<
  (input: Tensor, kernelSize: Pair, stride?: Pair | null, padding?: Pair, dilation?: Pair, ceilMode?: boolean) => [Tensor, Tensor]
>({
  schema:
    'maxPool2dWithIndices(Tensor input, int|int[] kernelSize, int|int[]? stride=null, int|int[] padding=0, int|int[] dilation=1, bool ceilMode=false)',
  forward(ctx, x, kernelSize, stride = null, padding = 0, dilation = 1, ceilMode = false) {
    const [out, indices] = maxPoolKernel('maxPool2d', x, kernelSize, stride, padding, dilation, ceilMode);
    Object.assign(ctx, { kernelSize, stride, padding, dilation, ceilMode });
    ctx.x = ctx.save(x);
    ctx.indices = ctx.save(indices);
    return [out, indices];
  },
  backward(ctx, g) {
    const { kernelSize, stride, padding, dilation, ceilMode } = ctx as unknown as Record<string, never>;
    return [maxPool2dWithIndicesBackward(g, ctx.x as Tensor, kernelSize, stride, padding, dilation, ceilMode, ctx.indices as Tensor)];
  },
  lower: { eager: 'maxPool2dWithIndices: two outputs (values and int32 indices); maxPool2d lowers to the pool2d kernel' },
});

function maxPoolKernel(
  op: string,
  x: Tensor,
  kernelSize: Pair,
  stride: Pair | null,
  padding: Pair,
  dilation: Pair,
  ceilMode: boolean,
): [Tensor, Tensor] {
  const p = planesOf(op, x);
  const { kh, kw, sh, sw, ph, pw, dh, dw, OH, OW } = poolGeometry(op, p, kernelSize, stride, padding, dilation, ceilMode);
  const out = new Float32Array(p.planes * OH * OW);
  const arg = new Int32Array(out.length);
  for (let c = 0; c < p.planes; c++) {
    const base = c * p.H * p.W;
    for (let oh = 0; oh < OH; oh++) {
      for (let ow = 0; ow < OW; ow++) {
        let best = -Infinity;
        let at = -1;
        for (let i = 0; i < kh; i++) {
          const h = oh * sh - ph + i * dh;
          if (h < 0 || h >= p.H) continue;
          for (let j = 0; j < kw; j++) {
            const w = ow * sw - pw + j * dw;
            if (w < 0 || w >= p.W) continue;
            const v = p.data[base + h * p.W + w]!;
            if (v > best || Number.isNaN(v) || at < 0) {
              best = v;
              at = h * p.W + w;
            }
          }
        }
        const o = (c * OH + oh) * OW + ow;
        out[o] = best;
        arg[o] = at;
      }
    }
  }
  const shape = [...p.lead, OH, OW];
  return [Tensor.fromData(out, shape, 'float32'), Tensor.fromData(arg, shape, 'int32')];
}

/** PyTorch's max_pool2d_with_indices_backward: each output gradient added at its window's maximum. */
export const maxPool2dWithIndicesBackward = defineOp<
  (
    gradOutput: Tensor,
    input: Tensor,
    kernelSize: Pair,
    stride: Pair | null,
    padding: Pair,
    dilation: Pair,
    ceilMode: boolean,
    indices: Tensor,
  ) => Tensor
>({
  schema:
    'maxPool2dWithIndicesBackward(Tensor gradOutput, Tensor input, int|int[] kernelSize, int|int[]? stride, int|int[] padding, int|int[] dilation, bool ceilMode, Tensor indices)',
  forward(ctx, g, x, kernelSize, stride, padding, dilation, ceilMode, indices) {
    const op = 'maxPool2dWithIndicesBackward';
    const p = planesOf(op, x);
    const { OH, OW } = poolGeometry(op, p, kernelSize, stride, padding, dilation, ceilMode);
    const gs = checkGradOutput(op, g, x, [...p.lead, OH, OW]);
    checkPoolIndices(NUMBER_ARITH, op, indices, g.shape);
    const arg = indices.contiguous().data();
    const HW = p.H * p.W;
    const per = OH * OW;
    const gx = new Float32Array(p.planes * HW);
    for (let o = 0; o < arg.length; o++) {
      const at = arg[o]!;
      if (at < 0 || at >= HW) throw new IndexError(`${op}: index ${at} is out of range for a ${p.H}×${p.W} plane`);
      gx[Math.floor(o / per) * HW + at] += gs[o]!;
    }
    ctx.indices = ctx.save(indices);
    return Tensor.fromData(gx, x.shape, 'float32');
  },
  backward(ctx, gg) {
    // The gradient of a scatter-add is the gather at the same places (PyTorch's max_pool_double_backward).
    const indices = ctx.indices as Tensor;
    const picked = gg.flatten(-2).gather(-1, indices.flatten(-2));
    return [picked.reshape(indices.shape), null];
  },
  lower: { eager: 'maxPool2dWithIndicesBackward: no pooling-backward kernel yet' },
});

export const maxPool2d = defineOp<
  (input: Tensor, kernelSize: Pair, stride?: Pair | null, padding?: Pair, dilation?: Pair, ceilMode?: boolean) => Tensor
>({
  schema:
    'maxPool2d(Tensor input, int|int[] kernelSize, int|int[]? stride=null, int|int[] padding=0, int|int[] dilation=1, bool ceilMode=false)',
  composite: true,
  forward: (_ctx, x, kernelSize, stride = null, padding = 0, dilation = 1, ceilMode = false) =>
    maxPool2dWithIndices(x, kernelSize, stride, padding, dilation, ceilMode)[0],
  lower: (k, a, out) => pool2dIR(k, a, out, 'max'),
});

/** One average-pooling window clipped to the image, [h0, h1) × [w0, w1), and the divisor it uses. */
interface PoolWindow {
  h0: number;
  h1: number;
  w0: number;
  w1: number;
  div: number;
}

interface AvgPoolArgs {
  kernelSize: Pair;
  stride: Pair | null;
  padding: Pair;
  ceilMode: boolean;
  countIncludePad: boolean;
  divisorOverride: number | null;
}

/** Each output position's window clipped to the image, and its divisor. */
function avgWindows(op: string, p: Planes, a: AvgPoolArgs): { windows: PoolWindow[]; OH: number; OW: number } {
  const { kh, kw, sh, sw, ph, pw, OH, OW } = poolGeometry(op, p, a.kernelSize, a.stride, a.padding, 1, a.ceilMode);
  const windows: PoolWindow[] = [];
  for (let oh = 0; oh < OH; oh++) {
    for (let ow = 0; ow < OW; ow++) {
      let h0 = oh * sh - ph;
      let w0 = ow * sw - pw;
      let h1 = Math.min(h0 + kh, p.H + ph);
      let w1 = Math.min(w0 + kw, p.W + pw);
      const padded = (h1 - h0) * (w1 - w0);
      h0 = Math.max(h0, 0);
      w0 = Math.max(w0, 0);
      h1 = Math.min(h1, p.H);
      w1 = Math.min(w1, p.W);
      const div = a.divisorOverride ?? (a.countIncludePad ? padded : (h1 - h0) * (w1 - w0));
      windows.push({ h0, h1, w0, w1, div });
    }
  }
  return { windows, OH, OW };
}

export const avgPool2d = defineOp<
  (
    input: Tensor,
    kernelSize: Pair,
    stride?: Pair | null,
    padding?: Pair,
    ceilMode?: boolean,
    countIncludePad?: boolean,
    divisorOverride?: number | null,
  ) => Tensor
>({
  schema:
    'avgPool2d(Tensor input, int|int[] kernelSize, int|int[]? stride=null, int|int[] padding=0, bool ceilMode=false, bool countIncludePad=true, int? divisorOverride=null)',
  forward(ctx, x, kernelSize, stride = null, padding = 0, ceilMode = false, countIncludePad = true, divisorOverride = null) {
    const p = planesOf('avgPool2d', x);
    const args: AvgPoolArgs = { kernelSize, stride, padding, ceilMode, countIncludePad, divisorOverride };
    const { windows, OH, OW } = avgWindows('avgPool2d', p, args);
    const out = new Float32Array(p.planes * OH * OW);
    for (let c = 0; c < p.planes; c++) {
      const base = c * p.H * p.W;
      for (let o = 0; o < OH * OW; o++) {
        const { h0, h1, w0, w1, div } = windows[o]!;
        let s = 0;
        for (let h = h0; h < h1; h++) for (let w = w0; w < w1; w++) s += p.data[base + h * p.W + w]!;
        out[c * OH * OW + o] = s / div;
      }
    }
    ctx.args = args;
    ctx.x = ctx.save(x);
    return Tensor.fromData(out, [...p.lead, OH, OW], 'float32');
  },
  backward(ctx, g): readonly GradResult[] {
    const a = ctx.args as AvgPoolArgs;
    return [avgPool2dBackward(g, ctx.x as Tensor, a.kernelSize, a.stride, a.padding, a.ceilMode, a.countIncludePad, a.divisorOverride)];
  },
  lower: (k, a, out) => pool2dIR(k, a, out, 'avg'),
});

/** PyTorch's avg_pool2d_backward: each output gradient spread evenly (÷ its divisor) over its window. */
export const avgPool2dBackward = defineOp<
  (
    gradOutput: Tensor,
    input: Tensor,
    kernelSize: Pair,
    stride: Pair | null,
    padding: Pair,
    ceilMode: boolean,
    countIncludePad: boolean,
    divisorOverride: number | null,
  ) => Tensor
>({
  schema:
    'avgPool2dBackward(Tensor gradOutput, Tensor input, int|int[] kernelSize, int|int[]? stride, int|int[] padding, bool ceilMode, bool countIncludePad, int? divisorOverride)',
  forward(ctx, g, x, kernelSize, stride, padding, ceilMode, countIncludePad, divisorOverride) {
    const op = 'avgPool2dBackward';
    const p = planesOf(op, x);
    const args: AvgPoolArgs = { kernelSize, stride, padding, ceilMode, countIncludePad, divisorOverride };
    const { windows, OH, OW } = avgWindows(op, p, args);
    const gs = checkGradOutput(op, g, x, [...p.lead, OH, OW]);
    const { H, W } = p;
    const L = OH * OW;
    const gx = new Float32Array(p.planes * H * W);
    for (let c = 0; c < p.planes; c++) {
      for (let o = 0; o < L; o++) {
        const { h0, h1, w0, w1, div } = windows[o]!;
        const v = gs[c * L + o]! / div;
        for (let h = h0; h < h1; h++) for (let w = w0; w < w1; w++) gx[c * H * W + h * W + w] += v;
      }
    }
    ctx.args = args;
    return Tensor.fromData(gx, x.shape, 'float32');
  },
  backward(ctx, gg): readonly GradResult[] {
    // avg pooling is linear: the adjoint of its adjoint is itself
    const a = ctx.args as AvgPoolArgs;
    return [avgPool2d(gg, a.kernelSize, a.stride, a.padding, a.ceilMode, a.countIncludePad, a.divisorOverride), null];
  },
  lower: { eager: 'avgPool2dBackward: no pooling-backward kernel yet' },
});

/** Adaptive pooling's bin i of `out` over a dim of length n: [floor(i·n/out), ceil((i+1)·n/out)). */
const bins = (n: number, out: number, i: number) => [Math.floor((i * n) / out), Math.ceil(((i + 1) * n) / out)] as const;

export const adaptiveAvgPool2d = defineOp<(input: Tensor, outputSize: Pair) => Tensor>({
  schema: 'adaptiveAvgPool2d(Tensor input, int|int[] outputSize)',
  forward(ctx, x, outputSize) {
    const p = planesOf('adaptiveAvgPool2d', x);
    const [OH, OW] = pair('adaptiveAvgPool2d', 'outputSize', outputSize, 1);
    const out = new Float32Array(p.planes * OH * OW);
    for (let c = 0; c < p.planes; c++) {
      const base = c * p.H * p.W;
      for (let oh = 0; oh < OH; oh++) {
        const [h0, h1] = bins(p.H, OH, oh);
        for (let ow = 0; ow < OW; ow++) {
          const [w0, w1] = bins(p.W, OW, ow);
          let s = 0;
          for (let h = h0; h < h1; h++) for (let w = w0; w < w1; w++) s += p.data[base + h * p.W + w]!;
          out[(c * OH + oh) * OW + ow] = s / ((h1 - h0) * (w1 - w0));
        }
      }
    }
    ctx.x = ctx.save(x);
    return Tensor.fromData(out, [...p.lead, OH, OW], 'float32');
  },
  backward: (ctx, g): readonly GradResult[] => [adaptiveAvgPool2dBackward(g, ctx.x as Tensor)],
  lower: { eager: 'adaptiveAvgPool2d: no adaptive pooling kernel yet' },
});

/** PyTorch's _adaptive_avg_pool2d_backward: each output gradient spread evenly over its bin. */
export const adaptiveAvgPool2dBackward = defineOp<(gradOutput: Tensor, input: Tensor) => Tensor>({
  schema: 'adaptiveAvgPool2dBackward(Tensor gradOutput, Tensor input)',
  forward(ctx, g, x) {
    const op = 'adaptiveAvgPool2dBackward';
    const p = planesOf(op, x);
    const [OH, OW] = checkAdaptiveGrad(NUMBER_ARITH, op, g, x, p.lead);
    const gs = checkGradOutput(op, g, x, [...p.lead, OH, OW]);
    ctx.outputSize = [OH, OW];
    const { H, W } = p;
    const gx = new Float32Array(p.planes * H * W);
    for (let c = 0; c < p.planes; c++) {
      for (let oh = 0; oh < OH; oh++) {
        const [h0, h1] = bins(H, OH, oh);
        for (let ow = 0; ow < OW; ow++) {
          const [w0, w1] = bins(W, OW, ow);
          const v = gs[(c * OH + oh) * OW + ow]! / ((h1 - h0) * (w1 - w0));
          for (let h = h0; h < h1; h++) for (let w = w0; w < w1; w++) gx[c * H * W + h * W + w] += v;
        }
      }
    }
    return Tensor.fromData(gx, x.shape, 'float32');
  },
  backward: (ctx, gg): readonly GradResult[] => [adaptiveAvgPool2d(gg, ctx.outputSize as [number, number]), null],
  lower: { eager: 'adaptiveAvgPool2dBackward: no pooling-backward kernel yet' },
});
