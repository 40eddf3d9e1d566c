import { KilnError } from '../../errors.js';
import { lookupAttr } from '../attrs.js';
import { getitem } from '../builtins.js';
import { Graph } from '../graph.js';
import { GraphModule } from '../graph-module.js';
import { mapArg, type Argument, type FunctionTarget, type Kwargs, type Node, type Opcode } from '../node.js';
import type { Module } from '../../runtime/nn/module.js';

/**
 * torch.fx.passes.split_module: cut a GraphModule into submodules `submod_<k>`, one per value the callback
 * gives its nodes, and a base module that calls them in dependency order. Placeholders and get_attr nodes
 * stay in the base module and are passed in; a partition with several outputs returns an array that the
 * base unpacks with `getitem`. Every copied node keeps its `meta`. Submodules and attributes are looked up
 * in `root` (the module `gm` was traced from, or `gm` itself).
 */
class SplitPartition {
  readonly nodeNames: string[] = [];
  /** Names of values defined outside that this partition reads (its placeholders, in order). */
  readonly inputs = new Set<string>();
  /** Names of values this partition defines that others (or the output) read. */
  readonly outputs = new Set<string>();
  readonly dependsOn = new Set<string>();
  readonly dependents = new Set<string>();
  readonly graph = new Graph();
  readonly environment = new Map<Node, Node>();
  readonly targets: Record<string, unknown> = {};

  constructor(readonly name: string) {}

  get submodName(): string {
    return `submod_${this.name}`;
  }
}

export function splitModule(
  gm: GraphModule,
  root: Module,
  callback: (node: Node) => number | string,
  qualnameMap?: Record<string, string>,
): GraphModule {
  // Targets come from `root`; constants the tracer made (`_tensor_constant0`) live only on `gm`.
  const attr = (path: string) => {
    try {
      return lookupAttr(root, path);
    } catch {
      return lookupAttr(gm, path);
    }
  };
  const partitions = new Map<string, SplitPartition>();
  const orig = new Map<string, Node>();
  const partitionOf = new Map<Node, string>();

  const recordUse = (def: Node, use: Node | undefined) => {
    const defName = partitionOf.get(def);
    const useName = use ? partitionOf.get(use) : undefined;
    if (defName === useName) return;
    if (defName !== undefined) {
      const d = partitions.get(defName)!;
      d.outputs.add(def.name);
      if (useName !== undefined) d.dependents.add(useName);
    }
    if (useName !== undefined) {
      const u = partitions.get(useName)!;
      u.inputs.add(def.name);
      if (defName !== undefined) u.dependsOn.add(defName);
    }
  };

  for (const node of gm.graph.nodes) {
    orig.set(node.name, node);
    if (node.op === 'placeholder' || node.op === 'get_attr') continue;
    if (node.op === 'output') {
      mapArg(node.args[0] as Argument, (n) => recordUse(n, undefined));
      continue;
    }
    const name = String(callback(node));
    let p = partitions.get(name);
    if (!p) partitions.set(name, (p = new SplitPartition(name)));
    p.nodeNames.push(node.name);
    partitionOf.set(node, name);
    for (const input of node.allInputNodes()) recordUse(input, node);
  }

  // Partitions in dependency order (Kahn's algorithm; the most recently freed partition goes next, as in PyTorch).
  const pending = new Map([...partitions].map(([k, p]) => [k, new Set(p.dependsOn)]));
  const ready = [...partitions.keys()].filter((k) => pending.get(k)!.size === 0);
  const sorted: string[] = [];
  while (ready.length) {
    const name = ready.pop()!;
    sorted.push(name);
    for (const dependent of partitions.get(name)!.dependents) {
      const waits = pending.get(dependent)!;
      waits.delete(name);
      if (waits.size === 0) ready.push(dependent);
    }
  }
  if (sorted.length !== partitions.size) throw new KilnError('cycle exists between partitions!');

  // Each partition's graph: placeholders for its inputs, then its nodes.
  for (const name of sorted) {
    const p = partitions.get(name)!;
    for (const input of p.inputs) {
      const placeholder = p.graph.placeholder(input);
      placeholder.meta = { ...orig.get(input)!.meta };
      p.environment.set(orig.get(input)!, placeholder);
    }
  }
  for (const node of gm.graph.nodes) {
    const name = partitionOf.get(node);
    if (name === undefined) continue;
    const p = partitions.get(name)!;
    const lookup = (n: Node) => {
      const v = p.environment.get(n);
      if (!v) throw new KilnError(`splitModule: ${node.name} reads ${n.name}, which partition ${name} does not have`);
      return v;
    };
    const args = mapArg(node.args as Argument, lookup) as Argument[];
    const kwargs = mapArg(node.kwargs, lookup) as Kwargs;
    let target = node.target;
    if (node.op === 'call_module' || node.op === 'get_attr') {
      const path = node.target as string;
      target = path.split('.').join('_');
      p.targets[target] = attr(path);
      if (qualnameMap) qualnameMap[`${p.submodName}.${target}`] = path;
    }
    const copy = p.graph.createNode(node.op as Opcode, target, args, kwargs);
    copy.meta = { ...node.meta };
    p.environment.set(node, copy);
  }
  for (const name of sorted) {
    const p = partitions.get(name)!;
    const outs = [...p.outputs].map((o) => p.environment.get(orig.get(o)!)!);
    p.graph.output(outs.length === 1 ? outs[0]! : outs);
  }

  // The base module: placeholders and get_attrs as they were, then one call per partition.
  const base = new Graph();
  const env = new Map<string, Node>();
  const attrs: Record<string, unknown> = {};
  for (const node of gm.graph.nodes) {
    if (node.op === 'placeholder') {
      const copy = base.placeholder(node.target as string, node.args[0]);
      copy.meta = { ...node.meta };
      env.set(node.name, copy);
    } else if (node.op === 'get_attr') {
      const copy = base.getAttr(node.target as string);
      copy.meta = { ...node.meta };
      env.set(node.name, copy);
      attrs[node.target as string] = attr(node.target as string);
    }
  }
  for (const name of sorted) {
    const p = partitions.get(name)!;
    attrs[p.submodName] = new GraphModule(p.targets, p.graph);
    const call = base.callModule(
      p.submodName,
      [...p.inputs].map((i) => env.get(i)!),
    );
    const outs = [...p.outputs];
    if (outs.length > 1) outs.forEach((o, i) => env.set(o, base.callFunction(getitem as FunctionTarget, [call, i])));
    else if (outs.length === 1) env.set(outs[0]!, call);
  }
  const output = [...gm.graph.nodes].find((n) => n.op === 'output');
  if (output) base.output(mapArg(output.args[0] as Argument, (n) => env.get(n.name)!) as Argument);
  return new GraphModule(attrs, base);
}
