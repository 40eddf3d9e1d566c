import { ValueError } from '../errors.js';
import { isPlainObject } from './plain-object.js';
import { isTensor } from './tensor-brand.js';

/**
 * Argument checks for the API edge (options objects, seeds, flags, numbers that are not op arguments).
 * Op arguments are checked by their schema in op.ts; shapes and dims by shape.ts; dtypes by dtype.ts.
 * Each check is a few comparisons, so it is cheap enough for every call; messages name the op, the
 * argument and the offending value.
 */

/** How a value reads in an error message: primitives and short arrays by value, anything else by kind. */
export function describe(x: unknown): string {
  if (isTensor(x)) return `Tensor(${x.dtype} [${x.shape.join(', ')}])`;
  if (typeof x === 'string') return `'${x.length > 40 ? `${x.slice(0, 40)}…` : x}'`;
  if (typeof x === 'number' || typeof x === 'boolean' || typeof x === 'bigint') return String(x);
  if (x === null || x === undefined) return String(x);
  if (typeof x === 'function') return `a function ${x.name || '(anonymous)'}`;
  if (Array.isArray(x)) {
    const shown = x.slice(0, 8).map((v) => (Array.isArray(v) ? '[…]' : typeof v === 'object' && v !== null ? '{…}' : describe(v)));
    return `[${shown.join(', ')}${x.length > 8 ? ', …' : ''}]`;
  }
  const ctor = (x as object).constructor?.name;
  return isPlainObject(x) || !ctor ? 'an object' : `a ${ctor}`;
}

export interface NumberRule {
  /** Smallest allowed value (inclusive). */
  readonly min?: number;
  /** Largest allowed value; `maxExclusive` makes it exclusive. */
  readonly max?: number;
  readonly maxExclusive?: boolean;
  readonly integer?: boolean;
  /** Allow ±Infinity (NaN is never allowed). */
  readonly infinite?: boolean;
}

function ruleText(r: NumberRule): string {
  const kind = r.integer ? 'an integer' : r.infinite ? 'a number' : 'a finite number';
  const lo = r.min === undefined ? '' : ` ≥ ${r.min}`;
  const hi = r.max === undefined ? '' : ` ${r.maxExclusive ? '<' : '≤'} ${r.max}`;
  return `${kind}${lo}${lo && hi ? ' and' : ''}${hi}`;
}

/** A number obeying `rule`, or a ValueError `op: name must be … , got value`. */
export function checkNumber(op: string, name: string, v: unknown, rule: NumberRule = {}): number {
  const ok =
    typeof v === 'number' &&
    !Number.isNaN(v) &&
    (rule.infinite || Number.isFinite(v)) &&
    (!rule.integer || Number.isSafeInteger(v)) &&
    (rule.min === undefined || v >= rule.min) &&
    (rule.max === undefined || (rule.maxExclusive ? v < rule.max : v <= rule.max));
  if (!ok) throw new ValueError(`${op}: ${name} must be ${ruleText(rule)}, got ${describe(v)}`);
  return v as number;
}

export function checkBoolean(op: string, name: string, v: unknown): boolean {
  if (typeof v !== 'boolean') throw new ValueError(`${op}: ${name} must be true or false, got ${describe(v)}`);
  return v;
}

/** One of the listed strings. */
export function checkChoice<T extends string>(op: string, name: string, v: unknown, choices: readonly T[]): T {
  if (typeof v !== 'string' || !choices.includes(v as T)) {
    throw new ValueError(`${op}: ${name} must be one of ${choices.map((c) => `'${c}'`).join(', ')}, got ${describe(v)}`);
  }
  return v as T;
}

export function checkFunction(op: string, name: string, v: unknown): void {
  if (typeof v !== 'function') throw new ValueError(`${op}: ${name} must be a function, got ${describe(v)}`);
}

/**
 * An options object (or undefined) whose keys are all in `allowed`; returns it (an empty object for undefined).
 * A misspelt option would otherwise be ignored silently.
 */
export function checkOptions(op: string, opts: unknown, allowed: readonly string[]): Record<string, unknown> {
  if (opts === undefined) return {};
  if (!isPlainObject(opts)) throw new ValueError(`${op}: options must be an object like { ${allowed.join(', ')} }, got ${describe(opts)}`);
  for (const k of Object.keys(opts)) {
    if (!allowed.includes(k)) throw new ValueError(`${op}: unknown option '${k}' (expected ${allowed.join(', ')})`);
  }
  return opts;
}
