import { DTypeError, ShapeError } from '../errors.js';

export type DType = 'float32' | 'int32' | 'bool';
export type TypedArray = Float32Array | Int32Array | Uint8Array;

export const DTYPES: readonly DType[] = ['float32', 'int32', 'bool'];

export function isDType(x: unknown): x is DType {
  return x === 'float32' || x === 'int32' || x === 'bool';
}

/** A DTypeError naming `op` unless `dtype` is one of kiln's dtypes. */
export function checkDType(op: string, dtype: unknown): DType {
  if (!isDType(dtype)) {
    const shown = typeof dtype === 'string' ? `'${dtype}'` : dtype === null ? 'null' : typeof dtype;
    throw new DTypeError(`${op}: unknown dtype ${shown} (expected 'float32', 'int32' or 'bool')`);
  }
  return dtype;
}

/** Memory for `size` elements. Shapes are checked before this (shape.ts MAX_NUMEL); this is the backstop. */
export function allocate(dtype: DType, size: number): TypedArray {
  if (!(size <= 2147483647)) throw new ShapeError(`cannot allocate a ${dtype} tensor of ${size} elements (at most 2147483647)`);
  try {
    return allocateUnchecked(dtype, size);
  } catch (e) {
    // the engine could not reserve the memory: say so with the size, not as a raw RangeError
    if (e instanceof RangeError) throw new ShapeError(`cannot allocate a ${dtype} tensor of ${size} elements: ${e.message}`);
    throw e;
  }
}

function allocateUnchecked(dtype: DType, size: number): TypedArray {
  switch (dtype) {
    case 'float32':
      return new Float32Array(size);
    case 'int32':
      return new Int32Array(size);
    case 'bool':
      return new Uint8Array(size);
    default:
      return dtype satisfies never;
  }
}

export function dtypeOfArray(a: TypedArray): DType {
  if (a instanceof Float32Array) return 'float32';
  if (a instanceof Int32Array) return 'int32';
  return 'bool';
}

const RANK: Record<DType, number> = { bool: 0, int32: 1, float32: 2 };

/** PyTorch's promotion among kiln's dtypes: bool < int32 < float32. */
export function promote(a: DType, b: DType): DType {
  return RANK[a] >= RANK[b] ? a : b;
}

/** The dtype a JS number takes when it meets a tensor of `dtype` (PyTorch's "wrapped number" rule). */
export function promoteScalar(dtype: DType, value: number | boolean): DType {
  if (typeof value === 'boolean') return dtype;
  if (!Number.isInteger(value)) return 'float32';
  return dtype === 'bool' ? 'int32' : dtype;
}

export function isFloating(dtype: DType): boolean {
  return dtype === 'float32';
}

export function assertFloating(op: string, dtype: DType): void {
  if (dtype !== 'float32') {
    throw new DTypeError(`${op}: expected a float32 tensor, got ${dtype}`);
  }
}

/** Coerce a computed JS number to what storing it in `dtype` means (int32 truncates, bool tests non-zero). */
export function castValue(dtype: DType, v: number): number {
  switch (dtype) {
    case 'float32':
      return v;
    case 'int32':
      return Math.trunc(v) | 0;
    case 'bool':
      return v !== 0 ? 1 : 0; // NaN is true, as in PyTorch (and the kernels' toBool)
    default:
      return dtype satisfies never;
  }
}
