import { ConstraintViolationError } from '../errors.js';
import { derivedSyntax, inputDimBindings, readableDim } from './dim.js';
import { bounds, type Expr, linearInOne } from './symbolic/expr.js';
import { decideByBounds, type Guard, guardToString, type Range, type ShapeEnv } from './symbolic/shape-env.js';
import { type Divisibility, resolve, satisfiesAll, type Solution, solve } from './symbolic/solve.js';

/**
 * After tracing: solve the guards and check the solution against the declared Dims, throwing
 * ConstraintViolationError with PyTorch's texts ("Constraints violated (dim)! … Suggested fixes: …",
 * the fixes written in kiln's syntax) when a guard narrows, specialises or relates a Dim the user
 * declared free. Otherwise returns the program's range constraints.
 */

export interface RangeConstraint {
  readonly lower: number;
  /** Infinity when unbounded. */
  readonly upper: number;
}

export interface InputRange {
  /** An input dim's size expression (after the solution's replacements). */
  readonly expr: Expr;
  readonly lower: number;
  readonly upper: number;
}

export interface ConstraintResult {
  readonly solution: Solution;
  /** Keyed by symbol name (`s0`, `u0`) and by each derived input expression (`s0 + 1`), as PyTorch's `range_constraints`. */
  readonly rangeConstraints: Map<string, RangeConstraint>;
  /** The range of every non-constant input dim expression, for the run-time input checks. */
  readonly inputRanges: InputRange[];
}

interface Violation {
  readonly name: string;
  readonly msg: string;
}

const at = (g: Guard | undefined): string => (g?.loc ? ` (at ${g.loc})` : '');

/** The most values of a symbol `holdsThroughout` tries one by one. */
const ENUMERABLE = 100_000;

/**
 * Whether a guard on the one symbol `s` holds at every value of `range`, tried one by one where the range is
 * finite and small: interval bounds cannot show that `s0//2 - s0 <= 0` always holds (they bound s0//2 and s0 apart).
 */
function holdsThroughout(g: Guard, s: string, range: Range): boolean {
  if (!Number.isFinite(range.lower) || !Number.isFinite(range.upper) || range.upper - range.lower > ENUMERABLE) return false;
  const values = new Map<string, number>();
  for (let v = range.lower; v <= range.upper; v++) {
    values.set(s, v);
    if (!satisfiesAll([g], values)) return false;
  }
  return true;
}

