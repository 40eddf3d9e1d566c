import { KilnError } from '../errors.js';
import { Graph } from '../graph/graph.js';
import { GraphModule } from '../graph/graph-module.js';
import { Node, targetName } from '../graph/node.js';
import type { TensorMeta } from '../graph/shape-prop.js';
import { copy_ } from './graph-copy.js';
import { FlowNetwork } from './min-cut.js';
import { canFuse, isRecomputable, isViewOp } from './op-classes.js';

/**
 * The partitioners of kiln/aot (PyTorch's torch/_functorch/partitioners.py): they split a joint
 * forward+backward graph into a forward graph and a backward graph.
 *
 * Joint graph convention (what the joint tracer produces): placeholders `primals_1…primals_n`, then
 * `tangents_1…tangents_m`; `call_function` nodes on op-table ops and fx builtins (`getitem`, `sym_size`,
 * `sym_add`, …); every tensor node carries `meta.tensorMeta`; a node without tensorMeta whose target is a
 * `sym_*` builtin is a size (a number). One output node returns `[forward outputs…, gradient of each primal
 * (null when none)…]`.
 *
 * Result `[fw, bw]`: `fw(primals_1…primals_n)` (every primal kept, in order) returns `[forward outputs…,
 * saved tensors…, saved sizes…]`; `bw(saved tensors…, saved sizes…, tangents…)` returns the primals'
 * gradients (null kept). Saved placeholders are named after the forward node they come from.
 * `partitionInfo(fw, bw)` reads the counts back from the two graphs (what the runtime needs to split the
 * forward's results), `savedBytes(fw, bw)` the bytes of the saved tensors.
 */

export interface PartitionOptions {
  /** How many of the joint output's entries are forward outputs (the rest are the primals' gradients). */
  readonly numFwdOutputs: number;
}

export interface MinCutOptions extends PartitionOptions {
  /**
   * Never save a view: the backward rebuilds it from its base (PyTorch's `functorch.config.recompute_views`,
   * off by default there too).
   */
  readonly recomputeViews?: boolean;
}

export type PartitionFn = (joint: GraphModule, options: PartitionOptions) => [GraphModule, GraphModule];

/** What a partition saves between its forward and backward, as read from the two graphs. */
export interface PartitionInfo {
  readonly numFwdOutputs: number;
  readonly numSavedTensors: number;
  readonly numSavedSizes: number;
  /** Names of the saved values, as the backward's placeholders (and the forward's nodes) call them. */
  readonly savedTensors: readonly string[];
  readonly savedSizes: readonly string[];
}

const BYTES_PER_ELEMENT: Readonly<Record<string, number>> = { float32: 4, int32: 4, bool: 1 };

function tensorMetaOf(n: Node): TensorMeta | undefined {
  const m = n.meta.tensorMeta as TensorMeta | readonly unknown[] | undefined;
  return m !== undefined && !Array.isArray(m) && Array.isArray((m as TensorMeta).shape) ? (m as TensorMeta) : undefined;
}

/** A size (PyTorch's `is_sym_node`): a shape-arithmetic builtin's number, not a tensor. */
export function isSizeNode(n: Node): boolean {
  return n.meta.tensorMeta === undefined && n.op === 'call_function' && targetName(n.target).startsWith('sym_');
}

/** Bytes of a tensor node's result (float32 = 4 an element); undefined for a node that is not one tensor. */
export function nodeBytes(n: Node): number | undefined {
  const m = tensorMetaOf(n);
  if (m === undefined) return undefined;
  if (!m.shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new KilnError(`partition: node '${n.name}' has shape [${m.shape.join(', ')}]; byte counts need concrete (hint) sizes`);
  }
  const per = BYTES_PER_ELEMENT[m.dtype];
  if (per === undefined) throw new KilnError(`partition: node '${n.name}' has an unknown dtype '${m.dtype}'`);
  return m.shape.reduce((a, b) => a * b, 1) * per;
}

