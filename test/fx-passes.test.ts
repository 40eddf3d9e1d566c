import test from 'ava';
import { GraphModule, passes, symbolicTrace, type Node } from '../src/fx.js';
import { allclose, cat, manualSeed, nn, ops, rand, randn, tensor, type Tensor } from '../src/index.js';

/**
 * kiln/fx passes against PyTorch's test_fx_experimental cases: node sizes, Partition bookkeeping, the
 * accelerator Partitioner (single, size-based, AOT, errors), latencies, and splitModule.
 * Tensors are float32 `rand([4])` = 16 B; `Linear(4, 4)` = 80 B of parameters.
 */
const { Device, NodeLatency, Partition, PartitionMode, PartitionerConfig, Partitioner, PartitionerError } = passes;

const close = (a: unknown, b: unknown) => allclose(a as Tensor, b as Tensor, { atol: 1e-6 });
const byName = (gm: GraphModule, name: string) => gm.graph.nodes.find((n) => n.name === name)!;

class ThreeAdds extends nn.Module {
  override forward(a: Tensor, b: Tensor): Tensor {
    const add1 = a.add(b);
    const add2 = add1.add(rand([4]));
    return add2.add(rand([4]));
  }
}

class AddLinearAdd extends nn.Module {
  linear = new nn.Linear(4, 4);
  c = rand([4]);
  override forward(a: Tensor, b: Tensor): Tensor {
    return this.linear.call(a.add(b)).add(this.c);
  }
}

test('getSizeOfAllNodes: output and total bytes, parameters of a call_module counted; without ShapeProp a clear error', (t) => {
  const m = new AddLinearAdd();
  const gm = symbolicTrace(m);
  t.throws(() => passes.getSizeOfAllNodes(gm), {
    message: 'Node a has no tensor metadata associated with it! Check that shape propagation has run.',
  });
  passes.getSizeOfAllNodes(gm, [rand([4]), rand([4])]);
  t.deepEqual(byName(gm, 'linear').sizeBytes, { outputSize: 16, totalSize: 96 });
  t.deepEqual(byName(gm, 'add').sizeBytes, { outputSize: 16, totalSize: 16 });
  t.deepEqual(byName(gm, 'c').sizeBytes, { outputSize: 16, totalSize: 16 });
});

test('case 1: one 1000 B device holds the whole graph in one partition of 112 B; removing add_2 (and its constant) leaves 80 B', (t) => {
  const m = new ThreeAdds();
  const gm = symbolicTrace(m);
  passes.getSizeOfAllNodes(gm, [rand([4]), rand([4])]);
  const partitioner = new Partitioner();
  const { dag } = partitioner.partitionGraph(gm, m, new PartitionerConfig([new Device('dev_0', 1000, 0)]));
  const p = partitioner.partitions[0]!;
  t.is(partitioner.partitions.length, 1);
  t.is(p.usedMemBytes, 112);
  t.deepEqual(dag.nodes[0]!.logicalDeviceIds, [0]);
  p.removeNode(byName(gm, 'add_2'));
  t.is(p.usedMemBytes, 80);
  t.false(
    [...p.nodes].some((n) => n.name === '_tensor_constant1'),
    'the constant only add_2 read goes too',
  );
  t.true([...p.nodes].some((n) => n.name === '_tensor_constant0'));
});

test('case 2: size-based over three 125 B devices gives partitions of 48/112/48 B on devices [0], [1], [2]; outputs equal', (t) => {
  manualSeed(0);
  const m = new AddLinearAdd();
  const gm = symbolicTrace(m);
  const a = rand([4]);
  const b = rand([4]);
  passes.getSizeOfAllNodes(gm, [a, b]);
  const devices = [0, 1, 2].map((i) => new Device(`dev_${i}`, 125, i));
  const { dag, moduleWithSubmodules } = new Partitioner().partitionGraph(gm, m, new PartitionerConfig(devices));
  t.deepEqual(
    dag.nodes.map((n) => [n.sizeBytes, n.logicalDeviceIds]),
    [
      [48, [0]],
      [112, [1]],
      [48, [2]],
    ],
  );
  t.true(close(moduleWithSubmodules.call(a, b), gm.call(a, b)));
  t.snapshot(moduleWithSubmodules.graph.printTabular(false), 'the partitioned module');
});

