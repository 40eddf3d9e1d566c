/**
 * kiln/fx: the graph IR (torch.fx for kiln) — Graph and Node, GraphModule with generated `forward`,
 * symbolic tracing, the Interpreter/Transformer pair, ShapeProp, and graph/GraphModule serialisation.
 */
export { Graph, type OwningModule } from './graph/graph.js';
export { Node, OPCODES, mapArg, type Opcode, type Target, type FunctionTarget, type Argument, type Kwargs } from './graph/node.js';
export { GraphModule } from './graph/graph-module.js';
export { Tracer, symbolicTrace, proxyNode, type SymbolicTraceOptions, type ConcreteArgs } from './graph/tracer.js';
export { Interpreter, Transformer } from './graph/interpreter.js';
export { ShapeProp, type TensorMeta, type TensorMetaOf } from './graph/shape-prop.js';
export { getitem, getattr, _assert } from './graph/builtins.js';
export type { NormalizedArguments } from './graph/normalize.js';
export { GRAPH_FORMAT, GRAPH_VERSION, type GraphJSON, type NodeJSON } from './graph/serialize.js';
export {
  GRAPH_MODULE_FORMAT,
  GRAPH_MODULE_VERSION,
  graphModuleToJSON,
  graphModuleFromJSON,
  saveGraphModule as save,
  loadGraphModule as load,
  type GraphModuleJSON,
  type LoadOptions,
} from './graph/save.js';
export { TraceError, GraphLintError, SerializationError } from './errors.js';
export * as passes from './graph/passes/index.js';
