import { isPlainObject } from './plain-object.js';

/**
 * The tracing hook (PyTorch's `__torch_function__`): while a symbolic tracer is active, an op called
 * with a traced value anywhere in its arguments is handed to the tracer instead of running.
 */

export interface TraceDispatch {
  /** True for symbolic tracing (values unknown: code that must break the graph throws); false for runtime tracing. */
  readonly symbolic: boolean;
  /** Record every op called while this tracer is active, not only those given a traced value (runtime traces record `full(x.shape, 2)`). */
  readonly recordsEveryOp?: boolean;
  /** Record calls of the tensor factories (`ones`, `zeros`, `full`, `arange`, `zerosLike`, `onesLike`) as nodes, not constants (compile's tracer, as TorchDynamo). */
  readonly recordsFactories?: boolean;
  /**
   * How a custom-gradient function (`defineFunction`) called while this tracer is active is recorded: 'inline'
   * (the default) records the ops of its forward, and of its backward when the backward sweep runs under the
   * tracer (a joint-graph tracer); 'opaque' records one call of the function itself, so the graph keeps its
   * custom gradient when run eagerly (PyTorch's PythonOp in a jit trace, which records the forward only).
   */
  readonly customFunctions?: 'inline' | 'opaque';
  isTraced(x: unknown): boolean;
  callOp(op: (...args: never[]) => unknown, args: readonly unknown[], kwargs: Readonly<Record<string, unknown>> | undefined): unknown;
  /** Told when code reads a real tensor's values (`item()`, `toArray()`, `data()`): a runtime trace freezes them. */
  valueRead?(t: unknown, what: string): void;
  /** Told when code reads a tensor's `shape` while this tracer is active (not from inside an op). */
  shapeRead?(t: unknown): void;
  /** Told when an in-place op (`name`) wrote `result`'s values into `self`. */
  wroteInPlace?(self: unknown, result: unknown, name: string): void;
  /**
   * Told when an in-place metadata op (`t_`, `unsqueeze_`, …) gave `self` the layout of `view` (a view of it
   * the tracer saw being made). A tracer without this hook cannot follow the change: the op throws instead.
   */
  metadataMutated?(self: unknown, view: unknown, name: string): void;
  /** Told when `to` is kiln's own copy of `from` (autograd's protective clone before an in-place op): the same value, nothing to record. */
  sameValue?(from: unknown, to: unknown): void;
  /**
   * Told when a tensor method skipped its op because there was nothing to do (`to()` the same dtype,
   * `contiguous()` on contiguous data, `detach_()`): a runtime trace records the op (a function, or a method
   * name) anyway, so the trace holds for inputs where it does something. Returns what the method gives back
   * instead of `self` (undefined: `self`); `inPlace`: `self` itself now stands for the result.
   */
  skippedOp?(self: unknown, op: ((...args: never[]) => unknown) | string, args: readonly unknown[], inPlace?: boolean): unknown;
  /** Told when a tensor method made `to` from `from` without an op (e.g. `detach()`). */
  derived?(from: unknown, to: unknown, method: string): void;
  /**
   * Told when code enters a grad-mode region (`noGrad`, `withGradMode`) while this tracer is active; returns
   * what to call when the region is left (normally or by a throw), so the tracer can record both switches.
   */
  gradModeRegion?(enabled: boolean): (() => void) | undefined;
}

/** The active tracer, or null (the common case: one null check per op call). */
export let activeTrace: TraceDispatch | null = null;

/** Make `d` the active tracer; returns the previous one so nested tracers can restore it. */
export function setTraceDispatch(d: TraceDispatch | null): TraceDispatch | null {
  const prev = activeTrace;
  activeTrace = d;
  return prev;
}

/** Whether any argument, including inside arrays and options objects, is a traced value. */
export function hasTraced(d: TraceDispatch, x: unknown): boolean {
  if (d.recordsEveryOp) return true;
  if (d.isTraced(x)) return true;
  if (Array.isArray(x)) return x.some((v) => hasTraced(d, v));
  if (isPlainObject(x)) return Object.values(x).some((v) => hasTraced(d, v));
  return false;
}
