/**
 * kiln/export (API §6): whole programs with their state lifted, checked inputs and mutations made explicit.
 */
export { exportProgram, type ExportOptions } from './export-program.js';
export { ExportedProgram, type ProgramParts, type RangeConstraint } from './exported-program.js';
export { ExportError } from './errors.js';
export type { GraphSignature, InputSpec, OutputSpec, InputKind, OutputKind } from './signature.js';
export { save, load, EXPORT_FORMAT, EXPORT_VERSION } from './serialize.js';
export { unflatten } from './unflatten.js';
export { Dim, dims, type DimOptions } from './dim.js';
export { ConstraintViolationError } from '../errors.js';
export { toOnnx, onnxBytes, ONNX_OPSETS, type OnnxExportOptions } from './onnx/index.js';
