import { createRequire } from 'node:module';
import type * as t from '@babel/types';

/** Babel's parser, loaded on first use: importing kiln does not load it, capturing code does. */
let parser: typeof import('@babel/parser') | undefined;
const parseExpression: (typeof import('@babel/parser'))['parseExpression'] = (code, options) =>
  (parser ??= createRequire(import.meta.url)('@babel/parser') as typeof import('@babel/parser')).parseExpression(code, options);

/** One parameter of a JS function as written in its source. */
export interface ParamInfo {
  readonly name: string;
  /** Whether the source gives a default (`y = 2`). */
  readonly hasDefault: boolean;
  /** The default when it is a literal (number, string, boolean, null, or an array of those). */
  readonly default?: unknown;
  /** `...rest` or a destructuring pattern: something a single value cannot stand in for. */
  readonly unsupported?: 'rest' | 'pattern';
}

const CACHE = new WeakMap<object, readonly ParamInfo[]>();

/**
 * The parameters of `fn`, read from its source (`Function.prototype.toString`) with Babel's parser.
 * Methods, functions, arrows and classes' `forward`s all work; native or bound functions fall back to
 * `arg0, arg1, …` from `fn.length`.
 */
export function functionParams(fn: (...a: never[]) => unknown): readonly ParamInfo[] {
  let cached = CACHE.get(fn);
  if (!cached) {
    cached = parseParams(fn);
    CACHE.set(fn, cached);
  }
  return cached;
}

function parseParams(fn: (...a: never[]) => unknown): readonly ParamInfo[] {
  const src = Function.prototype.toString.call(fn);
  const node = tryParse(`(${src})`) ?? tryParse(`({ ${src} })`);
  const fnNode = node && functionNode(node);
  if (!fnNode) return Array.from({ length: fn.length }, (_v, i) => ({ name: `arg${i}`, hasDefault: false }));
  return fnNode.params.map((p, i) => paramInfo(p, i));
}

function tryParse(code: string): t.Expression | undefined {
  try {
    return parseExpression(code, { plugins: ['classProperties', 'classPrivateProperties', 'classPrivateMethods'] });
  } catch {
    return undefined;
  }
}

function functionNode(e: t.Expression): t.Function | undefined {
  if (e.type === 'FunctionExpression' || e.type === 'ArrowFunctionExpression') return e;
  if (e.type === 'ObjectExpression' && e.properties.length === 1) {
    const p = e.properties[0]!;
    if (p.type === 'ObjectMethod') return p;
  }
  return undefined;
}

function paramInfo(p: t.Function['params'][number], i: number): ParamInfo {
  if (p.type === 'Identifier') return { name: p.name, hasDefault: false };
  if (p.type === 'AssignmentPattern' && p.left.type === 'Identifier') {
    const value = literalValue(p.right);
    return value.ok ? { name: p.left.name, hasDefault: true, default: value.value } : { name: p.left.name, hasDefault: true };
  }
  if (p.type === 'RestElement') {
    return { name: p.argument.type === 'Identifier' ? p.argument.name : `arg${i}`, hasDefault: false, unsupported: 'rest' };
  }
  return { name: `arg${i}`, hasDefault: false, unsupported: 'pattern' };
}

function literalValue(e: t.Node): { ok: true; value: unknown } | { ok: false } {
  switch (e.type) {
    case 'NumericLiteral':
    case 'StringLiteral':
    case 'BooleanLiteral':
      return { ok: true, value: e.value };
    case 'NullLiteral':
      return { ok: true, value: null };
    case 'UnaryExpression': {
      if (e.operator !== '-') return { ok: false };
      const v = literalValue(e.argument);
      return v.ok && typeof v.value === 'number' ? { ok: true, value: -v.value } : { ok: false };
    }
    case 'ArrayExpression': {
      const items = e.elements.map((x) => (x ? literalValue(x) : { ok: false as const }));
      return items.every((x) => x.ok) ? { ok: true, value: items.map((x) => (x as { value: unknown }).value) } : { ok: false };
    }
    default:
      return { ok: false };
  }
}
