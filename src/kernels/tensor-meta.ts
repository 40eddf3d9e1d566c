import type { Tensor } from '../runtime/tensor.js';
import type { TensorMeta } from './ir.js';

/** A tensor's layout and storage facts, as plans record them and kernels bake them in. */
export function metaOf(t: Tensor): TensorMeta {
  return { shape: t.shape, strides: t.strides, offset: t.offset, dtype: t.dtype, storageLength: t._storage.data.length };
}

/** Whether `t` sits in its storage exactly as `m` says (a kernel generated for `m` reads it correctly). */
export function sameLayout(t: Tensor, m: TensorMeta): boolean {
  if (t.dtype !== m.dtype || t.offset !== m.offset || t._storage.data.length !== m.storageLength) return false;
  if (t.shape.length !== m.shape.length) return false;
  for (let i = 0; i < m.shape.length; i++) if (t.shape[i] !== m.shape[i] || t.strides[i] !== m.strides[i]) return false;
  return true;
}
