/**
 * Integer size arithmetic that shape rules are written against, so one rule serves eager calls (plain
 * numbers) and export (symbolic sizes whose comparisons become guards). PyTorch's SymInt plays this part;
 * JavaScript has no operator overloading, so the arithmetic is spelled out.
 */
export interface SizeArith<S> {
  /** A literal size. */
  lit(n: number): S;
  add(a: S, b: S): S;
  sub(a: S, b: S): S;
  mul(a: S, b: S): S;
  /** Floor division by a positive integer constant. */
  floorDiv(a: S, b: number): S;
  /** Remainder of division by a positive integer constant (the result is ≥ 0). */
  mod(a: S, b: number): S;
  /**
   * Decide a comparison. A symbolic implementation decides it on the example values and records the
   * outcome as a guard, so a program captured this way is only used where the guard still holds.
   */
  eq(a: S, b: S): boolean;
  lt(a: S, b: S): boolean;
  le(a: S, b: S): boolean;
  /** The concrete value: the number itself, or a symbolic size's example value (its hint). */
  hint(a: S): number;
  /** The value when it is the same at every size (a literal), else undefined. Deciding nothing, it records no guard. */
  constant(a: S): number | undefined;
}

/** Plain numbers: what eager calls use. */
export const NUMBER_ARITH: SizeArith<number> = {
  lit: (n) => n,
  add: (a, b) => a + b,
  sub: (a, b) => a - b,
  mul: (a, b) => a * b,
  floorDiv: (a, b) => Math.floor(a / b),
  mod: (a, b) => ((a % b) + b) % b,
  eq: (a, b) => a === b,
  lt: (a, b) => a < b,
  le: (a, b) => a <= b,
  hint: (a) => a,
  constant: (a) => a,
};
