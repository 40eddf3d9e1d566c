import { KilnError } from '../../errors.js';
import type { Module } from '../../runtime/nn/module.js';
import { getitem } from '../builtins.js';
import type { GraphModule } from '../graph-module.js';
import type { Node } from '../node.js';
import { getSizeOfAllNodes } from './graph-manipulation.js';
import {
  PARAM_LIKE,
  Partition,
  PartitionMode,
  getExtraSizeOf,
  getLatencyOfPartitionedGraph,
  getPartitionToLatencyMapping,
  type Device,
  type NodeLatency,
  type PartitionerConfig,
} from './partitioner-utils.js';
import { splitModule } from './split-module.js';

/**
 * torch.fx.experimental.accelerator_partitioner for kiln graphs: split a GraphModule into partitions that
 * fit a set of devices (by size, by embedding vs dense regions, by a latency cost model, by Kernighan-Lin
 * swaps, or as given ahead of time), then into submodules, with a DAG of which runs where. The algorithms,
 * tie-breaks and error messages follow PyTorch's; sets iterate in insertion order.
 */

/** A PartitionerError carries PyTorch's RuntimeError text unchanged. */
export class PartitionerError extends KilnError {}

const OP_NODES = new Set(['call_module', 'call_method', 'call_function']);

export class DAGNode {
  constructor(
    readonly submoduleNode: Node,
    readonly inputNodes: Node[],
    readonly outputNodes: Node[],
    readonly logicalDeviceIds: number[],
    readonly sizeBytes: number,
  ) {}

  toString(): string {
    return this.submoduleNode.name;
  }
}

export class DAG {
  readonly nodes: DAGNode[] = [];

  createNode(submoduleNode: Node, inputNodes: Node[], outputNodes: Node[], logicalDevices: number[], sizeBytes: number): void {
    this.nodes.push(new DAGNode(submoduleNode, inputNodes, outputNodes, logicalDevices, sizeBytes));
  }
}

export interface PartitionResult {
  readonly dag: DAG;
  readonly moduleWithSubmodules: GraphModule;
}

// ---- partition-list helpers ----

function resetPartitionDevice(partitions: readonly Partition[]): void {
  for (const p of partitions) p.logicalDeviceIds = [];
}

/** Replace two partitions by their union, appended last, and renumber. */
function combineTwoPartitions(p0: Partition, p1: Partition, partitions: Partition[]): void {
  const p = new Partition(partitions.length);
  p.nodes = new Set([...p0.nodes, ...p1.nodes]);
  p.recalculateMemSize();
  partitions.push(p);
  partitions.splice(partitions.indexOf(p0), 1);
  partitions.splice(partitions.indexOf(p1), 1);
  reorganizePartitions(partitions);
}

/** A partition is the parent of another when one of its nodes feeds a node that only the other holds. */
function setParentsAndChildren(partitions: readonly Partition[]): void {
  for (const p of partitions) {
    p.children = new Set();
    p.parents = new Set();
  }
  for (const partition of partitions) {
    for (const node of partition.nodes) {
      for (const user of node.users.keys()) {
        for (const p of partitions) {
          if (p !== partition && p.nodes.has(user) && !p.nodes.has(node)) {
            partition.children.add(p);
            p.parents.add(partition);
          }
        }
      }
    }
  }
}

function reorganizePartitions(partitions: readonly Partition[]): void {
  partitions.forEach((p, i) => (p.partitionId = i));
  setParentsAndChildren(partitions);
}

/** BFS levels from the partitions without parents. */
function getBfsLevelPartition(partitions: readonly Partition[]): void {
  let current = new Set(partitions.filter((p) => p.parents.size === 0));
  let next = new Set<Partition>();
  let level = 0;
  while (current.size) {
    const p = current.values().next().value as Partition;
    current.delete(p);
    p.bfsLevel = level;
    for (const c of p.children) next.add(c);
    if (current.size === 0) {
      current = next;
      next = new Set();
      level++;
    }
  }
}

function getNodeToPartitionMapping(partitions: readonly Partition[]): Map<Node, number> {
  const m = new Map<Node, number>();
  for (const p of partitions) for (const n of p.nodes) m.set(n, p.partitionId);
  return m;
}

