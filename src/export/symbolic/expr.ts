import { SerializationError, ValueError } from '../../errors.js';

/**
 * Immutable integer expressions over size symbols (`s0, s1, …`, unbacked `u0, u1, …`), kept in one
 * canonical form so two expressions that are equal by ordinary algebra compare equal by key: a sum of
 * integer-coefficient products of atoms plus a constant. An atom is a symbol, `floor(e / c)` or `e mod c`
 * for a positive integer constant c; those two simplify whenever the division is exact
 * (`(2*s0 + 4) // 2` is `s0 + 2`, `Mod(2*s0, 2)` is 0). This is the small part of sympy that shape
 * rules need, written out so export can reason about sizes without a computer-algebra system.
 */

export type Atom = SymbolAtom | FloorAtom | ModAtom;

export interface SymbolAtom {
  readonly kind: 'sym';
  readonly name: string;
  readonly key: string;
}

export interface FloorAtom {
  readonly kind: 'floor';
  readonly arg: Expr;
  readonly div: number;
  readonly key: string;
}

export interface ModAtom {
  readonly kind: 'mod';
  readonly arg: Expr;
  readonly div: number;
  readonly key: string;
}

/** `coeff * atoms[0] * atoms[1] * …`; atoms sorted by key, repeated for powers. */
export interface Term {
  readonly coeff: number;
  readonly atoms: readonly Atom[];
  /** The key of the atom product (without the coefficient). */
  readonly key: string;
}

/** Natural order on keys, so `s2` sorts before `s10`. */
export function compareKeys(a: string, b: string): number {
  const re = /(\d+)|(\D+)/g;
  const pa = a.match(re) ?? [];
  const pb = b.match(re) ?? [];
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    const x = pa[i]!;
    const y = pb[i]!;
    if (x === y) continue;
    const nx = /^\d/.test(x);
    const ny = /^\d/.test(y);
    if (nx && ny) return Number(x) - Number(y) || (x < y ? -1 : 1);
    return x < y ? -1 : 1;
  }
  return pa.length - pb.length;
}

function checked(n: number): number {
  if (!Number.isSafeInteger(n)) throw new ValueError(`size arithmetic overflowed the safe integer range (got ${n})`);
  return n === 0 ? 0 : n; // no -0
}

function termKey(atoms: readonly Atom[]): string {
  return atoms.map((a) => a.key).join('*');
}

function degree(t: Term): number {
  return t.atoms.length;
}

function compareTerms(a: Term, b: Term): number {
  return degree(b) - degree(a) || compareKeys(a.key, b.key);
}

export class Expr {
  /** Non-constant terms, non-zero coefficients, sorted (higher degree first, then by key). */
  readonly terms: readonly Term[];
  readonly constant: number;
  /** Canonical key: equal keys mean equal expressions. */
  readonly key: string;

  private constructor(terms: readonly Term[], constant: number) {
    this.terms = terms;
    this.constant = constant;
    this.key = terms.map((t) => `${t.coeff}*${t.key}`).join('+') + `#${constant}`;
  }

  /** Build from unsorted, possibly repeated terms; merges like terms and drops zeros. */
  static of(terms: Iterable<{ coeff: number; atoms: readonly Atom[] }>, constant: number): Expr {
    const merged = new Map<string, { coeff: number; atoms: readonly Atom[] }>();
    for (const t of terms) {
      if (t.coeff === 0) continue;
      const atoms = [...t.atoms].sort((x, y) => compareKeys(x.key, y.key));
      const key = termKey(atoms);
      const prev = merged.get(key);
      if (prev) prev.coeff = checked(prev.coeff + t.coeff);
      else merged.set(key, { coeff: checked(t.coeff), atoms });
    }
    const out: Term[] = [];
    for (const [key, t] of merged) if (t.coeff !== 0) out.push({ coeff: t.coeff, atoms: t.atoms, key });
    out.sort(compareTerms);
    return new Expr(out, checked(constant));
  }

  isConstant(): boolean {
    return this.terms.length === 0;
  }

