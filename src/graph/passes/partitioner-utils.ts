import { KilnError } from '../../errors.js';
import type { Node } from '../node.js';

/**
 * torch.fx.experimental.partitioner_utils for kiln graphs: partitions, devices, latencies, and the
 * critical-path latency of a partitioned graph. Sets keep insertion order (PyTorch's iterate by hash),
 * so ties break by the order nodes and partitions were added.
 */

/** Nodes that hold no computation: inputs and attributes. */
export const PARAM_LIKE: ReadonlySet<string> = new Set(['placeholder', 'get_attr']);

export class Partition {
  nodes = new Set<Node>();
  parents = new Set<Partition>();
  children = new Set<Partition>();
  bfsLevel = -1;
  usedMemBytes = 0;
  logicalDeviceIds: number[] = [];

  constructor(public partitionId: number) {}

  toString(): string {
    return String(this.partitionId);
  }

  recalculateMemSize(): void {
    this.usedMemBytes = 0;
    for (const node of this.nodes) this.usedMemBytes += getExtraSizeOf(node, this.nodes);
  }

  /** Add `node`, with the placeholders and get_attrs it reads. */
  addNode(node: Node): void {
    for (const n of node.allInputNodes()) if (PARAM_LIKE.has(n.op)) this.nodes.add(n);
    this.nodes.add(node);
    this.recalculateMemSize();
  }

  /** Remove `node` (if here), and the placeholders and get_attrs only it read here. */
  removeNode(node: Node): void {
    if (!this.nodes.has(node)) return;
    this.nodes.delete(node);
    for (const input of node.allInputNodes()) {
      if (PARAM_LIKE.has(input.op) && [...input.users.keys()].every((u) => !this.nodes.has(u))) this.nodes.delete(input);
    }
    this.recalculateMemSize();
  }
}

export class Device {
  constructor(
    readonly name: string,
    readonly availableMemBytes: number,
    readonly logicalId: number,
  ) {}
}

export class NodeLatency {
  constructor(
    /** Latency due to memory bandwidth. */
    readonly memLatencySec: number,
    /** Latency due to computation. */
    readonly computerLatencySec: number,
  ) {}
}

export class PartitionLatency {
  constructor(
    /** Sum of the memory latencies on the critical path. */
    readonly memLatencySec: number,
    /** Sum of the compute latencies on the critical path. */
    readonly computerLatencySec: number,
    /** Latency of the critical path. */
    readonly overallLatencySec: number,
  ) {}
}

export const PartitionMode = {
  sizeBased: 'sizeBased',
  sparseNn: 'sparseNn',
  costAware: 'costAware',
  klBased: 'klBased',
  aotBased: 'aotBased',
} as const;
export type PartitionMode = (typeof PartitionMode)[keyof typeof PartitionMode];

export interface PartitionerOptions {
  mode?: PartitionMode;
  transferRateBytesPerSec?: number;
  nodeToLatencyMapping?: Map<Node, NodeLatency>;
  nodeToPartitionMapping?: Map<Node, number>;
  partitionToLogicalDeviceMapping?: Map<number, number[]>;
  /** Replicate partitions onto idle devices. */
  saturateHost?: boolean;
}

export class PartitionerConfig {
  readonly mode: PartitionMode;
  readonly transferRateBytesPerSec: number;
  readonly nodeToLatencyMapping: Map<Node, NodeLatency>;
  readonly nodeToPartitionMapping: Map<Node, number>;
  readonly partitionToLogicalDeviceMapping: Map<number, number[]>;
  readonly saturateHost: boolean;

  constructor(
    readonly devices: Device[],
    options: PartitionerOptions = {},
  ) {
    this.mode = options.mode ?? PartitionMode.sizeBased;
    this.transferRateBytesPerSec = options.transferRateBytesPerSec ?? 0;
    this.nodeToLatencyMapping = options.nodeToLatencyMapping ?? new Map();
    this.nodeToPartitionMapping = options.nodeToPartitionMapping ?? new Map();
    this.partitionToLogicalDeviceMapping = options.partitionToLogicalDeviceMapping ?? new Map();
    this.saturateHost = options.saturateHost ?? false;
  }
}