test('case 3: the single partition goes on the largest device; too little memory overall and a node too large are PyTorch errors', (t) => {
  class Add extends nn.Module {
    override forward(a: Tensor, b: Tensor): Tensor {
      return a.add(b);
    }
  }
  const m = new Add();
  const gm = symbolicTrace(m);
  passes.getSizeOfAllNodes(gm, [rand([1]), rand([1])]);
  const devices = [new Device('dev_0', 125, 0), new Device('dev_1', 150, 1), new Device('dev_2', 125, 2)];
  const { dag } = new Partitioner().partitionGraph(gm, m, new PartitionerConfig(devices));
  t.is(dag.nodes[0]!.sizeBytes, 12);
  t.deepEqual(dag.nodes[0]!.logicalDeviceIds, [1]);

  const big = new AddLinearAdd();
  const gm2 = symbolicTrace(big);
  passes.getSizeOfAllNodes(gm2, [rand([4]), rand([4])]);
  const tiny = [new Device('dev_0', 4, 0), new Device('dev_1', 4, 1)];
  t.throws(() => new Partitioner().partitionGraph(gm2, big, new PartitionerConfig(tiny)), {
    instanceOf: PartitionerError,
    message: 'Devices have no enough memory for the module',
  });
  class JustLinear extends nn.Module {
    linear = new nn.Linear(4, 4);
    override forward(a: Tensor): Tensor {
      return this.linear.call(a);
    }
  }
  const lin = new JustLinear();
  const gm3 = symbolicTrace(lin);
  passes.getSizeOfAllNodes(gm3, [rand([4])]);
  const five = [0, 1, 2, 3, 4].map((i) => new Device(`dev_${i}`, 40, i));
  t.throws(() => new Partitioner().partitionGraph(gm3, lin, new PartitionerConfig(five)), {
    message: 'linearis too large to fit any device',
  });
  t.throws(() => new Partitioner().partitionGraph(gm3, lin, new PartitionerConfig([])), { message: 'No devices' });
});

test('case 4: AOT-based, each op node its own partition on device 0: every DAG node is 48 B on [0]; outputs equal', (t) => {
  class TwoAdds extends nn.Module {
    b = rand([4]);
    c = rand([4]);
    override forward(a: Tensor): Tensor {
      return this.c.add(a.add(this.b));
    }
  }
  const m = new TwoAdds();
  const gm = symbolicTrace(m);
  const a = rand([4]);
  passes.getSizeOfAllNodes(gm, [a]);
  const nodeToPartition = new Map<Node, number>();
  const partitionToDevices = new Map<number, number[]>();
  for (const n of gm.graph.nodes) {
    if (['placeholder', 'get_attr', 'output'].includes(n.op)) continue;
    partitionToDevices.set(nodeToPartition.size, [0]);
    nodeToPartition.set(n, nodeToPartition.size);
  }
  const config = new PartitionerConfig([new Device('dev_0', 200, 0)], {
    mode: PartitionMode.aotBased,
    nodeToPartitionMapping: nodeToPartition,
    partitionToLogicalDeviceMapping: partitionToDevices,
  });
  const { dag, moduleWithSubmodules } = new Partitioner().partitionGraph(gm, m, config);
  t.is(dag.nodes.length, 2);
  for (const n of dag.nodes) {
    t.is(n.sizeBytes, 48);
    t.deepEqual(n.logicalDeviceIds, [0]);
  }
  t.true(close(moduleWithSubmodules.call(a), gm.call(a)));
});

