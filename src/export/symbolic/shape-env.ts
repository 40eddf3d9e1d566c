import { TraceError, ValueError } from '../../errors.js';
import type { SizeArith } from '../../runtime/size-arith.js';
import type { ShapeRecorder } from '../../runtime/shape-recording.js';
import type { Tensor } from '../../runtime/tensor.js';
import { add, bounds, Expr, floorDiv, int, type Interval, linearInOne, mod, mul, neg, sub, sym } from './expr.js';

/**
 * The symbolic-shape environment of one export: the symbols standing for dynamic input dims (and for
 * data-dependent values), and the guards recorded while tracing. It implements SizeArith, so the op
 * table's shape rules and the plugin's shape helpers compute with it exactly as they do with numbers;
 * every comparison is decided on the example values (hints) and recorded as a guard, which the solver
 * later turns into ranges and relations and checks against the declared Dims.
 */

/** A size: a plain number when static, a SymSize when it depends on a symbol. */
export type Size = number | SymSize;

/** An inclusive integer range; `upper` may be Infinity and `lower` -Infinity. */
export interface Range {
  lower: number;
  upper: number;
}

/**
 * A recorded guard, normalised to `expr REL 0` (`<` is folded into `<=` over the integers, a leading
 * coefficient is made positive for `==`/`!=`, common factors are divided out).
 */
export interface Guard {
  readonly rel: Relation;
  readonly expr: Expr;
  /** `guard`: a comparison decided on hints; `specialization`: a size read as a plain number; `assertion`: stated by `check()`/`constrainRange`. */
  readonly kind: 'guard' | 'specialization' | 'assertion';
  /** Where it was recorded (file:line or an op name), for messages. */
  readonly loc?: string;
  /** The comparison as the code made it, with the outcome it had (`s0 < 5` decided false reads `s0 >= 5`). */
  readonly source?: { readonly lhs: Expr; readonly op: SourceOp; readonly rhs: Expr };
}

export type SourceOp = '==' | '!=' | '<' | '<=' | '>' | '>=';

export type Relation = '==' | '!=' | '<=';

export interface SymbolInfo {
  readonly name: string;
  /** The example value; undefined for an unbacked (data-dependent) symbol. */
  readonly hint: number | undefined;
  /** Input paths that read this symbol (`x.shape[0]`), the binding one first; a Dim's name for a phantom root. */
  readonly sources: string[];
  /** The Dim that declared it (its name is the symbol's name in messages), if any. */
  dimName?: string;
  /** The range the user declared (Dim min/max; [0, ∞] when not given). */
  readonly declared: Range;
  /** The range tracing started from: `declared` ∩ [2, ∞] for a backed size (0 and 1 specialise, as in PyTorch). */
  readonly initial: Range;
  /** `initial` narrowed by the guards recorded so far (used to skip guards that are already known). */
  range: Range;
  readonly unbacked: boolean;
  /** True for the root of derived Dims that no input reads directly. */
  phantom?: boolean;
}

/** A symbolic size: an expression, its example value, and the env that records guards on it. */
export class SymSize {
  constructor(
    readonly expr: Expr,
    readonly hint: number | undefined,
    readonly env: ShapeEnv,
  ) {}

  /**
   * Reading a symbolic size as a JavaScript number (`+s`, template strings, Math.*) fixes it to its
   * example value: that is recorded as a specialisation guard, never done silently.
   */
  valueOf(): number {
    return this.env.specialize(this);
  }

  toString(): string {
    return this.expr.toString();
  }

  toJSON(): string {
    return this.expr.toString();
  }
}

/** Default range of a backed size while tracing: 0 and 1 specialise (PyTorch's 0/1 specialisation). */
export const BACKED_DEFAULT: Readonly<Range> = { lower: 2, upper: Infinity };
/** The range a Dim declares when neither min nor max is given (PyTorch 2.x: `Dim('x')` is [0, int_oo]). */
export const DIM_DEFAULT: Readonly<Range> = { lower: 0, upper: Infinity };

export function intersect(a: Range, b: Range): Range {
  return { lower: Math.max(a.lower, b.lower), upper: Math.min(a.upper, b.upper) };
}

export function gcd(a: number, b: number): number {
  a = Math.abs(a);
  b = Math.abs(b);
  while (b) [a, b] = [b, a % b];
  return a;
}

