import type { ExecutionContext } from 'ava';
import type { Tensor } from '../src/index.js';

/** Assert two tensors have the same shape and exactly the same values. */
export function same(t: { deepEqual(a: unknown, b: unknown): void }, a: Tensor, b: Tensor): void {
  t.deepEqual(a.shape, b.shape);
  t.deepEqual(a.toArray(), b.toArray());
}

/** max |got - want| ≤ 1e-4 · max(1, max |want|), same shape and dtype. */
export function close(t: ExecutionContext, got: Tensor, want: Tensor, what: string): void {
  t.deepEqual(got.shape, want.shape, `${what}: shape`);
  t.is(got.dtype, want.dtype, `${what}: dtype`);
  const g = got.data();
  const w = want.data();
  let err = 0;
  let scale = 1;
  for (let i = 0; i < w.length; i++) {
    const a = g[i]!;
    const b = w[i]!;
    if (Number.isNaN(b) || Number.isNaN(a)) {
      t.true(Number.isNaN(a) && Number.isNaN(b), `${what}: NaN at ${i}`);
      continue;
    }
    if (a === b) continue; // also equal infinities
    err = Math.max(err, Math.abs(a - b));
    scale = Math.max(scale, Math.abs(b));
  }
  t.true(err <= 1e-4 * scale, `${what}: max abs error ${err} (scale ${scale})`);
}
