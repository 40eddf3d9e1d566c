import { activeShapeRecorder, type ComparisonOp, type ShapeRecorder } from './shape-recording.js';
import { ratioOfHints } from './shape-rules/sizes.js';
import { Tensor } from './tensor.js';

/**
 * What code rewritten by kiln/plugin calls for shape reads and the arithmetic and comparisons on them
 * (`x.shape[0] <= 6` becomes `le(size(x, 0), 6)`). With no recorder active — every eager and compiled call —
 * each helper evaluates exactly the expression it replaced (same JavaScript semantics: string `+`, NaN,
 * fractional `/`, a tracer proxy's own `.shape`), after one null check. While export traces, the active
 * ShapeRecorder answers shape reads with symbolic sizes, arithmetic on them goes through its SizeArith and
 * comparisons become guards. A symbolic size used where only a number will do (`/` without floor, `**`,
 * `Math.sqrt`, a template string, a truthiness test) is concretised: its example value, with a guard that it
 * equals that value (the program is specialised to it).
 */
type Any = unknown;
type Numeric = { [k: string | number]: Any };
type Rec = ShapeRecorder;

// ---- Reads ------------------------------------------------------------------------------------------------

/** `x.shape[d]`. */
export function size(x: Any, d: Any): Any {
  const r = activeShapeRecorder;
  if (r === null) return (x as { shape: Numeric }).shape[d as number];
  const s = tracked(r, x);
  if (s === undefined && Number.isInteger(d) && (d as number) >= 0) {
    const one = oneSize(r, x, d as number); // `shape[-1]` is undefined in JavaScript: only a dim counted from the front
    if (one !== undefined) return one;
  }
  return s !== undefined && Number.isInteger(d) && (d as number) >= 0 && (d as number) < s.length
    ? s[d as number]
    : (x as { shape: Numeric }).shape[d as number];
}

/** `x.shape.at(d)`. */
export function sizeAt(x: Any, d: Any): Any {
  const r = activeShapeRecorder;
  if (r === null) return (x as { shape: { at(i: Any): Any } }).shape.at(d);
  const s = tracked(r, x);
  const one = s === undefined && Number.isInteger(d) ? oneSize(r, x, d as number) : undefined;
  if (one !== undefined) return one;
  return s !== undefined && Number.isInteger(d) ? s.at(d as number) : (x as { shape: { at(i: Any): Any } }).shape.at(d);
}

/** `x.size(d)` (`x.size()` when `d` is left out: the shape). Out-of-range dims throw kiln's own IndexError. */
export function sizeOf(x: Any, ...d: Any[]): Any {
  const r = activeShapeRecorder;
  if (r === null) return (x as { size(...a: Any[]): Any }).size(...d);
  const s = tracked(r, x);
  if (s !== undefined && d.length === 0) return s;
  const i = d[0] as number;
  const one = s === undefined && d.length === 1 && Number.isInteger(i) ? oneSize(r, x, i) : undefined;
  if (one !== undefined) return one;
  if (s !== undefined && d.length === 1 && Number.isInteger(i) && i >= -s.length && i < s.length) return s[i < 0 ? i + s.length : i];
  return (x as { size(...a: Any[]): Any }).size(...d);
}

/** `x.shape`. */
export function shape(x: Any): Any {
  const r = activeShapeRecorder;
  if (r === null) return (x as { shape: Any }).shape;
  return tracked(r, x) ?? (x as { shape: Any }).shape;
}

/** `x.numel()`. */
export function numel(x: Any): Any {
  const r = activeShapeRecorder;
  if (r === null) return (x as { numel(): Any }).numel();
  const s = tracked(r, x);
  if (s === undefined) return (x as { numel(): Any }).numel();
  let n: Any = 1;
  for (const d of s) n = mul(n, d);
  return n;
}

/** `x.ndim` (the rank is never symbolic: dims may vary in size, not in number). */
export function ndim(x: Any): Any {
  return (x as { ndim: Any }).ndim;
}

/** `x.dim()`. */
export function dim(x: Any): Any {
  return (x as { dim(): Any }).dim();
}

/** `x.item()`; under export, the recorder's data-dependent (unbacked) size for a one-element integer tensor. */
export function item(x: Any): Any {
  const r = activeShapeRecorder;
  if (r !== null && r.item !== undefined && x instanceof Tensor) {
    const v = r.item(x);
    if (v !== undefined) return v;
  }
  return (x as { item(): Any }).item();
}

// ---- Arithmetic -------------------------------------------------------------------------------------------

/** `a + b`. */
export function add(a: Any, b: Any): Any {
  const r = activeShapeRecorder;
  if (r === null || (!r.isSymbolic(a) && !r.isSymbolic(b))) return (a as number) + (b as number);
  if (isSize(r, a) && isSize(r, b)) return r.arith.add(sym(r, a), sym(r, b));
  return (concrete(a) as number) + (concrete(b) as number);
}

