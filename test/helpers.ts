import type { Tensor } from '../src/index.js';

/** Assert two tensors have the same shape and exactly the same values. */
export function same(t: { deepEqual(a: unknown, b: unknown): void }, a: Tensor, b: Tensor): void {
  t.deepEqual(a.shape, b.shape);
  t.deepEqual(a.toArray(), b.toArray());
}
