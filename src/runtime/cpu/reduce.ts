import type { TypedArray } from '../dtype.js';
import { NUMBER_ARITH } from '../size-arith.js';
import { reducedSizes } from '../shape-rules/sizes.js';
import { numel } from '../shape.js';
import { gatherContiguous, type StridedArray } from './strided.js';

/**
 * Lay `x` out as `outer` rows of `inner` contiguous elements, where a row holds every element that
 * reduces into one output (the `dims` moved last). Copies only when the layout requires it.
 */
export function rowsOver(x: StridedArray, dims: readonly number[]): { data: TypedArray; outer: number; inner: number } {
  const kept: number[] = [];
  for (let d = 0; d < x.shape.length; d++) if (!dims.includes(d)) kept.push(d);
  const perm = [...kept, ...dims];
  const layout = {
    shape: perm.map((d) => x.shape[d]!),
    strides: perm.map((d) => x.strides[d]!),
    offset: x.offset,
  };
  const inner = numel(dims.map((d) => x.shape[d]!));
  const outer = numel(kept.map((d) => x.shape[d]!));
  return { data: gatherContiguous(x.data, layout, x.dtype), outer, inner };
}

/** The output shape of a reduction over `dims`, with or without the reduced dims kept as size 1. */
export function reducedShape(shape: readonly number[], dims: readonly number[], keepdim: boolean): number[] {
  return reducedSizes(NUMBER_ARITH, shape, dims, keepdim);
}
