/**
 * Partition a 20-layer MLP over 4 accelerators with kiln/fx's Partitioner (PyTorch's accelerator
 * partitioner): size-based placement, then each partition's critical-path latency from a simple cost model
 * (bytes moved at 10 GB/s vs FLOPs at 100 GFLOP/s) and the whole graph's latency with 1 GB/s links.
 * Run: `npm run build && node --import kiln/register examples/partition.ts`.
 */
import { allclose, manualSeed, nn, randn, type Tensor } from 'kiln';
import { passes, symbolicTrace, type Node } from 'kiln/fx';

class Deep extends nn.Module {
  layers = new nn.ModuleList(Array.from({ length: 20 }, () => new nn.Linear(64, 64)));
  override forward(x: Tensor): Tensor {
    for (const layer of this.layers) x = layer.call(x).relu();
    return x;
  }
}

manualSeed(0);
const model = new Deep();
const gm = symbolicTrace(model);
const x = randn([8, 64]);
passes.getSizeOfAllNodes(gm, [x]);

const devices = [0, 1, 2, 3].map((i) => new passes.Device(`accel_${i}`, 120_000, i));
const partitioner = new passes.Partitioner();
const { dag, moduleWithSubmodules } = partitioner.partitionGraph(gm, model, new passes.PartitionerConfig(devices));

// Cost model: memory time for every byte a node touches, compute time for a Linear's multiply-adds.
const latency = new Map<Node, InstanceType<typeof passes.NodeLatency>>();
for (const n of gm.graph.nodes) {
  if (n.op === 'placeholder' || n.op === 'get_attr' || n.op === 'output') continue;
  const flops = n.op === 'call_module' ? 2 * 8 * 64 * 64 : 8 * 64;
  latency.set(n, new passes.NodeLatency(n.sizeBytes!.totalSize / 10e9, flops / 100e9));
}
const perPartition = passes.getPartitionToLatencyMapping(partitioner.partitions, latency);
const us = (s: number) => `${(s * 1e6).toFixed(2).padStart(7)} µs`;

console.log(
  `20-layer MLP (${gm.graph.nodes.length} nodes) over ${devices.length} devices of ${devices[0]!.availableMemBytes.toLocaleString()} B\n`,
);
console.log('partition  devices  bytes    nodes  critical path (mem / compute / overall)');
for (const p of partitioner.partitions) {
  const l = perPartition.get(p)!;
  const ops = [...p.nodes].filter((n) => n.op !== 'placeholder' && n.op !== 'get_attr').length;
  console.log(
    `${String(p.partitionId).padEnd(9)}  ${JSON.stringify(p.logicalDeviceIds).padEnd(7)}  ${String(p.usedMemBytes).padEnd(7)}  ${String(ops).padEnd(5)}  ${us(l.memLatencySec)} / ${us(l.computerLatencySec)} / ${us(l.overallLatencySec)}`,
  );
}
console.log('\nDAG:');
for (const n of dag.nodes) {
  console.log(
    `  ${n.submoduleNode.name.padEnd(9)} on ${JSON.stringify(n.logicalDeviceIds)}  ${n.sizeBytes} B  inputs: ${n.inputNodes.map((i) => i.name).join(', ')}`,
  );
}
const total = passes.getLatencyOfPartitionedGraph(partitioner.partitions, perPartition, 1e9);
console.log(`\nwhole graph, 1 GB/s between devices: ${us(total).trim()}`);
console.log(`partitioned module equals the original: ${allclose(moduleWithSubmodules.call(x) as Tensor, model.call(x), { atol: 1e-6 })}`);
moduleWithSubmodules.graph.printTabular();
