import type { Graph } from '../graph/graph.js';
import { Node, targetName } from '../graph/node.js';
import { isPlainObject } from '../runtime/plain-object.js';
import { RANDOM_OPS } from './op-classes.js';

/**
 * Common-subexpression elimination on a traced graph (PyTorch's `fx_graph_cse`, run on every AOT joint
 * graph): a call_function node with the same target and the same arguments as an earlier one is replaced by
 * it. Traced graphs are functional, so equal calls compute equal values; random ops are never merged (two
 * dropouts draw two masks). Returns how many nodes went.
 */
export function eliminateCommonSubexpressions(graph: Graph): number {
  const seen = new Map<string, Node>();
  let removed = 0;
  for (const n of graph.nodes) {
    if (n.op !== 'call_function' || RANDOM_OPS.has(targetName(n.target)) || n.isImpure()) continue; // two asserts are two effects
    const key = `${targetName(n.target)}\u0000${keyOf(n.target)}\u0000${argKey(n.args)}\u0000${argKey(n.kwargs)}`;
    const earlier = seen.get(key);
    if (!earlier) {
      seen.set(key, n);
      continue;
    }
    n.replaceAllUsesWith(earlier);
    graph.eraseNode(n);
    removed++;
  }
  return removed;
}

const targetIds = new WeakMap<object, number>();
let nextTargetId = 0;
/** Two functions with the same name (a user's `relu` and the op) must not collide: key the target by identity. */
function keyOf(target: unknown): string {
  if (typeof target !== 'function' && (typeof target !== 'object' || target === null)) return String(target);
  let id = targetIds.get(target as object);
  if (id === undefined) targetIds.set(target as object, (id = nextTargetId++));
  return String(id);
}

function argKey(a: unknown): string {
  if (a instanceof Node) return `%${a.name}`;
  if (Array.isArray(a)) return `[${a.map(argKey).join(',')}]`;
  if (isPlainObject(a))
    return `{${Object.entries(a)
      .map(([k, v]) => `${k}:${argKey(v)}`)
      .join(',')}}`;
  if (typeof a === 'number' && Object.is(a, -0)) return '-0';
  return JSON.stringify(a) ?? String(a);
}
