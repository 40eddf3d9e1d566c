import test from 'ava';
import { KilnError, ops, randn, type Tensor } from '../src/index.js';
import { Graph, GraphModule, ShapeProp, type Node } from '../src/fx.js';
import { getitem, sym_size } from '../src/graph/builtins.js';
import { OPS } from '../src/runtime/op.js';
import { FlowNetwork } from '../src/aot/min-cut.js';
import { MISC_OPS, POINTWISE_OPS, RANDOM_OPS, REDUCTION_OPS, UNRECOMPUTABLE_OPS, VIEW_OPS } from '../src/aot/op-classes.js';
import { defaultPartition, minCutRematerializationPartition, partitionInfo, savedBytes, type PartitionFn } from '../src/aot/partition.js';

/**
 * Ports of the partitioner tests of PyTorch's test/functorch/test_aotdispatch.py. Joint graphs are built by
 * hand as the joint tracer records them (primals_i, tangents_i, op-table calls, output [forward outputs…,
 * gradients…]); ShapeProp on example inputs fills in `meta.tensorMeta`.
 */

type Call = (op: (...a: never[]) => unknown, ...args: unknown[]) => Node;

interface Joint {
  gm: GraphModule;
  primals: Tensor[];
  tangents: Tensor[];
  numFwdOutputs: number;
}

function buildJoint(
  primalShapes: number[][],
  tangentShapes: number[][],
  body: (call: Call, primals: Node[], tangents: Node[]) => { fwd: Node[]; grads: (Node | null)[] },
): Joint {
  const g = new Graph();
  const p = primalShapes.map((_, i) => g.placeholder(`primals_${i + 1}`));
  const t = tangentShapes.map((_, i) => g.placeholder(`tangents_${i + 1}`));
  const call: Call = (op, ...args) => g.callFunction(op as never, args as never);
  const { fwd, grads } = body(call, p, t);
  g.output([...fwd, ...grads]);
  const gm = new GraphModule({}, g);
  const primals = primalShapes.map((s) => randn(s));
  const tangents = tangentShapes.map((s) => randn(s));
  new ShapeProp(gm).propagate(...primals, ...tangents);
  return { gm, primals, tangents, numFwdOutputs: fwd.length };
}

/** [number of placeholders, number of outputs] (PyTorch's get_num_ins_outs). */
function insOuts(gm: GraphModule): [number, number] {
  const ins = gm.graph.nodes.filter((n) => n.op === 'placeholder').length;
  return [ins, (gm.graph.outputNode!.args[0] as unknown[]).length];
}

function outputNames(gm: GraphModule): string[] {
  return (gm.graph.outputNode!.args[0] as (Node | null)[]).map((n) => (n === null ? 'null' : n.name));
}

function placeholderNames(gm: GraphModule): string[] {
  return gm.graph.nodes.filter((n) => n.op === 'placeholder').map((n) => n.name);
}

function values(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(values);
  if (v !== null && typeof v === 'object' && 'toArray' in v) return (v as Tensor).toArray();
  return v;
}

/** Run fw then bw on the joint's inputs and check both equal the joint graph's own results. */
function checkRuns(t: import('ava').ExecutionContext, j: Joint, fw: GraphModule, bw: GraphModule): void {
  const expected = j.gm.forward(...j.primals, ...j.tangents) as unknown[];
  const fwOut = fw.forward(...j.primals) as unknown[];
  const info = partitionInfo(fw, bw);
  t.is(info.numFwdOutputs, j.numFwdOutputs);
  const saved = fwOut.slice(j.numFwdOutputs);
  t.is(saved.length, info.numSavedTensors + info.numSavedSizes);
  const grads = bw.forward(...saved, ...j.tangents) as unknown[];
  t.deepEqual(values([...fwOut.slice(0, j.numFwdOutputs), ...grads]), values(expected));
}

