import { DTypeError, ShapeError, ValueError } from '../../errors.js';
import type { DType } from '../dtype.js';
import type { SizeArith } from '../size-arith.js';
import { pair, type Pair } from './conv.js';
import { fmtSizes, meta, type ShapeRule, type TensorMeta } from './meta.js';
import { sameSizes, windowSize } from './sizes.js';

/** Shape rules of 2-D pooling (src/runtime/ops/pool.ts) and the geometry the eager kernels share with them. */

type M<S> = TensorMeta<S>;

/** A pooling input: float32, [C, H, W] or [N, C, H, W]; its leading dims and plane size. */
export function poolPlanes<S>(op: string, x: M<S>): { lead: S[]; H: S; W: S } {
  if (x.dtype !== 'float32') throw new DTypeError(`${op}: expected a float32 input, got ${x.dtype}`);
  const n = x.shape.length;
  if (n !== 3 && n !== 4) throw new ShapeError(`${op}: expected a 3-D or 4-D input, got ${fmtSizes(x.shape)}`);
  return { lead: x.shape.slice(0, -2), H: x.shape[n - 2]!, W: x.shape[n - 1]! };
}

export interface PoolGeometry<S> {
  kh: number;
  kw: number;
  sh: number;
  sw: number;
  ph: number;
  pw: number;
  dh: number;
  dw: number;
  OH: S;
  OW: S;
}

/** The pooling window resolved and checked, and the output plane size. */
export function poolGeometry<S>(
  A: SizeArith<S>,
  op: string,
  p: { lead: readonly S[]; H: S; W: S },
  kernelSize: Pair,
  stride: Pair | null,
  padding: Pair,
  dilation: Pair,
  ceilMode: boolean,
): PoolGeometry<S> {
  const [kh, kw] = pair(op, 'kernelSize', kernelSize, 1);
  const [sh, sw] = stride === null || (Array.isArray(stride) && stride.length === 0) ? [kh, kw] : pair(op, 'stride', stride, 1);
  const [ph, pw] = pair(op, 'padding', padding, 0);
  const [dh, dw] = pair(op, 'dilation', dilation, 1);
  if (ph * 2 > dh * (kh - 1) + 1 || pw * 2 > dw * (kw - 1) + 1) {
    throw new ValueError(`${op}: padding ${fmtSizes([ph, pw])} should be at most half of the effective kernel size ${fmtSizes([kh, kw])}`);
  }
  const OH = windowSize(A, p.H, kh, sh, ph, dh, ceilMode);
  const OW = windowSize(A, p.W, kw, sw, pw, dw, ceilMode);
  if (A.le(OH, A.lit(0)) || A.le(OW, A.lit(0))) {
    throw new ShapeError(`${op}: output size is too small for input ${fmtSizes([...p.lead, p.H, p.W])} with kernel ${fmtSizes([kh, kw])}`);
  }
  return { kh, kw, sh, sw, ph, pw, dh, dw, OH, OW };
}

/** A pooling backward's gradOutput must have the shape the forward produced from `input`. */
export function checkPoolGradOutput<S>(A: SizeArith<S>, op: string, g: M<S>, input: readonly S[], want: readonly S[]): void {
  if (g.dtype !== 'float32') throw new DTypeError(`${op}: expected a float32 gradOutput, got ${g.dtype}`);
  if (!sameSizes(A, g.shape, want)) {
    throw new ShapeError(`${op}: gradOutput must have shape ${fmtSizes(want)} for input ${fmtSizes(input)}, got ${fmtSizes(g.shape)}`);
  }
}

export function checkPoolIndices<S>(A: SizeArith<S>, op: string, indices: M<S>, g: readonly S[]): void {
  if (indices.dtype !== 'int32') throw new DTypeError(`${op}: indices must be an int32 tensor, got ${indices.dtype}`);
  if (!sameSizes(A, indices.shape, g)) {
    throw new ShapeError(`${op}: indices must have gradOutput's shape ${fmtSizes(g)}, got ${fmtSizes(indices.shape)}`);
  }
}

