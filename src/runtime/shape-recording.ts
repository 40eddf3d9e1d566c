import type { SizeArith } from './size-arith.js';
import type { Tensor } from './tensor.js';

/**
 * The hook between code the plugin rewrote and an export in progress. The plugin turns shape reads
 * (`x.shape[0]`, `x.numel()`, `x.ndim`, `t.item()`) and the arithmetic and comparisons on them into calls of
 * small runtime helpers. With no recorder active (every eager or compiled call) the helpers are plain number
 * operations; while export traces, the recorder answers them with symbolic sizes, and comparisons on those
 * become guards (`if (x.shape[0] <= 6)` records `s0 <= 6`).
 */
export interface ShapeRecorder<S = unknown> {
  readonly arith: SizeArith<S>;
  /** Whether `v` is one of this recorder's symbolic values (anything else is a plain JavaScript value). */
  isSymbolic(v: unknown): v is S;
  /** `t`'s sizes as the trace knows them (symbolic where dynamic), or undefined for a tensor it does not track. */
  sizes(t: Tensor): readonly S[] | undefined;
  /**
   * One of `t`'s sizes when `sizes` cannot list them all (a trace that knows values by the graph node computing
   * them, not the tensor's rank), or undefined. `d` is an integer; a negative one counts from the end.
   */
  size?(t: Tensor, d: number): S | undefined;
  /** `a / b` with a symbolic side, kept as a division the program computes when it runs (compile's trace), or undefined. */
  divide?(a: unknown, b: unknown): unknown;
  /** `t.item()` of a one-element integer tensor: a data-dependent (unbacked) size, or undefined to read the value. */
  item?(t: Tensor): S | undefined;
  /**
   * A comparison handed to `check(...)` or as `cond(...)`'s predicate: a symbolic condition (runtime/check.ts)
   * the exporter keeps as an assertion or a predicate node, or undefined to compare now.
   */
  predicate?(op: ComparisonOp, a: unknown, b: unknown): unknown;
  /** An exported program's range assertion on a data-dependent size, traced again (re-export): recorded as it was. */
  assertRange?(v: S, lower: number | null, upper: number | null): void;
}

export type ComparisonOp = 'lt' | 'le' | 'gt' | 'ge' | 'eq' | 'ne';

/** The active recorder, or null (the common case: one null check per helper call). */
export let activeShapeRecorder: ShapeRecorder | null = null;

/** Make `r` the active recorder; returns the previous one so nested exports can restore it. */
export function setShapeRecorder(r: ShapeRecorder | null): ShapeRecorder | null {
  const prev = activeShapeRecorder;
  activeShapeRecorder = r;
  return prev;
}

/** Run `f` with `r` answering the plugin's shape helpers, then restore whatever was active before. */
export function withShapeRecorder<T>(r: ShapeRecorder, f: () => T): T {
  const prev = setShapeRecorder(r);
  try {
    return f();
  } finally {
    setShapeRecorder(prev);
  }
}