test('latencies: a partition’s critical path and the graph’s, with transfer cost between partitions on different devices', (t) => {
  manualSeed(0);
  const m = new AddLinearAdd();
  const gm = symbolicTrace(m);
  passes.getSizeOfAllNodes(gm, [rand([4]), rand([4])]);
  const partitioner = new Partitioner();
  partitioner.partitionGraph(gm, m, new PartitionerConfig([0, 1, 2].map((i) => new Device(`dev_${i}`, 125, i))));
  const latency = new Map<Node, InstanceType<typeof NodeLatency>>();
  for (const n of gm.graph.nodes) {
    if (n.op === 'call_module') latency.set(n, new NodeLatency(1, 10));
    else if (n.op === 'call_function' || n.op === 'call_method') latency.set(n, new NodeLatency(2, 1));
  }
  const perPartition = passes.getPartitionToLatencyMapping(partitioner.partitions, latency);
  t.deepEqual(
    partitioner.partitions.map((p) => perPartition.get(p)),
    [
      { memLatencySec: 2, computerLatencySec: 1, overallLatencySec: 2 },
      { memLatencySec: 1, computerLatencySec: 10, overallLatencySec: 10 },
      { memLatencySec: 2, computerLatencySec: 1, overallLatencySec: 2 },
    ].map((l) => new passes.PartitionLatency(l.memLatencySec, l.computerLatencySec, l.overallLatencySec)),
  );
  // 2 + 16 B / 4 B/s + 10 + 16 B / 4 B/s + 2: each partition boundary moves one 16 B activation
  t.is(passes.getLatencyOfPartitionedGraph(partitioner.partitions, perPartition, 4), 22);
  const one = new Partition(0);
  t.is(one.usedMemBytes, 0);
  t.throws(() => passes.getLatencyOfOnePartition(partitioner.partitions[0]!, new Map()), { message: /no latency given for node add/ });
});

test('case 5: splitModule round-robin over three partitions: GraphModule submodules, meta kept everywhere, outputs equal', (t) => {
  class MyModule extends nn.Module {
    param = new nn.Parameter(rand([3, 4]));
    linear = new nn.Linear(4, 5);
    override forward(x: Tensor, y: Tensor): Tensor {
      const z = this.linear.call(x.add(this.param)).clamp(0, 1);
      const w = this.linear.call(y).clamp(0, 1);
      return z.add(w);
    }
  }
  const m = new MyModule();
  const gm = symbolicTrace(m);
  for (const n of gm.graph.nodes) if (n.op !== 'output') n.meta.testMetaInfo = true;
  let counter = 0;
  const split = passes.splitModule(gm, m, () => {
    const p = counter % 3;
    counter = (counter + 1) % 3;
    return p;
  });
  let submodules = 0;
  for (const n of split.graph.nodes) {
    if (n.op !== 'call_module') continue;
    const sub = split.getSubmodule(n.target as string);
    t.true(sub instanceof GraphModule);
    submodules++;
    for (const sn of (sub as GraphModule).graph.nodes) if (sn.op !== 'output') t.is(sn.meta.testMetaInfo, true, `${n.target}.${sn.name}`);
  }
  t.is(submodules, 3);
  const x = rand([3, 4]);
  const y = rand([3, 4]);
  t.true(close(split.call(x, y), gm.call(x, y)));
});

test('case 6: splitting at each call of `lin` maps submod_1.lin and submod_2.lin back to lin; partitions with several outputs are unpacked', (t) => {
  class Example extends nn.Module {
    mmParam = new nn.Parameter(randn([4, 4]));
    mmParam2 = new nn.Parameter(randn([4, 4]));
    lin = new nn.Linear(4, 4);
    override forward(x: Tensor): Tensor {
      x = x.matmul(this.mmParam).relu().matmul(this.mmParam);
      x = this.lin.call(x).relu().matmul(this.mmParam2);
      return this.lin.call(x);
    }
  }
  const m = new Example();
  const gm = symbolicTrace(m);
  let part = 0;
  const qualnames: Record<string, string> = {};
  const split = passes.splitModule(
    gm,
    m,
    (n) => {
      if (n.op === 'call_module' && n.target === 'lin') part++;
      return part;
    },
    qualnames,
  );
  t.deepEqual(qualnames, { 'submod_1.lin': 'lin', 'submod_2.lin': 'lin' });
  const inp = randn([2, 4]);
  t.true(close(split.call(inp), gm.call(inp)));

  class TwoOut extends nn.Module {
    override forward(x: Tensor): Tensor {
      const a = x.relu();
      const b = x.neg();
      return a.add(b).mul(a);
    }
  }
  const two = symbolicTrace(new TwoOut());
  const split2 = passes.splitModule(two, two, (n) => (n.name === 'relu' || n.name === 'neg' ? 0 : 1));
  t.deepEqual(
    split2.graph.nodes.map((n) => `${n.op}:${n.name}`),
    ['placeholder:x', 'call_module:submod_0', 'call_function:getitem', 'call_function:getitem_1', 'call_module:submod_1', 'output:output'],
  );
  t.true(close(split2.call(inp), two.call(inp)));
});