/** x.cos().cos().cos() and its backward, as PyTorch's joint graph has it: mul(tangents_1, neg(sin(cos_1))), …. */
function cosCosCos(): Joint {
  return buildJoint([[3]], [[3]], (call, [x], [g]) => {
    const cos = call(ops.cos, x);
    const cos1 = call(ops.cos, cos);
    const cos2 = call(ops.cos, cos1);
    const mul = call(ops.mul, g, call(ops.neg, call(ops.sin, cos1)));
    const mul1 = call(ops.mul, mul, call(ops.neg, call(ops.sin, cos)));
    const mul2 = call(ops.mul, mul1, call(ops.neg, call(ops.sin, x)));
    return { fwd: [cos2], grads: [mul2] };
  });
}

test('test_min_cut_partitioner: x.cos().cos().cos() saves only the input: fw [1, 2], bw [2, 1]', (t) => {
  const j = cosCosCos();
  const [fw, bw] = minCutRematerializationPartition(j.gm, { numFwdOutputs: 1 });
  t.deepEqual(insOuts(fw), [1, 2]);
  t.deepEqual(insOuts(bw), [2, 1]);
  t.deepEqual(outputNames(fw), ['cos_2', 'primals_1']);
  t.deepEqual(placeholderNames(bw), ['primals_1', 'tangents_1']);
  // The backward recomputes cos and cos_1 from the saved input.
  t.true(bw.graph.nodes.some((n) => n.name === 'cos_1'));
  checkRuns(t, j, fw, bw);
});

test('test_min_cut_partitioner: (a+b+c+d).cos().cos() saves the sum only: fw [4, 2], bw [2, 4]', (t) => {
  const j = buildJoint([[3], [3], [3], [3]], [[3]], (call, [a, b, c, d], [g]) => {
    const add2 = call(ops.add, call(ops.add, call(ops.add, a!, b!), c!), d!);
    const cos = call(ops.cos, add2);
    const cos1 = call(ops.cos, cos);
    const mul = call(ops.mul, g!, call(ops.neg, call(ops.sin, cos)));
    const mul1 = call(ops.mul, mul, call(ops.neg, call(ops.sin, add2)));
    return { fwd: [cos1], grads: [mul1, mul1, mul1, mul1] };
  });
  const [fw, bw] = minCutRematerializationPartition(j.gm, { numFwdOutputs: 1 });
  t.deepEqual(insOuts(fw), [4, 2]);
  t.deepEqual(insOuts(bw), [2, 4]);
  t.deepEqual(outputNames(fw), ['cos_1', 'add_2']);
  checkRuns(t, j, fw, bw);
});

test('default partition saves every forward value the backward reads (x.cos().cos().cos(): fw [1, 4])', (t) => {
  const j = cosCosCos();
  const [fw, bw] = defaultPartition(j.gm, { numFwdOutputs: 1 });
  t.deepEqual(outputNames(fw), ['cos_2', 'primals_1', 'cos', 'cos_1']);
  t.deepEqual(placeholderNames(bw), ['primals_1', 'cos', 'cos_1', 'tangents_1']);
  checkRuns(t, j, fw, bw);
  const [mfw, mbw] = minCutRematerializationPartition(j.gm, { numFwdOutputs: 1 });
  t.true(savedBytes(mfw, mbw) < savedBytes(fw, bw));
});

/** x.sum(dim=1) under dynamic shapes: the backward expands the tangent back to x's sizes, read with sym_size. */
function sumDim1(): Joint {
  return buildJoint([[10, 10]], [[10]], (call, [x], [g]) => {
    const sum = call(ops.sum, x, 1);
    const s0 = call(sym_size, x, 0);
    const s1 = call(sym_size, x, 1);
    const grad = call(ops.expand, call(ops.unsqueeze, g, 1), [s0, s1]);
    return { fwd: [sum], grads: [grad] };
  });
}

