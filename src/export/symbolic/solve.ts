import { ValueError } from '../../errors.js';
import { bounds, compareKeys, Expr, int, linearCoefficients, linearInOne, mod, neg, scale, sub, sym } from './expr.js';
import {
  decideByBounds,
  gcd,
  type Guard,
  guardToString,
  intersect,
  normalizeGuard,
  type Range,
  type Relation,
  type ShapeEnv,
} from './shape-env.js';

/**
 * Turns the guards recorded while tracing into what they say about the symbols:
 * - a range per symbol (from single-symbol linear inequalities, e.g. `s0 <= 6`),
 * - replacements (from linear equalities: `s1 == s0 + 1` makes s1 := s0 + 1; `s0 == 5` specialises s0),
 * - divisibility (`Mod(s0 + 1, 3) == 0` makes s0 = 3*k - 1),
 * - and the residual guards it cannot fold into those (non-linear or multi-symbol inequalities), which
 *   stay as checks at run time so nothing is silently assumed.
 * The solver never assumes more than the guards say: every solution it returns holds exactly on the
 * sizes satisfying all guards (replacements, ranges and divisibility are equivalent rewrites, the rest
 * is kept as residual guards).
 */

export interface Divisibility {
  /** s = modulus*k + offset for an integer k (offset as the guard suggests: `s0 + 1 ≡ 0 (mod 3)` gives -1). */
  readonly modulus: number;
  readonly offset: number;
  /** The guard it came from (substituted), for messages. */
  readonly guard: Guard;
}

export interface Solution {
  /** Ranges of the symbols that remain free (not replaced). */
  readonly ranges: Map<string, Range>;
  /** symbol → an expression in other symbols, or a constant (a specialisation). */
  readonly replacements: Map<string, Expr>;
  /** The guard each replacement came from. */
  readonly replacementGuards: Map<string, Guard>;
  readonly divisibility: Map<string, Divisibility>;
  /** Per free symbol, the single-symbol guards that narrowed its range (in terms of free symbols). */
  readonly narrowing: Map<string, Guard[]>;
  /** Guards kept as run-time checks, in terms of free symbols. */
  readonly residual: Guard[];
}

function posMod(a: number, m: number): number {
  return ((a % m) + m) % m;
}

/** Inverse of a modulo m (a and m coprime). */
function modInverse(a: number, m: number): number {
  for (let x = 0; x < m; x++) if (posMod(a * x, m) === 1 % m) return x;
  throw new ValueError(`no inverse of ${a} modulo ${m}`);
}

function holds(rel: Relation, k: number): boolean {
  return rel === '==' ? k === 0 : rel === '!=' ? k !== 0 : k <= 0;
}

