import type { Module } from '../../runtime/nn/module.js';
import { cat, matmul, split } from '../../runtime/ops/index.js';
import { getattr, getitem } from '../builtins.js';
import { Graph } from '../graph.js';
import type { GraphModule } from '../graph-module.js';
import type { Argument, FunctionTarget, Node } from '../node.js';
import { symbolicTrace } from '../tracer.js';

/**
 * torch.fx.experimental.merge_matmul: matmuls that share a right-hand side and do not depend on each other
 * become one — `cat` of the left-hand sides, one `matmul`, then `split` by the left-hand sides' row counts —
 * and the graph is re-sorted so every definition precedes its uses. A get_attr operand is keyed by its
 * attribute path, so two reads of the same weight count as the same right-hand side.
 */
const isMatmul = (n: Node) => (n.op === 'call_function' && n.target === matmul) || (n.op === 'call_method' && n.target === 'matmul');

/** Whether `a` depends on `b`, through any chain of inputs. */
function dependsOn(a: Node, b: Node): boolean {
  const seen = new Set<Node>();
  const stack = [...a.allInputNodes()];
  while (stack.length) {
    const n = stack.pop()!;
    if (n === b) return true;
    if (seen.has(n)) continue;
    seen.add(n);
    stack.push(...n.allInputNodes());
  }
  return false;
}

const independent = (nodes: readonly Node[]) => nodes.every((a, i) => nodes.every((b, j) => i === j || !dependsOn(a, b)));

/** Order nodes so inputs come first (Kahn's algorithm, preferring the current order), then rebuild the graph. */
export function legalizeGraph(gm: GraphModule): void {
  const nodes = gm.graph.nodes;
  const pending = new Map(nodes.map((n) => [n, n.allInputNodes().length]));
  const ready = nodes.filter((n) => pending.get(n) === 0);
  const order: Node[] = [];
  while (ready.length) {
    const n = ready.shift()!;
    order.push(n);
    for (const u of n.users.keys()) {
      const left = pending.get(u)! - 1;
      pending.set(u, left);
      if (left === 0) ready.push(u);
    }
  }
  const output = order.findIndex((n) => n.op === 'output');
  if (output >= 0) order.push(...order.splice(output, 1));
  const graph = new Graph();
  const valMap = new Map<Node, Node>();
  for (const n of order)
    valMap.set(
      n,
      graph.nodeCopy(n, (x) => valMap.get(x)!),
    );
  gm.graph = graph;
}

export function mergeMatmul(model: Module): GraphModule {
  const gm = symbolicTrace(model);
  const key = (n: Node): Node | string => (n.op === 'get_attr' ? (n.target as string) : n);
  const byRhs = new Map<Node | string, Node[]>();
  for (const n of gm.graph.nodes) {
    if (!isMatmul(n)) continue;
    const rhs = n.args[1];
    if (!(rhs && typeof rhs === 'object' && 'op' in rhs)) continue;
    const k = key(rhs as Node);
    byRhs.set(k, [...(byRhs.get(k) ?? []), n]);
  }
  const graph = gm.graph;
  const output = graph.nodes.find((n) => n.op === 'output')!;
  for (const [rhsKey, mms] of byRhs) {
    if (mms.length < 2 || !independent(mms)) continue;
    graph.insertBefore(output, () => {
      const lhs = mms.map((mm) => mm.args[0] as Node);
      const rhs = typeof rhsKey === 'string' ? graph.getAttr(rhsKey) : rhsKey;
      const merged = graph.callFunction(matmul as FunctionTarget, [graph.callFunction(cat as FunctionTarget, [lhs]), rhs]);
      const rows = lhs.map((l) =>
        graph.callFunction(getitem as FunctionTarget, [graph.callFunction(getattr as FunctionTarget, [l, 'shape']), 0]),
      );
      const pieces = graph.callFunction(split as FunctionTarget, [merged, rows as Argument[], 0]);
      mms.forEach((mm, i) => {
        mm.replaceAllUsesWith(graph.callFunction(getitem as FunctionTarget, [pieces, i]));
        graph.eraseNode(mm);
      });
    });
  }
  // The merged nodes went in at the end; sort once so every definition precedes its uses.
  legalizeGraph(gm);
  gm.graph.lint();
  return gm;
}
