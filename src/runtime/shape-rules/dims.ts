import { IndexError, ValueError } from '../../errors.js';
import { describe } from '../validate.js';

/** Dims (which axis, always plain numbers) and the size limit: the leaf of the shape modules (src/runtime/shape.ts re-exports them). */

/**
 * The most elements one tensor may have: int32 offsets (strided reads, argmax indices) address every
 * element, and a bigger request fails here with the op's name instead of as a raw RangeError.
 */
export const MAX_NUMEL = 2 ** 31 - 1;

/** Wrap a possibly negative dim into [0, ndim). `ndim` may be 0 for scalars (then only -1 and 0 are valid). */
export function normDim(op: string, dim: number, ndim: number): number {
  const n = Math.max(ndim, 1);
  if (!Number.isInteger(dim) || dim < -n || dim >= n) {
    throw new IndexError(`${op}: dim ${describe(dim)} is out of range for a tensor with ${ndim} dims (expected -${n}..${n - 1})`);
  }
  return dim < 0 ? dim + n : dim;
}

export function normDims(op: string, dims: number | readonly number[] | undefined, ndim: number): number[] {
  if (dims === undefined) return Array.from({ length: ndim }, (_, i) => i);
  const list = typeof dims === 'number' ? [dims] : dims;
  const out = list.map((d) => normDim(op, d, ndim));
  if (new Set(out).size !== out.length) throw new ValueError(`${op}: dim [${list.join(', ')}] appears more than once`);
  return out.sort((a, b) => a - b);
}