export function checkConstraints(env: ShapeEnv, solution: Solution = solve(env)): ConstraintResult {
  const dbg = (s: string) => env.debugName(s);
  const src = (s: string) => env.sourceOf(s);
  const violations: Violation[] = [];
  const rootFixes: string[] = [];
  const fixes: string[] = [];

  const rangeText = (s: string): string => {
    const d = env.symbol(s).declared;
    let text = `${dbg(s)} = ${src(s)} in the specified range`;
    const lower = d.lower > 2 ? d.lower : undefined;
    const upper = d.upper !== Infinity ? d.upper : undefined;
    if (lower !== undefined && upper !== undefined) text += ` ${lower} <= ${dbg(s)} <= ${upper}`;
    else if (upper !== undefined) text += ` ${dbg(s)} <= ${upper}`;
    else if (lower !== undefined) text += ` ${lower} <= ${dbg(s)}`;
    return text;
  };

  const declared = [...env.symbols.values()].filter((i) => !i.unbacked && i.dimName !== undefined);
  // A free Dim symbol that must be a multiple: it becomes the new root `_name` of the suggested fix.
  const newRoot = new Map<string, { name: string; modulus: number; offset: number }>();
  for (const info of declared) {
    const d = solution.divisibility.get(info.name);
    if (d) newRoot.set(info.name, { name: `_${dbg(info.name)}`, modulus: d.modulus, offset: d.offset });
  }
  /** `a*t + b` in kiln's derived-dim syntax, through t's new root when t has one. */
  const relationFix = (t: string, a: number, b: number): string | undefined => {
    const nr = newRoot.get(t);
    if (nr) return derivedSyntax(nr.name, a * nr.modulus, a * nr.offset + b);
    return a > 0 ? derivedSyntax(dbg(t), a, b) : undefined;
  };

  const singleSymbolResidual = new Map<string, Guard[]>();
  for (const g of solution.residual) {
    const free = [...g.expr.freeSymbols()];
    if (free.length !== 1) continue;
    const list = singleSymbolResidual.get(free[0]!) ?? [];
    list.push(g);
    singleSymbolResidual.set(free[0]!, list);
  }

  for (const info of declared) {
    const s = info.name;
    const replacement = solution.replacements.get(s);
    if (replacement) {
      const g = solution.replacementGuards.get(s);
      const k = replacement.constantValue();
      if (k !== undefined) {
        violations.push({
          name: dbg(s),
          msg: `You marked ${dbg(s)} as dynamic but your code specialized it to be a constant (${k})${at(g)}.`,
        });
        fixes.push(`${dbg(s)} = ${k}`);
        continue;
      }
      const lin = linearInOne(replacement);
      const t = lin ? env.symbols.get(lin.symbol) : undefined;
      if (lin && t && !t.unbacked) {
        if (lin.a === 1 && lin.b === 0) {
          violations.push({
            name: dbg(s),
            msg: `The values of ${dbg(s)} = ${src(s)} and ${dbg(t.name)} = ${src(t.name)} must always be equal${at(g)}.`,
          });
        } else {
          violations.push({
            name: dbg(s),
            msg:
              `The values of ${dbg(s)} = ${src(s)} must always be related to the values of ${dbg(t.name)} = ${src(t.name)} ` +
              `by ${dbg(s)} = ${replacement.toString(dbg)}${at(g)}.`,
          });
        }
        const fix = relationFix(t.name, lin.a, lin.b);
        if (fix !== undefined) fixes.push(`${dbg(s)} = ${fix}`);
        continue;
      }
      violations.push({
        name: dbg(s),
        msg: `The values of ${dbg(s)} = ${src(s)} must always be equal to ${replacement.toString(dbg)}${at(g)}, which a Dim cannot express; make ${dbg(s)} static.`,
      });
      continue;
    }
    const r = solution.ranges.get(s)!;
    const narrowed = r.lower > info.initial.lower || r.upper < info.initial.upper;
    const d = solution.divisibility.get(s);
    if (narrowed) {
      for (const g of solution.narrowing.get(s) ?? []) {
        const implied = decideByBounds(
          g.rel,
          bounds(g.expr, (x) => (x === s ? info.initial : (solution.ranges.get(x) ?? { lower: -Infinity, upper: Infinity }))),
        );
        if (implied === true) continue;
        violations.push({
          name: dbg(s),
          msg: `Not all values of ${rangeText(s)} satisfy the generated guard ${guardToString(g, src)}${at(g)}.`,
        });
      }
    }
    if (d) {
      violations.push({
        name: dbg(s),
        msg: `Not all values of ${rangeText(s)} satisfy the generated guard ${guardToString(d.guard, src)}${at(d.guard)}.`,
      });
    }
    // Guards on this Dim alone that fold into no range (s0 != 5, s0//2 <= 3) are violations too, as in PyTorch.
    const other = singleSymbolResidual.get(s) ?? [];
    for (const g of other) {
      if (holdsThroughout(g, s, info.initial)) continue; // s0//2 <= s0: implied by the range, though no bound shows it
      violations.push({
        name: dbg(s),
        msg: `Not all values of ${rangeText(s)} satisfy the generated guard ${guardToString(g, src)}${at(g)}.`,
      });
    }
    if (other.length) {
      const exact = exactRange(r, other, d);
      if (exact)
        fixes.push(`${dbg(s)} = ${readableDim(dbg(s), exact.lower === r.lower ? reportedLower(env, s, r) : exact.lower, exact.upper)}`);
      continue;
    }
    if (d) {
      const nr = newRoot.get(s)!;
      const kLower = Number.isFinite(r.lower) ? Math.ceil((r.lower - nr.offset) / nr.modulus) : 0;
      const kUpper = Number.isFinite(r.upper) ? Math.floor((r.upper - nr.offset) / nr.modulus) : Infinity;
      rootFixes.push(`${nr.name} = ${readableDim(nr.name, Math.max(kLower, 0), kUpper)}`);
      fixes.push(`${dbg(s)} = ${derivedSyntax(nr.name, nr.modulus, nr.offset)}`);
    } else if (narrowed) {
      fixes.push(`${dbg(s)} = ${readableDim(dbg(s), reportedLower(env, s, r), r.upper)}`);
    }
  }

  if (violations.length) {
    const names = [...new Set(violations.map((v) => v.name))].sort().join(', ');
    let msg = `Constraints violated (${names})!\n${violations.map((v) => `  - ${v.msg}`).join('\n')}`;
    const all = [...rootFixes, ...fixes];
    if (all.length) msg += `\n\nSuggested fixes:\n  ${all.join('\n  ')}`;
    throw new ConstraintViolationError(msg);
  }

  const rangeConstraints = new Map<string, RangeConstraint>();
  for (const [s, r] of solution.ranges) rangeConstraints.set(s, { lower: reportedLower(env, s, r), upper: r.upper });
  const inputRanges: InputRange[] = [];
  const seen = new Set<string>();
  for (const b of inputDimBindings(env)) {
    const e = resolve(solution, b.expr);
    if (e.isConstant()) continue;
    const key = e.toString();
    if (seen.has(key)) continue;
    seen.add(key);
    const iv = bounds(e, (x) => rangeConstraints.get(x) ?? { lower: -Infinity, upper: Infinity });
    inputRanges.push({ expr: e, lower: iv.lower, upper: iv.upper });
    if (!rangeConstraints.has(key)) rangeConstraints.set(key, { lower: iv.lower, upper: iv.upper });
  }
  return { solution, rangeConstraints, inputRanges };
}