test('replaceTargetNodesWith retargets matching nodes, keeping names and meta', (t) => {
  class Act extends nn.Module {
    override forward(x: Tensor): Tensor {
      return x.relu().add(1);
    }
  }
  const gm = symbolicTrace(new Act());
  gm.graph.nodes.find((n) => n.name === 'relu')!.meta.tag = 'kept';
  passes.replaceTargetNodesWith(gm, 'call_method', 'relu', 'call_method', 'sigmoid');
  const node = gm.graph.nodes.find((n) => n.name === 'relu')!;
  t.is(node.target, 'sigmoid');
  t.is(node.meta.tag, 'kept');
  const x = randn([3]);
  t.true(close(gm.call(x), x.sigmoid().add(1)));
});

/** PyTorch's test_partition_latency / test_saturate_host module (its `torch.rand(4)` are constants here: same sizes). */
class LatencyModule extends nn.Module {
  linear = new nn.Linear(4, 4);
  override forward(a: Tensor): Tensor {
    const add1 = a.add(rand([4]));
    const add2 = add1.add(rand([4]));
    const linear1 = this.linear.call(add1);
    const add3 = add2.add(linear1);
    return add2.add(add3);
  }
}

/** PyTorch's rule: (total, 2·total) for nodes without parameters, (total, output) for those with. */
function sizeLatencies(gm: GraphModule, compute: (total: number) => number = (total) => 2 * total) {
  const m = new Map<Node, InstanceType<typeof NodeLatency>>();
  for (const n of gm.graph.nodes) {
    if (['output', 'placeholder', 'get_attr'].includes(n.op)) continue;
    const { totalSize, outputSize } = n.sizeBytes!;
    m.set(n, totalSize === outputSize ? new NodeLatency(totalSize, compute(totalSize)) : new NodeLatency(totalSize, outputSize));
  }
  return m;
}

test('test_partition_latency: partitions (128, 80, 160) and (16, 32, 32), critical path 208 s at 2 B/s, as in PyTorch', (t) => {
  const m = new LatencyModule();
  const gm = symbolicTrace(m);
  const a = rand([4]);
  passes.getSizeOfAllNodes(gm, [a]);
  const latencies = sizeLatencies(gm);
  const partitioner = new Partitioner();
  const { moduleWithSubmodules } = partitioner.partitionGraph(
    gm,
    m,
    new PartitionerConfig([new Device('dev_0', 200, 0), new Device('dev_1', 200, 1)]),
  );
  t.true(close(moduleWithSubmodules.call(a), gm.call(a)));
  const perPartition = passes.getPartitionToLatencyMapping(partitioner.partitions, latencies);
  const plain = (p: InstanceType<typeof Partition>) => {
    const l = perPartition.get(p)!;
    return [l.memLatencySec, l.computerLatencySec, l.overallLatencySec];
  };
  t.deepEqual(partitioner.partitions.map(plain), [
    [128, 80, 160],
    [16, 32, 32],
  ]);
  t.is(passes.getLatencyOfPartitionedGraph(partitioner.partitions, perPartition, 2), 208);
});

test('test_saturate_host: partitions of 192 and 48 B on devices 0 and 1 are replicated onto 4 and 2, as in PyTorch', (t) => {
  const m = new LatencyModule();
  const gm = symbolicTrace(m);
  const a = rand([4]);
  passes.getSizeOfAllNodes(gm, [a]);
  const devices = [200, 200, 100, 100, 200, 100].map((mem, i) => new Device(`dev_${i}`, mem, i));
  const partitioner = new Partitioner();
  const { moduleWithSubmodules, dag } = partitioner.partitionGraph(gm, m, new PartitionerConfig(devices, { saturateHost: true }));
  t.true(close(moduleWithSubmodules.call(a), gm.call(a)));
  t.deepEqual(
    partitioner.partitions.map((p) => [p.usedMemBytes, p.logicalDeviceIds]),
    [
      [192, [0, 4]],
      [48, [1, 2]],
    ],
  );
  t.deepEqual(
    dag.nodes.map((n) => n.logicalDeviceIds),
    [
      [0, 4],
      [1, 2],
    ],
  );
});