const isPrimal = (n: Node) => n.op === 'placeholder' && n.name.startsWith('primals_');
const isTangent = (n: Node) => n.op === 'placeholder' && n.name.startsWith('tangents_');

interface JointParts {
  readonly primals: Node[];
  readonly tangents: Node[];
  readonly fwdOutputs: Node[];
  readonly bwdOutputs: (Node | null)[];
}

function describeJoint(joint: GraphModule): string {
  return `joint graph '${joint.className}'`;
}

/** Check the joint graph keeps the convention and split its output into forward outputs and gradients. */
function jointParts(joint: unknown, options: PartitionOptions | undefined, who: string): JointParts {
  if (!(joint instanceof GraphModule)) throw new KilnError(`${who}: expected the joint graph as a GraphModule, got ${String(joint)}`);
  const where = `${who}: ${describeJoint(joint)}`;
  const numFwdOutputs = options?.numFwdOutputs;
  const nodes = joint.graph.nodes;
  const primals = nodes.filter(isPrimal);
  const tangents = nodes.filter(isTangent);
  for (const n of nodes) {
    if (n.op === 'placeholder' && !isPrimal(n) && !isTangent(n)) {
      throw new KilnError(`${where}: placeholder '${n.name}' is neither primals_<i> nor tangents_<i>`);
    }
    const name = n.op === 'call_function' || n.op === 'call_method' ? targetName(n.target) : '';
    if (name.endsWith('_') && !name.startsWith('_') && !isInputCopy(n)) {
      // Extraction copies every node its inputs allow into both graphs: a mutation would run twice.
      throw new KilnError(`${where}: node '${n.name}' is the in-place op '${name}'; partition a functionalised joint graph`);
    }
    if (n.op === 'call_module') {
      throw new KilnError(`${where}: node '${n.name}' calls module '${String(n.target)}'; a joint graph holds op-table calls only`);
    }
  }
  const out = joint.graph.outputNode;
  if (out === undefined) throw new KilnError(`${where} has no output node`);
  const values = out.args[0];
  if (!Array.isArray(values)) {
    throw new KilnError(`${where}: the output must be a flat array [forward outputs…, gradients…], got ${String(values)}`);
  }
  const flat = values as readonly unknown[];
  if (typeof numFwdOutputs !== 'number' || !Number.isInteger(numFwdOutputs) || numFwdOutputs < 0 || numFwdOutputs > flat.length) {
    throw new KilnError(`${where}: numFwdOutputs ${String(numFwdOutputs)} is out of range for an output of ${flat.length} value(s)`);
  }
  const fwdOutputs = flat.slice(0, numFwdOutputs).map((v, i) => {
    if (!(v instanceof Node)) throw new KilnError(`${where}: forward output ${i} is ${JSON.stringify(v) ?? String(v)}, not a node`);
    return v;
  });
  const bwdOutputs = flat.slice(numFwdOutputs).map((v, i) => {
    if (v === null || v === undefined) return null;
    if (!(v instanceof Node)) throw new KilnError(`${where}: the gradient of primals_${i + 1} is ${JSON.stringify(v)}, not a node or null`);
    return v;
  });
  if (bwdOutputs.length !== primals.length) {
    throw new KilnError(
      `${where}: the output holds ${bwdOutputs.length} gradient(s) after ${numFwdOutputs} forward output(s), but the graph has ${primals.length} primal(s)`,
    );
  }
  return { primals, tangents, fwdOutputs, bwdOutputs };
}

const INVALID = Symbol('not computable from these inputs');

/** A backward's write into a graph input (see graph-copy.ts): it belongs to the backward graph only. */
const isInputCopy = (n: Node) => n.op === 'call_function' && n.target === (copy_ as unknown);

/**
 * PyTorch's `_extract_graph_with_inputs_outputs`: a new graph whose placeholders are `inputs` (named as in the
 * joint) and whose nodes are the joint's nodes computable from them, returning `outputs`; dead code removed.
 */
