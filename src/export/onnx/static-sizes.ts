import type { SizeArith } from '../../runtime/size-arith.js';

/**
 * Sizes as the exporter follows them through a graph: the example's value and whether it is the same at every
 * input size. Shape rules run over this arithmetic (inferMeta) tell an emitter which sizes it may write into the
 * ONNX graph as constants (static ones) and which it must compute from the input at run time (dynamic ones).
 */
export interface StaticSize {
  /** The example's value. */
  readonly hint: number;
  /** Varies with a dynamic input dim. */
  readonly dynamic: boolean;
}

const lit = (n: number): StaticSize => ({ hint: n, dynamic: false });
const both = (a: StaticSize, b: StaticSize, v: number): StaticSize => ({ hint: v, dynamic: a.dynamic || b.dynamic });

export const STATIC_ARITH: SizeArith<StaticSize> = {
  lit,
  add: (a, b) => both(a, b, a.hint + b.hint),
  sub: (a, b) => both(a, b, a.hint - b.hint),
  mul: (a, b) => both(a, b, a.hint * b.hint),
  floorDiv: (a, b) => ({ hint: Math.floor(a.hint / b), dynamic: a.dynamic }),
  mod: (a, b) => ({ hint: ((a.hint % b) + b) % b, dynamic: a.dynamic }),
  // the program was checked at export; comparisons only pick the rule's branch, on the example
  eq: (a, b) => a.hint === b.hint,
  lt: (a, b) => a.hint < b.hint,
  le: (a, b) => a.hint <= b.hint,
  hint: (a) => a.hint,
  constant: (a) => (a.dynamic ? undefined : a.hint),
};

export function isStaticSize(x: unknown): x is StaticSize {
  return typeof x === 'object' && x !== null && 'hint' in x && 'dynamic' in x;
}

/** The sizes of a shape as the emitters read them: a number where static, null where dynamic. */
export function knownSizes(shape: readonly StaticSize[]): (number | null)[] {
  return shape.map((s) => (s.dynamic ? null : s.hint));
}
