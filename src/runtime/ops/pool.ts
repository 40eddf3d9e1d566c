import { DTypeError, ShapeError, ValueError } from '../../errors.js';
import { windowOut } from '../cpu/conv.js';
import { defineOp } from '../op.js';
import type { Eager, KValue, LowerArgs, LowerContext, LowerResult, Pool2dAttrs } from '../lowering.js';
import { pairOf } from './lowering-helpers.js';
import { fmt } from '../shape.js';
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
  if (x.dtype !== 'float32') throw new DTypeError(`${op}: expected a float32 input, got ${x.dtype}`);
  if (x.ndim !== 3 && x.ndim !== 4) throw new ShapeError(`${op}: expected a 3-D or 4-D input, got ${fmt(x.shape)}`);
  const H = x.shape[x.ndim - 2]!;
  const W = x.shape[x.ndim - 1]!;
  const lead = x.shape.slice(0, -2);
  return { data: x.contiguous().data() as Float32Array, planes: lead.reduce((a, b) => a * b, 1), H, W, lead };
}

function poolGeometry(op: string, p: Planes, kernelSize: Pair, stride: Pair | null, padding: Pair, dilation: Pair, ceilMode: boolean) {
  const [kh, kw] = pair(op, 'kernelSize', kernelSize, 1);
  const [sh, sw] = stride === null || (Array.isArray(stride) && stride.length === 0) ? [kh, kw] : pair(op, 'stride', stride, 1);
  const [ph, pw] = pair(op, 'padding', padding, 0);
  const [dh, dw] = pair(op, 'dilation', dilation, 1);
  if (ph * 2 > dh * (kh - 1) + 1 || pw * 2 > dw * (kw - 1) + 1) {
    throw new ValueError(`${op}: padding ${fmt([ph, pw])} should be at most half of the effective kernel size ${fmt([kh, kw])}`);
  }
  const OH = windowOut(p.H, kh, sh, ph, dh, ceilMode);
  const OW = windowOut(p.W, kw, sw, pw, dw, ceilMode);
  if (OH <= 0 || OW <= 0) {
    throw new ShapeError(`${op}: output size is too small for input ${fmt([...p.lead, p.H, p.W])} with kernel ${fmt([kh, kw])}`);
  }
  return { kh, kw, sh, sw, ph, pw, dh, dw, OH, OW };
}

export const maxPool2d = defineOp<
  (input: Tensor, kernelSize: Pair, stride?: Pair | null, padding?: Pair, dilation?: Pair, ceilMode?: boolean) => Tensor
>({
  schema:
    'maxPool2d(Tensor input, int|int[] kernelSize, int|int[]? stride=null, int|int[] padding=0, int|int[] dilation=1, bool ceilMode=false)',
  forward(ctx, x, kernelSize, stride = null, padding = 0, dilation = 1, ceilMode = false) {
    const p = planesOf('maxPool2d', x);
    const { kh, kw, sh, sw, ph, pw, dh, dw, OH, OW } = poolGeometry('maxPool2d', p, kernelSize, stride, padding, dilation, ceilMode);
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
    Object.assign(ctx, { arg, shape: x.shape, planes: p.planes, HW: p.H * p.W });
    return Tensor.fromData(out, [...p.lead, OH, OW], 'float32');
  },
  backward(ctx, g) {
    const arg = ctx.arg as Int32Array;
    const HW = ctx.HW as number;
    const gs = g.contiguous().data();
    const per = arg.length / (ctx.planes as number);
    const gx = new Float32Array((ctx.planes as number) * HW);
    for (let o = 0; o < arg.length; o++) gx[Math.floor(o / per) * HW + arg[o]!] += gs[o]!;
    return [Tensor.fromData(gx, ctx.shape as number[], 'float32')];
  },
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
    const { kh, kw, sh, sw, ph, pw, OH, OW } = poolGeometry('avgPool2d', p, kernelSize, stride, padding, 1, ceilMode);
    // Each window's [h0, h1) × [w0, w1) clipped to the image, and its divisor.
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
        const div = divisorOverride ?? (countIncludePad ? padded : (h1 - h0) * (w1 - w0));
        windows.push({ h0, h1, w0, w1, div });
      }
    }
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
    Object.assign(ctx, { windows, shape: x.shape, planes: p.planes, H: p.H, W: p.W, L: OH * OW });
    return Tensor.fromData(out, [...p.lead, OH, OW], 'float32');
  },
  backward(ctx, g) {
    const windows = ctx.windows as PoolWindow[];
    const { planes, H, W, L } = ctx as unknown as { planes: number; H: number; W: number; L: number };
    const gs = g.contiguous().data();
    const gx = new Float32Array(planes * H * W);
    for (let c = 0; c < planes; c++) {
      for (let o = 0; o < L; o++) {
        const { h0, h1, w0, w1, div } = windows[o]!;
        const v = gs[c * L + o]! / div;
        for (let h = h0; h < h1; h++) for (let w = w0; w < w1; w++) gx[c * H * W + h * W + w] += v;
      }
    }
    return [Tensor.fromData(gx, ctx.shape as number[], 'float32')];
  },
  lower: (k, a, out) => pool2dIR(k, a, out, 'avg'),
});

export const adaptiveAvgPool2d = defineOp<(input: Tensor, outputSize: Pair) => Tensor>({
  schema: 'adaptiveAvgPool2d(Tensor input, int|int[] outputSize)',
  forward(ctx, x, outputSize) {
    const p = planesOf('adaptiveAvgPool2d', x);
    const [OH, OW] = pair('adaptiveAvgPool2d', 'outputSize', outputSize, 1);
    const bins = (n: number, out: number, i: number) => [Math.floor((i * n) / out), Math.ceil(((i + 1) * n) / out)] as const;
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
    Object.assign(ctx, { shape: x.shape, planes: p.planes, H: p.H, W: p.W, OH, OW, bins });
    return Tensor.fromData(out, [...p.lead, OH, OW], 'float32');
  },
  backward(ctx, g) {
    const { planes, H, W, OH, OW } = ctx as unknown as Record<string, number>;
    const bins = ctx.bins as (n: number, out: number, i: number) => readonly [number, number];
    const gs = g.contiguous().data();
    const gx = new Float32Array(planes! * H! * W!);
    for (let c = 0; c < planes!; c++) {
      for (let oh = 0; oh < OH!; oh++) {
        const [h0, h1] = bins(H!, OH!, oh);
        for (let ow = 0; ow < OW!; ow++) {
          const [w0, w1] = bins(W!, OW!, ow);
          const v = gs[(c * OH! + oh) * OW! + ow]! / ((h1 - h0) * (w1 - w0));
          for (let h = h0; h < h1; h++) for (let w = w0; w < w1; w++) gx[c * H! * W! + h * W! + w] += v;
        }
      }
    }
    return [Tensor.fromData(gx, ctx.shape as number[], 'float32')];
  },
  lower: { eager: 'adaptiveAvgPool2d: no adaptive pooling kernel yet' },
});
