import { GraphModule } from '../graph/graph-module.js';
import { Graph } from '../graph/graph.js';
import { mapArg, type Argument, type Kwargs, type Node, type Opcode } from '../graph/node.js';
import { lookupAttr } from '../graph/attrs.js';
import { Module } from '../runtime/nn/module.js';
import { Tensor } from '../runtime/tensor.js';
import { countOps, type Backend } from './backends.js';

/**
 * Resume after a break inside a submodule (TorchDynamo's nested frames): a submodule whose own forward
 * breaks is not traced through but recorded as one call_module node (GuardingTracer makes it a leaf), and
 * the graph is cut there. The pieces before and after are compiled by the backend as graphs of their own;
 * the call between them runs the submodule as it is: eagerly, or through its own plan when the plugin
 * rewrote it (its own graphs and breaks). So `1 + mod(x * 1.5)` keeps `x * 1.5` and `1 + …` captured.
 */

type Step =
  | { readonly kind: 'piece'; readonly inputs: readonly Node[]; readonly outputs: readonly Node[]; readonly gm: GraphModule }
  | { readonly kind: 'call'; readonly node: Node };

/** `gm` cut at `opaque` (call_module nodes, in graph order): a function taking the graph's arguments. */
export function splitAtOpaqueCalls(gm: GraphModule, opaque: ReadonlySet<Node>, backend: Backend): (...args: unknown[]) => unknown {
  const nodes = [...gm.graph.nodes];
  const placeholders = nodes.filter((n) => n.op === 'placeholder');
  const outputNode = nodes.find((n) => n.op === 'output');
  // Runs of nodes between the opaque calls, in program order (the calls may have side effects: order matters).
  const groups: (Node[] | Node)[] = [];
  for (const n of nodes) {
    if (n.op === 'placeholder' || n.op === 'output') continue;
    if (opaque.has(n)) groups.push(n);
    else if (Array.isArray(groups[groups.length - 1])) (groups[groups.length - 1] as Node[]).push(n);
    else groups.push([n]);
  }
  const stepOf = new Map<Node, number>();
  groups.forEach((g, i) => (Array.isArray(g) ? g : [g]).forEach((n) => stepOf.set(n, i)));
  // A node is needed outside its step when a later step or the output reads it.
  const neededLater = new Set<Node>();
  for (const n of nodes) {
    const here = n.op === 'output' ? Infinity : stepOf.get(n);
    if (here === undefined) continue;
    for (const input of n.allInputNodes()) if (stepOf.has(input) && stepOf.get(input) !== here) neededLater.add(input);
  }
  const steps: Step[] = groups.map((g) => (Array.isArray(g) ? piece(gm, g, neededLater) : { kind: 'call', node: g }));
  const compiled = new Map<Step, (...a: unknown[]) => unknown>();

  return (...args: unknown[]) => {
    const env = new Map<Node, unknown>();
    placeholders.forEach((p, i) => env.set(p, args[i] === undefined ? p.args[0] : args[i]));
    const value = (n: Node) => env.get(n);
    for (const step of steps) {
      if (step.kind === 'call') {
        const m = lookupAttr(gm, step.node.target as string) as Module;
        const a = mapArg(step.node.args as Argument, value) as unknown[];
        const kw = mapArg(step.node.kwargs, value) as Record<string, unknown>;
        env.set(step.node, Object.keys(kw).length ? m.call(...(a as never[]), kw as never) : m.call(...(a as never[])));
        continue;
      }
      const inputs = step.inputs.map(value);
      let run = compiled.get(step);
      if (!run) {
        // As for a whole graph: one that does no work is run as it is, not compiled.
        run =
          countOps(step.gm) === 0
            ? (...a) => step.gm.forward(...a)
            : (backend(
                step.gm,
                inputs.filter((v): v is Tensor => v instanceof Tensor),
              ) as never);
        compiled.set(step, run);
      }
      const outs = run(...inputs) as unknown[];
      step.outputs.forEach((n, i) => env.set(n, outs[i]));
    }
    return outputNode ? mapArg(outputNode.args[0] as Argument, value) : undefined;
  };
}

/** One run of nodes as a GraphModule of its own: what it reads from outside comes in as placeholders, what others read goes out. */
function piece(gm: GraphModule, nodes: readonly Node[], neededLater: ReadonlySet<Node>): Step {
  const inside = new Set(nodes);
  const g = new Graph();
  const env = new Map<Node, Node>();
  const inputs: Node[] = [];
  const lookup = (n: Node) => {
    let v = env.get(n);
    if (!v) {
      inputs.push(n);
      env.set(n, (v = g.placeholder(n.name)));
    }
    return v;
  };
  for (const n of nodes) {
    for (const input of n.allInputNodes()) if (!inside.has(input)) lookup(input);
  }
  for (const n of nodes) {
    const copy = g.createNode(
      n.op as Opcode,
      n.target,
      mapArg(n.args as Argument, lookup) as Argument[],
      mapArg(n.kwargs, lookup) as Kwargs,
      n.name,
    );
    copy.meta = { ...n.meta };
    env.set(n, copy);
  }
  const outputs = nodes.filter((n) => neededLater.has(n));
  g.output(outputs.map((n) => env.get(n)!));
  return { kind: 'piece', inputs, outputs, gm: new GraphModule(gm, g, gm.className) };
}