/**
 * The values of a range that satisfy `guards` (and a divisibility), when they form one interval that a
 * Dim can state; found by enumeration, so only for ranges of at most 100000 values.
 */
function exactRange(r: Range, guards: readonly Guard[], d: Divisibility | undefined): Range | undefined {
  if (!Number.isFinite(r.lower) || !Number.isFinite(r.upper) || r.upper - r.lower > 100000) return undefined;
  let lower = Infinity;
  let upper = -Infinity;
  let count = 0;
  for (let v = r.lower; v <= r.upper; v++) {
    if (d && (((v - d.offset) % d.modulus) + d.modulus) % d.modulus !== 0) continue;
    const env = new Map<string, number>();
    if (
      !guards.every((g) => {
        for (const x of g.expr.freeSymbols()) env.set(x, v);
        const k = g.expr.evaluate(env);
        return g.rel === '==' ? k === 0 : g.rel === '!=' ? k !== 0 : k <= 0;
      })
    )
      continue;
    lower = Math.min(lower, v);
    upper = Math.max(upper, v);
    count++;
  }
  return count > 0 && count === upper - lower + 1 ? { lower, upper } : undefined;
}

/**
 * The lower bound reported for a symbol: the traced range starts at 2 (0/1 specialise), but where the
 * guards did not raise it and the Dim allows less, the Dim's own min is reported, as PyTorch's
 * range_constraints do (`Dim('dx', min=1, max=2)` reports [1, 2]).
 */
function reportedLower(env: ShapeEnv, s: string, r: Range): number {
  const info = env.symbol(s);
  if (!info.unbacked && r.lower === info.initial.lower && info.declared.lower < info.initial.lower) return info.declared.lower;
  return r.lower;
}