  /** The value when the expression has no symbols, else undefined. */
  constantValue(): number | undefined {
    return this.terms.length === 0 ? this.constant : undefined;
  }

  /** Whether this is exactly one symbol (coefficient 1, no constant). */
  asSymbol(): string | undefined {
    if (this.constant !== 0 || this.terms.length !== 1) return undefined;
    const t = this.terms[0]!;
    return t.coeff === 1 && t.atoms.length === 1 && t.atoms[0]!.kind === 'sym' ? t.atoms[0]!.name : undefined;
  }

  equals(other: Expr): boolean {
    return this.key === other.key;
  }

  /** Every symbol the expression mentions, inside floor and mod atoms too. */
  freeSymbols(): Set<string> {
    const out = new Set<string>();
    const visit = (e: Expr): void => {
      for (const t of e.terms)
        for (const a of t.atoms) {
          if (a.kind === 'sym') out.add(a.name);
          else visit(a.arg);
        }
    };
    visit(this);
    return out;
  }

  /** The value with every symbol bound by `env`; throws for an unbound symbol. */
  evaluate(env: ReadonlyMap<string, number> | Readonly<Record<string, number>>): number {
    const lookup = (name: string): number => {
      const v = env instanceof Map ? env.get(name) : (env as Readonly<Record<string, number>>)[name];
      if (v === undefined) throw new ValueError(`evaluate: symbol ${name} of ${this.toString()} has no value`);
      return v;
    };
    const atom = (a: Atom): number => {
      if (a.kind === 'sym') return lookup(a.name);
      const v = evalWith(a.arg);
      return a.kind === 'floor' ? Math.floor(v / a.div) : ((v % a.div) + a.div) % a.div;
    };
    const evalWith = (e: Expr): number => {
      let sum = e.constant;
      for (const t of e.terms) {
        let p = t.coeff;
        for (const a of t.atoms) p *= atom(a);
        sum += p;
      }
      return sum;
    };
    return evalWith(this);
  }

  /** Replace symbols by expressions (simplifying floor and mod atoms whose arguments change). */
  subs(map: ReadonlyMap<string, Expr>): Expr {
    if (map.size === 0) return this;
    let out = int(this.constant);
    for (const t of this.terms) {
      let p = int(t.coeff);
      for (const a of t.atoms) p = mul(p, substituteAtom(a, map));
      out = add(out, p);
    }
    return out;
  }

  /** Print like PyTorch (sympy): `2*s0 + 1`, `s0//2`, `Mod(s0, 2)`; `names` renames symbols. */
  toString(names?: (symbol: string) => string): string {
    return printExpr(this, names ?? ((s) => s));
  }
}

function substituteAtom(a: Atom, map: ReadonlyMap<string, Expr>): Expr {
  if (a.kind === 'sym') return map.get(a.name) ?? atomExpr(a);
  const arg = a.arg.subs(map);
  return a.kind === 'floor' ? floorDiv(arg, a.div) : mod(arg, a.div);
}

function atomExpr(a: Atom): Expr {
  return Expr.of([{ coeff: 1, atoms: [a] }], 0);
}

export function int(n: number): Expr {
  if (!Number.isInteger(n)) throw new ValueError(`size expressions hold integers, got ${n}`);
  return Expr.of([], n);
}

export function sym(name: string): Expr {
  return atomExpr({ kind: 'sym', name, key: name });
}

export function add(a: Expr, b: Expr): Expr {
  return Expr.of([...a.terms, ...b.terms], a.constant + b.constant);
}

export function scale(a: Expr, k: number): Expr {
  if (!Number.isInteger(k)) throw new ValueError(`size expressions hold integers, got a factor of ${k}`);
  return Expr.of(
    a.terms.map((t) => ({ coeff: checked(t.coeff * k), atoms: t.atoms })),
    checked(a.constant * k),
  );
}

export function neg(a: Expr): Expr {
  return scale(a, -1);
}

export function sub(a: Expr, b: Expr): Expr {
  return add(a, neg(b));
}

