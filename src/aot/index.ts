/**
 * kiln/aot: AOT autograd. makeFx traces programs at the op table's dispatch level; aotFunction and aotModule
 * trace one joint forward+backward graph, functionalise it, partition it into a forward and a backward
 * graph, and hand each to a compiler.
 */
export { makeFx, type MakeFxOptions } from './make-fx.js';
export { defaultDecompositions, type Decomposition, type Decompositions } from './decompositions.js';
export { AotError } from './errors.js';
export { aotFunction, aotModule, aotModuleSimplified, AotModule, type AotOptions } from './aot-function.js';
export { compilationContext, type Compiler } from './context.js';
export {
  defaultPartition,
  minCutRematerializationPartition,
  partitionInfo,
  savedBytes,
  type PartitionFn,
  type PartitionInfo,
  type PartitionOptions,
} from './partition.js';
export { aotExportModule, aotExportJointSimple, type AotExportModuleOptions, type GraphSignature } from './export.js';
