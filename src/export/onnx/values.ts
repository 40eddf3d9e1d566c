import type { DType } from '../../runtime/dtype.js';
import type { StaticSize } from './static-sizes.js';

/**
 * What a kiln graph node stands for in the ONNX graph being built: a tensor (an ONNX value name with its dtype
 * and followed shape), a size (what `sym_size` and shape arithmetic yield), or a tuple of tensors (ops with several
 * outputs, read by `getitem`), some of which ONNX has no counterpart for.
 */
export interface TensorValue {
  readonly kind: 'tensor';
  readonly name: string;
  readonly dtype: DType;
  /** Followed through the graph by the shape rules; undefined where the graph gave no input shapes. */
  readonly shape: readonly StaticSize[] | undefined;
}

/** A size: its static value, or (dynamic) the name of the int64 [1] tensor that computes it. */
export interface SizeValue {
  readonly kind: 'size';
  readonly size: StaticSize;
  readonly name?: string;
}

/** An output of a tuple-valued op that the export does not produce, and why (an error only when something reads it). */
export interface Missing {
  readonly kind: 'missing';
  readonly why: string;
}

export interface TupleValue {
  readonly kind: 'tuple';
  readonly items: readonly (TensorValue | Missing)[];
}

export type Value = TensorValue | SizeValue | TupleValue;

/**
 * An emitter's refusal: the op is in the table but this call cannot be written in ONNX (its arguments, its mode).
 * The converter turns it into the ExportError that names the op, the opset and the node.
 */
export class Unsupported extends Error {}

export function isValue(x: unknown): x is Value {
  return typeof x === 'object' && x !== null && 'kind' in x && ['tensor', 'size', 'tuple'].includes((x as { kind: string }).kind);
}

export function isTensorValue(x: unknown): x is TensorValue {
  return isValue(x) && x.kind === 'tensor';
}
