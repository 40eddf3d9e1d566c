import { SerializationError, ValueError } from '../errors.js';
import { Tensor } from '../runtime/tensor.js';
import type { ConstraintResult } from './constraints.js';
import { bounds, type Expr, exprFromJSON, type ExprJSON, exprToJSON, linearInOne } from './symbolic/expr.js';
import { type Guard, guardToString, type Relation, type ShapeEnv, type Size } from './symbolic/shape-env.js';
import { resolve } from './symbolic/solve.js';

/**
 * The checks an exported program runs on its inputs before every call (PyTorch's
 * `_check_input_constraints_for_graph`), as plain JSON so a saved program carries them: each input's
 * kind, rank, dtype and per-dim size expression, the range of each dynamic dim expression, numbers and
 * other non-tensor inputs baked in at export, and the guards that could not be folded into ranges.
 * Sizes are unified left to right: the first input dim that reads a symbol binds it, later ones must
 * agree (the messages name the input path, e.g. `*args[1][0].shape[0]`).
 */

/** What the lead knows about one flattened input at export time. */
export type InputSpec =
  | { readonly kind: 'tensor'; readonly path: string; readonly shape: readonly Size[]; readonly dtype?: string }
  | { readonly kind: 'value'; readonly path: string; readonly value: number | string | boolean | null };

export type InputCheck =
  | { kind: 'tensor'; path: string; dtype?: string; shape: (number | ExprJSON)[] }
  | { kind: 'value'; path: string; value: number | string | boolean | null };

export interface InputChecks {
  inputs: InputCheck[];
  /** Ranges of dynamic dim expressions; null stands for an infinite end (JSON has no Infinity). */
  ranges: { expr: ExprJSON; lower: number | null; upper: number | null }[];
  /** Residual guards over input sizes, checked once every size is bound. */
  guards: { rel: Relation; expr: ExprJSON; text: string }[];
}

/**
 * Build the input checks from the solved env. Returns also the residual guards the run-time checks
 * cannot decide (they mention symbols no input binds, i.e. data-dependent values): the program must
 * assert those itself where the values are computed.
 */
export function buildInputChecks(
  env: ShapeEnv,
  result: ConstraintResult,
  inputs: readonly InputSpec[],
): { checks: InputChecks; unchecked: Guard[] } {
  const bound = new Set<string>();
  const ranges: InputChecks['ranges'] = [];
  const ranged = new Set<string>();
  const symbolRange = (s: string) => result.rangeConstraints.get(s) ?? { lower: -Infinity, upper: Infinity };
  const out: InputCheck[] = inputs.map((inp) => {
    if (inp.kind === 'value') return { kind: 'value', path: inp.path, value: inp.value };
    const shape = inp.shape.map((d) => {
      const e = resolve(result.solution, env.toExpr(d));
      const k = e.constantValue();
      if (k !== undefined) return k;
      const lin = linearInOne(e);
      if (lin) bound.add(lin.symbol);
      // Every dynamic dim's range, from its symbols' solved ranges.
      const iv = bounds(e, symbolRange);
      if (!ranged.has(e.key) && (iv.lower !== -Infinity || iv.upper !== Infinity)) {
        ranged.add(e.key);
        ranges.push({
          expr: exprToJSON(e),
          lower: Number.isFinite(iv.lower) ? iv.lower : null,
          upper: Number.isFinite(iv.upper) ? iv.upper : null,
        });
      }
      return exprToJSON(e);
    });
    const c: InputCheck = { kind: 'tensor', path: inp.path, shape };
    if (inp.dtype !== undefined) c.dtype = inp.dtype;
    return c;
  });
  const guards: InputChecks['guards'] = [];
  const unchecked: Guard[] = [];
  for (const g of result.solution.residual) {
    if ([...g.expr.freeSymbols()].every((s) => bound.has(s))) {
      guards.push({ rel: g.rel, expr: exprToJSON(g.expr), text: `${guardToString(g, (s) => env.sourceOf(s))} (${guardToString(g)})` });
    } else unchecked.push(g);
  }
  return { checks: { inputs: out, ranges, guards }, unchecked };
}

