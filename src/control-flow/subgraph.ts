import { FxTracer, setMeta } from '../aot/fx-tracer.js';
import { flattenTensors, unflattenTensors, type Tree } from '../aot/pytree.js';
import { TraceError } from '../errors.js';
import { GraphModule } from '../graph/graph-module.js';
import type { Argument } from '../graph/node.js';
import { userFrame } from '../graph/tracer.js';
import { isGradEnabled } from '../runtime/autograd.js';
import { activeTrace, setTraceDispatch } from '../runtime/dispatch.js';
import { Module } from '../runtime/nn/module.js';
import { sameShape } from '../runtime/shape.js';
import { Tensor } from '../runtime/tensor.js';
import { UnsupportedAliasMutationError } from './errors.js';

/**
 * Subgraphs for control flow (PyTorch's `reenter_make_fx` in torch/_higher_order_ops): a branch or loop body is
 * traced by a tracer of its own into a functional graph whose placeholders are its operands. The tensors it
 * closes over (parameters, buffers, constants, values computed before it) are lifted to extra placeholders, so
 * the subgraph is self-contained and the outer graph passes them as operands of the `cond` or `map_impl` node.
 */

/** A callable the control-flow ops accept: a function or a module (an exported program's subgraphs are modules). */
export type Callable = ((...args: never[]) => unknown) | Module;

export function isCallable(f: unknown): f is Callable {
  return typeof f === 'function' || f instanceof Module;
}

export function callWith(f: Callable, args: readonly Tensor[]): unknown {
  return f instanceof Module ? (f.call as (...a: unknown[]) => unknown)(...args) : (f as (...a: unknown[]) => unknown)(...args);
}

/** The active tracer when it is the dispatch-level tracer of makeFx and export (the one that records subgraphs). */
export function activeFxTracer(): FxTracer | undefined {
  return activeTrace instanceof FxTracer ? activeTrace : undefined;
}

/** Run `f` with no tracer active: real values only, nothing recorded. */
export function untraced<T>(f: () => T): T {
  const prev = setTraceDispatch(null);
  try {
    return f();
  } finally {
    setTraceDispatch(prev);
  }
}

/**
 * compile's symbolic tracer cannot hold a data-dependent branch or loop: it breaks the graph there (as
 * `graphBreak()` does) and the code runs eagerly.
 */
export function breakSymbolicTrace(op: string): void {
  if (activeTrace?.symbolic) throw new TraceError(`${op}() breaks the graph here${userFrame()}: it runs eagerly`);
}

export interface TracedBody {
  readonly label: string;
  readonly tracer: FxTracer;
  /** What the body returned (real values). */
  readonly result: unknown;
  readonly outs: readonly Tensor[];
  readonly tree: Tree;
  readonly inputs: readonly Tensor[];
}

/**
 * Trace `fn(...inputs)` into a subgraph. The body may write its own intermediates in place (functionalised),
 * but not its inputs or what it closes over, and may not return them (PyTorch's alias and mutation checks).
 */
export function traceBody(outer: FxTracer, fn: Callable, inputs: readonly Tensor[], label: string, op: string): TracedBody {
  const tracer = new FxTracer(outer.decompositions, outer.what);
  inputs.forEach((t, i) => tracer.placeholder(`arg${i}_1`, t));
  const layouts = inputs.map((t) => ({ shape: [...t.shape], strides: [...t.strides], offset: t.offset }));
  const prev = setTraceDispatch(tracer);
  let result: unknown;
  try {
    result = callWith(fn, inputs);
  } finally {
    setTraceDispatch(prev);
  }
  const mutating = op === 'cond' ? "One of cond's branches might be modifying the input!" : 'map is mutating the input!';
  inputs.forEach((t, i) => {
    const was = layouts[i]!;
    const moved = t.offset !== was.offset || !sameShape(t.shape, was.shape) || !sameShape(t.strides, was.strides);
    if (tracer.wasWritten(t) || moved) {
      throw new UnsupportedAliasMutationError(
        `${mutating} ${label} writes its input ${i} (${describeTensor(t)}) in place${userFrame()}; write to a clone of it instead`,
      );
    }
  });
  const written = tracer.writtenConstant();
  if (written) {
    throw new UnsupportedAliasMutationError(
      `${mutating} ${label} writes a ${describeTensor(written)} tensor it closes over (a parameter, buffer or outer value) in place${userFrame()}; ` +
        `${op} bodies must be functional: return the new value instead`,
    );
  }
  const { tensors: outs, tree } = flattenTensors(result, `${op}: ${label}'s output`);
  if (hasConstLeaf(tree)) {
    throw new TraceError(
      `Expect outputs of ${label} to only contains tensors. Got ${describeTree(tree)}${userFrame()}; return tensors (arrays and objects of them)`,
    );
  }
  const outNodes = outs.map((o) => tracer.tensorNode(o));
  const aliased = [...inputs, ...tracer.closedOver().values()];
  outs.forEach((o, i) => {
    if (!aliased.some((t) => t._storage === o._storage)) return;
    const what = op === 'cond' ? "One of cond's branches might be aliasing the input!" : 'map is aliasing the input!';
    throw new UnsupportedAliasMutationError(
      `${what} ${label}'s output ${i} (${describeTensor(o)}) shares memory with an input or a tensor it closes over${userFrame()}; return a clone() of it`,
    );
  });
  tracer.graph.output(unflattenTensors(tree, outNodes) as Argument);
  return { label, tracer, result, outs, tree, inputs };
}

