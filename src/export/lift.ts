import type { Tree } from '../aot/pytree.js';
import { Graph } from '../graph/graph.js';
import { GraphModule } from '../graph/graph-module.js';
import type { Node } from '../graph/node.js';
import type { Module } from '../runtime/nn/module.js';
import { sameShape } from '../runtime/shape.js';
import { Tensor } from '../runtime/tensor.js';
import { claimName, liftedName, type InputSpec } from './signature.js';

/**
 * Lifting (PyTorch's `lift_constants_pass` and placeholder naming): the traced graph takes the module's
 * parameters and buffers as placeholders and reads the tensors it closed over through `get_attr`. The exported
 * graph takes all of them as placeholders, in PyTorch's order (parameters, buffers, constants, user inputs),
 * named `p_<fqn>`, `b_<fqn>`, `c_<fqn>` and after `forward`'s parameters, the user inputs claiming their names
 * first so a clash renames the lifted one (`p_param_1`).
 */

export interface StateEntry {
  readonly kind: 'PARAMETER' | 'BUFFER';
  readonly target: string;
  readonly tensor: Tensor;
  readonly persistent: boolean;
}

export interface LiftedGraph {
  readonly graph: Graph;
  readonly inputSpecs: InputSpec[];
  /** Lifted constants by target name (module attributes by their path, others `lifted_tensor_<i>`). */
  readonly constants: Record<string, Tensor>;
  /** The subgraphs that control-flow nodes read with get_attr, by attribute name. */
  readonly subgraphs: Record<string, GraphModule>;
}

/** The names of the user's tensor inputs: `x`, `x_0`, `x_foo_0` after the forward's parameter names. */
export function userInputNames(tree: Tree, names: readonly string[], rest: string | undefined): string[] {
  const out: string[] = [];
  const walk = (t: Tree, name: string): void => {
    if (t.kind === 'tensor') out.push(name);
    else if (t.kind === 'array') t.items.forEach((item, i) => walk(item, `${name}_${i}`));
    else if (t.kind === 'object') t.items.forEach((item, i) => walk(item, `${name}_${t.keys[i]!.replace(/[^A-Za-z0-9_]/g, '_')}`));
  };
  if (tree.kind !== 'array') throw new Error('userInputNames: the arguments must be an array');
  tree.items.forEach((item, i) => walk(item, names[i] ?? `${rest ?? 'args'}_${i - names.length}`));
  return out;
}

/** Where a closed-over tensor lives on the module (`fc.scale`), for a constant's target; undefined if it is not an attribute. */
function attributePath(module: Module, t: Tensor): string | undefined {
  for (const [prefix, m] of module.namedModules()) {
    for (const [key, v] of Object.entries(m)) {
      // the tracer keeps a detached alias of the attribute: the same memory and layout is the same tensor
      if (
        v instanceof Tensor &&
        v._storage === t._storage &&
        v.offset === t.offset &&
        sameShape(v.shape, t.shape) &&
        sameShape(v.strides, t.strides)
      )
        return prefix ? `${prefix}.${key}` : key;
    }
  }
  return undefined;
}

/**
 * The exported graph: `traced` takes `state.length` state placeholders then the user's tensors, and reads
 * constants through `get_attr`; the result takes everything as named placeholders.
 */
export function liftGraph(
  traced: GraphModule,
  module: Module,
  state: readonly StateEntry[],
  userNames: readonly string[],
  constantValue: (attr: string) => Tensor,
): LiftedGraph {
  const src = traced.graph;
  const placeholders = src.nodes.filter((n) => n.op === 'placeholder');
  // control flow's subgraphs (cond's true_graph_0, map's body_graph_0) stay attributes of the exported module
  const subgraphs: Record<string, GraphModule> = {};
  const getAttrs = src.nodes.filter((n) => {
    if (n.op !== 'get_attr') return false;
    const value = traced.resolveTarget(n.target as string);
    if (value instanceof GraphModule) subgraphs[n.target as string] = value;
    return !(value instanceof GraphModule);
  });
  const taken = new Set<string>();
  const userPlaceholderNames = userNames.map((n) => claimName(n, taken));
  const inputSpecs: InputSpec[] = [];
  const constants: Record<string, Tensor> = {};
  const names: string[] = [];
  for (const s of state) {
    const name = claimName(liftedName(s.kind, s.target), taken);
    names.push(name);
    inputSpecs.push(
      s.kind === 'BUFFER' ? { kind: s.kind, name, target: s.target, persistent: s.persistent } : { kind: s.kind, name, target: s.target },
    );
  }
  const constantNames: string[] = [];
  let lifted = 0;
  for (const node of getAttrs) {
    const value = constantValue(node.target as string);
    const target = attributePath(module, value) ?? `lifted_tensor_${lifted++}`;
    constants[target] = value;
    const name = claimName(liftedName('CONSTANT_TENSOR', target), taken);
    constantNames.push(name);
    inputSpecs.push({ kind: 'CONSTANT_TENSOR', name, target });
  }
  userPlaceholderNames.forEach((name) => inputSpecs.push({ kind: 'USER_INPUT', name }));

  const graph = new Graph();
  const map = new Map<Node, Node>();
  const copyMeta = (from: Node, to: Node) => Object.assign(to.meta, from.meta);
  state.forEach((_s, i) => {
    const n = graph.placeholder(names[i]!);
    copyMeta(placeholders[i]!, n);
    map.set(placeholders[i]!, n);
  });
  getAttrs.forEach((g, i) => {
    const n = graph.placeholder(constantNames[i]!);
    copyMeta(g, n);
    map.set(g, n);
  });
  placeholders.slice(state.length).forEach((p, i) => {
    const n = graph.placeholder(userPlaceholderNames[i]!);
    copyMeta(p, n);
    map.set(p, n);
  });
  for (const node of src.nodes) {
    if (map.has(node)) continue;
    const copy = graph.nodeCopy(node, (n) => map.get(n)!);
    map.set(node, copy);
  }
  graph.lint();
  return { graph, inputSpecs, constants, subgraphs };
}