test('test_min_cut_partitioner_save_shape: the sizes are saved, not the tensor: fw [1, 3], bw [3, 1]', (t) => {
  const j = sumDim1();
  const [fw, bw] = minCutRematerializationPartition(j.gm, { numFwdOutputs: 1 });
  t.deepEqual(insOuts(fw), [1, 3]);
  t.deepEqual(insOuts(bw), [3, 1]);
  t.deepEqual(outputNames(fw), ['sum', 'sym_size', 'sym_size_1']);
  const info = partitionInfo(fw, bw);
  t.deepEqual([info.numSavedTensors, info.numSavedSizes], [0, 2]);
  t.is(savedBytes(fw, bw), 0);
  checkRuns(t, j, fw, bw);
});

test('test_default_partitioner_saves_symints_not_tensors_for_bw: an input read only for its sizes is saved as the sizes', (t) => {
  const j = sumDim1();
  const [fw, bw] = defaultPartition(j.gm, { numFwdOutputs: 1 });
  t.deepEqual(outputNames(fw), ['sum', 'sym_size', 'sym_size_1']);
  t.deepEqual(placeholderNames(bw), ['sym_size', 'sym_size_1', 'tangents_1']);
  t.deepEqual(partitionInfo(fw, bw), {
    numFwdOutputs: 1,
    numSavedTensors: 0,
    numSavedSizes: 2,
    savedTensors: [],
    savedSizes: ['sym_size', 'sym_size_1'],
  });
  checkRuns(t, j, fw, bw);
});

/** values = x.max(dim=1).values * w; the backward routes the gradient to the arg-max by comparing x with values. */
function maxValuesTimesW(): Joint {
  const maxDim = OPS.get('max')!;
  return buildJoint([[4, 5], [4]], [[4]], (call, [x, w], [g]) => {
    const max = call(maxDim, x, 1);
    const values = call(getitem, max, 0);
    const mul = call(ops.mul, values, w);
    const gValues = call(ops.mul, g, w);
    const hit = call(ops.eq, x, call(ops.unsqueeze, values, 1));
    const gx = call(ops.where, hit, call(ops.unsqueeze, gValues, 1), 0);
    const gw = call(ops.mul, g, values);
    return { fwd: [mul], grads: [gx, gw] };
  });
}

test('test_default_partitioner_getitem: a multi-output op is saved item by item, and items the backward skips are dropped', (t) => {
  const j = maxValuesTimesW();
  const [fw, bw] = defaultPartition(j.gm, { numFwdOutputs: 1 });
  // Saved: x and w (read by the backward) and the values item; the indices item is not read, so not saved.
  t.deepEqual(outputNames(fw), ['mul', 'primals_1', 'primals_2', 'getitem']);
  t.deepEqual(insOuts(fw), [2, 4]);
  t.deepEqual(insOuts(bw), [4, 2]);
  t.false(bw.graph.nodes.some((n) => n.name === 'max'));
  checkRuns(t, j, fw, bw);
});

/** x * x.unsqueeze(0): the backward reads x and the view. */
function viewOfInput(): Joint {
  return buildJoint([[3]], [[1, 3]], (call, [x], [g]) => {
    const unsq = call(ops.unsqueeze, x, 0);
    const mul = call(ops.mul, x, unsq);
    const g1 = call(ops.sum, call(ops.mul, g, unsq), 0);
    const g2 = call(ops.squeeze, call(ops.mul, g, x), 0);
    return { fwd: [mul], grads: [call(ops.add, g1, g2)] };
  });
}

test('default partition saves a view the backward reads, as PyTorch does; min-cut with recomputeViews rebuilds it from its base', (t) => {
  const j = viewOfInput();
  const [fw, bw] = defaultPartition(j.gm, { numFwdOutputs: 1 });
  t.deepEqual(outputNames(fw), ['mul', 'primals_1', 'unsqueeze']);
  checkRuns(t, j, fw, bw);
  const [mfw, mbw] = minCutRematerializationPartition(j.gm, { numFwdOutputs: 1, recomputeViews: true });
  t.deepEqual(outputNames(mfw), ['mul', 'primals_1']);
  t.deepEqual(placeholderNames(mbw), ['primals_1', 'tangents_1']);
  t.true(mbw.graph.nodes.some((n) => n.name === 'unsqueeze'));
  checkRuns(t, j, mfw, mbw);
});