function getDevicePartitionStats(partitions: readonly Partition[], devices: readonly Device[]) {
  const byId = new Map(devices.map((d) => [d.logicalId, d]));
  const deviceToPartitions = new Map<Device, Partition[]>(devices.map((d) => [d, []]));
  const deviceToLeftMemBytes = new Map<Device, number>(devices.map((d) => [d, d.availableMemBytes]));
  const noDevicePartitions: Partition[] = [];
  for (const p of partitions) {
    if (p.logicalDeviceIds.length === 0) {
      noDevicePartitions.push(p);
      continue;
    }
    for (const id of p.logicalDeviceIds) {
      const d = byId.get(id)!;
      deviceToPartitions.get(d)!.push(p);
      deviceToLeftMemBytes.set(d, deviceToLeftMemBytes.get(d)! - p.usedMemBytes);
    }
  }
  return { deviceToPartitions, deviceToLeftMemBytes, noDevicePartitions };
}

/** Place every partition without a device on the device with the least room that still fits it. */
function getDeviceToPartitionsMapping(partitions: readonly Partition[], devices: readonly Device[]): boolean {
  const { deviceToPartitions, deviceToLeftMemBytes: left, noDevicePartitions } = getDevicePartitionStats(partitions, devices);
  const extraNeeded = (partition: Partition, onDevice: readonly Partition[]) => {
    const all = new Set<Node>();
    for (const p of onDevice) for (const n of p.nodes) all.add(n);
    if (all.size === 0) return partition.usedMemBytes;
    for (const n of partition.nodes) all.add(n);
    let extra = 0;
    for (const n of partition.nodes) extra += getExtraSizeOf(n, all);
    return extra;
  };
  for (const partition of noDevicePartitions) {
    const byRoom = [...left].sort((a, b) => a[1] - b[1]); // stable, like Python's sorted
    let found = false;
    for (const [d, room] of byRoom) {
      const extra = extraNeeded(partition, deviceToPartitions.get(d)!);
      if (extra < room) {
        deviceToPartitions.get(d)!.push(partition);
        partition.logicalDeviceIds.push(d.logicalId);
        left.set(d, room - extra);
        found = true;
        break;
      }
    }
    if (!found) return false;
  }
  return true;
}

/** Whether a partition can reach itself through its children (a cycle). */
function checkDependency(partition: Partition): boolean {
  const visited = new Set([partition]);
  const queue = [partition];
  while (queue.length) {
    const p = queue.shift()!;
    for (const child of p.children) {
      if (child === partition) return true;
      if (!visited.has(child)) {
        visited.add(child);
        queue.push(child);
      }
    }
  }
  return false;
}

export class Partitioner {
  partitions: Partition[] = [];
  nodeToPartition = new Map<Node, number>();
  devices: Device[] = [];
  private graphModule!: GraphModule;
  private torchModule!: Module;