export function mul(a: Expr, b: Expr): Expr {
  const ka = a.constantValue();
  if (ka !== undefined) return scale(b, ka);
  const kb = b.constantValue();
  if (kb !== undefined) return scale(a, kb);
  const terms: { coeff: number; atoms: readonly Atom[] }[] = [];
  const aTerms = [...a.terms, ...(a.constant ? [{ coeff: a.constant, atoms: [] as Atom[], key: '' }] : [])];
  const bTerms = [...b.terms, ...(b.constant ? [{ coeff: b.constant, atoms: [] as Atom[], key: '' }] : [])];
  let constant = 0;
  for (const x of aTerms)
    for (const y of bTerms) {
      const coeff = checked(x.coeff * y.coeff);
      if (x.atoms.length + y.atoms.length === 0) constant = checked(constant + coeff);
      else terms.push({ coeff, atoms: [...x.atoms, ...y.atoms] });
    }
  return Expr.of(terms, constant);
}

function checkDivisor(c: number, op: string): void {
  if (!Number.isSafeInteger(c) || c <= 0) throw new ValueError(`${op}: the divisor must be a positive integer constant, got ${c}`);
}

function gcd(a: number, b: number): number {
  a = Math.abs(a);
  b = Math.abs(b);
  while (b) [a, b] = [b, a % b];
  return a;
}

/** Split `e = c*Q + R` with every coefficient of R (and its constant) in [0, c). */
function splitByDivisor(e: Expr, c: number): { q: Expr; r: Expr } {
  const q: { coeff: number; atoms: readonly Atom[] }[] = [];
  const r: { coeff: number; atoms: readonly Atom[] }[] = [];
  for (const t of e.terms) {
    const qc = Math.floor(t.coeff / c);
    q.push({ coeff: qc, atoms: t.atoms });
    r.push({ coeff: t.coeff - qc * c, atoms: t.atoms });
  }
  const qk = Math.floor(e.constant / c);
  return { q: Expr.of(q, qk), r: Expr.of(r, e.constant - qk * c) };
}

/** The gcd of R's coefficients, its constant and c: R = g*R', and c = g*c'. */
function commonFactor(r: Expr, c: number): number {
  let g = gcd(r.constant, c);
  for (const t of r.terms) g = gcd(g, t.coeff);
  return g || 1;
}

function singleAtom(e: Expr): Atom | undefined {
  if (e.constant !== 0 || e.terms.length !== 1) return undefined;
  const t = e.terms[0]!;
  return t.coeff === 1 && t.atoms.length === 1 ? t.atoms[0] : undefined;
}

/** `floor(e / c)` for a positive integer constant c. */
export function floorDiv(e: Expr, c: number): Expr {
  checkDivisor(c, 'floorDiv');
  if (c === 1) return e;
  // e = c*Q + R with Q integer, so floor(e/c) = Q + floor(R/c); R's constant is in [0, c).
  const { q, r } = splitByDivisor(e, c);
  if (r.isConstant()) return q;
  const g = commonFactor(r, c);
  const reduced =
    g > 1
      ? Expr.of(
          r.terms.map((t) => ({ coeff: t.coeff / g, atoms: t.atoms })),
          r.constant / g,
        )
      : r;
  const c1 = c / g;
  if (c1 === 1) return add(q, reduced);
  const inner = singleAtom(reduced);
  // floor(floor(x/a)/b) = floor(x/(a*b)) for integer x and positive a, b.
  if (inner && inner.kind === 'floor') return add(q, floorDiv(inner.arg, checked(inner.div * c1)));
  return add(q, atomExpr({ kind: 'floor', arg: reduced, div: c1, key: `floor(${reduced.key},${c1})` }));
}

