import type { Tensor, ValuesIndices } from './tensor.js';

/** Function forms of the tensor methods that are not ops on their own (they dispatch or write in place). */

export function max(x: Tensor): Tensor;
export function max(x: Tensor, dim: number, keepdim?: boolean): ValuesIndices;
export function max(x: Tensor, dim?: number, keepdim = false): Tensor | ValuesIndices {
  return dim === undefined ? x.max() : x.max(dim, keepdim);
}

export function min(x: Tensor): Tensor;
export function min(x: Tensor, dim: number, keepdim?: boolean): ValuesIndices;
export function min(x: Tensor, dim?: number, keepdim = false): Tensor | ValuesIndices {
  return dim === undefined ? x.min() : x.min(dim, keepdim);
}

export const add_ = (x: Tensor, other: Tensor | number, alpha?: number): Tensor => x.add_(other, alpha);
export const mul_ = (x: Tensor, other: Tensor | number): Tensor => x.mul_(other);
export const zero_ = (x: Tensor): Tensor => x.zero_();
export const fill_ = (x: Tensor, value: number): Tensor => x.fill_(value);
export const copy_ = (x: Tensor, src: Tensor): Tensor => x.copy_(src);
export const contiguous = (x: Tensor): Tensor => x.contiguous();
export const detach = (x: Tensor): Tensor => x.detach();