  partitionGraph(gm: GraphModule, root: Module, config: PartitionerConfig): PartitionResult {
    this.graphModule = gm;
    this.torchModule = root;
    this.devices = config.devices;
    if (this.devices.length === 0) throw new PartitionerError('No devices');
    getSizeOfAllNodes(gm);
    const nodes = gm.graph.nodes;
    if (nodes.every((n) => n.op === 'placeholder' || n.op === 'get_attr' || n.op === 'output')) {
      throw new PartitionerError('No Partition since no operations in the module');
    }
    let totalSize = 0;
    for (const n of nodes) {
      if (n.op === 'output') break;
      totalSize += n.sizeBytes!.totalSize;
    }
    const biggest = this.devices.reduce((best, d) => (d.availableMemBytes > best.availableMemBytes ? d : best));
    if (config.mode === PartitionMode.aotBased) {
      this.aotBasedPartition(config.nodeToPartitionMapping, config.partitionToLogicalDeviceMapping);
    } else if (totalSize <= biggest.availableMemBytes) {
      this.findSinglePartition(totalSize, biggest.logicalId);
    } else if (totalSize > this.devices.reduce((s, d) => s + d.availableMemBytes, 0)) {
      throw new PartitionerError('Devices have no enough memory for the module');
    } else {
      switch (config.mode) {
        case PartitionMode.sparseNn: {
          const mem = this.devices[0]!.availableMemBytes;
          if (!this.devices.every((d) => d.availableMemBytes === mem))
            throw new PartitionerError('All devices must have same memory size!');
          this.sparseNnPartition(mem);
          break;
        }
        case PartitionMode.costAware:
          this.costAwarePartition(config.transferRateBytesPerSec, config.nodeToLatencyMapping);
          break;
        case PartitionMode.klBased:
          this.klBasedPartition(config.transferRateBytesPerSec, config.nodeToLatencyMapping);
          break;
        case PartitionMode.sizeBased:
          this.sizeBasedPartition();
          break;
        default:
          throw new PartitionerError(`unknown partition mode ${JSON.stringify(config.mode satisfies never)}`);
      }
    }
    if (config.saturateHost) this.saturateHost();
    const moduleWithSubmodules = this.doPartition();
    return { dag: this.dumpDag(moduleWithSubmodules), moduleWithSubmodules };
  }

  private createPartition(): Partition {
    const p = new Partition(this.partitions.length);
    this.partitions.push(p);
    return p;
  }

  private createSingleNodePartition(node: Node): void {
    this.createPartition().addNode(node);
  }

  private findSinglePartition(totalSize: number, logicalDeviceId: number): void {
    const p = this.createPartition();
    for (const n of this.graphModule.graph.nodes) if (n.op !== 'output') p.nodes.add(n);
    p.usedMemBytes = totalSize;
    p.logicalDeviceIds = [logicalDeviceId];
    this.nodeToPartition = getNodeToPartitionMapping(this.partitions);
  }

  /**
   * Greedy by size: fill a partition on the first unused device that fits the next node, open a new one on
   * another device when it is full; once every device has a partition, each remaining node gets its own,
   * and all are then placed on devices with room left.
   */
  sizeBasedPartition(): void {
    const occupied: Device[] = [];
    const findDeviceBasedOnSize = (node: Node): Device => {
      const needed = getExtraSizeOf(node, new Set());
      const device = this.devices.find((d) => !occupied.includes(d) && d.availableMemBytes >= needed);
      if (!device) throw new PartitionerError(`${node.name}is too large to fit any device`);
      occupied.push(device);
      return device;
    };
    const left = new Map<Partition, number>();
    let partition = this.createPartition();
    for (const node of this.graphModule.graph.nodes) {
      if (!OP_NODES.has(node.op)) continue;
      if (this.partitions.length > this.devices.length) {
        this.createSingleNodePartition(node);
        continue;
      }
      let extra = getExtraSizeOf(node, partition.nodes);
      if (partition.usedMemBytes === 0) {
        const device = findDeviceBasedOnSize(node);
        left.set(partition, device.availableMemBytes);
        partition.logicalDeviceIds.push(device.logicalId);
      } else if (left.get(partition)! < extra) {
        if (this.partitions.length === this.devices.length) {
          this.createSingleNodePartition(node);
          continue;
        }
        const device = findDeviceBasedOnSize(node);
        partition = this.createPartition();
        extra = getExtraSizeOf(node, partition.nodes);
        left.set(partition, device.availableMemBytes);
        partition.logicalDeviceIds.push(device.logicalId);
      }
      partition.addNode(node);
      left.set(partition, left.get(partition)! - extra);
    }
    reorganizePartitions(this.partitions);
    this.nodeToPartition = getNodeToPartitionMapping(this.partitions);
    if (!getDeviceToPartitionsMapping(this.partitions, this.devices)) {
      throw new PartitionerError('Cannot Get a Valid Partition to Logical Device Mapping');
    }
  }

