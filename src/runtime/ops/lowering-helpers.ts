import type { KValue, LowerContext, Lowering, Prim } from '../lowering.js';

/**
 * Building blocks for the ops' `lower` fields: the common shapes of a lowering (one primitive on the
 * arguments, a reshape to the eager result's shape) and the argument normalisation they share. Run-time code
 * of the runtime only: the kernels reach these through the op table.
 */

/** `prim(input)`. */
export const unaryPrim =
  (p: Prim): Lowering =>
  (k, a) => {
    const x = k.operand(a.input);
    return x === null ? null : k.prim(p, x);
  };

/** `prim(input, other)` (`other` may be a number); pow's second parameter is `exponent`. */
export const binaryPrim =
  (p: Prim): Lowering =>
  (k, a) => {
    const x = k.operand(a.input);
    const y = k.operand(a.other ?? a.exponent);
    return x === null || y === null ? null : k.prim(p, x, y);
  };

/** A view whose result is the eager result's shape: reshape-like ops just take that shape. */
export const reshapeLike: Lowering = (k, a, out) => {
  const x = k.tensor(a.input);
  return x === null ? null : k.view(x, { op: 'reshape', shape: out.shape }, out.shape);
};

/** A possibly negative dim wrapped into [0, ndim) (the eager run already rejected bad dims). */
export function dimOf(d: unknown, ndim: number): number {
  const v = d as number;
  return v < 0 ? v + Math.max(ndim, 1) : v;
}

/** A reduction's `dim` argument as sorted non-negative dims (none or [] is every dim). */
export function reducedDims(dim: unknown, ndim: number): number[] {
  if (dim === null || dim === undefined || (Array.isArray(dim) && dim.length === 0)) return Array.from({ length: ndim }, (_, i) => i);
  const list = typeof dim === 'number' ? [dim] : (dim as number[]);
  return list.map((d) => dimOf(d, ndim)).sort((x, y) => x - y);
}

/** An int-or-pair argument as a pair. */
export function pairOf(v: unknown): [number, number] {
  if (typeof v === 'number') return [v, v];
  const p = v as number[];
  return [p[0]!, p[1] ?? p[0]!];
}

/**
 * An optional tensor argument (a bias, an affine weight): null when it is absent, `false` when it is given but is
 * not a value the kernels hold, so that the lowering runs the op eagerly instead of silently dropping it.
 */
export function optionalTensor(k: LowerContext, v: unknown): KValue | null | false {
  if (v === null || v === undefined) return null;
  return k.tensor(v) ?? false;
}
