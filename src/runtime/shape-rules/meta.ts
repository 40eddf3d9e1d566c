import type { DType } from '../dtype.js';
import type { SizeArith } from '../size-arith.js';
import { MAX_NUMEL } from './dims.js';
import { ShapeError } from '../../errors.js';

/**
 * What a shape rule knows of a tensor: its sizes and dtype. A Tensor is one (sizes as numbers), so eager ops
 * hand their inputs to the same helpers the rules call; export hands symbolic sizes.
 */
export interface TensorMeta<S> {
  readonly shape: readonly S[];
  readonly dtype: DType;
}

/** An op's output: one tensor, several (split, unbind, nativeBatchNorm, …), or null where a gradient is not asked for. */
export type OpMeta<S> = TensorMeta<S> | readonly (TensorMeta<S> | null)[];

/**
 * One op's shape rule: its bound arguments (schema order, defaults filled) with each tensor replaced by its
 * meta and size arguments possibly symbolic, to the output's meta. Throws the eager op's errors for bad shapes.
 */
export type ShapeRule = <S>(A: SizeArith<S>, args: readonly unknown[]) => OpMeta<S>;

export function isMeta(v: unknown): v is TensorMeta<unknown> {
  return (
    typeof v === 'object' &&
    v !== null &&
    Array.isArray((v as { shape?: unknown }).shape) &&
    typeof (v as { dtype?: unknown }).dtype === 'string'
  );
}

/** A size argument: a plain number becomes a literal, a symbolic size stays as it is. */
export function sizeOf<S>(A: SizeArith<S>, v: S | number): S {
  return typeof v === 'number' ? A.lit(v) : v;
}

/** The value of a size known at every size (a number, or a literal), else undefined. Decides nothing. */
export function constantOf<S>(A: SizeArith<S>, v: S | number): number | undefined {
  return typeof v === 'number' ? v : A.constant(v);
}

/** `[a, b, c]` as in error messages (`fmt`), for plain or symbolic sizes. */
export function fmtSizes(shape: readonly unknown[]): string {
  return `[${shape.join(', ')}]`;
}

export function isOne<S>(A: SizeArith<S>, d: S): boolean {
  return A.eq(d, A.lit(1));
}

export function product<S>(A: SizeArith<S>, sizes: readonly S[]): S {
  let n = A.lit(1);
  for (const d of sizes) n = A.mul(n, d);
  return n;
}

/**
 * The MAX_NUMEL check of `checkNumel` on the sizes' values (their hints when symbolic, deciding nothing): a
 * graph is not specialised on a tensor fitting, and the eager op checks the real sizes again when it runs.
 */
export function checkNumelOf<S>(A: SizeArith<S>, op: string, shape: readonly S[]): void {
  let n = 1;
  for (const d of shape) n *= A.hint(d);
  if (n > MAX_NUMEL) {
    throw new ShapeError(`${op}: shape ${fmtSizes(shape)} has ${n} elements, more than the ${MAX_NUMEL} a tensor can hold`);
  }
}

export const meta = <S>(shape: readonly S[], dtype: DType): TensorMeta<S> => ({ shape, dtype });