  /** Replicate the partitions of each used device onto the smallest idle device that can hold them, while devices last. */
  saturateHost(): void {
    const { deviceToPartitions, deviceToLeftMemBytes, noDevicePartitions } = getDevicePartitionStats(this.partitions, this.devices);
    if (noDevicePartitions.length !== 0) {
      throw new PartitionerError(`Expect no_device_partitions has 0 device, but get ${noDevicePartitions.length}`);
    }
    const used = this.devices.filter((d) => deviceToPartitions.get(d)!.length > 0);
    const replicaOf = new Map<Device, Device>();
    while (used.length * 2 + replicaOf.size <= this.devices.length) {
      const idle = this.devices.filter((d) => !used.includes(d) && !replicaOf.has(d));
      const round = new Map<Device, Device>();
      let success = true;
      for (const u of used) {
        const fits = idle.filter((d) => d.availableMemBytes >= u.availableMemBytes - deviceToLeftMemBytes.get(u)!);
        if (fits.length === 0) {
          success = false;
          break;
        }
        const pick = fits.reduce((best, d) => (d.availableMemBytes < best.availableMemBytes ? d : best));
        idle.splice(idle.indexOf(pick), 1);
        round.set(pick, u);
      }
      if (!success) break;
      for (const [k, v] of round) replicaOf.set(k, v);
    }
    for (const [replica, original] of replicaOf) {
      for (const p of deviceToPartitions.get(original)!) p.logicalDeviceIds.push(replica.logicalId);
    }
  }

  private doPartition(): GraphModule {
    return splitModule(this.graphModule, this.torchModule, (node) => {
      const id = this.nodeToPartition.get(node);
      if (id === undefined) throw new PartitionerError(`node ${node.name} is in no partition`);
      return id;
    });
  }

  private dumpDag(m: GraphModule): DAG {
    const dag = new DAG();
    for (const node of m.graph.nodes) {
      if (node.op === 'output') break;
      if (PARAM_LIKE.has(node.op) || node.target === getitem) continue;
      const outputs = node.users.size > 1 ? [...node.users.keys()] : [node];
      const id = Number(node.name.slice(node.name.lastIndexOf('_') + 1));
      const p = this.partitions[id]!;
      dag.createNode(node, node.allInputNodes(), outputs, p.logicalDeviceIds, p.usedMemBytes);
    }
    return dag;
  }

  /**
   * Size-based over devices of one size, with a new partition wherever the graph crosses between embedding
   * and dense nodes; then small partitions of the same kind are combined, one device per embedding partition,
   * and the dense partitions go on every one of those devices.
   */
  sparseNnPartition(availableMemBytes: number): void {
    const embedding: Partition[] = [];
    const dense: Partition[] = [];
    let inEmbedding = false;
    const finish = (p: Partition) => (inEmbedding ? embedding : dense).push(p);
    const isEmbeddingNode = (node: Node): boolean => {
      if (node.op !== 'call_module') return false;
      let sub: unknown = this.graphModule;
      for (const atom of String(node.target).split('.')) {
        const next = (sub as Record<string, unknown>)[atom];
        if (next === undefined) throw new PartitionerError(`Module ${String(sub)} has no attribute ${atom}`);
        sub = next;
        if (String(sub).includes('Embedding')) return true;
      }
      return false;
    };
    let partition = this.createPartition();
    for (const node of this.graphModule.graph.nodes) {
      if (!OP_NODES.has(node.op)) continue;
      if (isEmbeddingNode(node) !== inEmbedding) {
        if (partition.usedMemBytes !== 0) {
          finish(partition);
          partition = this.createPartition();
        }
        inEmbedding = !inEmbedding;
      }
      if (getExtraSizeOf(node, partition.nodes) + partition.usedMemBytes > availableMemBytes) {
        finish(partition);
        partition = this.createPartition();
        if (getExtraSizeOf(node, partition.nodes) > availableMemBytes) {
          throw new PartitionerError(`${String(node.target)}is too large to fit into a device`);
        }
      }
      partition.addNode(node);
    }
    finish(partition);
    setParentsAndChildren(this.partitions);
    this.combinePartitionsBasedOnSize(dense, availableMemBytes);
    this.combinePartitionsBasedOnSize(embedding, availableMemBytes);
    const denseBytes = dense.reduce((s, p) => s + p.usedMemBytes, 0);
    if (embedding.length > this.devices.length) {
      throw new PartitionerError(`Need ${embedding.length} devices, but only ${this.devices.length} provided`);
    }
    const occupied: number[] = [];
    embedding.forEach((p, i) => {
      if (denseBytes + p.usedMemBytes > availableMemBytes) {
        throw new PartitionerError(
          `partition_${p.partitionId}(embedding partition) and non embedding partitions can not fit into one device`,
        );
      }
      p.logicalDeviceIds = [this.devices[i]!.logicalId];
      occupied.push(this.devices[i]!.logicalId);
    });
    for (const p of dense) p.logicalDeviceIds = occupied;
    this.nodeToPartition = getNodeToPartitionMapping(this.partitions);
  }