/** `a - b`. */
export function sub(a: Any, b: Any): Any {
  const r = activeShapeRecorder;
  if (r === null || (!r.isSymbolic(a) && !r.isSymbolic(b))) return (a as number) - (b as number);
  if (isSize(r, a) && isSize(r, b)) return r.arith.sub(sym(r, a), sym(r, b));
  return (concrete(a) as number) - (concrete(b) as number);
}

/** `a * b`. */
export function mul(a: Any, b: Any): Any {
  const r = activeShapeRecorder;
  if (r === null || (!r.isSymbolic(a) && !r.isSymbolic(b))) return (a as number) * (b as number);
  if (isSize(r, a) && isSize(r, b)) return r.arith.mul(sym(r, a), sym(r, b));
  return (concrete(a) as number) * (concrete(b) as number);
}

/** `Math.floor(a / b)`: symbolic floor division when `b` is (or is specialised to) a positive integer. */
export function floorDiv(a: Any, b: Any): Any {
  const r = activeShapeRecorder;
  if (r === null || (!r.isSymbolic(a) && !r.isSymbolic(b))) return Math.floor((a as number) / (b as number));
  const d = concrete(b);
  if (isSize(r, a) && Number.isInteger(d) && (d as number) > 0) return r.arith.floorDiv(sym(r, a), d as number);
  return Math.floor((concrete(a) as number) / (d as number));
}

/**
 * `a % b`: JavaScript's remainder takes the dividend's sign, SizeArith's `mod` is never negative, so the sign of
 * a symbolic dividend is decided (a guard; sizes are never negative, so it only costs one for differences).
 */
export function mod(a: Any, b: Any): Any {
  const r = activeShapeRecorder;
  if (r === null || (!r.isSymbolic(a) && !r.isSymbolic(b))) return (a as number) % (b as number);
  const d = concrete(b);
  if (isSize(r, a) && Number.isInteger(d) && (d as number) !== 0) {
    const m = Math.abs(d as number);
    const s = sym(r, a);
    const zero = r.arith.lit(0);
    if (r.arith.le(zero, s)) return r.arith.mod(s, m);
    return r.arith.sub(zero, r.arith.mod(r.arith.sub(zero, s), m));
  }
  return (concrete(a) as number) % (d as number);
}

/**
 * `a / b` that is not floored. A division that is exact at the example sizes stays a size (`x.numel() / 2`,
 * `n / x.shape[1]`): by a constant, with a guard that it divides (`s0 % 2 == 0`, nothing when the algebra already
 * knows, as for `(4*s0) / 2`); by a size the dividend is a constant multiple of, the multiple. A fraction is no
 * size, so otherwise symbolic operands are concretised.
 */
export function div(a: Any, b: Any): Any {
  const r = activeShapeRecorder;
  if (r === null) return (a as number) / (b as number);
  const kept = r.divide !== undefined && (r.isSymbolic(a) || r.isSymbolic(b)) ? r.divide(a, b) : undefined;
  if (kept !== undefined) return kept;
  if (r.isSymbolic(a) && r.isSymbolic(b)) {
    const A = r.arith;
    const k = ratioOfHints(A, a, b);
    if (k !== undefined && A.constant(A.sub(a, A.mul(A.lit(k), b))) === 0) return k;
  }
  const d = concrete(b);
  if (r.isSymbolic(a) && Number.isInteger(d) && (d as number) > 0 && ratioOfHints(r.arith, a, r.arith.lit(d as number)) !== undefined) {
    r.arith.eq(r.arith.mod(a, d as number), r.arith.lit(0)); // true at the example: the guard that it divides
    return r.arith.floorDiv(a, d as number);
  }
  return (concrete(a) as number) / (d as number);
}

/** `++n` / `n++` whose value is unused: the incremented value (JavaScript's numeric conversion for non-sizes). */
export function inc(a: Any): Any {
  const r = activeShapeRecorder;
  if (r === null || !r.isSymbolic(a)) {
    let v = a as number;
    v++;
    return v;
  }
  return r.arith.add(a, r.arith.lit(1));
}

/** `--n` / `n--` whose value is unused. */
export function dec(a: Any): Any {
  const r = activeShapeRecorder;
  if (r === null || !r.isSymbolic(a)) {
    let v = a as number;
    v--;
    return v;
  }
  return r.arith.sub(a, r.arith.lit(1));
}

// ---- Comparisons (guards under export) --------------------------------------------------------------------

/** `a < b`. */
export function lt(a: Any, b: Any): boolean {
  const r = activeShapeRecorder;
  if (r === null || (!r.isSymbolic(a) && !r.isSymbolic(b))) return (a as number) < (b as number);
  return compare(r, a, b, 'lt');
}

/** `a <= b`. */
export function le(a: Any, b: Any): boolean {
  const r = activeShapeRecorder;
  if (r === null || (!r.isSymbolic(a) && !r.isSymbolic(b))) return (a as number) <= (b as number);
  return compare(r, a, b, 'le');
}

/** `a > b`. */
export function gt(a: Any, b: Any): boolean {
  const r = activeShapeRecorder;
  if (r === null || (!r.isSymbolic(a) && !r.isSymbolic(b))) return (a as number) > (b as number);
  return compare(r, b, a, 'lt');
}

