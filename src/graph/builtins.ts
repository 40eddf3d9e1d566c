import { KilnError, ValueError } from '../errors.js';
import { setGradEnabled } from '../runtime/autograd.js';
import { OPS } from '../runtime/op.js';
import { activeShapeRecorder, type ShapeRecorder } from '../runtime/shape-recording.js';
import { Tensor } from '../runtime/tensor.js';
import { arange, full, onesLike, rand, randn, zerosLike } from '../runtime/ops/creation.js';
import type { FunctionTarget } from './node.js';
import { isUnsafeMember } from './safe-targets.js';

/**
 * The few call_function targets that are not tensor ops (Python's `operator.getitem`, `getattr` and
 * FX's `_assert`): what tracing records for `x.shape[0]`, `pair.values` and guards.
 */

export function getitem(obj: unknown, index: number | string): unknown {
  if (obj === null || obj === undefined) throw new KilnError(`getitem: cannot index ${String(obj)} with [${index}]`);
  return dataMember('getitem', obj, index, `[${JSON.stringify(index)}]`);
}

/** Reads a data attribute (`x.shape`, `x.dtype`, `pair.values`); a method or constructor is refused, never returned. */
export function getattr(obj: unknown, name: string): unknown {
  if (obj === null || obj === undefined) throw new KilnError(`getattr: cannot read '${name}' of ${String(obj)}`);
  return dataMember('getattr', obj, name, `'${String(name)}'`);
}

/** A graph's values are data: no node may yield a function, or graphs (files included) could build and call `Function`. */
function dataMember(op: string, obj: unknown, key: unknown, shown: string): unknown {
  if ((typeof key !== 'string' && typeof key !== 'number') || isUnsafeMember(key)) {
    throw new KilnError(`${op}: reading ${shown} is not allowed in a graph (only data attributes and items)`);
  }
  const v = (obj as Record<string | number, unknown>)[key];
  if (typeof v === 'function') {
    throw new KilnError(
      `${op}: ${shown} of ${describeValue(obj)} is a function; a graph reads only data attributes (call methods with call_method)`,
    );
  }
  return v;
}

function describeValue(v: unknown): string {
  return typeof v === 'object' && v !== null ? `a ${(v.constructor as { name?: string } | undefined)?.name ?? 'object'}` : `a ${typeof v}`;
}

export function _assert(condition: unknown, message: string): void {
  if (!condition) throw new KilnError(message);
}

/**
 * Shape arithmetic (PyTorch's `aten::size` and SymInt ops): what a runtime trace records for `x.shape[1] * 2`,
 * so the graph computes the number from the input it gets instead of freezing the example's.
 */
export function sym_size(t: unknown, dim: number): number {
  // an exported program traced again (re-export): its sizes stay symbolic
  const r = activeShapeRecorder;
  const known = r !== null && t instanceof Tensor ? r.sizes(t) : undefined;
  if (known && Number.isInteger(dim) && dim >= -known.length && dim < known.length) return known.at(dim) as number;
  const shape = (t as { shape?: readonly number[] } | null)?.shape;
  if (!Array.isArray(shape)) throw new KilnError(`sym_size: expected a tensor, got ${String(t)}`);
  const d = dim < 0 ? dim + shape.length : dim;
  if (d < 0 || d >= shape.length) throw new KilnError(`sym_size: dim ${dim} is out of range for shape [${shape.join(', ')}]`);
  return shape[d]!;
}

export function sym_add(a: number, b: number): number {
  const r = activeShapeRecorder;
  if (r !== null && (r.isSymbolic(a) || r.isSymbolic(b))) return r.arith.add(symbolic(r, a), symbolic(r, b)) as number;
  return a + b;
}

export function sym_sub(a: number, b: number): number {
  const r = activeShapeRecorder;
  if (r !== null && (r.isSymbolic(a) || r.isSymbolic(b))) return r.arith.sub(symbolic(r, a), symbolic(r, b)) as number;
  return a - b;
}

export function sym_mul(a: number, b: number): number {
  const r = activeShapeRecorder;
  if (r !== null && (r.isSymbolic(a) || r.isSymbolic(b))) return r.arith.mul(symbolic(r, a), symbolic(r, b)) as number;
  return a * b;
}

export function sym_floordiv(a: number, b: number): number {
  const r = activeShapeRecorder;
  if (r !== null && r.isSymbolic(a) && Number.isInteger(b) && b > 0) return r.arith.floorDiv(a, b) as number;
  if (b === 0) throw new KilnError(`sym_floordiv: division of ${a} by zero`);
  return Math.floor(a / b);
}

/** `a mod b` for a positive constant `b`, never negative (SizeArith's `mod`; the plugin decides JavaScript's sign first). */
export function sym_mod(a: number, b: number): number {
  const r = activeShapeRecorder;
  if (r !== null && r.isSymbolic(a) && Number.isInteger(b) && b > 0) return r.arith.mod(a, b) as number;
  if (!Number.isInteger(b) || b <= 0) throw new KilnError(`sym_mod: expected a positive integer divisor, got ${b}`);
  return ((a % b) + b) % b;
}

/**
 * `a / b` as JavaScript divides, for a size divided where the plugin saw `/` (compile's trace records it
 * when the value is not known while tracing: a fraction then reaches the op that takes it, as eagerly).
 */
export function sym_truediv(a: number, b: number): number {
  return a / b;
}

/** A size for the recorder's arithmetic: its own symbolic value, or a literal. */
function symbolic(r: ShapeRecorder, v: unknown): unknown {
  return r.isSymbolic(v) ? v : r.arith.lit(v);
}

/**
 * Grad mode as a graph step (PyTorch's `torch._C._set_grad_enabled`): a trace records one where captured code
 * entered a `noGrad`/`withGradMode` region, `_set_grad_enabled(false)`, and one where it left,
 * `_set_grad_enabled(<that node>)`. Unlike PyTorch's it returns the previous mode, so leaving restores
 * whatever mode the graph was called in, not the one it was traced in.
 */
export function _set_grad_enabled(enabled: boolean): boolean {
  if (typeof enabled !== 'boolean') throw new ValueError(`_set_grad_enabled: expected a boolean, got ${String(enabled)}`);
  return setGradEnabled(enabled);
}

const ALL = { getitem, getattr, _assert, sym_size, sym_add, sym_sub, sym_mul, sym_floordiv, sym_mod, sym_truediv, _set_grad_enabled };
for (const [name, fn] of Object.entries(ALL)) Object.defineProperty(fn, 'opName', { value: name });

/** Creation functions a runtime trace records as calls (they are plain functions, not ops from the table). */
const CREATION = { full, zerosLike, onesLike, arange, rand, randn };

const builtins = new Map<string, FunctionTarget>(
  Object.entries({ ...ALL, ...CREATION }).map(([name, fn]) => [name, fn as unknown as FunctionTarget]),
);

/** Builtins by name, for code generation and deserialisation. */
export const BUILTINS: ReadonlyMap<string, FunctionTarget> = builtins;

/**
 * Add a graph function defined above src/graph (control flow's `cond` and `map_impl`), so generated code calls
 * it as `fx.<name>` and a saved graph names it; a name is registered once and never replaced.
 */
export function registerBuiltin(name: string, fn: FunctionTarget): void {
  const had = builtins.get(name);
  if (had !== undefined && had !== fn) throw new KilnError(`registerBuiltin: '${name}' is already a different graph builtin`);
  if (OPS.has(name)) throw new KilnError(`registerBuiltin: '${name}' is an op of the op table`);
  Object.defineProperty(fn, 'opName', { value: name, configurable: true });
  builtins.set(name, fn);
}