function extractGraph(joint: GraphModule, inputs: readonly Node[], outputs: readonly (Node | null)[], what: string): Graph {
  const g = new Graph();
  const env = new Map<Node, Node | typeof INVALID>();
  for (const input of inputs) {
    const p = g.placeholder(input.name);
    p.meta = { ...input.meta };
    env.set(input, p);
  }
  for (const n of joint.graph.nodes) {
    if (env.has(n) || n.op === 'output') continue;
    const forwardSide = what === 'forward' && isInputCopy(n);
    if (forwardSide || n.op === 'placeholder' || n.allInputNodes().some((x) => env.get(x) === INVALID)) {
      env.set(n, INVALID);
      continue;
    }
    env.set(
      n,
      g.nodeCopy(n, (x) => env.get(x) as Node),
    );
  }
  const result = outputs.map((o) => {
    if (o === null) return null;
    const v = env.get(o);
    if (v === undefined || v === INVALID) {
      throw new KilnError(
        `partition: ${describeJoint(joint)}: the ${what} graph needs '${o.name}', which cannot be computed from its inputs (${inputs.map((i) => i.name).join(', ') || 'none'})`,
      );
    }
    return v;
  });
  g.output(result);
  g.eliminateDeadCode();
  return g;
}

function newModule(joint: GraphModule, g: Graph): GraphModule {
  const gm = new GraphModule(joint, g, 'GraphModule');
  g.lint();
  return gm;
}

/** PyTorch's `_extract_fwd_bwd_modules`: build both graphs, dropping saved values the backward does not read. */
function extractFwdBwd(joint: GraphModule, parts: JointParts, saved: Node[], savedSizes: Node[]): [GraphModule, GraphModule] {
  const { primals, tangents, fwdOutputs, bwdOutputs } = parts;
  const probe = extractGraph(joint, [...saved, ...savedSizes, ...tangents], bwdOutputs, 'backward');
  const used = new Set(probe.nodes.filter((n) => n.op === 'placeholder' && n.users.size > 0).map((n) => n.name));
  const keptSaved = saved.filter((n) => used.has(n.name));
  const keptSizes = savedSizes.filter((n) => used.has(n.name));
  const fw = extractGraph(joint, primals, [...fwdOutputs, ...keptSaved, ...keptSizes], 'forward');
  const bw = extractGraph(joint, [...keptSaved, ...keptSizes, ...tangents], bwdOutputs, 'backward');
  return [newModule(joint, fw), newModule(joint, bw)];
}

function unique(nodes: readonly Node[]): Node[] {
  return [...new Set(nodes)];
}

/** Names of the nodes the forward outputs need (computable from the primals alone). */
function forwardNodeNames(joint: GraphModule, parts: JointParts): Set<string> {
  const fwOnly = extractGraph(joint, parts.primals, parts.fwdOutputs, 'forward');
  return new Set(fwOnly.nodes.filter((n) => n.op !== 'output').map((n) => n.name));
}

/**
 * PyTorch's `default_partition`: the forward is what the forward outputs need; it saves every forward value the
 * backward reads, except that a tensor the backward reads only the sizes of is saved as those sizes, and a
 * multi-output op's results are saved item by item (its `getitem`s). Views are saved like any value (PyTorch's
 * default partition does not unflattenTensors them; `minCutRematerializationPartition` with `recomputeViews` does).
 */
export function defaultPartition(joint: GraphModule, options: PartitionOptions): [GraphModule, GraphModule] {
  const parts = jointParts(joint, options, 'defaultPartition');
  const fwNames = forwardNodeNames(joint, parts);
  const saved: Node[] = [];
  const savedSizes: Node[] = [];
  for (const n of joint.graph.nodes) {
    if (!fwNames.has(n.name)) continue;
    if (isSizeNode(n)) {
      savedSizes.push(n);
    } else if (n.op === 'call_function' && tensorMetaOf(n) === undefined) {
      // A tuple (or another non-tensor value): save what is read out of it, item by item.
      const users = [...n.users.keys()];
      if (users.length > 0 && users.every((u) => u.op === 'call_function' && targetName(u.target) === 'getitem')) saved.push(...users);
      else if (users.some((u) => !fwNames.has(u.name))) savedSizes.push(n);
    } else {
      const backwardUsages = [...n.users.keys()].filter((u) => !fwNames.has(u.name));
      if (tensorMetaOf(n) !== undefined && backwardUsages.every(isSizeNode)) savedSizes.push(...backwardUsages);
      else saved.push(n);
    }
  }
  return extractFwdBwd(joint, parts, unique(saved), unique(savedSizes));
}