export function solve(env: ShapeEnv, guards: readonly Guard[] = env.guards): Solution {
  const ranges = new Map<string, Range>();
  for (const [name, info] of env.symbols) ranges.set(name, { ...info.initial });
  const replacements = new Map<string, Expr>();
  const replacementGuards = new Map<string, Guard>();
  const divisibility = new Map<string, Divisibility>();
  const narrowing = new Map<string, Guard[]>();

  const contradiction = (g: Guard, why: string): never => {
    throw new ValueError(
      `The recorded shape guards contradict each other: ${guardToString(g, (s) => env.debugName(s))} ${why}${g.loc ? ` (at ${g.loc})` : ''}`,
    );
  };

  const narrowTo = (s: string, r: Range, g: Guard): void => {
    const cur = ranges.get(s)!;
    const next = intersect(cur, r);
    if (next.lower > next.upper) contradiction(g, `leaves no value for ${env.debugName(s)}`);
    if (next.lower !== cur.lower || next.upper !== cur.upper) {
      ranges.set(s, next);
      const list = narrowing.get(s) ?? [];
      list.push(g);
      narrowing.set(s, list);
    }
  };

  const substitute = (g: Guard): Guard => {
    const n = normalizeGuard(g.rel, g.expr.subs(replacements));
    return { ...g, rel: n.rel, expr: n.expr };
  };

  let work: Guard[] = [];
  const synthetic: Guard[] = [];

  /** Record s := e and carry s's range and divisibility over as guards on e. */
  const replace = (s: string, e: Expr, g: Guard): void => {
    replacements.set(s, e);
    replacementGuards.set(s, g);
    const one = new Map([[s, e]]);
    for (const [k, v] of replacements) if (k !== s) replacements.set(k, v.subs(one));
    const r = ranges.get(s)!;
    ranges.delete(s);
    if (Number.isFinite(r.lower)) synthetic.push({ rel: '<=', expr: sub(int(r.lower), e), kind: 'guard' });
    if (Number.isFinite(r.upper)) synthetic.push({ rel: '<=', expr: sub(e, int(r.upper)), kind: 'guard' });
    const d = divisibility.get(s);
    if (d) {
      divisibility.delete(s);
      const carried: Guard = { rel: '==', expr: mod(sub(e, int(d.offset)), d.modulus), kind: 'guard' };
      synthetic.push(d.guard.loc === undefined ? carried : { ...carried, loc: d.guard.loc });
    }
  };

  /** Try to fold one (substituted, normalised) guard into the solution; false leaves it residual. */
  const fold = (g: Guard): boolean => {
    const { rel, expr } = g;
    const lin = linearCoefficients(expr);
    if (lin && lin.coeffs.size === 1) {
      const [s, a] = [...lin.coeffs][0]!;
      const b = lin.constant;
      if (rel === '<=') {
        narrowTo(s, a > 0 ? { lower: -Infinity, upper: Math.floor(-b / a) } : { lower: Math.ceil(b / -a), upper: Infinity }, g);
        return true;
      }
      if (rel === '==') {
        if (-b % a !== 0) contradiction(g, 'has no integer solution');
        const v = -b / a;
        narrowTo(s, { lower: v, upper: v }, g);
        const d = divisibility.get(s);
        if (d && posMod(v - d.offset, d.modulus) !== 0) contradiction(g, `contradicts ${guardToString(d.guard)}`);
        replace(s, int(v), g);
        return true;
      }
      // s != v: only folds when v is an end of the range (or not an integer at all).
      if (-b % a !== 0) return true;
      const v = -b / a;
      const r = ranges.get(s)!;
      if (v < r.lower || v > r.upper) return true;
      if (v === r.lower) return (narrowTo(s, { lower: v + 1, upper: Infinity }, g), true);
      if (v === r.upper) return (narrowTo(s, { lower: -Infinity, upper: v - 1 }, g), true);
      return false;
    }
    if (lin && rel === '==' && lin.coeffs.size > 1) {
      // Eliminate the newest symbol with a unit coefficient: s1 - s0 - 1 == 0 gives s1 := s0 + 1.
      const units = [...lin.coeffs].filter(([, c]) => Math.abs(c) === 1).map(([s]) => s);
      if (units.length === 0) return false;
      units.sort(compareKeys);
      const s = units[units.length - 1]!;
      const c = lin.coeffs.get(s)!;
      // c*s + rest == 0  →  s = -rest / c
      const rest = sub(expr, scale(sym(s), c));
      replace(s, c === 1 ? neg(rest) : rest, g);
      return true;
    }
    // Mod(a*s + b, c) == r, or != r when c is 2.
    if ((rel === '==' || rel === '!=') && expr.terms.length === 1) {
      const t = expr.terms[0]!;
      const atom = t.atoms[0];
      if (t.coeff !== 1 || t.atoms.length !== 1 || atom?.kind !== 'mod') return false;
      const inner = linearInOne(atom.arg);
      if (!inner) return false;
      const c = atom.div;
      let r = 0 - expr.constant;
      if (rel === '!=') {
        if (c !== 2) return false;
        r = 1 - r;
      }
      if (r < 0 || r >= c) {
        if (rel === '==') contradiction(g, `asks a remainder of ${r} modulo ${c}`);
        return true;
      }
      const { symbol: s, a, b } = inner;
      // a*s + b ≡ r (mod c)
      const k = gcd(a, c);
      if (posMod(r - b, k) !== 0) contradiction(g, 'has no integer solution');
      const m = c / k;
      const t0 = posMod(((r - b) / k) * modInverse(posMod(a / k, m), m), m);
      // Prefer the offset the guard reads naturally (s + 1 ≡ 0 mod 3 → s = 3k - 1), as PyTorch's fixes do.
      const natural = a === 1 ? r - b : t0;
      const offset = posMod(natural - t0, m) === 0 ? natural : t0;
      const prev = divisibility.get(s);
      if (!prev) {
        divisibility.set(s, { modulus: m, offset, guard: g });
        return true;
      }
      // Combine two congruences by search over one period of the lcm.
      const l = (prev.modulus / gcd(prev.modulus, m)) * m;
      for (let x = 0; x < l; x++) {
        if (posMod(x - prev.offset, prev.modulus) === 0 && posMod(x - offset, m) === 0) {
          divisibility.set(s, { modulus: l, offset: l === prev.modulus ? prev.offset : x, guard: l === prev.modulus ? prev.guard : g });
          return true;
        }
      }
      return contradiction(g, `contradicts ${guardToString(prev.guard)}`);
    }
    return false;
  };

  work = [...guards];
  for (let pass = 0; pass < 1000; pass++) {
    const before = replacements.size + divisibility.size;
    const next: Guard[] = [];
    const queue = [...work, ...synthetic.splice(0)];
    for (const raw of queue) {
      const g = substitute(raw);
      const k = g.expr.constantValue();
      if (k !== undefined) {
        if (!holds(g.rel, k)) contradiction(raw, 'is false');
        continue;
      }
      if (!fold(g)) next.push(raw);
    }
    work = next;
    if (replacements.size + divisibility.size === before && synthetic.length === 0) break;
  }

  // Divisibility tightens range ends to the nearest admissible values.
  for (const [s, d] of divisibility) {
    const r = ranges.get(s)!;
    const lower = Number.isFinite(r.lower) ? r.lower + posMod(d.offset - r.lower, d.modulus) : r.lower;
    const upper = Number.isFinite(r.upper) ? r.upper - posMod(r.upper - d.offset, d.modulus) : r.upper;
    if (lower > upper) contradiction(d.guard, `leaves no value for ${env.debugName(s)}`);
    ranges.set(s, { lower, upper });
  }

  // What is left stays as run-time checks, unless the final ranges decide it.
  const residual: Guard[] = [];
  const seen = new Set<string>();
  for (const raw of work) {
    const g = substitute(raw);
    const k = g.expr.constantValue();
    if (k !== undefined) {
      if (!holds(g.rel, k)) contradiction(raw, 'is false');
      continue;
    }
    const decided = decideByBounds(
      g.rel,
      bounds(g.expr, (s) => ranges.get(s) ?? { lower: -Infinity, upper: Infinity }),
    );
    if (decided === true) continue;
    if (decided === false) contradiction(raw, 'is false for every value in range');
    const key = `${g.rel}|${g.expr.key}`;
    if (seen.has(key)) continue;
    seen.add(key);
    residual.push(g);
  }

  return { ranges, replacements, replacementGuards, divisibility, narrowing, residual };
}

/** `e` with the solution's replacements applied. */
export function resolve(solution: Solution, e: Expr): Expr {
  return e.subs(solution.replacements);
}

/** Whether `s` satisfies every guard, by brute force (used to test the solver). */
export function satisfiesAll(guards: readonly Guard[], env: ReadonlyMap<string, number>): boolean {
  return guards.every((g) => holds(g.rel, g.expr.evaluate(env)));
}
