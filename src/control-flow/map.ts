import type { FxTracer } from '../aot/fx-tracer.js';
import { flattenTensors, unflattenTensors, type Tree } from '../aot/pytree.js';
import { ShapeError, TraceError, ValueError } from '../errors.js';
import type { FunctionTarget } from '../graph/node.js';
import { userFrame } from '../graph/tracer.js';
import { stack } from '../runtime/ops/view.js';
import { Tensor } from '../runtime/tensor.js';
import { describeValue } from './cond.js';
import { UnsupportedAliasMutationError } from './errors.js';
import {
  activeFxTracer,
  breakSymbolicTrace,
  callWith,
  describeTensor,
  describeTree,
  freshSubgraphNames,
  isCallable,
  liftedTensors,
  refuseGradients,
  subgraphModule,
  traceBody,
  untraced,
  type Callable,
} from './subgraph.js';

/**
 * `map(fn, xs, ...args)` (PyTorch's `torch._higher_order_ops.map`): `fn` applied to every slice of `xs` along
 * dim 0 (`xs` a tensor, or arrays and objects of tensors with the same leading size, sliced alike) with the
 * extra tensor `args`, the results stacked along a new dim 0.
 *
 * Eagerly it is that loop. Under export and makeFx the body is traced once, on the first slice, into a subgraph
 * (`body_graph_0`) that takes the slices, the args and then the tensors `fn` closes over, and the graph gets one
 * `map_impl` node that runs it over however many slices its input has.
 */
export function map<R = unknown>(fn: (xs: never, ...args: Tensor[]) => R, xs: unknown, ...args: Tensor[]): R {
  breakSymbolicTrace('map');
  if (!isCallable(fn)) throw new ValueError(`map: expected a function to map, got ${describeValue(fn)}`);
  const { tensors: flatXs, tree: xsTree } = flattenTensors(xs, 'map: xs');
  if (flatXs.length === 0 || hasNonTensor(xsTree))
    throw new ValueError(`map: Mapped xs can only consist of tensors. Got xs ${describeTree(xsTree)}.`);
  args.forEach((a, i) => {
    if (!(a instanceof Tensor))
      throw new ValueError(`map: extra args must be tensors, got ${describeValue(a)} at args[${i}]; close over other values instead`);
  });
  let outTree: Tree | undefined;
  const body = (...flat: Tensor[]): Tensor[] => {
    const out = callWith(fn as Callable, [unflattenTensors(xsTree, flat.slice(0, flatXs.length)) as Tensor, ...flat.slice(flatXs.length)]);
    const { tensors, tree } = flattenTensors(out, 'map: the body_fn output');
    if (hasNonTensor(tree))
      throw new TraceError(`map: Expect outputs of map only contains tensors. Got ${describeTree(tree)}${userFrame()}.`);
    if (outTree && describeTree(outTree) !== describeTree(tree))
      throw new TraceError(`map: body_fn returned ${describeTree(tree)} for one slice and ${describeTree(outTree)} for another`);
    outTree = tree;
    return tensors;
  };
  const flatOut = mapImpl(body, flatXs, args);
  return unflattenTensors(outTree!, flatOut) as R;
}

/**
 * The graph's `map_impl` node (PyTorch's `map_impl`): `body(...slices_i, ...args)` over the leading dim of `xs`,
 * each of its outputs stacked. Under export and makeFx it records itself with a traced body instead.
 */
export function mapImpl(body: Callable, xs: readonly Tensor[], args: readonly Tensor[]): Tensor[] {
  if (!isCallable(body)) throw new ValueError(`map_impl: expected a body function or subgraph, got ${describeValue(body)}`);
  if (!Array.isArray(xs) || !Array.isArray(args) || ![...xs, ...args].every((t) => t instanceof Tensor))
    throw new ValueError('map_impl: expected (body, xs: Tensor[], args: Tensor[])');
  checkLeadingDims(xs);
  const tracer = activeFxTracer();
  return tracer ? traceMap(tracer, body, xs, args) : mapDense(body, xs, args);
}

function checkLeadingDims(xs: readonly Tensor[]): void {
  const shapes = `[${xs.map((x) => `[${x.shape.join(', ')}]`).join(', ')}]`;
  if (xs.some((x) => x.ndim === 0)) throw new ShapeError(`map: Mapped xs must have a leading dimension to map over. Got shapes ${shapes}.`);
  const n = xs[0]!.shape[0]!;
  if (n === 0) throw new ShapeError('map: Leading dimensions of mapped xs cannot be 0.');
  if (xs.some((x) => x.shape[0] !== n))
    throw new ShapeError(`map: Leading dimensions of mapped xs must be consistent. Got shapes ${shapes}.`);
}

function mapDense(body: Callable, xs: readonly Tensor[], args: readonly Tensor[]): Tensor[] {
  const inputs = [...xs, ...args];
  const versions = inputs.map((t) => t._storage.version);
  const n = xs[0]!.shape[0]!;
  const results: Tensor[][] = [];
  for (let i = 0; i < n; i++) {
    const out = callWith(body, [...xs.map((x) => x.select(0, i)), ...args]);
    if (!Array.isArray(out) || !out.every((o) => o instanceof Tensor))
      throw new TraceError(`map: Expect outputs of map only contains tensors. Got ${describeValue(out)}.`);
    out.forEach((o: Tensor, j) => {
      if (inputs.some((t) => t._storage === o._storage))
        throw new UnsupportedAliasMutationError(
          `map is aliasing the input! body_fn's output ${j} (${describeTensor(o)}) shares memory with an input; return a clone() of it`,
        );
    });
    results.push(out as Tensor[]);
  }
  inputs.forEach((t, i) => {
    if (t._storage.version !== versions[i])
      throw new UnsupportedAliasMutationError(
        `map is mutating the input! body_fn wrote its input ${i} (${describeTensor(t)}) in place; write to a clone of it instead`,
      );
  });
  return results[0]!.map((_, j) =>
    stack(
      results.map((r) => r[j]!),
      0,
    ),
  );
}

function traceMap(tracer: FxTracer, body: Callable, xs: readonly Tensor[], args: readonly Tensor[]): Tensor[] {
  // the body is traced on (a copy of) the first slice: the subgraph is the same for every slice
  const examples = untraced(() => xs.map((x) => x.select(0, 0).clone()));
  const traced = traceBody(tracer, body, [...examples, ...args], 'body_fn', 'map');
  if (traced.tree.kind !== 'array')
    throw new TraceError(`map_impl: the body must return an array of tensors, got ${describeTree(traced.tree)}`);
  const lifted = liftedTensors([traced]);
  refuseGradients('map', [...xs, ...args, ...lifted]);
  const gm = subgraphModule(traced, lifted);
  const xNodes = xs.map((x) => tracer.arg(x));
  const argNodes = [...args, ...lifted].map((t) => tracer.arg(t));
  const [name] = freshSubgraphNames(tracer, ['body_graph']) as [string];
  tracer.constants.set(name, gm);
  const node = tracer.graph.callFunction(mapImpl as unknown as FunctionTarget, [tracer.graph.getAttr(name), xNodes, argNodes]);
  const outs = untraced(() => mapDense(gm, xs, [...args, ...lifted]));
  tracer.bind(outs, node);
  return outs;
}

function hasNonTensor(t: Tree): boolean {
  if (t.kind === 'const') return true;
  return t.kind === 'tensor' ? false : t.items.some(hasNonTensor);
}
