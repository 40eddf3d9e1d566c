import { IndexError, ShapeError, ValueError } from '../errors.js';
import { describe } from './validate.js';

export type Shape = readonly number[];

export function fmt(shape: Shape): string {
  return `[${shape.join(', ')}]`;
}

export function numel(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function contiguousStrides(shape: Shape): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i]!;
  }
  return strides;
}

export function sameShape(a: Shape, b: Shape): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

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
  if (new Set(out).size !== out.length) throw new ValueError(`${op}: dim ${fmt(list)} appears more than once`);
  return out.sort((a, b) => a - b);
}

/**
 * The most elements one tensor may have: int32 offsets (strided reads, argmax indices) address every
 * element, and a bigger request fails here with the op's name instead of as a raw RangeError.
 */
export const MAX_NUMEL = 2 ** 31 - 1;

/** A ShapeError unless a tensor of `shape` fits in MAX_NUMEL elements. */
export function checkNumel(op: string, shape: Shape): void {
  const n = numel(shape);
  if (n > MAX_NUMEL) {
    throw new ShapeError(`${op}: shape ${fmt(shape)} has ${n} elements, more than the ${MAX_NUMEL} a tensor can hold`);
  }
}

/** An array of non-negative integer sizes whose product fits in a tensor; `name` is the argument's name. */
export function checkShape(op: string, shape: unknown, name = 'shape'): asserts shape is readonly number[] {
  if (!Array.isArray(shape)) throw new ShapeError(`${op}: ${name} must be an array of sizes, got ${describe(shape)}`);
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || (d as number) < 0) {
      throw new ShapeError(`${op}: invalid ${name} ${describe(shape)} (sizes must be non-negative integers, got ${describe(d)})`);
    }
  }
  checkNumel(op, shape as number[]);
}

/** PyTorch broadcasting: align trailing dims; each pair must be equal or one of them 1. */
export function broadcastShapes(op: string, a: Shape, b: Shape): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  let total = 1;
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new ShapeError(`${op}: shapes ${fmt(a)} and ${fmt(b)} cannot be broadcast together (dim ${i}: ${da} vs ${db})`);
    }
    out[i] = da === 1 ? db : da;
    total *= out[i]!;
  }
  if (total > MAX_NUMEL) checkNumel(op, out);
  return out;
}

/** A ShapeError naming `op` unless a tensor of shape `from` broadcasts to exactly `to` (copy_, expand). */
export function checkBroadcastTo(op: string, from: Shape, to: Shape): void {
  if (!broadcastsTo(from, to)) throw new ShapeError(`${op}: a tensor of shape ${fmt(from)} cannot be broadcast to ${fmt(to)}`);
}

/** Whether `from` broadcasts to `to` (trailing dims equal or 1, no more dims than `to`). */
export function broadcastsTo(from: Shape, to: Shape): boolean {
  let ok = from.length <= to.length;
  for (let i = 1; ok && i <= from.length; i++) {
    const f = from[from.length - i]!;
    ok = f === 1 || f === to[to.length - i];
  }
  return ok;
}

/** Resolve a single -1 in a target shape against a known element count (reshape/view). */
export function inferShape(op: string, from: Shape, shape: readonly number[]): number[] {
  const total = numel(from);
  let unknown = -1;
  let known = 1;
  shape.forEach((d, i) => {
    if (d === -1) {
      if (unknown >= 0) throw new ShapeError(`${op}: only one dimension can be -1, got ${fmt(shape)}`);
      unknown = i;
    } else if (!Number.isInteger(d) || d < 0) {
      throw new ShapeError(`${op}: invalid size ${d} in shape ${fmt(shape)}`);
    } else known *= d;
  });
  const out = [...shape];
  if (unknown >= 0) {
    if (known === 0 || total % known !== 0) {
      throw new ShapeError(`${op}: shape ${fmt(shape)} is invalid for input of size ${total} (shape ${fmt(from)})`);
    }
    out[unknown] = total / known;
  } else if (known !== total) {
    throw new ShapeError(`${op}: shape ${fmt(shape)} is invalid for input of size ${total} (shape ${fmt(from)})`);
  }
  return out;
}

/**
 * Strides for viewing (shape, strides) as `target` without copying, or null when the memory layout
 * does not allow it (PyTorch's computeStride). Size-1 dims and merged contiguous chunks are handled.
 */
export function viewStrides(shape: Shape, strides: readonly number[], target: Shape): number[] | null {
  const n = numel(shape);
  if (n === 0 || shape.length === 0) return contiguousStrides(target);
  const newStrides = new Array<number>(target.length).fill(0);
  let viewD = target.length - 1;
  let chunkBaseStride = strides[strides.length - 1] ?? 1;
  let tensorNumel = 1;
  let viewNumel = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    tensorNumel *= shape[d]!;
    if (d === 0 || (shape[d - 1] !== 1 && strides[d - 1] !== tensorNumel * chunkBaseStride)) {
      while (viewD >= 0 && (viewNumel < tensorNumel || target[viewD] === 1)) {
        newStrides[viewD] = viewNumel * chunkBaseStride;
        viewNumel *= target[viewD]!;
        viewD--;
      }
      if (viewNumel !== tensorNumel) return null;
      if (d > 0) {
        chunkBaseStride = strides[d - 1]!;
        tensorNumel = 1;
        viewNumel = 1;
      }
    }
  }
  if (viewD !== -1) return null;
  return newStrides;
}
