/**
 * kiln: tensors with autograd, nn, optim — the eager runtime that compiled programs are checked against.
 */
export { Tensor, Storage, type NestedArray, type ValuesIndices } from './runtime/tensor.js';
export type { DType } from './runtime/dtype.js';
export { tensor, zeros, ones, full, arange, rand, randn, zerosLike, onesLike, cat, stack } from './runtime/ops/index.js';
export type { CreateOptions, TensorOptions } from './runtime/ops/creation.js';
export type { IndexSpec } from './runtime/ops/view.js';
export { manualSeed } from './runtime/random.js';
export { Generator } from './runtime/random.js';
export { noGrad, isGradEnabled, withGradMode } from './runtime/autograd.js';
export { defineFunction, FunctionCtx, type FunctionSpec } from './runtime/custom-function.js';
export { allclose } from './testing.js';
export { saveSafetensors, loadSafetensors, loadPytorch, type StateDict } from './io/index.js';
export { cond, map, CondOpArgsMismatchError, UnsupportedAliasMutationError } from './control-flow/index.js';
export { check } from './runtime/check.js';
export { ops } from './ops.js';
export * as nn from './runtime/nn/index.js';
export * as F from './runtime/nn/functional.js';
export * as optim from './runtime/optim.js';
export * as data from './data/index.js';
export * as testing from './testing.js';
export { compile, graphBreak, OptimizedModule, type CompileOptions } from './compile/compile.js';
export { resetCompileCaches } from './compile/compiled-callable.js';
export { explain, formatExplain, type ExplainOutput } from './compile/explain.js';
export type { Backend } from './compile/backends.js';
export {
  setKernelBackend,
  getKernelBackend,
  kernelCacheStats,
  resetKernelCache,
  type KernelBackendName,
  type KernelCacheStats,
  type KernelProgramCallable,
} from './kernels/index.js';
export {
  KilnError,
  ShapeError,
  DTypeError,
  IndexError,
  ValueError,
  AutogradError,
  StateDictError,
  SerializationError,
  TraceError,
  GraphBreakError,
  RecompileError,
} from './errors.js';
