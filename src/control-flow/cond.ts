import type { FxTracer } from '../aot/fx-tracer.js';
import { flattenTensors, unflattenTensors, type Tree } from '../aot/pytree.js';
import type { Argument, FunctionTarget } from '../graph/node.js';
import { isSymbolicCondition, type SymbolicCondition } from '../runtime/check.js';
import { userFrame } from '../graph/tracer.js';
import { TraceError, ValueError } from '../errors.js';
import { isPlainObject } from '../runtime/plain-object.js';
import { Tensor } from '../runtime/tensor.js';
import { CondOpArgsMismatchError, UnsupportedAliasMutationError } from './errors.js';
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
  type TracedBody,
} from './subgraph.js';

/**
 * `cond(pred, trueFn, falseFn, operands)` (PyTorch's `torch.cond`): `pred ? trueFn(...operands) : falseFn(...operands)`.
 *
 * Eagerly it is that. Under export and makeFx, a tensor predicate is data: both branches are traced into
 * subgraphs (`true_graph_0`, `false_graph_0`) that take the operands and then the tensors either branch closes
 * over and return their outputs flattened, and the graph gets one `cond` node (`condImpl`) that picks a branch
 * when it runs, its outputs read with getitem. A boolean predicate is already decided: the taken branch is
 * traced inline. Branches must return the same structure, shapes and dtypes, and may not write or return their
 * operands or the state they close over.
 */
export function cond<R = unknown>(
  pred: boolean | number | Tensor,
  trueFn: ((...operands: Tensor[]) => R) | Callable,
  falseFn: ((...operands: Tensor[]) => R) | Callable,
  operands: readonly Tensor[] = [],
): R {
  if (typeof pred === 'boolean' || typeof pred === 'number')
    return callWith(pred ? trueFn : falseFn, checkedArgs(trueFn, falseFn, operands)) as R;
  breakSymbolicTrace('cond');
  // a comparison of symbolic sizes under export (PyTorch's SymBool): both branches, picked at run time
  const symbolic: SymbolicCondition | undefined = isSymbolicCondition(pred) ? pred : undefined;
  if (!symbolic) checkPred(pred);
  const args = checkedArgs(trueFn, falseFn, operands);
  if (symbolic && !activeFxTracer()) throw new TraceError('cond: a symbolic predicate needs the exporter that made it');
  if (!activeFxTracer()) {
    // item() tells a runtime tracer (kiln/jit) that the branch taken depends on a value
    const taken = (pred as Tensor).item() !== 0;
    return runEagerly(taken ? trueFn : falseFn, args, taken ? 'true_fn' : 'false_fn') as R;
  }
  // PyTorch's flat_fn: each branch returns its outputs flattened; the structure is rebuilt around the node's
  const trees: Partial<Record<'true_fn' | 'false_fn', Tree>> = {};
  const flat =
    (branch: Callable, label: 'true_fn' | 'false_fn') =>
    (...ops: Tensor[]) => {
      const { tensors, tree } = flattenTensors(callWith(branch, ops), `cond: ${label}'s output`);
      trees[label] = tree;
      if (hasConstLeaf(tree))
        throw new TraceError(
          `Expect outputs of ${label} to only contains tensors. Got ${describeTree(tree)}${userFrame()}; return tensors (arrays and objects of them)`,
        );
      return tensors;
    };
  const outs = symbolic
    ? traceCond(
        activeFxTracer()!,
        symbolic.predicateNode() as Argument,
        symbolic.holds,
        flat(trueFn, 'true_fn'),
        flat(falseFn, 'false_fn'),
        args,
      )
    : condImpl(pred as Tensor, flat(trueFn, 'true_fn'), flat(falseFn, 'false_fn'), args);
  const [ts, fs] = [describeTree(trees.true_fn!), describeTree(trees.false_fn!)];
  if (ts !== fs)
    throw new CondOpArgsMismatchError(
      `Expected both branches to return the same structure but got:\n  true_fn returns ${ts}\n  false_fn returns ${fs}`,
    );
  return unflattenTensors(trees.true_fn!, outs) as R;
}

/**
 * The graph's `cond` node (PyTorch's `cond_op`): the branch `pred` picks, on the operands; the branches return
 * arrays of tensors. Under export and makeFx it records itself with traced subgraphs instead.
 */
export function condImpl(
  pred: Tensor | boolean | SymbolicCondition,
  trueFn: Callable,
  falseFn: Callable,
  operands: readonly Tensor[],
): Tensor[] {
  // a boolean: an exported program's symbolic predicate, computed from sizes (sym_cmp); a symbolic condition:
  // that program traced again (re-export)
  const symbolic = isSymbolicCondition(pred) ? pred : undefined;
  if (typeof pred !== 'boolean' && !symbolic) checkPred(pred);
  const args = checkedArgs(trueFn, falseFn, operands);
  const tracer = activeFxTracer();
  if (tracer && symbolic) return traceCond(tracer, symbolic.predicateNode() as Argument, symbolic.holds, trueFn, falseFn, args);
  if (symbolic) throw new TraceError('cond: a symbolic predicate needs the exporter that made it');
  if (tracer) {
    const p = pred as Tensor | boolean;
    const taken = typeof p === 'boolean' ? p : untraced(() => p.item()) !== 0;
    return traceCond(tracer, tracer.arg(p) as Argument, taken, trueFn, falseFn, args);
  }
  const taken = typeof pred === 'boolean' ? pred : (pred as Tensor).item() !== 0;
  const out = runEagerly(taken ? trueFn : falseFn, args, taken ? 'true_fn' : 'false_fn');
  if (!Array.isArray(out) || !out.every((o) => o instanceof Tensor))
    throw new TraceError(`cond: a subgraph branch must return an array of tensors, got ${describeValue(out)}`);
  return out as Tensor[];
}