test('test_recompute_partitioning: sin(sin(a)) + b gives the joint graph results through both partitioners', (t) => {
  const j = buildJoint(
    [
      [10, 10],
      [10, 10],
    ],
    [[10, 10]],
    (call, [a, b], [g]) => {
      const sin = call(ops.sin, a!);
      const sin1 = call(ops.sin, sin);
      const add = call(ops.add, sin1, b!);
      const mul = call(ops.mul, g!, call(ops.cos, sin));
      const mul1 = call(ops.mul, mul, call(ops.cos, a!));
      return { fwd: [add], grads: [mul1, g!] };
    },
  );
  for (const partition of [defaultPartition, minCutRematerializationPartition] as PartitionFn[]) {
    const [fw, bw] = partition(j.gm, { numFwdOutputs: 1 });
    checkRuns(t, j, fw, bw);
  }
  const [fw, bw] = minCutRematerializationPartition(j.gm, { numFwdOutputs: 1 });
  t.deepEqual(partitionInfo(fw, bw).savedTensors, ['primals_1']);
  t.true(
    bw.graph.nodes.some((n) => n.name === 'sin'),
    'the backward recomputes sin(a)',
  );
});

/**
 * linear → GELU (tanh form, decomposed into element-wise ops as PyTorch's decomposition does) → linear, with the
 * backward autograd would record for those ops. Primals: w1, b1, w2, b2 (parameters), then x.
 */
function geluMlp(batch: number): Joint {
  return buildJoint([[16, 8], [16], [4, 16], [4], [batch, 8]], [[batch, 4]], (call, [w1, b1, w2, b2, x], [g]) => {
    const c = Math.sqrt(2 / Math.PI);
    const h = call(ops.addmm, b1!, x!, call(ops.transpose, w1!, 0, 1));
    const h3 = call(ops.pow, h, 3);
    const inner = call(ops.add, h, call(ops.mul, h3, 0.044715));
    const u = call(ops.mul, inner, c);
    const th = call(ops.tanh, u);
    const onep = call(ops.add, th, 1);
    const half = call(ops.mul, h, 0.5);
    const gelu = call(ops.mul, half, onep);
    const y = call(ops.addmm, b2!, gelu, call(ops.transpose, w2!, 0, 1));
    // backward
    const gb2 = call(ops.sum, g!, [0]);
    const gw2 = call(ops.mm, call(ops.transpose, g!, 0, 1), gelu);
    const gGelu = call(ops.mm, g!, w2!);
    const gHalf = call(ops.mul, gGelu, onep);
    const gOnep = call(ops.mul, gGelu, half);
    const gU = call(ops.mul, gOnep, call(ops.add, call(ops.neg, call(ops.mul, th, th)), 1));
    const gInner = call(ops.mul, gU, c);
    const gH3 = call(ops.mul, gInner, 0.044715);
    const gFromPow = call(ops.mul, gH3, call(ops.mul, call(ops.pow, h, 2), 3));
    const gH = call(ops.add, call(ops.add, call(ops.mul, gHalf, 0.5), gInner), gFromPow);
    const gb1 = call(ops.sum, gH, [0]);
    const gw1 = call(ops.mm, call(ops.transpose, gH, 0, 1), x!);
    const gx = call(ops.mm, gH, w1!);
    return { fwd: [y], grads: [gw1, gb1, gw2, gb2, gx] };
  });
}

