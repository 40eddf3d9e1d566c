import { KilnError } from '../../errors.js';
import type { GraphModule } from '../graph-module.js';
import { Graph } from '../graph.js';
import { mapArg, type Argument, type Kwargs, type Node, type Opcode, type Target } from '../node.js';
import { ShapeProp, type TensorMeta } from '../shape-prop.js';
import type { Tensor } from '../../runtime/tensor.js';
import type { DType } from '../../runtime/dtype.js';

/** torch.fx.passes.graph_manipulation: node sizes in bytes, and retargeting nodes. */

export interface SizeBytes {
  readonly outputSize: number;
  readonly totalSize: number;
}

const ELEMENT_BYTES: Record<DType, number> = { float32: 4, int32: 4, bool: 1 };

/** A node's tensor metadata from ShapeProp, or PyTorch's error when shape propagation has not run. */
export function getTensorMeta(node: Node): TensorMeta {
  const meta = node.meta.tensorMeta as TensorMeta | undefined;
  if (!meta || Array.isArray(meta)) {
    throw new KilnError(`Node ${node.name} has no tensor metadata associated with it! Check that shape propagation has run.`);
  }
  return meta;
}

/**
 * A node's output size and total size in bytes: total = output + (for a call_module) every parameter of the
 * module it calls. Buffers do not count, as in PyTorch.
 */
export function getSizeOfNode(gm: GraphModule, node: Node): SizeBytes {
  let elements = 0;
  if (node.op === 'call_module') {
    const sub = gm.getSubmodule(node.target as string);
    for (const [, p] of sub.namedParameters()) elements += (p as Tensor).numel();
  }
  const meta = getTensorMeta(node);
  const outputElements = meta.shape.reduce((a, b) => a * b, 1);
  elements += outputElements;
  const per = ELEMENT_BYTES[meta.dtype];
  return { outputSize: per * outputElements, totalSize: per * elements };
}

/** Set `node.sizeBytes` on every node before the output; with `args`, run ShapeProp on them first. */
export function getSizeOfAllNodes(gm: GraphModule, args?: readonly unknown[]): void {
  if (args !== undefined) new ShapeProp(gm).propagate(...args);
  for (const node of gm.graph.nodes) {
    if (node.op === 'output') break;
    node.sizeBytes = getSizeOfNode(gm, node);
  }
}

/**
 * Give every node with opcode `oldOp` and target `oldTarget` the opcode `newOp` and target `newTarget`,
 * keeping its name, arguments and meta (the graph is rebuilt, as in PyTorch).
 */
export function replaceTargetNodesWith(gm: GraphModule, oldOp: Opcode, oldTarget: Target, newOp: Opcode, newTarget: Target): void {
  const graph = new Graph();
  const valMap = new Map<Node, Node>();
  const lookup = (n: Node) => valMap.get(n)!;
  for (const node of gm.graph.nodes) {
    if (node.op === oldOp && node.target === oldTarget) {
      const args = mapArg(node.args as Argument, lookup) as Argument[];
      const kwargs = mapArg(node.kwargs, lookup) as Kwargs;
      const copy = graph.createNode(newOp, newTarget, args, kwargs, node.name);
      copy.meta = { ...node.meta };
      valMap.set(node, copy);
    } else valMap.set(node, graph.nodeCopy(node, lookup));
  }
  gm.graph = graph;
}