/** Normalise `expr REL 0` so equal conditions compare equal by key. */
export function normalizeGuard(rel: Relation, expr: Expr): { rel: Relation; expr: Expr } {
  if (expr.terms.length === 0) return { rel, expr };
  let g = 0;
  for (const t of expr.terms) g = gcd(g, t.coeff);
  if (rel === '<=') {
    // g*A + k <= 0  ⟺  A <= floor(-k/g)  ⟺  A + ceil(k/g) <= 0
    return g > 1 ? { rel, expr: divideTerms(expr, g, Math.ceil(expr.constant / g)) } : { rel, expr };
  }
  // g*A + k == 0 has no integer solution when g does not divide k: the condition is constant.
  if (g > 1 && expr.constant % g !== 0) return { rel, expr: int(1) };
  let e = expr;
  if (e.terms[0]!.coeff < 0) e = neg(e);
  if (g > 1) e = divideTerms(e, g, e.constant / g);
  return { rel, expr: e };
}

function divideTerms(e: Expr, g: number, constant: number): Expr {
  return Expr.of(
    e.terms.map((t) => ({ coeff: t.coeff / g, atoms: t.atoms })),
    constant,
  );
}

/** Decide `expr REL 0` from bounds alone, or undefined when the bounds do not decide it. */
export function decideByBounds(rel: Relation, iv: Interval): boolean | undefined {
  if (rel === '<=') {
    if (iv.upper <= 0) return true;
    if (iv.lower > 0) return false;
    return undefined;
  }
  const eq = iv.lower === 0 && iv.upper === 0 ? true : iv.lower > 0 || iv.upper < 0 ? false : undefined;
  if (eq === undefined) return undefined;
  return rel === '==' ? eq : !eq;
}

/** Print a normalised guard readably (`s0 <= 6`, `s0 >= 3`, `Mod(s0, 2) == 0`, `s1 == s0 + 1`). */
export function guardToString(g: { rel: Relation; expr: Expr }, names?: (symbol: string) => string): string {
  const e = g.expr;
  const lhs = sub(e, int(e.constant));
  let rhs = -e.constant;
  const flip = lhs.terms.length > 0 && lhs.terms.every((t) => t.coeff < 0);
  if (g.rel === '<=') {
    if (flip) return `${neg(lhs).toString(names)} >= ${-rhs}`;
    return `${lhs.toString(names)} <= ${rhs}`;
  }
  // Two-symbol linear equalities read best as `newer == f(older)`.
  const lin = [...lhs.terms];
  if (lin.length === 2 && lin.every((t) => t.atoms.length === 1 && t.atoms[0]!.kind === 'sym')) {
    const [older, newer] = lin as [(typeof lin)[0], (typeof lin)[0]];
    if (Math.abs(newer.coeff) === 1) {
      const n = newer.coeff;
      const other = Expr.of([{ coeff: -older.coeff * n, atoms: older.atoms }], rhs * n);
      return `${(names ?? ((s: string) => s))((newer.atoms[0] as { name: string }).name)} ${g.rel} ${other.toString(names)}`;
    }
  }
  if (flip) {
    rhs = -rhs;
    return `${neg(lhs).toString(names)} ${g.rel} ${rhs}`;
  }
  return `${lhs.toString(names)} ${g.rel} ${rhs}`;
}

export class ShapeEnv implements SizeArith<Size> {
  readonly symbols = new Map<string, SymbolInfo>();
  readonly guards: Guard[] = [];
  /** Attached to guards recorded while set (the lead sets it to the file:line or op being traced). */
  loc: string | undefined;
  private nextBacked = 0;
  private nextUnbacked = 0;
  private readonly guardKeys = new Set<string>();

  /** A new backed symbol `s<n>` for an input dim with example value `hint`, read at `source`. */
  createSymbol(hint: number, source: string, opts: { range?: Partial<Range>; dimName?: string; phantom?: boolean } = {}): SymSize {
    if (!Number.isSafeInteger(hint) || hint < 0)
      throw new ValueError(`createSymbol: a size must be a non-negative integer, got ${hint} for ${source}`);
    const declared: Range = { lower: opts.range?.lower ?? DIM_DEFAULT.lower, upper: opts.range?.upper ?? DIM_DEFAULT.upper };
    const initial = intersect(declared, BACKED_DEFAULT);
    const name = `s${this.nextBacked++}`;
    const info: SymbolInfo = { name, hint, sources: [source], declared, initial, range: { ...initial }, unbacked: false };
    if (opts.dimName !== undefined) info.dimName = opts.dimName;
    if (opts.phantom) info.phantom = true;
    this.symbols.set(name, info);
    return new SymSize(sym(name), hint, this);
  }

