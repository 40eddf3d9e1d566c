import { DTypeError, ShapeError, ValueError } from '../../errors.js';
import type { SizeArith } from '../size-arith.js';
import { checkNumelOf, fmtSizes, meta, type ShapeRule, type TensorMeta } from './meta.js';
import { sameSizes, windowSize } from './sizes.js';

/** Shape rules of the convolutions (src/runtime/ops/conv.ts) and the geometry the eager kernels share with them. */

type M<S> = TensorMeta<S>;

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

/** A 2-d convolution's window: kernel, stride, padding before, dilation (numbers) and the sizes in and out. */
export interface Conv2dGeometry<S> {
  batched: boolean;
  N: S;
  C: S;
  O: S;
  Cg: S;
  H: S;
  W: S;
  OH: S;
  OW: S;
  kh: number;
  kw: number;
  sh: number;
  sw: number;
  ph: number;
  pw: number;
  dh: number;
  dw: number;
}

/** A kernel size: the window's arithmetic needs it as a number (export keeps weights' sizes static). */
function staticKernel<S>(A: SizeArith<S>, op: string, weight: readonly S[], d: number): number {
  const k = A.constant(weight[d]!);
  if (k === undefined) throw new ShapeError(`${op}: the kernel size ${weight[d]} of weight ${fmtSizes(weight)} must be static`);
  return k;
}

/** Check a 2-d convolution's input, weight and bias and resolve its geometry; errors name `op`. */
export function conv2dGeometry<S>(
  A: SizeArith<S>,
  op: string,
  input: M<S>,
  weight: M<S>,
  biasShape: readonly S[] | null,
  stride: Pair,
  padding: Pair | string,
  dilation: Pair,
  groups: number,
): Conv2dGeometry<S> {
  if (input.dtype !== 'float32' || weight.dtype !== 'float32') {
    throw new DTypeError(`${op}: expected float32 input and weight, got ${input.dtype} and ${weight.dtype}`);
  }
  const batched = input.shape.length === 4;
  if (input.shape.length !== 3 && input.shape.length !== 4) {
    throw new ShapeError(`${op}: expected a 3-D [C, H, W] or 4-D [N, C, H, W] input, got ${fmtSizes(input.shape)}`);
  }
  if (weight.shape.length !== 4) throw new ShapeError(`${op}: weight must be 4-D [out, in/groups, kh, kw], got ${fmtSizes(weight.shape)}`);
  const [N, C, H, W] = (batched ? input.shape : [A.lit(1), ...input.shape]) as [S, S, S, S];
  const [O, Cg] = weight.shape as [S, S];
  const divides = (n: S) => A.eq(A.mod(n, groups), A.lit(0));
  if (!Number.isInteger(groups) || groups < 1 || !divides(C) || !divides(O)) {
    throw new ValueError(`${op}: groups=${groups} must divide both in_channels (${C}) and out_channels (${O})`);
  }
  const cin = A.mul(Cg, A.lit(groups));
  if (!A.eq(cin, C)) {
    throw new ShapeError(
      `${op}: weight ${fmtSizes(weight.shape)} expects ${cin} input channels (groups=${groups}), but the input ${fmtSizes(input.shape)} has ${C}`,
    );
  }
  if (biasShape && (biasShape.length !== 1 || !A.eq(biasShape[0]!, O))) {
    throw new ShapeError(`${op}: bias must have shape [${O}], got ${fmtSizes(biasShape)}`);
  }
  const kh = staticKernel(A, op, weight.shape, 2);
  const kw = staticKernel(A, op, weight.shape, 3);
  const [sh, sw] = pair(op, 'stride', stride, 1);
  const [dh, dw] = pair(op, 'dilation', dilation, 1);
  const pads = resolvePadding(op, padding, [kh, kw], [dh, dw], [sh, sw]);
  const [ph, pw] = pads.before;
  // Extra padding after the image only adds output positions: im2row reads zeros past H and W.
  const OH = windowSize(A, A.add(H, A.lit(pads.after[0] - ph)), kh, sh, ph, dh, false);
  const OW = windowSize(A, A.add(W, A.lit(pads.after[1] - pw)), kw, sw, pw, dw, false);
  if (A.le(OH, A.lit(0)) || A.le(OW, A.lit(0))) {
    throw new ShapeError(
      `${op}: input ${fmtSizes(input.shape)} (padded by ${fmtSizes([ph, pw])}) is smaller than the kernel ${fmtSizes([kh, kw])} with dilation ${fmtSizes([dh, dw])}`,
    );
  }
  checkNumelOf(A, op, [N, O, OH, OW]);
  checkNumelOf(A, op, [A.mul(OH, OW), A.mul(Cg, A.lit(kh * kw))]);
  return { batched, N, C, O, Cg, H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw };
}

/** The convolution's output sizes: [N, O, OH, OW], or [O, OH, OW] for an unbatched input. */
export function convOutSizes<S>(g: Conv2dGeometry<S>): S[] {
  return g.batched ? [g.N, g.O, g.OH, g.OW] : [g.O, g.OH, g.OW];
}

export function checkConv1dShapes(input: readonly unknown[], weight: readonly unknown[]): void {
  if (input.length !== 2 && input.length !== 3) {
    throw new ShapeError(`conv1d: expected a 2-D [C, L] or 3-D [N, C, L] input, got ${fmtSizes(input)}`);
  }
  if (weight.length !== 3) throw new ShapeError(`conv1d: weight must be 3-D [out, in/groups, k], got ${fmtSizes(weight)}`);
}

