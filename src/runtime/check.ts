import { ValueError } from '../errors.js';

/**
 * `check(cond)` (PyTorch's `torch._check`): a plain assertion eagerly. Under export, code the plugin rewrote hands
 * it a symbolic condition (`check(n >= 4)` on a data-dependent `n = t.item()`), which becomes a range the
 * exporter knows and an assertion node the exported program runs.
 */

/** Marks a symbolic condition made by export's recorder (src/export/symbolic-trace.ts). */
export const SYMBOLIC_CONDITION = Symbol.for('kiln.symbolicCondition');

export interface SymbolicCondition {
  readonly [SYMBOLIC_CONDITION]: true;
  /** State that the condition holds: recorded, and checked on the example. */
  assert(message: string | undefined): void;
  /** Whether it holds for the values being traced. */
  readonly holds: boolean;
  /** The condition as a graph value (`cond`'s predicate node). */
  predicateNode(): unknown;
}

export function isSymbolicCondition(x: unknown): x is SymbolicCondition {
  return typeof x === 'object' && x !== null && (x as Partial<SymbolicCondition>)[SYMBOLIC_CONDITION] === true;
}

export function check(cond: unknown, message?: string): void {
  if (message !== undefined && typeof message !== 'string')
    throw new ValueError(`check: the message must be a string, got ${typeof message}`);
  if (isSymbolicCondition(cond)) return cond.assert(message);
  if (typeof cond !== 'boolean') throw new ValueError(`check: expected a boolean condition, got ${cond === null ? 'null' : typeof cond}`);
  if (!cond) throw new ValueError(message ?? 'Expected cond to be True, but got False.');
}