  /** A new unbacked symbol `u<n>` for a data-dependent value (`t.item()`), range [-∞, ∞] until narrowed. */
  createUnbacked(source: string): SymSize {
    const name = `u${this.nextUnbacked++}`;
    const full: Range = { lower: -Infinity, upper: Infinity };
    this.symbols.set(name, {
      name,
      hint: undefined,
      sources: [source],
      declared: full,
      initial: { ...full },
      range: { ...full },
      unbacked: true,
    });
    return new SymSize(sym(name), undefined, this);
  }

  symbol(name: string): SymbolInfo {
    const info = this.symbols.get(name);
    if (!info) throw new ValueError(`ShapeEnv: unknown symbol ${name}`);
    return info;
  }

  /** The name a symbol goes by in messages: its Dim's name, else the symbol itself. */
  debugName(symbol: string): string {
    return this.symbols.get(symbol)?.dimName ?? symbol;
  }

  /** The input path a symbol is read from (its first source). */
  sourceOf(symbol: string): string {
    return this.symbols.get(symbol)?.sources[0] ?? symbol;
  }

  /** Wrap an expression as a Size: a number when constant, else a SymSize with the hint computed. */
  size(e: Expr): Size {
    const k = e.constantValue();
    if (k !== undefined) return k;
    return new SymSize(e, this.hintOf(e), this);
  }

  private hintOf(e: Expr): number | undefined {
    const env = new Map<string, number>();
    for (const s of e.freeSymbols()) {
      const h = this.symbols.get(s)?.hint;
      if (h === undefined) return undefined;
      env.set(s, h);
    }
    return e.evaluate(env);
  }

  toExpr(a: Size): Expr {
    if (typeof a === 'number') return int(a);
    if (!(a instanceof SymSize)) throw new ValueError(`ShapeEnv: expected a size, got ${String(a)}`);
    if (a.env !== this) throw new ValueError(`ShapeEnv: size ${a.expr.toString()} belongs to another export`);
    return a.expr;
  }

  isSymbolic(v: unknown): v is SymSize {
    return v instanceof SymSize && v.env === this;
  }

  /** The current interval of an expression from the symbols' ranges. */
  rangeOf(a: Size | Expr): Range {
    const e = a instanceof Expr ? a : this.toExpr(a);
    return bounds(e, (s) => this.symbols.get(s)?.range ?? { lower: -Infinity, upper: Infinity });
  }

  // SizeArith ----------------------------------------------------------------------------------------

  lit(n: number): Size {
    if (!Number.isInteger(n)) throw new ValueError(`a size literal must be an integer, got ${n}`);
    return n;
  }

  add(a: Size, b: Size): Size {
    if (typeof a === 'number' && typeof b === 'number') return a + b;
    return this.size(add(this.toExpr(a), this.toExpr(b)));
  }

  sub(a: Size, b: Size): Size {
    if (typeof a === 'number' && typeof b === 'number') return a - b;
    return this.size(sub(this.toExpr(a), this.toExpr(b)));
  }

  mul(a: Size, b: Size): Size {
    if (typeof a === 'number' && typeof b === 'number') return a * b;
    return this.size(mul(this.toExpr(a), this.toExpr(b)));
  }

  floorDiv(a: Size, b: number): Size {
    if (!Number.isSafeInteger(b) || b <= 0) throw new ValueError(`floorDiv: the divisor must be a positive integer constant, got ${b}`);
    if (typeof a === 'number') return Math.floor(a / b);
    return this.size(floorDiv(this.toExpr(a), b));
  }

  mod(a: Size, b: number): Size {
    if (!Number.isSafeInteger(b) || b <= 0) throw new ValueError(`mod: the divisor must be a positive integer constant, got ${b}`);
    if (typeof a === 'number') return ((a % b) + b) % b;
    return this.size(mod(this.toExpr(a), b));
  }

  eq(a: Size, b: Size): boolean {
    return this.compare('eq', a, b);
  }