/** A 1-d convolution's stride, padding and dilation as those of the 2-d convolution over a height-1 image. */
export function as2d(stride: Pair, padding: Pair | string, dilation: Pair): [Pair, Pair | string, Pair] {
  const one = (v: Pair) => (typeof v === 'number' ? v : v[0]!);
  return [[1, one(stride)], typeof padding === 'string' ? padding : [0, one(padding)], [1, one(dilation)]];
}

/** `shape` with a size-1 dim inserted at `d` (negative counts from the end, as unsqueeze's). */
function withOne<S>(A: SizeArith<S>, shape: readonly S[], d: number): S[] {
  const out = [...shape];
  out.splice(d < 0 ? shape.length + d + 1 : d, 0, A.lit(1));
  return out;
}

function dropAt<S>(shape: readonly S[], d: number): S[] {
  return shape.filter((_, i) => i !== (d < 0 ? shape.length + d : d));
}

export function checkConvGradOutput<S>(A: SizeArith<S>, op: string, g: readonly S[], want: readonly S[], input: readonly S[]): void {
  if (!sameSizes(A, g, want)) {
    throw new ShapeError(`${op}: gradOutput must have shape ${fmtSizes(want)} for input ${fmtSizes(input)}, got ${fmtSizes(g)}`);
  }
}

type ConvArgs = [M<never>, M<never>, M<never> | null, Pair, Pair | string, Pair, number];

export const CONV_RULES = {
  conv2d: (A, args) => {
    const [x, w, b, stride, padding, dilation, groups] = args as ConvArgs;
    return meta(convOutSizes(conv2dGeometry(A, 'conv2d', x, w, b?.shape ?? null, stride, padding, dilation, groups)), 'float32');
  },
  conv1d: (A, args) => {
    const [x, w, b, stride, padding, dilation, groups] = args as ConvArgs;
    checkConv1dShapes(x.shape, w.shape);
    const [s2, p2, d2] = as2d(stride, padding, dilation);
    const x2 = meta(withOne(A, x.shape, -2), x.dtype);
    const w2 = meta(withOne(A, w.shape, 2), w.dtype);
    return meta(dropAt(convOutSizes(conv2dGeometry(A, 'conv2d', x2, w2, b?.shape ?? null, s2, p2, d2, groups)), -2), 'float32');
  },
  convolutionBackward: (A, args) => {
    const [g, input, weight, biasSizes, stride, padding, dilation, transposed, outputPadding, groups, outputMask] = args as [
      M<never>,
      M<never>,
      M<never>,
      readonly never[] | null,
      Pair,
      Pair | string,
      Pair,
      boolean,
      Pair,
      number,
      unknown,
    ];
    const op = 'convolutionBackward';
    const mask = checkConvBackwardArgs(g, input.shape, weight.shape, biasSizes, transposed, outputPadding, outputMask);
    if (weight.shape.length === 3) {
      const [s2, p2, d2] = as2d(stride, padding, dilation);
      const geo = conv2dGeometry(
        A,
        op,
        meta(withOne(A, input.shape, -2), input.dtype),
        meta(withOne(A, weight.shape, 2), weight.dtype),
        biasSizes,
        s2,
        p2,
        d2,
        groups,
      );
      checkConvGradOutput(A, op, withOne(A, g.shape, -2), convOutSizes(geo), input.shape);
    } else {
      const geo = conv2dGeometry(A, op, input, weight, biasSizes, stride, padding, dilation, groups);
      checkConvGradOutput(A, op, g.shape, convOutSizes(geo), input.shape);
    }
    return [
      mask[0] ? meta(input.shape, 'float32') : null,
      mask[1] ? meta(weight.shape, 'float32') : null,
      mask[2]
        ? meta(
            biasSizes!.map((s) => (typeof s === 'number' ? A.lit(s) : s)),
            'float32',
          )
        : null,
    ];
  },
} satisfies Record<string, ShapeRule>;

export type ConvGradMask = [boolean, boolean, boolean];

/** convolutionBackward's argument checks before the geometry (a 1-d convolution's ranks included); returns the mask. */
export function checkConvBackwardArgs(
  g: M<unknown>,
  input: readonly unknown[],
  weight: readonly unknown[],
  biasSizes: readonly unknown[] | null,
  transposed: boolean,
  outputPadding: Pair,
  outputMask: unknown,
): ConvGradMask {
  const op = 'convolutionBackward';
  if (transposed) throw new ValueError(`${op}: transposed convolutions are not supported`);
  if ((typeof outputPadding === 'number' ? [outputPadding] : outputPadding).some((p) => p !== 0)) {
    throw new ValueError(`${op}: outputPadding must be 0 for a convolution that is not transposed, got ${JSON.stringify(outputPadding)}`);
  }
  const mask = checkConvMask(op, outputMask);
  if (mask[2] && !biasSizes) throw new ValueError(`${op}: outputMask asks for a bias gradient but biasSizes is null`);
  if (g.dtype !== 'float32') throw new DTypeError(`${op}: expected a float32 gradOutput, got ${g.dtype}`);
  if (weight.length === 3) {
    if (input.length !== 2 && input.length !== 3) {
      throw new ShapeError(`${op}: expected a 2-D [C, L] or 3-D [N, C, L] input for a 3-D weight, got ${fmtSizes(input)}`);
    }
    if (g.shape.length !== input.length)
      throw new ShapeError(`${op}: gradOutput ${fmtSizes(g.shape)} must have the rank of input ${fmtSizes(input)}`);
  }
  return mask;
}

export function checkConvMask(op: string, outputMask: unknown): ConvGradMask {
  if (!Array.isArray(outputMask) || outputMask.length !== 3 || !outputMask.every((m) => typeof m === 'boolean')) {
    throw new ValueError(`${op}: outputMask must be 3 booleans [input, weight, bias], got ${JSON.stringify(outputMask)}`);
  }
  return outputMask as ConvGradMask;
}
