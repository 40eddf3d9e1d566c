import { registerBuiltin } from '../graph/builtins.js';
import { IMPURE_FUNCTIONS, type FunctionTarget } from '../graph/node.js';
import { ValueError } from '../errors.js';
import { isSymbolicCondition } from '../runtime/check.js';
import { activeShapeRecorder, type ComparisonOp } from '../runtime/shape-recording.js';
import { Tensor } from '../runtime/tensor.js';
import { checkValueRange } from './input-checks.js';

/**
 * The graph functions of data-dependent values in exported programs (PyTorch's `_local_scalar_dense`,
 * SymBool comparisons and `_assert_scalar` / `sym_constrain_range`): `t.item()` used as a size, a comparison
 * kept as a value (a `check` or a `cond` predicate on it), and the run-time assertions `check` adds.
 */

/** `t.item()` as an integer size. */
export function sym_item(t: unknown): number {
  // traced again (re-export): a data-dependent size again
  const r = activeShapeRecorder;
  if (r?.item && t instanceof Tensor) {
    const v = r.item(t);
    if (v !== undefined) return v as number;
  }
  if (!(t instanceof Tensor) || t.numel() !== 1) throw new ValueError(`sym_item: expected a one-element tensor, got ${String(t)}`);
  const v = t.item() as number;
  if (!Number.isInteger(v)) throw new ValueError(`sym_item: ${v} is used as a size but is not an integer`);
  return v;
}

export function compareValues(op: ComparisonOp, a: number, b: number): boolean {
  switch (op) {
    case 'lt':
      return a < b;
    case 'le':
      return a <= b;
    case 'gt':
      return a > b;
    case 'ge':
      return a >= b;
    case 'eq':
      return a === b;
    case 'ne':
      return a !== b;
    default:
      return op satisfies never;
  }
}

/** `a OP b` on sizes, as a graph value. */
export function sym_cmp(op: ComparisonOp, a: number, b: number): boolean {
  const r = activeShapeRecorder;
  if (r?.predicate && (r.isSymbolic(a) || r.isSymbolic(b))) {
    const p = r.predicate(op, a, b);
    if (p !== undefined) return p as boolean;
  }
  return compareValues(op, a, b);
}

/** A data-dependent value must lie in the range `check` gave it: PyTorch's "Invalid value range for 30 between [4, 7]." */
export function _assert_range(value: number, lower: number | null, upper: number | null): void {
  const r = activeShapeRecorder;
  if (r?.assertRange && r.isSymbolic(value)) return r.assertRange(value, lower, upper);
  checkValueRange(value, lower ?? -Infinity, upper ?? Infinity);
}

/** Any other condition `check` stated: false at run time throws its text. */
export function _assert_sym(holds: boolean, text: string): void {
  if (isSymbolicCondition(holds)) return holds.assert(text);
  if (!holds) throw new ValueError(text);
}

for (const [name, fn] of Object.entries({ sym_item, sym_cmp, _assert_range, _assert_sym })) {
  registerBuiltin(name, fn as unknown as FunctionTarget);
}
IMPURE_FUNCTIONS.add('_assert_range');
IMPURE_FUNCTIONS.add('_assert_sym');