/**
 * PyTorch's `min_cut_rematerialization_partition`: choose the values to save by a minimum cut over the joint
 * graph, each node split into `in → out` with its (weighted) bytes as capacity. Cheap ops (element-wise,
 * views, cheap reductions) may be recomputed in the backward; compute-heavy and random ones never are; sizes
 * cost 1, so under dynamic shapes a size is saved rather than the tensor it is read from.
 */
export function minCutRematerializationPartition(joint: GraphModule, options: MinCutOptions): [GraphModule, GraphModule] {
  const recomputeViews = options?.recomputeViews === true;
  const parts = jointParts(joint, options, 'minCutRematerializationPartition');
  const nodes = joint.graph.nodes;
  const fwNames = forwardNodeNames(joint, parts);
  const requiredFw = new Set(nodes.filter((n) => fwNames.has(n.name)));
  // Nodes the backward must compute: the tangents, everything reading them, and the gradients themselves.
  const requiredBw = new Set<Node>();
  for (const n of nodes) {
    if (isTangent(n)) requiredBw.add(n);
    if (requiredBw.has(n)) for (const u of n.users.keys()) requiredBw.add(u);
  }
  // A gradient that needs no tangent is computed in the backward too (a primal returned as a gradient is saved).
  const primalGradients = new Set(parts.bwdOutputs.filter((o): o is Node => o !== null && isPrimal(o)));
  for (const o of parts.bwdOutputs) if (o !== null && !isPrimal(o)) requiredBw.add(o);
  for (const n of nodes) if (isInputCopy(n)) requiredBw.add(n);

  // Distance to the backward: a heuristic that prefers saving values close to where the backward reads them.
  const distFromBw = new Map<Node, number>();
  for (const n of [...nodes].reverse()) {
    if (!requiredFw.has(n)) distFromBw.set(n, 0);
    else distFromBw.set(n, Math.min(1e9, ...[...n.users.keys()].map((u) => (distFromBw.get(u) ?? 0) + 1)));
  }
  const fusible = canFuse;
  // Must the backward materialise this value anyway (a non-fusible reader, possibly through views)? Then save it.
  const materializedBackwards = (n: Node): boolean => {
    if (isViewOp(n)) return false;
    const todo = [n];
    const seen = new Set<Node>(todo);
    while (todo.length > 0) {
      const cur = todo.pop()!;
      for (const u of cur.users.keys()) {
        if (requiredFw.has(u) || u.op === 'output') continue;
        if (!fusible(cur, u)) return true;
        if (isViewOp(u) && !seen.has(u)) {
          seen.add(u);
          todo.push(u);
        }
      }
    }
    return false;
  };
  const banRecomputation = (n: Node): boolean => {
    if (n.op !== 'call_function' && n.op !== 'call_method') return false;
    if (targetName(n.target) === 'getitem') return false;
    if (recomputeViews && isViewOp(n)) return false;
    if (!isRecomputable(n)) return true;
    if (materializedBackwards(n)) return true;
    // An op whose output is 4× smaller than its inputs (a reduction) is kept rather than recomputed.
    const out = nodeBytes(n);
    const ins = n.allInputNodes().reduce((s, x) => s + (nodeBytes(x) ?? 0), 0);
    return out !== undefined && out * 4 < ins;
  };
  const isMaterialized = (n: Node) => n.op === 'placeholder' || ![...n.users.keys()].every((u) => fusible(n, u));
  const weight = (n: Node): number => {
    if (isSizeNode(n)) return 1;
    if (recomputeViews && isViewOp(n)) return Infinity; // never saved: rebuilt from its base
    const bytes = nodeBytes(n);
    if (bytes === undefined) return Infinity; // a tuple or other non-tensor value: its items are what get saved
    const dist = Math.max(Math.min(distFromBw.get(n) ?? 0, 100), 1);
    const w = Math.floor(bytes * 1.1 ** dist);
    return isMaterialized(n) ? w : w * 2;
  };

  const net = new FlowNetwork();
  const IN = (n: Node) => `${n.name}_in`;
  const OUT = (n: Node) => `${n.name}_out`;
  net.vertex('source');
  net.vertex('sink');
  for (const n of nodes) {
    if (n.op === 'output') continue;
    if (requiredBw.has(n)) {
      net.addEdge(IN(n), 'sink', Infinity);
      continue;
    }
    // Banning puts the node on the source side (saved or upstream of the cut); views are never banned.
    if ((isPrimal(n) || (requiredFw.has(n) && banRecomputation(n))) && !isViewOp(n)) net.addEdge('source', IN(n), Infinity);
    net.addEdge(IN(n), OUT(n), weight(n));
    for (const u of n.users.keys()) net.addEdge(OUT(n), IN(u), Infinity);
    if (primalGradients.has(n)) net.addEdge(OUT(n), 'sink', Infinity);
  }
  const { cutEdges } = net.minCut('source', 'sink');
  const byName = new Map(nodes.map((n) => [n.name, n] as const));
  const cut = new Set<Node>();
  for (const [from, to] of cutEdges) {
    const name = from.slice(0, -'_in'.length);
    const node = byName.get(name);
    if (!from.endsWith('_in') || to !== `${name}_out` || node === undefined) {
      throw new KilnError(
        `minCutRematerializationPartition: ${describeJoint(joint)}: the cut crosses ${from} → ${to}, which is not a node's own edge`,
      );
    }
    cut.add(node);
  }
  const order = new Map(nodes.map((n, i) => [n, i] as const));
  const savedValues = [...cut].sort((a, b) => order.get(a)! - order.get(b)!);
  return extractFwdBwd(
    joint,
    parts,
    savedValues.filter((n) => !isSizeNode(n)),
    savedValues.filter(isSizeNode),
  );
}

