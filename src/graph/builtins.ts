import { KilnError } from '../errors.js';
import type { FunctionTarget } from './node.js';

/**
 * The few call_function targets that are not tensor ops (Python's `operator.getitem`, `getattr` and
 * FX's `_assert`): what tracing records for `x.shape[0]`, `pair.values` and guards.
 */

export function getitem(obj: unknown, index: number | string): unknown {
  if (obj === null || obj === undefined) throw new KilnError(`getitem: cannot index ${String(obj)} with [${index}]`);
  return (obj as Record<string | number, unknown>)[index];
}

export function getattr(obj: unknown, name: string): unknown {
  if (obj === null || obj === undefined) throw new KilnError(`getattr: cannot read '${name}' of ${String(obj)}`);
  const v = (obj as Record<string, unknown>)[name];
  return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(obj) : v;
}

export function _assert(condition: unknown, message: string): void {
  if (!condition) throw new KilnError(message);
}

for (const [name, fn] of Object.entries({ getitem, getattr, _assert })) Object.defineProperty(fn, 'opName', { value: name });

/** Builtins by name, for code generation and deserialisation. */
export const BUILTINS: ReadonlyMap<string, FunctionTarget> = new Map<string, FunctionTarget>([
  ['getitem', getitem as FunctionTarget],
  ['getattr', getattr as FunctionTarget],
  ['_assert', _assert as FunctionTarget],
]);
