import { ValueError } from '../errors.js';
import type { Op } from '../runtime/op.js';
import { ops } from '../ops.js';
import { zeros } from '../runtime/ops/creation.js';
import { batchStatistics, normalizeChannels } from '../runtime/ops/nn.js';
import type { Tensor } from '../runtime/tensor.js';

/**
 * Decompositions: an op → a function written with other ops that computes the same thing. makeFx and
 * aotFunction trace into a decomposition instead of recording the op, so the graph holds only the core ops
 * a backend implements (PyTorch's decomposition tables). Keys are ops (`ops.linear`) or op names.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Decomposition = (...args: any[]) => unknown;
/** A decomposition returns this to say "record the op itself" for a call it does not handle. */
export const KEEP_OP: unique symbol = Symbol('keep the op');

export type Decompositions =
  ReadonlyMap<Op<(...args: never[]) => unknown> | string, Decomposition> | Readonly<Record<string, Decomposition>>;

/** The decomposition `table` has for `op`, if any (looked up by the op itself, then by its name). */
export function findDecomposition(table: Decompositions | undefined, op: Op<(...args: never[]) => unknown>): Decomposition | undefined {
  if (!table) return undefined;
  if (table instanceof Map) return table.get(op) ?? table.get(op.opName);
  return Object.prototype.hasOwnProperty.call(table, op.opName) ? (table as Record<string, Decomposition>)[op.opName] : undefined;
}

/** Check a user's table: every key names an op of the table and every value is a function. */
export function checkDecompositions(table: unknown, what: string): Decompositions | undefined {
  if (table === undefined) return undefined;
  const entries: [unknown, unknown][] = table instanceof Map ? [...table.entries()] : Object.entries(table as object);
  for (const [k, v] of entries) {
    const name = typeof k === 'string' ? k : (k as { opName?: string })?.opName;
    if (!name || !ops.registry.has(name)) throw new ValueError(`${what}: decompositions has a key that is not an op: ${String(name ?? k)}`);
    if (typeof v !== 'function') throw new ValueError(`${what}: the decomposition of '${name}' must be a function, got ${typeof v}`);
  }
  return table as Decompositions;
}

/**
 * kiln's default table (PyTorch's `default_decompositions` in spirit): layers' composite ops lowered to the
 * core ops the backward graphs use, so forward and backward share one vocabulary of GEMMs and element-wise ops.
 */
export const defaultDecompositions: ReadonlyMap<string, Decomposition> = new Map<string, Decomposition>([
  [
    'linear',
    (x: Tensor, w: Tensor, b?: Tensor | null) =>
      x.ndim === 2 && b
        ? ops.addmm(b, x, ops.transpose(w, 0, 1))
        : b
          ? ops.matmul(x, ops.transpose(w, 0, 1)).add(b)
          : ops.matmul(x, ops.transpose(w, 0, 1)),
  ],
  [
    'mseLoss',
    (a: Tensor, b: Tensor, reduction = 'mean') => {
      const sq = ops.sub(a, b).mul(ops.sub(a, b));
      return reduction === 'none' ? sq : reduction === 'sum' ? ops.sum(sq) : ops.mean(sq);
    },
  ],
]);

/**
 * What the 'kernels' backend asks AOT autograd to decompose (as Inductor does): batch norm, layer norm and
 * global average pooling written with element-wise ops and reductions, which the kernels fuse, forward and
 * backward, where the native ops and their backward ops would run eagerly. Same formulas as the native ops.
 */
export const kernelDecompositions: ReadonlyMap<string, Decomposition> = new Map<string, Decomposition>([
  ...defaultDecompositions,
  [
    'nativeBatchNorm',
    (
      x: Tensor,
      weight: Tensor | null,
      bias: Tensor | null,
      runningMean: Tensor | null,
      runningVar: Tensor | null,
      training: boolean,
      _momentum: number,
      eps: number,
    ) => {
      if (x.ndim < 2) return KEEP_OP;
      const C = x.shape[1]!;
      const bshape = x.shape.map((s, i) => (i === 1 ? s : 1));
      let mu: Tensor;
      let variance: Tensor;
      if (training) [mu, variance] = batchStatistics(x);
      else {
        if (!runningMean || !runningVar) return KEEP_OP;
        mu = runningMean.reshape(bshape);
        variance = runningVar.reshape(bshape);
      }
      const [y, std] = normalizeChannels(x, mu, variance, eps, weight, bias);
      const empty = () => zeros([0]);
      return [y, training ? mu.reshape([C]) : empty(), training ? std.pow(-1).reshape([C]) : empty()] as const;
    },
  ],
  [
    'nativeLayerNorm',
    (x: Tensor, normalizedShape: readonly number[] | number, weight: Tensor | null, bias: Tensor | null, eps: number) => {
      const ns = typeof normalizedShape === 'number' ? [normalizedShape] : normalizedShape;
      const dims = ns.map((_, i) => x.ndim - ns.length + i);
      const mu = x.mean(dims, true);
      const centered = x.sub(mu);
      const std = centered.mul(centered).mean(dims, true).add(eps).sqrt();
      let y = centered.div(std);
      if (weight) y = y.mul(weight);
      if (bias) y = y.add(bias);
      return [y, mu, std.pow(-1)] as const;
    },
  ],
  [
    'adaptiveAvgPool2d',
    (x: Tensor, outputSize: number | readonly number[]) => {
      const [oh, ow] = typeof outputSize === 'number' ? [outputSize, outputSize] : outputSize;
      return oh === 1 && ow === 1 && x.ndim >= 3 ? x.mean([x.ndim - 2, x.ndim - 1], true) : KEEP_OP;
    },
  ],
]);
