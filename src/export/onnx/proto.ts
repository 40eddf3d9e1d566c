import onnxProto from 'onnx-proto';
import type { DType } from '../../runtime/dtype.js';

/**
 * The ONNX schema as generated protobufjs classes (the `onnx-proto` package, onnx/onnx.proto of ONNX 1.10):
 * every message the exporter writes is built and encoded by them, never by hand.
 */
export const onnx = onnxProto.onnx;
export type { onnx as OnnxTypes } from 'onnx-proto';

const { DataType } = onnx.TensorProto;

/** ONNX element types of kiln's dtypes, plus INT64 (shapes, axes and indices ONNX wants as int64). */
export type ElemType = DType | 'int64';

export function elemTypeCode(t: ElemType): number {
  switch (t) {
    case 'float32':
      return DataType.FLOAT;
    case 'int32':
      return DataType.INT32;
    case 'bool':
      return DataType.BOOL;
    case 'int64':
      return DataType.INT64;
  }
}

/** A TensorProto with its values little-endian in `raw_data` (float32, int32 and bool as kiln stores them). */
export function tensorProto(name: string, type: ElemType, dims: readonly number[], values: ArrayLike<number>): onnxProto.onnx.ITensorProto {
  let raw: Uint8Array;
  switch (type) {
    case 'float32':
      raw = bytesOf(Float32Array.from(values));
      break;
    case 'int32':
      raw = bytesOf(Int32Array.from(values));
      break;
    case 'bool':
      raw = Uint8Array.from(values, (v) => (v ? 1 : 0));
      break;
    case 'int64':
      raw = bytesOf(BigInt64Array.from(Array.from(values, (v) => BigInt(v))));
      break;
  }
  return { name, dataType: elemTypeCode(type), dims: [...dims], rawData: raw };
}

function bytesOf(a: Float32Array | Int32Array | BigInt64Array): Uint8Array {
  // raw_data is little-endian; typed arrays use the platform's order, which Node's platforms all share
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Attribute values the exporter writes: ints, floats, strings and lists of ints or floats. */
export type AttrValue = number | string | readonly number[] | { readonly floats: readonly number[] } | { readonly float: number };

export function attribute(name: string, v: AttrValue): onnxProto.onnx.IAttributeProto {
  const { AttributeType } = onnx.AttributeProto;
  if (typeof v === 'string') return { name, type: AttributeType.STRING, s: new TextEncoder().encode(v) };
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) return { name, type: AttributeType.FLOAT, f: v };
    return { name, type: AttributeType.INT, i: v };
  }
  if ('float' in v) return { name, type: AttributeType.FLOAT, f: v.float };
  if ('floats' in v) return { name, type: AttributeType.FLOATS, floats: [...v.floats] };
  return { name, type: AttributeType.INTS, ints: [...(v as readonly number[])] };
}
