import { ValueError } from '../errors.js';
import type { Op } from '../runtime/op.js';
import { ops } from '../ops.js';
import type { Tensor } from '../runtime/tensor.js';

/**
 * Decompositions: an op → a function written with other ops that computes the same thing. makeFx and
 * aotFunction trace into a decomposition instead of recording the op, so the graph holds only the core ops
 * a backend implements (PyTorch's decomposition tables). Keys are ops (`ops.linear`) or op names.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Decomposition = (...args: any[]) => unknown;
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