test('min-cut saves fewer bytes than the default partition on a GELU MLP, and both run as the joint graph', (t) => {
  const j = geluMlp(32);
  const [dfw, dbw] = defaultPartition(j.gm, { numFwdOutputs: 1 });
  const [mfw, mbw] = minCutRematerializationPartition(j.gm, { numFwdOutputs: 1 });
  checkRuns(t, j, dfw, dbw);
  checkRuns(t, j, mfw, mbw);
  // Default: w1, w2, x and five [32, 16] activations; min-cut: w1, w2, x, the first linear's output and the GELU
  // output (the second linear's weight gradient reads it in a GEMM, so the backward would materialise it anyway).
  t.deepEqual(partitionInfo(dfw, dbw).savedTensors, ['primals_1', 'primals_3', 'primals_5', 'addmm', 'tanh', 'add_1', 'mul_2', 'mul_3']);
  t.deepEqual(partitionInfo(mfw, mbw).savedTensors, ['primals_1', 'primals_3', 'primals_5', 'addmm', 'mul_3']);
  t.is(savedBytes(dfw, dbw), 512 + 256 + 1024 + 5 * 2048);
  t.is(savedBytes(mfw, mbw), 512 + 256 + 1024 + 2 * 2048);
});

test('min-cut never recomputes an mm, even where recomputing it would save bytes', (t) => {
  // y = mm(x, w) is [64, 64] (16 KiB) from two 1 KiB inputs: a cut by bytes alone would save x and w and run the
  // GEMM again in the backward.
  const j = buildJoint(
    [
      [64, 4],
      [4, 64],
    ],
    [[64, 64]],
    (call, [x, w], [g]) => {
      const y = call(ops.mm, x!, w!);
      const cos = call(ops.cos, y);
      const gy = call(ops.mul, g!, call(ops.neg, call(ops.sin, y)));
      const gx = call(ops.mm, gy, call(ops.transpose, w!, 0, 1));
      const gw = call(ops.mm, call(ops.transpose, x!, 0, 1), gy);
      return { fwd: [cos], grads: [gx, gw] };
    },
  );
  const [fw, bw] = minCutRematerializationPartition(j.gm, { numFwdOutputs: 1 });
  const forwardMms = fw.graph.nodes.filter((n) => n.target === ops.mm).map((n) => n.name);
  t.deepEqual(forwardMms, ['mm']);
  t.deepEqual(
    bw.graph.nodes.filter((n) => n.target === ops.mm).map((n) => n.name),
    ['mm_1', 'mm_2'],
    'the backward runs only its own GEMMs',
  );
  t.true(partitionInfo(fw, bw).savedTensors.includes('mm'));
  checkRuns(t, j, fw, bw);
});

test('min-cut never recomputes a random op (dropout mask)', (t) => {
  const j = buildJoint([[8]], [[8]], (call, [x], [g]) => {
    const mask = call(ops.dropout, x, 0.5, true);
    const y = call(ops.cos, mask);
    return { fwd: [y], grads: [call(ops.mul, g, call(ops.neg, call(ops.sin, mask)))] };
  });
  const [fw, bw] = minCutRematerializationPartition(j.gm, { numFwdOutputs: 1 });
  // Saving the input (the cheapest cut by bytes) would redraw the mask in the backward; the cut is taken after it.
  t.false(bw.graph.nodes.some((n) => n.name === 'dropout'));
  t.true(fw.graph.nodes.some((n) => n.name === 'dropout'));
  t.deepEqual(partitionInfo(fw, bw).savedTensors, ['neg']);
});

function badJoint(build: (g: Graph) => void): GraphModule {
  const g = new Graph();
  build(g);
  return new GraphModule({}, g, 'BadJoint');
}