/** `e mod c` (the result is in [0, c)) for a positive integer constant c. */
export function mod(e: Expr, c: number): Expr {
  checkDivisor(c, 'mod');
  if (c === 1) return int(0);
  const { r } = splitByDivisor(e, c);
  if (r.isConstant()) return r;
  // Mod(g*R', g*c') = g*Mod(R', c')
  const g = commonFactor(r, c);
  const reduced =
    g > 1
      ? Expr.of(
          r.terms.map((t) => ({ coeff: t.coeff / g, atoms: t.atoms })),
          r.constant / g,
        )
      : r;
  const c1 = c / g;
  const inner = singleAtom(reduced);
  let m: Expr;
  // Mod(Mod(x, d), c') = Mod(x, c') when c' divides d.
  if (inner && inner.kind === 'mod' && inner.div % c1 === 0) m = inner.div === c1 ? reduced : mod(inner.arg, c1);
  else m = atomExpr({ kind: 'mod', arg: reduced, div: c1, key: `mod(${reduced.key},${c1})` });
  return scale(m, g);
}

/**
 * The coefficients when `e` is linear in plain symbols (`a*s0 + b*s1 + k`), else undefined. Floor and
 * mod atoms and products of symbols make an expression non-linear.
 */
export function linearCoefficients(e: Expr): { coeffs: Map<string, number>; constant: number } | undefined {
  const coeffs = new Map<string, number>();
  for (const t of e.terms) {
    if (t.atoms.length !== 1 || t.atoms[0]!.kind !== 'sym') return undefined;
    coeffs.set(t.atoms[0]!.name, t.coeff);
  }
  return { coeffs, constant: e.constant };
}

/** `e` as `a*s + b` in one symbol, or undefined. */
export function linearInOne(e: Expr): { symbol: string; a: number; b: number } | undefined {
  const lin = linearCoefficients(e);
  if (!lin || lin.coeffs.size !== 1) return undefined;
  const [symbol, a] = [...lin.coeffs][0]!;
  return { symbol, a, b: lin.constant };
}

/** An interval of integers; the ends may be ±Infinity. */
export interface Interval {
  readonly lower: number;
  readonly upper: number;
}

function mulBound(x: number, y: number): number {
  return x === 0 || y === 0 ? 0 : x * y;
}

function mulInterval(a: Interval, b: Interval): Interval {
  const ps = [mulBound(a.lower, b.lower), mulBound(a.lower, b.upper), mulBound(a.upper, b.lower), mulBound(a.upper, b.upper)];
  return { lower: Math.min(...ps), upper: Math.max(...ps) };
}

/** A sound interval for `e` given an interval for each symbol (interval arithmetic, so possibly loose). */
export function bounds(e: Expr, rangeOf: (symbol: string) => Interval): Interval {
  let lower = e.constant;
  let upper = e.constant;
  for (const t of e.terms) {
    let iv: Interval = { lower: t.coeff, upper: t.coeff };
    for (const a of t.atoms) iv = mulInterval(iv, atomBounds(a, rangeOf));
    lower += iv.lower;
    upper += iv.upper;
  }
  return { lower: Number.isNaN(lower) ? -Infinity : lower, upper: Number.isNaN(upper) ? Infinity : upper };
}

function atomBounds(a: Atom, rangeOf: (symbol: string) => Interval): Interval {
  if (a.kind === 'sym') return rangeOf(a.name);
  const arg = bounds(a.arg, rangeOf);
  if (a.kind === 'floor') return { lower: Math.floor(arg.lower / a.div), upper: Math.floor(arg.upper / a.div) };
  if (Number.isFinite(arg.lower) && Number.isFinite(arg.upper) && Math.floor(arg.lower / a.div) === Math.floor(arg.upper / a.div)) {
    const m = (v: number) => ((v % a.div) + a.div) % a.div;
    return { lower: m(arg.lower), upper: m(arg.upper) };
  }
  return { lower: 0, upper: a.div - 1 };
}

// ---------------------------------------------------------------------------------------------------
// Printing

function printAtom(a: Atom, names: (s: string) => string, standalone: boolean): string {
  if (a.kind === 'sym') return names(a.name);
  if (a.kind === 'mod') return `Mod(${printExpr(a.arg, names)}, ${a.div})`;
  const arg = printExpr(a.arg, names);
  const simple = a.arg.asSymbol() !== undefined || (a.arg.terms.length === 0 && a.arg.constant >= 0);
  const text = `${simple ? arg : `(${arg})`}//${a.div}`;
  return standalone ? text : `(${text})`;
}