/** PyTorch's test_cost_aware_partition module. */
class CostModule extends nn.Module {
  linear = new nn.Linear(4, 4);
  override forward(a: Tensor): Tensor {
    const add1 = a.add(rand([4]));
    const add2 = add1.add(rand([4]));
    const linear1 = this.linear.call(add1);
    const add3 = add2.add(rand([4]));
    const add4 = add2.add(linear1);
    return add3.add(add4);
  }
}

test('cost-aware (160 s, as PyTorch) and KL-based partitioning: valid device placements, outputs equal, never slower than size-based', (t) => {
  const a = rand([4]);
  const run = (mode: passes.PartitionMode) => {
    const m = new CostModule();
    const gm = symbolicTrace(m);
    passes.getSizeOfAllNodes(gm, [a]);
    const latencies = sizeLatencies(gm, () => 1);
    const devices = [0, 1, 2, 3].map((i) => new Device(`dev_${i}`, 125, i));
    const partitioner = new Partitioner();
    const config = new PartitionerConfig(devices, { mode, transferRateBytesPerSec: 2, nodeToLatencyMapping: latencies });
    const { moduleWithSubmodules } = partitioner.partitionGraph(gm, m, config);
    t.true(close(moduleWithSubmodules.call(a), gm.call(a)), mode);
    for (const p of partitioner.partitions) {
      t.true(p.logicalDeviceIds.length > 0, `${mode}: partition ${p.partitionId} has a device`);
      t.true(p.usedMemBytes <= 125, `${mode}: partition ${p.partitionId} fits its device`);
    }
    const cost = passes.getLatencyOfPartitionedGraph(
      partitioner.partitions,
      passes.getPartitionToLatencyMapping(partitioner.partitions, latencies),
      2,
    );
    return { cost, sizes: partitioner.partitions.map((p) => p.usedMemBytes) };
  };
  const sizeBased = run(PartitionMode.sizeBased);
  const costAware = run(PartitionMode.costAware);
  const kl = run(PartitionMode.klBased);
  t.true(costAware.cost <= sizeBased.cost, `cost-aware ${costAware.cost} vs size-based ${sizeBased.cost}`);
  t.is(costAware.cost, 160, 'PyTorch test_cost_aware_partition: 160');
  t.true(kl.cost <= sizeBased.cost, `KL ${kl.cost} vs size-based ${sizeBased.cost}`);
  t.snapshot({ sizeBased, costAware, kl }, 'costs and partition sizes per mode');
});

test('sparse-nn: embedding bags and dense layers land in separate partitions, one device per embedding partition; PyTorch errors', (t) => {
  class Recommender extends nn.Module {
    bottom = new nn.Sequential(new nn.Linear(4, 4), new nn.ReLU(), new nn.Linear(4, 4), new nn.ReLU());
    embeddings = new nn.ModuleList([0, 1, 2].map(() => new nn.EmbeddingBag(400, 4, { mode: 'sum' })));
    top = new nn.Sequential(new nn.Linear(16, 16), new nn.ReLU(), new nn.Linear(16, 16), new nn.ReLU());
    override forward(a: Tensor, ids: Tensor, offsets: Tensor): Tensor {
      const x = this.bottom.call(a);
      const ys = [...this.embeddings].map((e) => e.call(ids, offsets) as Tensor);
      return this.top.call(cat([x, ...ys], 1));
    }
  }
  manualSeed(0);
  const m = new Recommender();
  const gm = symbolicTrace(m);
  const inputs = [rand([2, 4]), tensor([1, 2, 3, 4, 5, 6, 7, 8], { dtype: 'int32' }), tensor([0, 4], { dtype: 'int32' })];
  passes.getSizeOfAllNodes(gm, inputs);
  const devices = [0, 1, 2].map((i) => new Device(`dev_${i}`, 10000, i));
  const partitioner = new Partitioner();
  const { moduleWithSubmodules } = partitioner.partitionGraph(gm, m, new PartitionerConfig(devices, { mode: PartitionMode.sparseNn }));
  t.true(close(moduleWithSubmodules.call(...inputs), gm.call(...inputs)));
  const isEmbedding = (p: InstanceType<typeof Partition>) =>
    [...p.nodes].some((n) => n.op === 'call_module' && String(n.target).startsWith('embeddings'));
  const embedding = partitioner.partitions.filter(isEmbedding);
  const dense = partitioner.partitions.filter((p) => !isEmbedding(p));
  t.is(embedding.length, 3, 'each 6.4 kB embedding table needs its own 10 kB device next to the dense layers');
  t.is(dense.length, 1, 'the dense partitions before and after the embeddings are combined');
  t.deepEqual(
    embedding.map((p) => p.logicalDeviceIds.length),
    embedding.map(() => 1),
  );
  const embeddingDevices = embedding.flatMap((p) => p.logicalDeviceIds);
  for (const p of dense) t.deepEqual(p.logicalDeviceIds, embeddingDevices, 'dense partitions sit on every embedding device');
  const unequal = [new Device('dev_0', 12000, 0), new Device('dev_1', 12000, 1), new Device('dev_2', 11000, 2)];
  t.throws(() => new Partitioner().partitionGraph(gm, m, new PartitionerConfig(unequal, { mode: PartitionMode.sparseNn })), {
    message: 'All devices must have same memory size!',
  });
  const two = [0, 1].map((i) => new Device(`dev_${i}`, 12000, i));
  t.throws(() => new Partitioner().partitionGraph(gm, m, new PartitionerConfig(two, { mode: PartitionMode.sparseNn })), {
    message: 'Need 3 devices, but only 2 provided',
  });
});