  /** Repeatedly merge the smallest partition into the largest one within one BFS level that still fits. */
  private combinePartitionsBasedOnSize(partitions: Partition[], availableMemBytes: number): void {
    let found = true;
    while (found) {
      const sorted = [...partitions].sort((a, b) => a.usedMemBytes - b.usedMemBytes);
      getBfsLevelPartition(this.partitions);
      found = false;
      const smallest = sorted.shift();
      if (!smallest) break;
      for (const p of sorted.reverse()) {
        if (Math.abs(smallest.bfsLevel - p.bfsLevel) > 1) continue;
        const nodes = new Set([...p.nodes, ...smallest.nodes]);
        let needed = 0;
        for (const n of nodes) needed += getExtraSizeOf(n, nodes);
        if (needed <= availableMemBytes) {
          combineTwoPartitions(p, smallest, this.partitions);
          partitions.splice(partitions.indexOf(smallest), 1);
          partitions.splice(partitions.indexOf(p), 1);
          partitions.push(this.partitions[this.partitions.length - 1]!);
          found = true;
          break;
        }
      }
    }
  }

  /**
   * Start from one partition per node; repeatedly merge the pair (adjacent in BFS level, or parent and
   * child) whose merge gives the lowest critical-path latency, while that is no worse than now.
   */
  costAwarePartition(transferRate: number, nodeToLatency: Map<Node, NodeLatency>): void {
    const tryCombining = (i: number, j: number, partitions: Partition[]): number => {
      const p0 = partitions[i]!;
      const p1 = partitions[j]!;
      if (!(Math.abs(p0.bfsLevel - p1.bfsLevel) <= 1 || p1.parents.has(p0) || p1.children.has(p0))) return Infinity;
      combineTwoPartitions(p0, p1, partitions);
      if (checkDependency(partitions[partitions.length - 1]!)) return Infinity;
      resetPartitionDevice(partitions);
      if (!getDeviceToPartitionsMapping(partitions, this.devices)) return Infinity;
      return getLatencyOfPartitionedGraph(partitions, getPartitionToLatencyMapping(partitions, nodeToLatency), transferRate);
    };
    const searchCombination = (): boolean => {
      let cost = getLatencyOfPartitionedGraph(this.partitions, getPartitionToLatencyMapping(this.partitions, nodeToLatency), transferRate);
      if (this.partitions.length === 1) return false;
      let pair: [number, number] | undefined;
      for (let i = 0; i < this.partitions.length - 1; i++) {
        for (let j = i + 1; j < this.partitions.length; j++) {
          const newCost = tryCombining(i, j, [...this.partitions]);
          if (newCost <= cost) {
            pair = [i, j];
            cost = newCost;
          }
          reorganizePartitions(this.partitions);
        }
      }
      if (pair) combineTwoPartitions(this.partitions[pair[0]]!, this.partitions[pair[1]]!, this.partitions);
      getBfsLevelPartition(this.partitions);
      resetPartitionDevice(this.partitions);
      getDeviceToPartitionsMapping(this.partitions, this.devices);
      return pair !== undefined;
    };
    for (const node of this.graphModule.graph.nodes) {
      if (!PARAM_LIKE.has(node.op) && node.op !== 'output') this.createSingleNodePartition(node);
    }
    setParentsAndChildren(this.partitions);
    getBfsLevelPartition(this.partitions);
    while (searchCombination());
    reorganizePartitions(this.partitions);
    this.nodeToPartition = getNodeToPartitionMapping(this.partitions);
  }