function checkPred(pred: unknown): asserts pred is Tensor {
  if (!(pred instanceof Tensor)) throw new ValueError(`cond: Expected pred to be bool or tensor, but got ${describeValue(pred)}.`);
  if (pred.numel() !== 1)
    throw new ValueError(`cond: Expected pred to be bool or single-element tensor, but got a ${describeTensor(pred)} tensor.`);
}

/** The tensors in a branch's result (in arrays and plain objects), whatever else it holds. */
function tensorsIn(x: unknown, out: Tensor[] = []): Tensor[] {
  if (x instanceof Tensor) out.push(x);
  else if (Array.isArray(x)) x.forEach((v) => tensorsIn(v, out));
  else if (isPlainObject(x)) Object.values(x).forEach((v) => tensorsIn(v, out));
  return out;
}

function hasConstLeaf(t: Tree): boolean {
  if (t.kind === 'const') return true;
  return t.kind === 'tensor' ? false : t.items.some(hasConstLeaf);
}

function checkedArgs(trueFn: unknown, falseFn: unknown, operands: unknown): Tensor[] {
  if (!isCallable(trueFn) || !isCallable(falseFn))
    throw new ValueError(`cond: Expect both branches to be callable, got ${describeValue(trueFn)} and ${describeValue(falseFn)}.`);
  if (!Array.isArray(operands) || !operands.every((o) => o instanceof Tensor)) {
    const shown = Array.isArray(operands) ? `[${operands.map(describeValue).join(', ')}]` : describeValue(operands);
    throw new ValueError(`cond: Expect operands to be an array of tensors, but got ${shown}.`);
  }
  return operands as Tensor[];
}

/** The branch on the operands, refusing (as a traced cond would) a write to an operand or an output that aliases one. */
function runEagerly(branch: Callable, operands: readonly Tensor[], label: string): unknown {
  const versions = operands.map((t) => t._storage.version);
  const result = callWith(branch, operands);
  operands.forEach((t, i) => {
    if (t._storage.version === versions[i]) return;
    throw new UnsupportedAliasMutationError(
      `One of cond's branches might be modifying the input! ${label} wrote its input ${i} (${describeTensor(t)}) in place${userFrame()}; write to a clone of it instead`,
    );
  });
  tensorsIn(result).forEach((o, i) => {
    if (!operands.some((t) => t._storage === o._storage)) return;
    throw new UnsupportedAliasMutationError(
      `One of cond's branches might be aliasing the input! ${label}'s output ${i} (${describeTensor(o)}) shares memory with an operand${userFrame()}; return a clone() of it`,
    );
  });
  return result;
}

function traceCond(
  tracer: FxTracer,
  predNode: Argument,
  taken: boolean,
  trueFn: Callable,
  falseFn: Callable,
  operands: readonly Tensor[],
): Tensor[] {
  const onTrue = traceBody(tracer, trueFn, operands, 'true_fn', 'cond');
  const onFalse = traceBody(tracer, falseFn, operands, 'false_fn', 'cond');
  for (const b of [onTrue, onFalse])
    if (b.tree.kind !== 'array')
      throw new TraceError(`cond: a subgraph branch must return an array of tensors, got ${describeTree(b.tree)}`);
  checkSameOutputs(onTrue, onFalse);
  const lifted = liftedTensors([onTrue, onFalse]);
  refuseGradients('cond', [...operands, ...lifted]);
  const trueGraph = subgraphModule(onTrue, lifted);
  const falseGraph = subgraphModule(onFalse, lifted);
  const operandNodes = [...operands, ...lifted].map((t) => tracer.arg(t));
  const [trueName, falseName] = freshSubgraphNames(tracer, ['true_graph', 'false_graph']) as [string, string];
  tracer.constants.set(trueName, trueGraph);
  tracer.constants.set(falseName, falseGraph);
  const node = tracer.graph.callFunction(condImpl as unknown as FunctionTarget, [
    predNode,
    tracer.graph.getAttr(trueName),
    tracer.graph.getAttr(falseName),
    operandNodes,
  ]);
  const outs = (taken ? onTrue : onFalse).outs;
  tracer.bind(outs, node);
  return [...outs];
}

/** PyTorch's trace-time check: the same number of outputs, in the same structure, with the same shapes and dtypes. */
function checkSameOutputs(t: TracedBody, f: TracedBody): void {
  if (t.outs.length !== f.outs.length) {
    throw new CondOpArgsMismatchError(
      `Expected to return same number of outputs but got:\n  true branch returns ${t.outs.length} item(s)\n  false branch returns ${f.outs.length} item(s)`,
    );
  }
  t.outs.forEach((a, i) => {
    const b = f.outs[i]!;
    if (a.dtype === b.dtype && a.shape.length === b.shape.length && a.shape.every((d, k) => d === b.shape[k])) return;
    throw new CondOpArgsMismatchError(
      `Expected each tensor to have same metadata but got:\n  true_fn returns ${meta(a)}\n  false_fn returns ${meta(b)}` +
        (t.outs.length > 1 ? `\n(output ${i})` : ''),
    );
  });
}

function meta(t: Tensor): string {
  return `TensorMetadata(shape=[${t.shape.join(', ')}], dtype=${t.dtype})`;
}

export function describeValue(x: unknown): string {
  if (x instanceof Tensor) return `Tensor(${describeTensor(x)})`;
  if (x === null || x === undefined) return String(x);
  if (typeof x === 'function') return `function ${x.name || '(anonymous)'}`;
  if (typeof x === 'object') return Array.isArray(x) ? 'an array' : (x.constructor?.name ?? 'object');
  return typeof x === 'string' ? JSON.stringify(x) : `${typeof x} ${String(x)}`;
}