interface Parsed {
  inputs: ({ kind: 'tensor'; path: string; dtype?: string; shape: (number | Expr)[] } | { kind: 'value'; path: string; value: unknown })[];
  ranges: Map<string, { lower: number; upper: number }>;
  guards: { rel: Relation; expr: Expr; text: string }[];
}

const parsedCache = new WeakMap<InputChecks, Parsed>();

/** Validate and parse (once per checks object); malformed checks throw SerializationError. */
function parse(checks: InputChecks): Parsed {
  const cached = parsedCache.get(checks);
  if (cached) return cached;
  const bad = (why: string): never => {
    throw new SerializationError(`input checks: ${why}`);
  };
  if (
    typeof checks !== 'object' ||
    checks === null ||
    !Array.isArray(checks.inputs) ||
    !Array.isArray(checks.ranges) ||
    !Array.isArray(checks.guards)
  ) {
    return bad('expected { inputs, ranges, guards }');
  }
  const inputs: Parsed['inputs'] = checks.inputs.map((c, i) => {
    if (typeof c !== 'object' || c === null || typeof c.path !== 'string') return bad(`input ${i} has no path`);
    if (c.kind === 'value') return { kind: 'value', path: c.path, value: c.value };
    if (c.kind !== 'tensor' || !Array.isArray(c.shape)) return bad(`input ${i} (${c.path}) is neither a tensor nor a value check`);
    const shape = c.shape.map((d) => {
      if (typeof d === 'number') {
        if (!Number.isSafeInteger(d) || d < 0) return bad(`input ${c.path} has size ${d}`);
        return d;
      }
      return exprFromJSON(d, `input checks of ${c.path}`);
    });
    const t: Parsed['inputs'][number] = { kind: 'tensor', path: c.path, shape };
    if (c.dtype !== undefined) {
      if (typeof c.dtype !== 'string') return bad(`input ${c.path} has dtype ${String(c.dtype)}`);
      t.dtype = c.dtype;
    }
    return t;
  });
  const ranges = new Map<string, { lower: number; upper: number }>();
  for (const r of checks.ranges) {
    const okEnd = (v: unknown) => v === null || (typeof v === 'number' && Number.isSafeInteger(v));
    if (typeof r !== 'object' || r === null || !okEnd(r.lower) || !okEnd(r.upper)) return bad('a range is malformed');
    ranges.set(exprFromJSON(r.expr, 'input check range').key, { lower: r.lower ?? -Infinity, upper: r.upper ?? Infinity });
  }
  const guards = checks.guards.map((g) => {
    if (typeof g !== 'object' || g === null || (g.rel !== '==' && g.rel !== '!=' && g.rel !== '<=') || typeof g.text !== 'string') {
      return bad('a guard is malformed');
    }
    return { rel: g.rel, expr: exprFromJSON(g.expr, 'input check guard'), text: g.text };
  });
  const parsed: Parsed = { inputs, ranges, guards };
  parsedCache.set(checks, parsed);
  return parsed;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'object';
  return typeof v;
}

function show(v: unknown): string {
  return typeof v === 'string' ? JSON.stringify(v) : String(v);
}

function shapeText(shape: readonly (number | Expr)[]): string {
  return `[${shape.map((d) => d.toString()).join(', ')}]`;
}

