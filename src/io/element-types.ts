import { SerializationError } from '../errors.js';
import type { DType, TypedArray } from '../runtime/dtype.js';

/**
 * The element types a checkpoint may store (safetensors' names; a PyTorch storage class maps onto one), and their
 * conversion to kiln's dtypes: every float type becomes float32, every integer type int32, BOOL bool. Conversions
 * that would change a value are errors naming the tensor, never a silently different number: an int64 outside
 * int32's range, or a finite float64 beyond float32's range.
 */
export type ElementType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const ELEMENT_SIZE: Readonly<Record<ElementType, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

export function isElementType(x: unknown): x is ElementType {
  return typeof x === 'string' && Object.hasOwn(ELEMENT_SIZE, x);
}

/** The kiln dtype an element type loads as. */
export function kilnDType(type: ElementType): DType {
  if (type === 'BOOL') return 'bool';
  return type[0] === 'F' || type === 'BF16' ? 'float32' : 'int32';
}

/** The element type kiln writes for each of its dtypes. */
export function elementTypeOf(dtype: DType): ElementType {
  return dtype === 'float32' ? 'F32' : dtype === 'int32' ? 'I32' : 'BOOL';
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** A float16 bit pattern as a number (exact: every half is a float32). */
function halfToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24; // zero and subnormals
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/**
 * Decode `bytes` (little-endian, `count` elements of `type`, contiguous) into a new kiln array. `label` (the reader,
 * the file and the tensor's key) starts every error.
 */
export function decodeElements(bytes: Uint8Array, type: ElementType, count: number, label: string): { data: TypedArray; dtype: DType } {
  const size = ELEMENT_SIZE[type];
  if (bytes.byteLength !== count * size) {
    throw new SerializationError(`${label}: expected ${count * size} bytes of ${type} data, found ${bytes.byteLength}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (type) {
    case 'F32': {
      // new Uint8Array(bytes) copies, aligned (a Buffer's slice() would share Node's pooled read buffer)
      if (LITTLE_ENDIAN) return { data: new Float32Array(new Uint8Array(bytes).buffer), dtype: 'float32' };
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
      return { data: out, dtype: 'float32' };
    }
    case 'F64': {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) {
        const v = view.getFloat64(8 * i, true);
        out[i] = v;
        if (Number.isFinite(v) && !Number.isFinite(out[i]!)) {
          throw new SerializationError(`${label}: float64 value ${v} at element ${i} is outside float32's range`);
        }
      }
      return { data: out, dtype: 'float32' };
    }
    case 'F16': {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = halfToNumber(view.getUint16(2 * i, true));
      return { data: out, dtype: 'float32' };
    }
    case 'BF16': {
      // bfloat16 is the top half of a float32: widening is exact
      const bits = new Uint32Array(count);
      for (let i = 0; i < count; i++) bits[i] = view.getUint16(2 * i, true) << 16;
      return { data: new Float32Array(bits.buffer), dtype: 'float32' };
    }
    case 'I64': {
      const out = new Int32Array(count);
      for (let i = 0; i < count; i++) {
        const lo = view.getInt32(8 * i, true);
        const hi = view.getInt32(8 * i + 4, true);
        if (hi !== lo >> 31) {
          const v = view.getBigInt64(8 * i, true);
          throw new SerializationError(
            `${label}: int64 value ${v} at element ${i} does not fit kiln's int32 (range -2147483648..2147483647)`,
          );
        }
        out[i] = lo;
      }
      return { data: out, dtype: 'int32' };
    }
    case 'I32': {
      if (LITTLE_ENDIAN) return { data: new Int32Array(new Uint8Array(bytes).buffer), dtype: 'int32' };
      const out = new Int32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getInt32(4 * i, true);
      return { data: out, dtype: 'int32' };
    }
    case 'I16': {
      const out = new Int32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getInt16(2 * i, true);
      return { data: out, dtype: 'int32' };
    }
    case 'I8':
      return { data: Int32Array.from(new Int8Array(bytes.buffer, bytes.byteOffset, count)), dtype: 'int32' };
    case 'U8':
      return { data: Int32Array.from(bytes), dtype: 'int32' };
    case 'BOOL': {
      const out = new Uint8Array(count);
      for (let i = 0; i < count; i++) {
        const b = bytes[i]!;
        if (b > 1) throw new SerializationError(`${label}: byte ${b} at element ${i} is not a bool (0 or 1)`);
        out[i] = b;
      }
      return { data: out, dtype: 'bool' };
    }
    default:
      return type satisfies never;
  }
}

/** A contiguous kiln array as little-endian bytes: a view of `data` on a little-endian host, else a swapped copy. */
export function encodeElements(data: TypedArray): Uint8Array {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (LITTLE_ENDIAN || data instanceof Uint8Array) return bytes;
  const view = new DataView(new ArrayBuffer(data.byteLength));
  for (let i = 0; i < data.length; i++) {
    if (data instanceof Float32Array) view.setFloat32(4 * i, data[i]!, true);
    else view.setInt32(4 * i, data[i]!, true);
  }
  return new Uint8Array(view.buffer);
}