/** adaptiveAvgPool2dBackward: gradOutput has the input's leading dims; returns its plane size. */
export function checkAdaptiveGrad<S>(A: SizeArith<S>, op: string, g: M<S>, x: M<S>, lead: readonly S[]): [S, S] {
  if (g.shape.length !== x.shape.length || !sameSizes(A, g.shape.slice(0, -2), lead)) {
    throw new ShapeError(`${op}: gradOutput ${fmtSizes(g.shape)} must have the leading dims of input ${fmtSizes(x.shape)}`);
  }
  return g.shape.slice(-2) as [S, S];
}

function pooled<S>(
  A: SizeArith<S>,
  op: string,
  x: M<S>,
  k: Pair,
  s: Pair | null,
  p: Pair,
  d: Pair,
  ceil: boolean,
  dtype: DType = 'float32',
): M<S> {
  const planes = poolPlanes(op, x);
  const { OH, OW } = poolGeometry(A, op, planes, k, s, p, d, ceil);
  return meta([...planes.lead, OH, OW], dtype);
}

type MaxArgs = [M<never>, Pair, Pair | null, Pair, Pair, boolean];

export const POOL_RULES = {
  maxPool2dWithIndices: (A, args) => {
    const [x, k, s, p, d, ceil] = args as MaxArgs;
    const out = pooled(A, 'maxPool2d', x, k, s, p, d, ceil);
    return [out, meta(out.shape, 'int32')];
  },
  maxPool2d: (A, args) => {
    const [x, k, s, p, d, ceil] = args as MaxArgs;
    return pooled(A, 'maxPool2d', x, k, s, p, d, ceil);
  },
  maxPool2dWithIndicesBackward: (A, args) => {
    const [g, x, k, s, p, d, ceil, indices] = args as [M<never>, M<never>, Pair, Pair | null, Pair, Pair, boolean, M<never>];
    const op = 'maxPool2dWithIndicesBackward';
    const want = pooled(A, op, x, k, s, p, d, ceil).shape;
    checkPoolGradOutput(A, op, g, x.shape, want);
    checkPoolIndices(A, op, indices, g.shape);
    return meta(x.shape, 'float32');
  },
  avgPool2d: (A, args) => {
    const [x, k, s, p, ceil] = args as [M<never>, Pair, Pair | null, Pair, boolean];
    return pooled(A, 'avgPool2d', x, k, s, p, 1, ceil);
  },
  avgPool2dBackward: (A, args) => {
    const [g, x, k, s, p, ceil] = args as [M<never>, M<never>, Pair, Pair | null, Pair, boolean];
    const op = 'avgPool2dBackward';
    checkPoolGradOutput(A, op, g, x.shape, pooled(A, op, x, k, s, p, 1, ceil).shape);
    return meta(x.shape, 'float32');
  },
  adaptiveAvgPool2d: (A, [x, outputSize]) => {
    const planes = poolPlanes('adaptiveAvgPool2d', x as M<never>);
    const [OH, OW] = pair('adaptiveAvgPool2d', 'outputSize', outputSize as Pair, 1);
    return meta([...planes.lead, A.lit(OH), A.lit(OW)], 'float32');
  },
  adaptiveAvgPool2dBackward: (A, [g, x]) => {
    const op = 'adaptiveAvgPool2dBackward';
    const [gm, xm] = [g as M<never>, x as M<never>];
    const planes = poolPlanes(op, xm);
    const [OH, OW] = checkAdaptiveGrad(A, op, gm, xm, planes.lead);
    checkPoolGradOutput(A, op, gm, xm.shape, [...planes.lead, OH, OW]);
    return meta(xm.shape, 'float32');
  },
} satisfies Record<string, ShapeRule>;