  /**
   * Kernighan-Lin on top of the size-based partition: for each op node, try swapping it with every op node
   * of every other partition (or moving it alone) and keep the swap that lowers the latency most.
   */
  klBasedPartition(transferRate: number, nodeToLatency: Map<Node, NodeLatency>): void {
    const swapNodes = (n0: Node | undefined, n1: Node | undefined, p0: Partition, p1: Partition) => {
      if (n0) {
        p0.removeNode(n0);
        p1.addNode(n0);
      }
      if (n1) {
        p0.addNode(n1);
        p1.removeNode(n1);
      }
    };
    const latency = () =>
      getLatencyOfPartitionedGraph(this.partitions, getPartitionToLatencyMapping(this.partitions, nodeToLatency), transferRate);
    const trySwap = (n0: Node, n1: Node | undefined, p0: Partition, p1: Partition): number => {
      let cost = Infinity;
      swapNodes(n0, n1, p0, p1);
      reorganizePartitions(this.partitions);
      if (!checkDependency(p0) && !checkDependency(p1)) {
        resetPartitionDevice(this.partitions);
        const mapping = getPartitionToLatencyMapping(this.partitions, nodeToLatency);
        cost = getDeviceToPartitionsMapping(this.partitions, this.devices)
          ? getLatencyOfPartitionedGraph(this.partitions, mapping, transferRate)
          : Infinity;
      }
      swapNodes(n1, n0, p0, p1);
      reorganizePartitions(this.partitions);
      resetPartitionDevice(this.partitions);
      getDeviceToPartitionsMapping(this.partitions, this.devices);
      return cost;
    };
    /** PyTorch returns the last swap's cost with the best pair; kept, so choices match. */
    const swapNodeToPartition = (node: Node, p0: Partition, p1: Partition): [number, [Node, Node | undefined] | undefined] => {
      let minCost = Infinity;
      let cost = Infinity;
      let pair: [Node, Node | undefined] | undefined;
      for (const n1 of [...p1.nodes, undefined]) {
        if (n1 && PARAM_LIKE.has(n1.op)) continue;
        cost = trySwap(node, n1, p0, p1);
        if (cost < minCost) {
          pair = [node, n1];
          minCost = cost;
        }
      }
      return [cost, pair];
    };
    this.sizeBasedPartition();
    let cost = latency();
    let pair: [Node, Node | undefined] | undefined;
    let partitionPair: [Partition, Partition] | undefined;
    const opNodes = this.graphModule.graph.nodes.filter((n) => !PARAM_LIKE.has(n.op) && n.op !== 'output');
    for (const node of opNodes) {
      const i0 = this.nodeToPartition.get(node)!;
      const p0 = this.partitions[i0]!;
      this.partitions.forEach((p1, i1) => {
        if (i0 === i1) return;
        const [newCost, newPair] = swapNodeToPartition(node, p0, p1);
        if (newCost < cost) {
          cost = newCost;
          pair = newPair;
          partitionPair = [p0, p1];
        }
      });
      if (pair && partitionPair) {
        swapNodes(pair[0], pair[1], partitionPair[0], partitionPair[1]);
        reorganizePartitions(this.partitions);
        getDeviceToPartitionsMapping(this.partitions, this.devices);
      }
    }
    reorganizePartitions(this.partitions);
    getDeviceToPartitionsMapping(this.partitions, this.devices);
  }

  /** Partitions exactly as given: node → partition id, partition id → logical devices. */
  aotBasedPartition(nodeToPartition: Map<Node, number>, partitionToDevices: Map<number, number[]>): void {
    const byId = new Map<number, Partition>();
    this.nodeToPartition = nodeToPartition;
    for (const [node, id] of nodeToPartition) {
      let p = byId.get(id);
      if (!p) {
        p = new Partition(id);
        this.partitions.push(p);
        byId.set(id, p);
        p.logicalDeviceIds = partitionToDevices.get(id) ?? [];
      }
      p.addNode(node);
    }
  }
}
