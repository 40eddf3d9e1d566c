/**
 * A mark on `Tensor.prototype`, so the modules tensor.ts itself imports (validate, shape) can recognise a
 * tensor without importing the class (which would make an import cycle). `in` follows the prototype chain,
 * so a tracer's proxy built on `Tensor.prototype` is recognised too, as `instanceof Tensor` recognises it.
 */
export const TENSOR_BRAND: unique symbol = Symbol('kiln.Tensor');

/** What the modules below tensor.ts may read of a tensor. */
export interface BrandedTensor {
  readonly dtype: string;
  readonly shape: readonly number[];
}

export function isTensor(x: unknown): x is BrandedTensor {
  return typeof x === 'object' && x !== null && TENSOR_BRAND in x;
}