/** The tensors `bodies` close over, each once, in the order met: the extra operands every one of them takes. */
export function liftedTensors(bodies: readonly TracedBody[]): Tensor[] {
  const out: Tensor[] = [];
  for (const b of bodies) for (const t of b.tracer.closedOver().values()) if (!out.includes(t)) out.push(t);
  return out;
}

/**
 * The body's graph as a self-contained GraphModule: each tensor of `lifted` is a placeholder after the inputs
 * (unused where this body does not read it, so every branch of a `cond` takes the same operands).
 */
export function subgraphModule(body: TracedBody, lifted: readonly Tensor[]): GraphModule {
  const { tracer } = body;
  const graph = tracer.graph;
  const names = new Map([...tracer.closedOver()].map(([name, t]) => [t, name]));
  const getAttrs = graph.nodes.filter((n) => n.op === 'get_attr');
  const firstComputation = graph.nodes.find((n) => n.op !== 'placeholder');
  // all placeholders first: the get_attr nodes they replace may be the first computation
  const placeholders = lifted.map((t, j) => {
    const placeholder = graph.insertBefore(firstComputation, () => graph.placeholder(`arg${body.inputs.length + j}_1`));
    setMeta(placeholder, t);
    return placeholder;
  });
  lifted.forEach((t, j) => {
    const placeholder = placeholders[j]!;
    const name = names.get(t);
    for (const n of getAttrs) {
      if (n.target !== name) continue;
      n.replaceAllUsesWith(placeholder);
      graph.eraseNode(n);
    }
  });
  graph.eliminateDeadCode();
  graph.lint();
  // what is left in the tracer's attributes are the subgraphs of control flow nested in this body
  const nested = new Map([...tracer.constants].filter(([, v]) => v instanceof Module));
  return new GraphModule(new Module(), graph, 'GraphModule', nested);
}

/** Register `gm` on the outer tracer as `<prefix>_<k>` (the first k free for every prefix) and read it with get_attr. */
export function freshSubgraphNames(outer: FxTracer, prefixes: readonly string[]): string[] {
  let k = 0;
  while (prefixes.some((p) => outer.constants.has(`${p}_${k}`))) k++;
  return prefixes.map((p) => `${p}_${k}`);
}

/**
 * A data-dependent branch or loop in a program traced with gradients would record a backward for the example's
 * path only: refuse it rather than give wrong gradients when the predicate or the size changes.
 */
export function refuseGradients(op: string, operands: readonly Tensor[]): void {
  if (!isGradEnabled()) return;
  const i = operands.findIndex((t) => t.requiresGrad);
  if (i < 0) return;
  throw new TraceError(
    `${op}: a traced ${op} cannot be differentiated yet (operand ${i}, ${describeTensor(operands[i]!)}, requires grad)${userFrame()}; ` +
      'trace it under noGrad(), or run it eagerly',
  );
}

function hasConstLeaf(t: Tree): boolean {
  if (t.kind === 'const') return true;
  return t.kind === 'tensor' ? false : t.items.some(hasConstLeaf);
}

export function describeTree(t: Tree): string {
  switch (t.kind) {
    case 'tensor':
      return 'Tensor';
    case 'const':
      return t.value === null ? 'null' : typeof t.value === 'string' ? JSON.stringify(t.value) : String(t.value);
    case 'array':
      return `[${t.items.map(describeTree).join(', ')}]`;
    case 'object':
      return `{ ${t.keys.map((k, i) => `${k}: ${describeTree(t.items[i]!)}`).join(', ')} }`;
    default:
      return t satisfies never;
  }
}

export function describeTensor(t: Tensor): string {
  return `${t.dtype} [${t.shape.join(', ')}]`;
}