/** The saved values of a partition, read from its backward's placeholders (saved tensors, then sizes, then tangents). */
export function partitionInfo(fw: GraphModule, bw: GraphModule): PartitionInfo {
  const savedNodes = bw.graph.nodes.filter((n) => n.op === 'placeholder' && !n.name.startsWith('tangents_'));
  const isSize = (n: Node) => tensorMetaOf(n) === undefined;
  const savedTensors = savedNodes.filter((n) => !isSize(n)).map((n) => n.name);
  const savedSizes = savedNodes.filter(isSize).map((n) => n.name);
  const fwOut = fw.graph.outputNode?.args[0];
  if (!Array.isArray(fwOut)) throw new KilnError(`partitionInfo: the forward graph '${fw.className}' does not return a flat array`);
  const numFwdOutputs = fwOut.length - savedNodes.length;
  if (numFwdOutputs < 0) {
    throw new KilnError(
      `partitionInfo: the forward graph returns ${fwOut.length} value(s), fewer than the ${savedNodes.length} the backward takes as saved`,
    );
  }
  return { numFwdOutputs, numSavedTensors: savedTensors.length, numSavedSizes: savedSizes.length, savedTensors, savedSizes };
}

/** Bytes of the tensors a partition saves for its backward (sizes are numbers and not counted). */
export function savedBytes(fw: GraphModule, bw: GraphModule): number {
  partitionInfo(fw, bw);
  return bw.graph.nodes
    .filter((n) => n.op === 'placeholder' && !n.name.startsWith('tangents_'))
    .reduce((s, n) => s + (nodeBytes(n) ?? 0), 0);
}