test('case 8: fuse folds BatchNorm into the conv before it (eval), within 1e-5; a BN without running stats, or after a shared conv, stays', (t) => {
  class ConvBn extends nn.Module {
    conv: nn.Module;
    bn: nn.Module;
    constructor(track: boolean) {
      super();
      this.conv = new nn.Conv2d(32, 64, 3, { stride: 2 });
      this.bn = new nn.BatchNorm2d(64, { trackRunningStats: track });
    }
    override forward(x: Tensor): Tensor {
      return this.bn.call(this.conv.call(x)) as Tensor;
    }
  }
  manualSeed(0);
  const inp = randn([1, 32, 20, 20]);
  const tracking = new ConvBn(true);
  // give the running statistics something to fold: a few training batches, then eval
  for (let i = 0; i < 3; i++) tracking.call(randn([2, 32, 20, 20]).mul(2).add(1));
  tracking.eval();
  const fused = passes.fuse(tracking);
  t.false(
    fused.modules().some((mod) => mod instanceof nn.BatchNorm2d),
    'the BN is gone',
  );
  t.true(allclose(fused.call(inp) as Tensor, tracking.call(inp) as Tensor, { atol: 1e-5, rtol: 1e-4 }));
  t.true(tracking.bn instanceof nn.BatchNorm2d && tracking.conv.training === false, 'the original module is unchanged');

  const notTracking = new ConvBn(false).eval();
  const kept = passes.fuse(notTracking);
  t.true(
    kept.modules().some((mod) => mod instanceof nn.BatchNorm2d),
    'a BN without running stats is not folded',
  );
  t.true(allclose(kept.call(inp) as Tensor, notTracking.call(inp) as Tensor, { atol: 1e-6 }));

  class Shared extends nn.Module {
    conv = new nn.Conv1d(4, 4, 3);
    bn = new nn.BatchNorm1d(4);
    override forward(x: Tensor): Tensor {
      const c = this.conv.call(x) as Tensor;
      return (this.bn.call(c) as Tensor).add(c);
    }
  }
  const shared = new Shared().eval();
  t.true(
    passes
      .fuse(shared)
      .modules()
      .some((mod) => mod instanceof nn.BatchNorm1d),
    'the conv output has another user: no fusion',
  );
  t.throws(() => passes.fuse(new ConvBn(true)), { message: 'Fusion only for eval!' });
});

