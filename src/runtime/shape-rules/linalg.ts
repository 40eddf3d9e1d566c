import { DTypeError, ShapeError } from '../../errors.js';
import type { DType } from '../dtype.js';
import type { SizeArith } from '../size-arith.js';
import { checkNumelOf, fmtSizes, meta, type ShapeRule, type TensorMeta } from './meta.js';
import { broadcastsToSizes, matmulSizes } from './sizes.js';

/** Shape rules of the matrix products (src/runtime/ops/linalg.ts) and the checks the eager ops share with them. */

type M<S> = TensorMeta<S>;

export function checkMatmulDTypes(a: DType, b: DType): void {
  if (a !== 'float32' || b !== 'float32') throw new DTypeError(`matmul: expected float32 tensors, got ${a} and ${b}`);
}

/** torch.matmul's checks and output sizes. */
export function matmulMeta<S>(A: SizeArith<S>, a: M<S>, b: M<S>): M<S> {
  checkMatmulDTypes(a.dtype, b.dtype);
  return meta(matmulSizes(A, a.shape, b.shape), 'float32');
}

/** linear's weight and bias checks (the product's own checks are matmul's). */
export function checkLinear<S>(A: SizeArith<S>, x: M<S>, w: M<S>, bias: M<S> | null): void {
  if (w.shape.length !== 2) throw new ShapeError(`linear: weight must be 2-D [out, in], got ${fmtSizes(w.shape)}`);
  const inF = w.shape[1]!;
  if (x.shape.length === 0 || !A.eq(x.shape[x.shape.length - 1]!, inF)) {
    throw new ShapeError(`linear: expected input [..., ${inF}] for weight ${fmtSizes(w.shape)}, got ${fmtSizes(x.shape)}`);
  }
  if (bias && !(bias.shape.length === 1 && A.eq(bias.shape[0]!, w.shape[0]!))) {
    throw new ShapeError(`linear: bias must be [${w.shape[0]}] for weight ${fmtSizes(w.shape)}, got ${fmtSizes(bias.shape)}`);
  }
}

/** PyTorch's mm/addmm operand checks: float32 matrices whose inner dims agree; returns the product's sizes. */
export function checkMatrices<S>(A: SizeArith<S>, op: string, a: M<S>, b: M<S>, names: readonly [string, string]): S[] {
  for (const [t, name] of [
    [a, names[0]],
    [b, names[1]],
  ] as const) {
    if (t.dtype !== 'float32') throw new DTypeError(`${op}: expected float32 tensors, got ${name} of dtype ${t.dtype}`);
    if (t.shape.length !== 2) {
      throw new ShapeError(`${op}: ${name} must be a matrix, got a ${t.shape.length}-D tensor of shape ${fmtSizes(t.shape)}`);
    }
  }
  if (!A.eq(a.shape[1]!, b.shape[0]!)) {
    throw new ShapeError(
      `${op}: ${names[0]} and ${names[1]} shapes cannot be multiplied (${a.shape[0]}x${a.shape[1]} and ${b.shape[0]}x${b.shape[1]})`,
    );
  }
  const out = [a.shape[0]!, b.shape[1]!];
  checkNumelOf(A, op, out);
  return out;
}

/** addmm's checks; returns the product's sizes. */
export function checkAddmm<S>(A: SizeArith<S>, input: M<S>, m1: M<S>, m2: M<S>): S[] {
  const out = checkMatrices(A, 'addmm', m1, m2, ['mat1', 'mat2']);
  if (input.dtype !== 'float32') throw new DTypeError(`addmm: expected float32 tensors, got input of dtype ${input.dtype}`);
  if (!broadcastsToSizes(A, input.shape, out)) {
    throw new ShapeError(
      `addmm: input of shape ${fmtSizes(input.shape)} cannot be broadcast to the product's shape ${fmtSizes(out)} ` +
        `(mat1 ${fmtSizes(m1.shape)} @ mat2 ${fmtSizes(m2.shape)})`,
    );
  }
  return out;
}

export const LINALG_RULES = {
  matmul: (A, [a, b]) => matmulMeta(A, a as M<never>, b as M<never>),
  linear: (A, [x, w, bias]) => {
    const [xm, wm, bm] = [x as M<never>, w as M<never>, bias as M<never> | null];
    checkLinear(A, xm, wm, bm);
    return meta(matmulMeta(A, xm, meta([wm.shape[1]!, wm.shape[0]!], wm.dtype)).shape, 'float32');
  },
  mm: (A, [a, b]) => meta(checkMatrices(A, 'mm', a as M<never>, b as M<never>, ['self', 'mat2']), 'float32'),
  addmm: (A, [input, m1, m2]) => meta(checkAddmm(A, input as M<never>, m1 as M<never>, m2 as M<never>), 'float32'),
} satisfies Record<string, ShapeRule>;
