import { writeFileSync } from 'node:fs';
import { ValueError } from '../../errors.js';
import { GraphModule } from '../../graph/graph-module.js';
import { ExportedProgram } from '../exported-program.js';
import { convert } from './convert.js';
import { onnx } from './proto.js';
import { graphModuleSource, programSource } from './sources.js';

/**
 * `toOnnx(program, path, { opset })`: an exported program (kiln/export) or an fx GraphModule written as an ONNX
 * model (ModelProto, IR version 8), which onnxruntime and other ONNX runtimes load. See op-table.ts for what each op
 * becomes.
 */

export interface OnnxExportOptions {
  /** The ai.onnx opset to write (13 to 18; default 17). */
  readonly opset?: number;
}

export const ONNX_OPSETS = { min: 13, max: 18 } as const;

/** The ONNX model's bytes, for a program or GraphModule. */
export function onnxBytes(program: ExportedProgram | GraphModule, options: OnnxExportOptions = {}): Uint8Array {
  const opset = options.opset ?? 17;
  if (!Number.isInteger(opset) || opset < ONNX_OPSETS.min || opset > ONNX_OPSETS.max)
    throw new ValueError(
      `toOnnx: opset ${String(opset)} is not supported (kiln writes ai.onnx opsets ${ONNX_OPSETS.min} to ${ONNX_OPSETS.max})`,
    );
  let source;
  if (program instanceof ExportedProgram) source = programSource(program);
  else if (program instanceof GraphModule) source = graphModuleSource(program);
  else throw new ValueError(`toOnnx: expected an ExportedProgram or a GraphModule, got ${describe(program)}`);
  const bytes = onnx.ModelProto.encode(convert(source, opset)).finish();
  // protobufjs hands back a Buffer on Node; callers get a plain Uint8Array
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Write `program` to `path` as an ONNX model; returns the bytes written. */
export function toOnnx(program: ExportedProgram | GraphModule, path: string, options: OnnxExportOptions = {}): Uint8Array {
  if (typeof path !== 'string' || path === '') throw new ValueError(`toOnnx: path must be a non-empty string, got ${describe(path)}`);
  const bytes = onnxBytes(program, options);
  writeFileSync(path, bytes);
  return bytes;
}

function describe(x: unknown): string {
  if (x === null) return 'null';
  return typeof x === 'object' ? (x.constructor?.name ?? 'object') : typeof x;
}