test('case 7: mergeMatmul turns two matmuls sharing a right-hand side into one (counted by re-tracing); a dependent chain keeps two', (t) => {
  const countMatmuls = (gm: GraphModule) =>
    symbolicTrace(gm).graph.nodes.filter((n) => n.target === ops.matmul || n.target === 'matmul').length;
  class Shared extends nn.Module {
    rhs = new nn.Parameter(randn([4, 5]));
    override forward(x: Tensor, y: Tensor): Tensor {
      return ops.matmul(x, this.rhs).add(ops.matmul(y, this.rhs));
    }
  }
  const m = new Shared();
  const before = symbolicTrace(m);
  t.is(countMatmuls(before), 2);
  const merged = passes.mergeMatmul(m);
  t.is(countMatmuls(merged), 1);
  const a = randn([3, 4]);
  const b = randn([3, 4]);
  t.true(allclose(merged.call(a, b) as Tensor, m.call(a, b) as Tensor, { atol: 1e-5 }));

  class Chain extends nn.Module {
    rhs = new nn.Parameter(randn([4, 4]));
    override forward(x: Tensor): Tensor {
      const h = ops.matmul(x, this.rhs);
      return ops.matmul(h, this.rhs);
    }
  }
  const chain = passes.mergeMatmul(new Chain());
  t.is(countMatmuls(chain), 2, 'the second matmul reads the first: no merge');
});

class Mixed extends nn.Module {
  fc = new nn.Linear(4, 6);
  override forward(x: Tensor, y: Tensor): Tensor {
    const h = ops.add(this.fc.call(x), 1, { alpha: 2 }).relu().mul(y.sum(1, true));
    const s = ops.softmax(h.reshape([2, 3, 2]).transpose(1, 2), -1);
    return ops.clamp(s.matmul(s.transpose(1, 2)).sub(0.5), -0.2).mean(-1);
  }
}

test('NormalizeArgs: every op call in keyword-only form by its schema, defaults filled, meta kept; outputs equal', (t) => {
  const gm = symbolicTrace(new Mixed());
  for (const n of gm.graph.nodes) n.meta.tag = n.name;
  const normalized = new passes.NormalizeArgs(gm).transform();
  const calls = normalized.graph.nodes.filter((n) => n.op === 'call_function');
  t.true(calls.length >= 3);
  for (const n of calls) {
    t.is(n.args.length, 0, `${n.name} has no positional arguments`);
    t.is(n.meta.tag, n.name, 'meta carried over');
  }
  t.deepEqual(Object.keys(calls.find((n) => n.target === ops.add)!.kwargs), ['input', 'other', 'alpha']);
  t.deepEqual(calls.find((n) => n.target === ops.clamp)!.kwargs.max, null);
  const x = randn([2, 4]);
  const y = randn([2, 5]);
  t.true(close(normalized.call(x, y), gm.call(x, y)));
});

test('NormalizeOperators: method spellings of ops become the op functions; outputs equal', (t) => {
  const gm = symbolicTrace(new Mixed());
  t.true(gm.graph.nodes.some((n) => n.op === 'call_method'));
  const normalized = new passes.NormalizeOperators(gm).transform();
  t.deepEqual(
    normalized.graph.nodes.filter((n) => n.op === 'call_method').map((n) => n.target),
    [],
  );
  const x = randn([2, 4]);
  const y = randn([2, 5]);
  t.true(close(normalized.call(x, y), gm.call(x, y)));
});

test('splitModule: keyword arguments that cross partitions, a concreteArgs default kept on the base placeholder, dead code, clashing names', (t) => {
  class Kw extends nn.Module {
    override forward(x: Tensor, y: Tensor, scale = 2): Tensor {
      const unused = x.neg(); // dead code: computed in its partition, read by nobody
      void unused;
      const submod_0 = y.relu(); // a value named like a submodule
      return ops.add(x.mul(scale), { other: submod_0, alpha: 3 } as never) as Tensor;
    }
  }
  const m = new Kw();
  const gm = symbolicTrace(m, { concreteArgs: { scale: 2 } });
  const split = passes.splitModule(gm, m, (n) => (n.name === 'add' ? 1 : 0));
  t.regex(split.code, /forward\(x, y, scale = 2\)/);
  t.is(split.graph.nodes.filter((n) => n.op === 'call_module').length, 2);
  const xi = randn([3]);
  const yi = randn([3]);
  t.true(close(split.call(xi, yi), gm.call(xi, yi)));
  t.true(close(split.call(xi, yi), xi.mul(2).add(yi.relu().mul(3))));
});
