import { ShapeError } from '../errors.js';
import { describe } from './validate.js';
import { NUMBER_ARITH } from './size-arith.js';
import { broadcastSizes, broadcastsToSizes, viewSizes } from './shape-rules/sizes.js';
import { MAX_NUMEL } from './shape-rules/dims.js';

export { MAX_NUMEL, normDim, normDims } from './shape-rules/dims.js';

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

/** PyTorch broadcasting: align trailing dims; each pair must be equal or one of them 1 (the shape rules' helper). */
export function broadcastShapes(op: string, a: Shape, b: Shape): number[] {
  return broadcastSizes(NUMBER_ARITH, op, a, b);
}

/** A ShapeError naming `op` unless a tensor of shape `from` broadcasts to exactly `to` (copy_, expand). */
export function checkBroadcastTo(op: string, from: Shape, to: Shape): void {
  if (!broadcastsTo(from, to)) throw new ShapeError(`${op}: a tensor of shape ${fmt(from)} cannot be broadcast to ${fmt(to)}`);
}

/** Whether `from` broadcasts to `to` (trailing dims equal or 1, no more dims than `to`). */
export function broadcastsTo(from: Shape, to: Shape): boolean {
  return broadcastsToSizes(NUMBER_ARITH, from, to);
}

/** Resolve a single -1 in a target shape against a known element count (reshape/view; the shape rules' helper). */
export function inferShape(op: string, from: Shape, shape: readonly number[]): number[] {
  return viewSizes(NUMBER_ARITH, op, from, shape);
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