function printMonomial(atoms: readonly Atom[], names: (s: string) => string, standalone: boolean): string {
  const parts: string[] = [];
  for (let i = 0; i < atoms.length;) {
    let j = i;
    while (j < atoms.length && atoms[j]!.key === atoms[i]!.key) j++;
    const alone = standalone && atoms.length === 1;
    const base = printAtom(atoms[i]!, names, alone);
    parts.push(j - i > 1 ? `${atoms[i]!.kind === 'floor' && alone ? `(${base})` : base}**${j - i}` : base);
    i = j;
  }
  return parts.join('*');
}

function printExpr(e: Expr, names: (s: string) => string): string {
  if (e.terms.length === 0) return String(e.constant);
  let out = '';
  e.terms.forEach((t, i) => {
    const mag = Math.abs(t.coeff);
    const mono = printMonomial(t.atoms, names, mag === 1);
    const body = mag === 1 ? mono : `${mag}*${mono}`;
    if (i === 0) out = t.coeff < 0 ? `-${body}` : body;
    else out += t.coeff < 0 ? ` - ${body}` : ` + ${body}`;
  });
  if (e.constant > 0) out += ` + ${e.constant}`;
  else if (e.constant < 0) out += ` - ${-e.constant}`;
  return out;
}

// ---------------------------------------------------------------------------------------------------
// JSON

/** `{ c: constant, t: [[coeff, [atom, …]], …] }`, an atom being a symbol name, `{ floor, div }` or `{ mod, div }`. */
export interface ExprJSON {
  c: number;
  t: [number, AtomJSON[]][];
}
export type AtomJSON = string | { floor: ExprJSON; div: number } | { mod: ExprJSON; div: number };

export function exprToJSON(e: Expr): ExprJSON {
  return {
    c: e.constant,
    t: e.terms.map((t) => [t.coeff, t.atoms.map(atomToJSON)]),
  };
}

function atomToJSON(a: Atom): AtomJSON {
  if (a.kind === 'sym') return a.name;
  return a.kind === 'floor' ? { floor: exprToJSON(a.arg), div: a.div } : { mod: exprToJSON(a.arg), div: a.div };
}

const SYMBOL_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Read an expression back; anything malformed throws SerializationError naming what is wrong. */
export function exprFromJSON(json: unknown, where = 'expression'): Expr {
  const bad = (why: string): never => {
    throw new SerializationError(`${where}: malformed size expression (${why})`);
  };
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return bad('expected an object');
  const { c, t } = json as { c?: unknown; t?: unknown };
  if (typeof c !== 'number' || !Number.isSafeInteger(c)) return bad(`constant ${String(c)} is not an integer`);
  if (!Array.isArray(t)) return bad('terms are not an array');
  let out = int(c);
  for (const term of t) {
    if (!Array.isArray(term) || term.length !== 2) return bad('a term is not [coeff, atoms]');
    const [coeff, atoms] = term as [unknown, unknown];
    if (typeof coeff !== 'number' || !Number.isSafeInteger(coeff) || coeff === 0) return bad(`coefficient ${String(coeff)}`);
    if (!Array.isArray(atoms) || atoms.length === 0) return bad('a term has no atoms');
    let p = int(coeff);
    for (const a of atoms) {
      if (typeof a === 'string') {
        if (!SYMBOL_NAME.test(a)) return bad(`symbol name ${JSON.stringify(a)}`);
        p = mul(p, sym(a));
        continue;
      }
      if (typeof a !== 'object' || a === null) return bad('an atom is neither a name nor an object');
      const { floor, mod: m, div } = a as { floor?: unknown; mod?: unknown; div?: unknown };
      if (typeof div !== 'number' || !Number.isSafeInteger(div) || div <= 0) return bad(`divisor ${String(div)}`);
      if ((floor === undefined) === (m === undefined)) return bad('an atom must have exactly one of floor and mod');
      p = mul(p, floor !== undefined ? floorDiv(exprFromJSON(floor, where), div) : mod(exprFromJSON(m, where), div));
    }
    out = add(out, p);
  }
  return out;
}