/** Check flattened inputs against `checks`; throws ValueError with PyTorch's texts on the first mismatch. */
export function runInputChecks(checks: InputChecks, flat: readonly unknown[]): void {
  const p = parse(checks);
  if (flat.length !== p.inputs.length)
    throw new ValueError(`Unexpected number of inputs (expected ${p.inputs.length}, got ${flat.length})`);
  const values = new Map<string, number>();
  const later: { path: string; expr: Expr; arg: number }[] = [];

  const checkDim = (expr: number | Expr, arg: number, path: string): void => {
    if (typeof expr === 'number') {
      if (arg !== expr) {
        throw new ValueError(
          `Expected input at ${path} to be equal to ${expr}, but got ${arg}. ` +
            'If this dimension should be dynamic, export again with a Dim for it in dynamicShapes',
        );
      }
      return;
    }
    const free = [...expr.freeSymbols()];
    if (free.length !== 1) return void later.push({ path, expr, arg });
    const s = free[0]!;
    if (values.has(s)) {
      const v = expr.evaluate(values);
      if (arg !== v) throw new ValueError(`Expected input at ${path} to be equal to ${v}, but got ${arg}`);
    } else {
      const lin = linearInOne(expr);
      if (!lin) return void later.push({ path, expr, arg });
      const v = (arg - lin.b) / lin.a;
      if (!Number.isInteger(v))
        throw new ValueError(`Expected input ${path} = ${arg} to be of the form ${expr.toString()}, where ${s} is an integer`);
      values.set(s, v);
    }
    const r = p.ranges.get(expr.key);
    if (r) {
      // PyTorch lets dims be 0/1 at run time: lower bounds up to 2 are not checked.
      if (r.lower > 2 && arg < r.lower) throw new ValueError(`Expected input at ${path} to be >= ${r.lower}, but got ${arg}`);
      if (r.upper !== Infinity && arg > r.upper) throw new ValueError(`Expected input at ${path} to be <= ${r.upper}, but got ${arg}`);
    }
  };

  p.inputs.forEach((c, i) => {
    const arg = flat[i];
    if (c.kind === 'value') {
      const same = typeof arg === typeof c.value && (arg === c.value || (Number.isNaN(arg) && Number.isNaN(c.value)));
      if (!same) throw new ValueError(`Expected input at ${c.path} to be equal to ${show(c.value)}, but got ${show(arg)}`);
      return;
    }
    if (!(arg instanceof Tensor)) throw new ValueError(`Expected input at ${c.path} to be a tensor, but got ${describe(arg)}`);
    const shape = arg.shape;
    if (shape.length !== c.shape.length) {
      throw new ValueError(
        `Unexpected number of dimensions in input at ${c.path}.shape (expected ${shapeText(c.shape)}, got [${shape.join(', ')}])`,
      );
    }
    if (c.dtype !== undefined && arg.dtype !== c.dtype)
      throw new ValueError(`Expected input at ${c.path}.dtype to be ${c.dtype}, but got ${arg.dtype}`);
    c.shape.forEach((d, j) => checkDim(d, shape[j]!, `${c.path}.shape[${j}]`));
  });

  for (const { path, expr, arg } of later) {
    const missing = [...expr.freeSymbols()].filter((s) => !values.has(s));
    if (missing.length)
      throw new ValueError(
        `Cannot check input at ${path}: its size ${expr.toString()} uses ${missing.join(', ')}, which no input determines`,
      );
    const v = expr.evaluate(values);
    if (arg !== v) throw new ValueError(`Expected input at ${path} to be equal to ${v}, but got ${arg}`);
  }
  for (const g of p.guards) {
    const v = g.expr.evaluate(values);
    const ok = g.rel === '==' ? v === 0 : g.rel === '!=' ? v !== 0 : v <= 0;
    if (!ok) {
      const got = [...g.expr.freeSymbols()].map((s) => `${s} = ${values.get(s)}`).join(', ');
      throw new ValueError(`Expected the input sizes to satisfy ${g.text}, but got ${got}`);
    }
  }
}

/**
 * The run-time check of a data-dependent value against its range (what an exported program's assertion
 * node does for `item()` values narrowed by `check`): PyTorch's "Invalid value range for 30 between [4, 7]".
 */
export function checkValueRange(value: number, lower: number, upper: number): void {
  if (!(value >= lower && value <= upper)) throw new ValueError(`Invalid value range for ${value} between [${lower}, ${upper}].`);
}

/** The checks of a saved program, each field type-checked (a SerializationError names the bad one). */
export function parseInputChecks(v: unknown, where: string): InputChecks {
  try {
    parse(v as InputChecks);
  } catch (e) {
    if (e instanceof SerializationError) throw new SerializationError(`${where}: ${e.message}`);
    throw new SerializationError(`${where}: ${(e as Error).message}`);
  }
  return v as InputChecks;
}
