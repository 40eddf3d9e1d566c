/** kiln/fx `passes`: torch.fx.passes and torch.fx.experimental for kiln graphs. */
export { getSizeOfAllNodes, getSizeOfNode, getTensorMeta, replaceTargetNodesWith, type SizeBytes } from './graph-manipulation.js';
export {
  Device,
  NodeLatency,
  Partition,
  PartitionLatency,
  PartitionMode,
  PartitionerConfig,
  getCommLatencyBetween,
  getExtraSizeOf,
  getLatencyOfOnePartition,
  getLatencyOfPartitionedGraph,
  getPartitionToLatencyMapping,
  type PartitionerOptions,
} from './partitioner-utils.js';
export { splitModule } from './split-module.js';
export { DAG, DAGNode, Partitioner, PartitionerError, type PartitionResult } from './accelerator-partitioner.js';
export { fuse, fuseConvBnEval, fuseConvBnWeights } from './optimization.js';
export { mergeMatmul, legalizeGraph } from './merge-matmul.js';
export { NormalizeArgs, NormalizeOperators } from './normalize.js';