test('a joint graph that breaks the convention is refused with a KilnError naming the graph and the problem', (t) => {
  const ok = cosCosCos().gm;
  for (const partition of [defaultPartition, minCutRematerializationPartition] as PartitionFn[]) {
    const noOutput = badJoint((g) => g.output([g.placeholder('primals_1')]));
    noOutput.graph.eraseNode(noOutput.graph.outputNode!);
    t.throws(() => partition(noOutput, { numFwdOutputs: 1 }), {
      instanceOf: KilnError,
      message: /joint graph 'BadJoint' has no output node/,
    });
    t.throws(() => partition(ok, { numFwdOutputs: 3 }), {
      instanceOf: KilnError,
      message: /joint graph 'GraphModule': numFwdOutputs 3 is out of range for an output of 2 value\(s\)/,
    });
    t.throws(() => partition(ok, { numFwdOutputs: -1 }), { instanceOf: KilnError, message: /numFwdOutputs -1 is out of range/ });
    t.throws(() => partition(ok, { numFwdOutputs: 0 }), {
      instanceOf: KilnError,
      message: /holds 2 gradient\(s\) after 0 forward output\(s\), but the graph has 1 primal\(s\)/,
    });
    const notNode = badJoint((g) => {
      const x = g.placeholder('primals_1');
      g.output([3, x]);
    });
    t.throws(() => partition(notNode, { numFwdOutputs: 1 }), {
      instanceOf: KilnError,
      message: /joint graph 'BadJoint': forward output 0 is 3, not a node/,
    });
    const badName = badJoint((g) => {
      const x = g.placeholder('x');
      g.output([x]);
    });
    t.throws(() => partition(badName, { numFwdOutputs: 1 }), {
      instanceOf: KilnError,
      message: /placeholder 'x' is neither primals_<i> nor tangents_<i>/,
    });
    const inPlace = badJoint((g) => {
      const x = g.placeholder('primals_1');
      g.output([g.callFunction(ops.mul_, [x, 2]), null]);
    });
    t.throws(() => partition(inPlace, { numFwdOutputs: 1 }), {
      instanceOf: KilnError,
      message: /joint graph 'BadJoint': node 'mul_' is the in-place op 'mul_'; partition a functionalised joint graph/,
    });
    const fwdNeedsTangent = badJoint((g) => {
      const x = g.placeholder('primals_1');
      const tg = g.placeholder('tangents_1');
      g.output([g.callFunction(ops.mul, [x, tg]), tg]);
    });
    t.throws(() => partition(fwdNeedsTangent, { numFwdOutputs: 1 }), {
      instanceOf: KilnError,
      message: /the forward graph needs 'mul', which cannot be computed from its inputs \(primals_1\)/,
    });
  }
});

test('every op of the table is classified for the min-cut partitioner', (t) => {
  const classes = [POINTWISE_OPS, VIEW_OPS, REDUCTION_OPS, MISC_OPS, RANDOM_OPS, UNRECOMPUTABLE_OPS];
  for (const name of OPS.keys()) {
    const found = classes.filter((c) => c.has(name)).length;
    t.is(found, 1, `op '${name}' must be in exactly one class of src/aot/op-classes.ts`);
  }
});

test('FlowNetwork: max flow equals the min cut, and ties go to the cut nearest the sink', (t) => {
  const net = new FlowNetwork();
  net.addEdge('s', 'a', 3);
  net.addEdge('s', 'b', 2);
  net.addEdge('a', 'b', 1);
  net.addEdge('a', 't', 2);
  net.addEdge('b', 't', 3);
  const r = net.minCut('s', 't');
  t.is(r.value, 5);
  // A chain of equal capacities: the cut is the last edge.
  const chain = new FlowNetwork();
  chain.addEdge('s', 'x', 4);
  chain.addEdge('x', 'y', 4);
  chain.addEdge('y', 't', 4);
  t.deepEqual(chain.minCut('s', 't').cutEdges, [['y', 't']]);
  const inf = new FlowNetwork();
  inf.addEdge('s', 't', Infinity);
  t.throws(() => inf.minCut('s', 't'), { instanceOf: KilnError, message: /no finite cut/ });
});

test('both partitioners give the joint graph results on every joint graph of this file', (t) => {
  const joints = [cosCosCos(), sumDim1(), maxValuesTimesW(), viewOfInput(), geluMlp(8)];
  for (const j of joints) {
    for (const partition of [defaultPartition, minCutRematerializationPartition] as PartitionFn[]) {
      const [fw, bw] = partition(j.gm, { numFwdOutputs: j.numFwdOutputs });
      fw.graph.lint();
      bw.graph.lint();
      checkRuns(t, j, fw, bw);
    }
  }
});