  lt(a: Size, b: Size): boolean {
    return this.compare('lt', a, b);
  }

  le(a: Size, b: Size): boolean {
    return this.compare('le', a, b);
  }

  hint(a: Size): number {
    if (typeof a === 'number') return a;
    const e = this.toExpr(a);
    const h = this.hintOf(e);
    if (h === undefined) throw this.dataDependent(`the value of ${e.toString()}`, e);
    return h;
  }

  constant(a: Size): number | undefined {
    return typeof a === 'number' ? a : this.toExpr(a).constantValue();
  }

  // Guards ------------------------------------------------------------------------------------------

  /**
   * Decide `a OP b` on the example values and record the outcome as a guard, unless the symbols'
   * ranges already decide it (then nothing is recorded, as PyTorch skips statically known guards).
   */
  compare(op: 'eq' | 'lt' | 'le', a: Size, b: Size, loc: string | undefined = this.loc): boolean {
    if (typeof a === 'number' && typeof b === 'number') return op === 'eq' ? a === b : op === 'lt' ? a < b : a <= b;
    const d = sub(this.toExpr(a), this.toExpr(b)); // a - b
    // eq: d == 0; lt: d + 1 <= 0; le: d <= 0 (over the integers)
    const cond = op === 'eq' ? { rel: '==' as const, expr: d } : { rel: '<=' as const, expr: op === 'lt' ? add(d, int(1)) : d };
    const known = this.decide(cond.rel, cond.expr);
    if (known !== undefined) return known;
    const h = this.hintOf(cond.expr);
    if (h === undefined) {
      const text = `${this.toExpr(a).toString()} ${op === 'eq' ? '==' : op === 'lt' ? '<' : '<='} ${this.toExpr(b).toString()}`;
      throw this.dataDependent(`the comparison ${text}`, cond.expr);
    }
    const holds = cond.rel === '==' ? h === 0 : h <= 0;
    const lhs = this.toExpr(a);
    const rhs = this.toExpr(b);
    const source = { lhs, op: op0(op, holds), rhs };
    if (holds) this.record(cond.rel, cond.expr, 'guard', loc, source);
    else if (cond.rel === '==') this.record('!=', cond.expr, 'guard', loc, source);
    else this.record('<=', sub(int(1), cond.expr), 'guard', loc, source); // not (e <= 0)  ⟺  1 - e <= 0
    return holds;
  }

  /** Whether the current ranges decide `expr REL 0`. */
  decide(rel: Relation, expr: Expr): boolean | undefined {
    return decideByBounds(rel, this.rangeOf(expr));
  }

  /** Fix a symbolic size to its example value, recording `expr == hint` (a specialisation). */
  specialize(s: SymSize, loc: string | undefined = this.loc): number {
    const h = this.hintOf(s.expr);
    if (h === undefined) throw this.dataDependent(`the value of ${s.expr.toString()}`, s.expr);
    if (this.decide('==', sub(s.expr, int(h))) !== true)
      this.record('==', sub(s.expr, int(h)), 'specialization', loc, { lhs: s.expr, op: '==', rhs: int(h) });
    return h;
  }

  /**
   * State `a OP b` without deciding it (what `check(cond)` does): recorded as an assertion, and a
   * single-symbol linear one narrows that symbol's range. Returns the recorded guard, or undefined when
   * the ranges already imply it. Throws when the ranges already refute it.
   */
  assume(op: 'eq' | 'lt' | 'le' | 'ne', a: Size, b: Size, loc: string | undefined = this.loc): Guard | undefined {
    const d = sub(this.toExpr(a), this.toExpr(b));
    const rel: Relation = op === 'eq' ? '==' : op === 'ne' ? '!=' : '<=';
    const expr = op === 'lt' ? add(d, int(1)) : d;
    const n = normalizeGuard(rel, expr);
    const k = n.expr.constantValue();
    const known = k !== undefined ? (n.rel === '==' ? k === 0 : n.rel === '!=' ? k !== 0 : k <= 0) : this.decide(n.rel, n.expr);
    if (known === true) return undefined;
    if (known === false) {
      throw new ValueError(
        `check: ${guardToString(normalizeGuard(rel, expr))} can never hold (the ranges known so far exclude it)${loc ? ` at ${loc}` : ''}`,
      );
    }
    const sop: SourceOp = op === 'eq' ? '==' : op === 'ne' ? '!=' : op === 'lt' ? '<' : '<=';
    return this.record(rel, expr, 'assertion', loc, { lhs: this.toExpr(a), op: sop, rhs: this.toExpr(b) });
  }

