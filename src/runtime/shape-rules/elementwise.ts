import { DTypeError, ValueError } from '../../errors.js';
import { promote, promoteScalar, type DType } from '../dtype.js';
import type { SizeArith } from '../size-arith.js';
import { isMeta, meta, type ShapeRule, type TensorMeta } from './meta.js';
import { broadcastSizes } from './sizes.js';

/** Shape rules of the element-wise ops (src/runtime/ops/elementwise.ts). */

/** A Tensor|Scalar operand: a tensor's meta or a plain number. */
export type OperandMeta<S> = TensorMeta<S> | number | boolean;

/** The dtype of `a ∘ b` under PyTorch's promotion (numbers do not widen a tensor of the same kind). */
export function resultDType(a: OperandMeta<unknown>, b: OperandMeta<unknown>): DType {
  if (isMeta(a) && isMeta(b)) return promote(a.dtype, b.dtype);
  if (isMeta(a)) return promoteScalar(a.dtype, b as number);
  if (isMeta(b)) return promoteScalar(b.dtype, a as number);
  return Number.isInteger(a) && Number.isInteger(b) ? 'int32' : 'float32';
}

export function checkApproximate(op: string, approximate: string): void {
  if (approximate !== 'none' && approximate !== 'tanh') {
    throw new ValueError(`${op}: approximate must be 'none' or 'tanh', got '${approximate}'`);
  }
}

/** clamp's bounds (one at least) and result dtype: float bounds make an integer input float32, bool becomes int32. */
export function clampDType(dtype: DType, min: number | null | undefined, max: number | null | undefined): DType {
  if ((min === null || min === undefined) && (max === null || max === undefined)) {
    throw new ValueError(`clamp: at least one of 'min' or 'max' must be given`);
  }
  const lo = min ?? -Infinity;
  const hi = max ?? Infinity;
  const out = dtype === 'float32' || (Number.isInteger(lo) && Number.isInteger(hi)) ? dtype : 'float32';
  return out === 'bool' ? 'int32' : out;
}

export function checkWhereCondition(dtype: DType): void {
  if (dtype !== 'bool') throw new DTypeError(`where: condition must be a bool tensor (e.g. x.gt(0)), got ${dtype}`);
}

const shapeOf = <S>(v: OperandMeta<S>): readonly S[] => (isMeta(v) ? (v.shape as readonly S[]) : []);

/** The broadcast shape of the operands (a number is 0-d), with the op's name in its error. */
function broadcastAll<S>(A: SizeArith<S>, op: string, ...xs: OperandMeta<S>[]): readonly S[] {
  return xs.slice(1).reduce<readonly S[]>((acc, x) => broadcastSizes(A, op, acc, shapeOf(x)), shapeOf(xs[0]!));
}

/** out = a ∘ b with broadcasting; `dtype` of the operands. */
const binary =
  (name: string, dtypeOf: (a: OperandMeta<unknown>, b: OperandMeta<unknown>) => DType): ShapeRule =>
  (A, [a, b]) =>
    meta(
      broadcastAll(A, name, a as OperandMeta<never>, b as OperandMeta<never>),
      dtypeOf(a as OperandMeta<unknown>, b as OperandMeta<unknown>),
    );

const unary =
  (keepInt: boolean): ShapeRule =>
  (_A, [x]) => {
    const t = x as TensorMeta<never>;
    return meta(t.shape, keepInt ? t.dtype : 'float32');
  };

const float32 = () => 'float32' as const;

export const ELEMENTWISE_RULES = {
  add: binary('add', resultDType),
  sub: binary('sub', resultDType),
  mul: binary('mul', resultDType),
  div: binary('div', float32),
  pow: binary('pow', resultDType),
  tanhBackward: binary('tanhBackward', float32),
  sigmoidBackward: binary('sigmoidBackward', float32),
  thresholdBackward: binary('thresholdBackward', float32),
  neg: unary(true),
  abs: unary(true),
  relu: unary(true),
  exp: unary(false),
  log: unary(false),
  sqrt: unary(false),
  tanh: unary(false),
  sigmoid: unary(false),
  sin: unary(false),
  cos: unary(false),
  exp2: unary(false),
  gelu: (A, args) => {
    checkApproximate('gelu', args[1] as string);
    return unary(false)(A, args);
  },
  geluBackward: (A, args) => {
    checkApproximate('geluBackward', args[2] as string);
    return binary('geluBackward', float32)(A, args);
  },
  clamp: (_A, [x, min, max]) => {
    const t = x as TensorMeta<never>;
    return meta(t.shape, clampDType(t.dtype, min as number | null | undefined, max as number | null | undefined));
  },
  where: (A, [c, a, b]) => {
    const cond = c as TensorMeta<never>;
    checkWhereCondition(cond.dtype);
    return meta(
      broadcastAll(A, 'where', cond, a as OperandMeta<never>, b as OperandMeta<never>),
      resultDType(a as OperandMeta<unknown>, b as OperandMeta<unknown>),
    );
  },
  eq: binary('eq', () => 'bool'),
  ne: binary('ne', () => 'bool'),
  lt: binary('lt', () => 'bool'),
  le: binary('le', () => 'bool'),
  gt: binary('gt', () => 'bool'),
  ge: binary('ge', () => 'bool'),
  clone: unary(true),
  toDType: (_A, [x, dtype]) => meta((x as TensorMeta<never>).shape, (dtype as DType | undefined) ?? (x as TensorMeta<never>).dtype),
  dropoutMask: binary('dropout', float32),
} satisfies Record<string, ShapeRule>;