function sizeOf(node: Node): { outputSize: number; totalSize: number } {
  if (!node.sizeBytes) throw new KilnError('node has no size_bytes attr');
  return node.sizeBytes;
}

/** The bytes `node` adds to a set of nodes: its total size plus the outputs of its inputs not already in the set. */
export function getExtraSizeOf(node: Node, nodes: ReadonlySet<Node>): number {
  let total = 0;
  for (const n of node.allInputNodes()) if (!nodes.has(n)) total += sizeOf(n).outputSize;
  return total + sizeOf(node).totalSize;
}

/** The critical path through one partition: the top nodes' deepest chain of users inside it. */
export function getLatencyOfOnePartition(partition: Partition, nodeToLatency: ReadonlyMap<Node, NodeLatency>): PartitionLatency {
  const top: Node[] = [];
  for (const node of partition.nodes) {
    if (PARAM_LIKE.has(node.op)) continue;
    if (!node.allInputNodes().some((n) => partition.nodes.has(n) && !PARAM_LIKE.has(n.op))) top.push(node);
  }
  const walk = (node: Node, sofar: PartitionLatency): PartitionLatency => {
    const l = nodeToLatency.get(node);
    if (!l) throw new KilnError(`getLatencyOfOnePartition: no latency given for node ${node.name}`);
    const here = new PartitionLatency(
      sofar.memLatencySec + l.memLatencySec,
      sofar.computerLatencySec + l.computerLatencySec,
      sofar.overallLatencySec + Math.max(l.computerLatencySec, l.memLatencySec),
    );
    const users = [...node.users.keys()].filter((u) => partition.nodes.has(u));
    if (users.length === 0) return here;
    let best = new PartitionLatency(0, 0, 0);
    for (const u of users) {
      const r = walk(u, here);
      if (r.overallLatencySec > best.overallLatencySec) best = r;
    }
    return best;
  };
  let critical = new PartitionLatency(0, 0, 0);
  for (const node of top) {
    const r = walk(node, new PartitionLatency(0, 0, 0));
    if (r.overallLatencySec > critical.overallLatencySec) critical = r;
  }
  return critical;
}

export function getPartitionToLatencyMapping(
  partitions: readonly Partition[],
  nodeToLatency: ReadonlyMap<Node, NodeLatency>,
): Map<Partition, PartitionLatency> {
  return new Map(partitions.map((p) => [p, getLatencyOfOnePartition(p, nodeToLatency)]));
}

/** Seconds to move the child's inputs that the parent produces (0 when both sit on the same devices). */
export function getCommLatencyBetween(parent: Partition, child: Partition, transferRateBytesPerSec: number): number {
  const same =
    parent.logicalDeviceIds.length > 0 &&
    child.logicalDeviceIds.length > 0 &&
    parent.logicalDeviceIds.join() === child.logicalDeviceIds.join();
  if (same) return 0;
  let bytes = 0;
  const counted = new Set<Node>();
  for (const node of child.nodes) {
    for (const n of node.allInputNodes()) {
      if (!parent.nodes.has(n) || counted.has(n)) continue;
      if (n.sizeBytes) bytes += n.sizeBytes.outputSize;
      counted.add(n);
    }
  }
  return bytes / transferRateBytesPerSec;
}

/** The latency of the whole partitioned graph: the slowest path from a partition without parents, transfers included. */
export function getLatencyOfPartitionedGraph(
  partitions: readonly Partition[],
  partitionToLatency: ReadonlyMap<Partition, PartitionLatency>,
  transferRateBytesPerSec: number,
): number {
  const walk = (p: Partition, sofar: number): number => {
    const total = sofar + partitionToLatency.get(p)!.overallLatencySec;
    if (p.children.size === 0) return total;
    let best = 0;
    for (const c of p.children) best = Math.max(best, walk(c, total + getCommLatencyBetween(p, c, transferRateBytesPerSec)));
    return best;
  };
  let critical = 0;
  for (const p of partitions) if (p.parents.size === 0) critical = Math.max(critical, walk(p, 0));
  return critical;
}
