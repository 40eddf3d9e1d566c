import type { DType } from '../../runtime/dtype.js';
import type { OpMeta, TensorMeta } from '../../runtime/shape-rules/index.js';
import type { OnnxBuilder } from './builder.js';
import type { StaticSize } from './static-sizes.js';
import type { Missing } from './values.js';

/**
 * The shape of the op table's ONNX mappings: each op either has an emitter, which writes ONNX nodes for one call
 * (its arguments bound by the op's schema, tensors as TensorValues, sizes as SizeValues), or says why it is not
 * exportable.
 */
export interface EmitContext {
  readonly b: OnnxBuilder;
  /** The call's output as the shape rules follow it (dtype, sizes static or dynamic). */
  readonly out: OpMeta<StaticSize>;
}

/** The ONNX value name of the output, or one per output of a tuple-valued op (Missing where none is written). */
export type Emitted = string | readonly (string | Missing)[];

export type Emitter = (ctx: EmitContext, args: readonly unknown[]) => Emitted;

export type OnnxMapping = { readonly emit: Emitter } | { readonly notExportable: string };

export const emit = (e: Emitter): OnnxMapping => ({ emit: e });
export const notExportable = (why: string): OnnxMapping => ({ notExportable: why });

/** The reason every gradient op gives. */
export const GRADIENT_OP = 'it is a gradient op, and ONNX export writes inference graphs (export the forward, in eval mode)';

/** The dtype of a single-tensor output. */
export function outDType(ctx: EmitContext): DType {
  return (ctx.out as TensorMeta<StaticSize>).dtype;
}

export const missing = (why: string): Missing => ({ kind: 'missing', why });