/** `a >= b`. */
export function ge(a: Any, b: Any): boolean {
  const r = activeShapeRecorder;
  if (r === null || (!r.isSymbolic(a) && !r.isSymbolic(b))) return (a as number) >= (b as number);
  return compare(r, b, a, 'le');
}

/** `a === b`. */
export function eq(a: Any, b: Any): boolean {
  const r = activeShapeRecorder;
  if (r === null || (!r.isSymbolic(a) && !r.isSymbolic(b))) return a === b;
  return compare(r, a, b, 'eq');
}

/** `a !== b`. */
export function ne(a: Any, b: Any): boolean {
  const r = activeShapeRecorder;
  if (r === null || (!r.isSymbolic(a) && !r.isSymbolic(b))) return a !== b;
  return !compare(r, a, b, 'eq');
}

/** `a == b`. */
export function looseEq(a: Any, b: Any): boolean {
  const r = activeShapeRecorder;
  if (r === null || (!r.isSymbolic(a) && !r.isSymbolic(b))) return a == b;
  if (isSize(r, a) && isSize(r, b)) return compare(r, a, b, 'eq');
  if (a === null || a === undefined || b === null || b === undefined) return false; // a size is never == null
  return concrete(a) == concrete(b);
}

/** `a != b`. */
export function looseNe(a: Any, b: Any): boolean {
  return !looseEq(a, b);
}

const COMPARISONS = { lt, le, gt, ge, eq, ne } as const;

/**
 * `a OP b` written as `check(a OP b)`'s argument or `cond(a OP b, …)`'s predicate: under export, with a symbolic
 * side, the recorder's symbolic condition (an assertion or a predicate node, decided at run time); else the
 * comparison itself.
 */
export function pred(op: ComparisonOp, a: Any, b: Any): unknown {
  const r = activeShapeRecorder;
  if (r !== null && r.predicate && (r.isSymbolic(a) || r.isSymbolic(b))) {
    const p = r.predicate(op, a, b);
    if (p !== undefined) return p;
  }
  return COMPARISONS[op](a, b);
}

/**
 * A symbolic size used where only a plain number will do (`Math.sqrt(n)`, `${n}`, `-n`, `n ** 2`, `if (n)`): its
 * example value, with a guard that it equals that value. Anything else is returned as it is.
 */
export function concrete(v: Any): Any {
  const r = activeShapeRecorder;
  if (r === null || !r.isSymbolic(v)) return v;
  const c = r.arith.constant(v);
  if (c !== undefined) return c;
  const h = r.arith.hint(v);
  r.arith.eq(v, r.arith.lit(h)); // the specialisation guard: the program now holds only where v === h
  return h;
}

// ---- Internals --------------------------------------------------------------------------------------------

/** The recorder's sizes for `x` when it is a tensor the export tracks. */
function tracked(r: Rec, x: Any): readonly Any[] | undefined {
  return x instanceof Tensor ? r.sizes(x) : undefined;
}

/** One size of `x` from a recorder that knows sizes one at a time (compile's trace), or undefined. */
function oneSize(r: Rec, x: Any, d: number): Any {
  return x instanceof Tensor && r.size !== undefined ? r.size(x, d) : undefined;
}

/** A value SizeArith can take: a symbolic size or an integer. */
function isSize(r: Rec, v: Any): boolean {
  return r.isSymbolic(v) || Number.isInteger(v);
}

function sym(r: Rec, v: Any): unknown {
  return r.isSymbolic(v) ? v : r.arith.lit(v as number);
}

/**
 * A comparison with at least one symbolic side, decided (and guarded) by the recorder's arithmetic. A fractional
 * or infinite number on the other side is turned into the equivalent integer comparison (sizes are integers);
 * anything that is not a number compares by JavaScript's rules against the concretised size.
 */
function compare(r: Rec, a: Any, b: Any, op: 'lt' | 'le' | 'eq'): boolean {
  const A = r.arith;
  if (isSize(r, a) && isSize(r, b)) return A[op](sym(r, a), sym(r, b));
  if (Number.isNaN(a) || Number.isNaN(b)) return false; // NaN compares false, and decides nothing about a size
  if (op === 'eq' && typeof (r.isSymbolic(a) ? b : a) !== 'number') return false; // a size is never === a non-number
  const num = (v: Any) => typeof v === 'number';
  if (r.isSymbolic(a) && num(b)) {
    const n = b as number;
    if (op === 'eq') return false; // an integer never equals a fraction or an infinity
    if (!Number.isFinite(n)) return n > 0;
    return A.le(a, A.lit(Math.floor(n))); // a < 2.5 and a <= 2.5 both mean a <= 2
  }
  if (r.isSymbolic(b) && num(a)) {
    const n = a as number;
    if (op === 'eq') return false;
    if (!Number.isFinite(n)) return n < 0;
    return A.le(A.lit(Math.ceil(n)), b); // 2.5 < b and 2.5 <= b both mean 3 <= b
  }
  const x = concrete(a) as number;
  const y = concrete(b) as number;
  return op === 'lt' ? x < y : op === 'le' ? x <= y : x === y;
}