  /** Narrow a symbol (an unbacked value or a size) to [lower, upper], as `check(lower <= v <= upper)` would. */
  constrainRange(s: SymSize | string, lower: number, upper: number, loc: string | undefined = this.loc): void {
    const name = typeof s === 'string' ? s : s.expr.asSymbol();
    if (name === undefined) throw new ValueError(`constrainRange: expected a plain symbol, got ${String(s)}`);
    this.symbol(name);
    if (lower > upper) throw new ValueError(`constrainRange: empty range [${lower}, ${upper}] for ${name}`);
    if (Number.isFinite(lower)) this.assume('le', lower, new SymSize(sym(name), this.symbols.get(name)!.hint, this), loc);
    if (Number.isFinite(upper)) this.assume('le', new SymSize(sym(name), this.symbols.get(name)!.hint, this), upper, loc);
  }

  /** Mark an unbacked value as usable as a size: it is ≥ 0 (PyTorch's `_check_is_size`). */
  markSizeLike(s: SymSize | string, loc: string | undefined = this.loc): void {
    this.constrainRange(s, 0, Infinity, loc);
  }

  private record(rel: Relation, expr: Expr, kind: Guard['kind'], loc: string | undefined, source: Guard['source']): Guard | undefined {
    const n = normalizeGuard(rel, expr);
    if (n.expr.isConstant()) return undefined;
    const key = `${n.rel}|${n.expr.key}`;
    const guard: Guard = loc === undefined ? { rel: n.rel, expr: n.expr, kind, source } : { rel: n.rel, expr: n.expr, kind, loc, source };
    if (this.guardKeys.has(key)) return guard;
    this.guardKeys.add(key);
    this.guards.push(guard);
    this.narrow(n.rel, n.expr);
    return guard;
  }

  /** A single-symbol linear guard narrows that symbol's running range. */
  private narrow(rel: Relation, e: Expr): void {
    const lin = linearInOne(e);
    if (!lin) return;
    const info = this.symbols.get(lin.symbol);
    if (!info) return;
    const { a, b } = lin;
    if (rel === '==') {
      if (-b % a === 0) info.range = intersect(info.range, { lower: -b / a, upper: -b / a });
    } else if (rel === '<=') {
      // a*s + b <= 0
      if (a > 0) info.range = intersect(info.range, { lower: -Infinity, upper: Math.floor(-b / a) });
      else info.range = intersect(info.range, { lower: Math.ceil(b / -a), upper: Infinity });
    } else if (-b % a === 0) {
      const v = -b / a;
      if (info.range.lower === v) info.range = { ...info.range, lower: v + 1 };
      if (info.range.upper === v) info.range = { ...info.range, upper: v - 1 };
    }
  }

  private dataDependent(what: string, e: Expr): TraceError {
    const unbacked = [...e.freeSymbols()].filter((s) => this.symbols.get(s)?.unbacked);
    const from = unbacked.map((s) => `${s} from ${this.sourceOf(s)}`).join(', ');
    return new TraceError(
      `Could not decide ${what}: it depends on data-dependent values (${from})${this.loc ? ` at ${this.loc}` : ''}. ` +
        'State what you know with check(...) (e.g. check(n >= 0)) before using the value, or compute it outside the exported code.',
    );
  }
}

/** The comparison `op` as it came out: a false `a < b` is `a >= b`. */
function op0(op: 'eq' | 'lt' | 'le', holds: boolean): SourceOp {
  if (op === 'eq') return holds ? '==' : '!=';
  if (op === 'lt') return holds ? '<' : '>=';
  return holds ? '<=' : '>';
}

/** A ShapeRecorder answering with `env`'s symbolic sizes; the caller supplies how tensors map to sizes. */
export function shapeRecorder(
  env: ShapeEnv,
  sizes: (t: Tensor) => readonly Size[] | undefined,
  item?: (t: Tensor) => Size | undefined,
): ShapeRecorder<Size> {
  const r: ShapeRecorder<Size> = { arith: env, isSymbolic: (v: unknown): v is Size => env.isSymbolic(v), sizes };
  if (item) r.item = item;
  return r;
}
