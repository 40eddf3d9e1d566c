import { elementOffsets, gatherContiguous } from '../runtime/cpu/strided.js';
import { allocate } from '../runtime/dtype.js';
import { Storage, Tensor } from '../runtime/tensor.js';
import type { Layout, TensorMeta } from './ir.js';

/**
 * Moving an eager step's result into the layout its kernel readers were generated for. An eager op's result
 * layout follows its inputs' layouts, and kernels may give it inputs laid out differently from the eager run
 * the plan was made from (a conv2d's result is NHWC read as NCHW), so a view op such as `index` returns other
 * strides at run time than at planning time. The values are the same; only where they sit differs.
 */

/** Whether every element of `l` has its own storage slot (no stride-0 or overlapping dims), so any values fit it. */
export function holdsAnyValues(l: Layout): boolean {
  if (l.shape.some((d) => d === 0)) return true;
  const dims = l.shape
    .map((d, i) => ({ d, s: Math.abs(l.strides[i]!) }))
    .filter(({ d }) => d > 1)
    .sort((a, b) => a.s - b.s);
  let span = 0; // the largest offset the dims seen so far reach
  for (const { d, s } of dims) {
    if (s <= span) return false;
    span += (d - 1) * s;
  }
  return true;
}

/** A copy of `t` (same shape and dtype as `meta`) laid out as `meta` says, or null when `meta` cannot hold any values. */
export function intoLayout(t: Tensor, meta: TensorMeta): Tensor | null {
  if (!holdsAnyValues(meta)) return null;
  const data = allocate(meta.dtype, meta.storageLength);
  const values = gatherContiguous(t._storage.data, t, t.dtype);
  const offsets = elementOffsets(meta.shape, meta.strides, meta.offset);
  for (let i = 0; i < offsets.length; i++) data[offsets[i]!] = values[i]!;
  return new Tensor(new Storage(data), meta.shape, meta.strides, meta.offset, meta.dtype);
}
