import test from 'ava';
import { transformSync } from '@babel/core';
import { parseExpression } from '@babel/parser';
import type * as t from '@babel/types';
import ts from 'typescript';
import { functionParams, type ParamInfo } from '../src/analysis/signature.js';

/**
 * The dependency-free parameter reader (issue 14, item 7) against Babel's parser, which it replaced on the
 * run-time path: the same names, defaults, rest and pattern flags for every shape Function.prototype.toString
 * gives, on sources written here and on what tsc, Babel and esbuild (this file, run through tsx) emit.
 */
type Fn = (...a: never[]) => unknown;

/** The reader this module had before: Babel's parser over `(${src})` or `({ ${src} })`. */
function babelParams(fn: Fn): ParamInfo[] {
  const src = Function.prototype.toString.call(fn);
  const parse = (code: string) => {
    try {
      return parseExpression(code, { plugins: ['classProperties', 'classPrivateProperties', 'classPrivateMethods'] });
    } catch {
      return undefined;
    }
  };
  const node = parse(`(${src})`) ?? parse(`({ ${src} })`);
  let f: t.Function | undefined;
  if (node?.type === 'FunctionExpression' || node?.type === 'ArrowFunctionExpression') f = node;
  else if (node?.type === 'ObjectExpression' && node.properties.length === 1 && node.properties[0]!.type === 'ObjectMethod')
    f = node.properties[0];
  if (!f) return Array.from({ length: fn.length }, (_v, i) => ({ name: `arg${i}`, hasDefault: false }));
  return f.params.map((p, i): ParamInfo => {
    if (p.type === 'Identifier') return { name: p.name, hasDefault: false };
    if (p.type === 'AssignmentPattern' && p.left.type === 'Identifier') {
      const v = literal(p.right);
      return v.ok ? { name: p.left.name, hasDefault: true, default: v.value } : { name: p.left.name, hasDefault: true };
    }
    if (p.type === 'RestElement')
      return { name: p.argument.type === 'Identifier' ? p.argument.name : `arg${i}`, hasDefault: false, unsupported: 'rest' };
    return { name: `arg${i}`, hasDefault: false, unsupported: 'pattern' };
  });
}

function literal(e: t.Node): { ok: true; value: unknown } | { ok: false } {
  switch (e.type) {
    case 'NumericLiteral':
    case 'StringLiteral':
    case 'BooleanLiteral':
      return { ok: true, value: e.value };
    case 'NullLiteral':
      return { ok: true, value: null };
    case 'UnaryExpression': {
      const v = e.operator === '-' ? literal(e.argument) : { ok: false as const };
      return v.ok && typeof v.value === 'number' ? { ok: true, value: -v.value } : { ok: false };
    }
    case 'ArrayExpression': {
      const items = e.elements.map((x) => (x ? literal(x) : { ok: false as const }));
      return items.every((x) => x.ok) ? { ok: true, value: items.map((x) => (x as { value: unknown }).value) } : { ok: false };
    }
    default:
      return { ok: false };
  }
}

/** Functions from source text, evaluated as an expression (so methods come from an object or class). */
const evalFn = (expr: string): Fn => (0, eval)(`(${expr})`) as Fn;

const SOURCES: Record<string, string> = {
  'plain function': 'function f(a, b) { return a + b; }',
  'anonymous function, no parameters': 'function () {}',
  generator: 'function* g(a, b = 1) {}',
  'async generator': 'async function* g(a, ...rest) {}',
  'async function': 'async function f(x, y = -2.5) {}',
  'arrow with parens': '(a, b) => a',
  'arrow without parens': 'x => x * 2',
  'async arrow without parens': 'async x => x',
  'arrow whose parameter is named async': 'async => async',
  'async arrow with parens': 'async (a, b = [1, [2, 3]]) => a',
  'arrow with a body in parens': '(x) => (x)',
  'defaults of every literal kind': `function f(a = 1, b = 'two', c = "three", d = true, e = null, g = [1, -2, 'x'], h = 0x1F, i = 1e-5, j = .5, k = 1_000, l = (4))
    {}`,
  'defaults that are not literals': 'function f(a = Math.max(1, 2), b = undefined, c = [x], d = {}, e = -"1", f = 1n, g = `t`) {}',
  'defaults with nested parens, brackets and strings': `function f(a = g(1, (2), [3, ')']), b = { k: '(', l: [')'] }, c = "a,b", d = 'it\\'s', e) {}`,
  'defaults with template literals': 'function f(a = `x${g(")", `${"("}`)}`, b = `,`, c) {}',
  'defaults with a regular expression': 'function f(a = /[(,]/g, b = 2 / 1, c) {}',
  'comments in the list': 'function f(a /* (first, */, // second )\n b = 2 /* , c */) {}',
  'string escapes': String.raw`function f(a = '\x41\u0042\u{43}\n\t"', b = "\\") {}`,
  destructuring: 'function f({ a, b: [c] }, [d, e] = [1, 2], g) {}',
  'rest of a pattern': 'function f(a, ...[b, c]) {}',
  'trailing comma': 'function f(a, b,) {}',
  'object method': '{ forward(x, scale = 2) { return x; } }.forward',
  'object getter/setter pair': 'Object.getOwnPropertyDescriptor({ set v(value) {} }, "v").set',
  'object async generator method': '{ async *gen(a, b) {} }.gen',
  'object method with a string key': '{ "odd (key)"(a) {} }["odd (key)"]',
  'object method with a computed key': `{ [String('f') + ('(')](a, b) {} }['f(']`,
  'object method named async': '{ async(a) {} }.async',
  'class method': 'class { forward(x, y = 3) { return x; } }.prototype.forward',
  'static class method': 'class { static make(a, b) {} }.make',
  'class (no parameter list of its own)': 'class A { constructor(a, b) {} }',
  'bound function': 'function f(a, b) {}.bind(null)',
  'native function': 'Math.max',
};

for (const [name, src] of Object.entries(SOURCES)) {
  test(`reads the parameters Babel reads: ${name}`, (t) => {
    const fn = evalFn(src);
    t.deepEqual(functionParams(fn), babelParams(fn));
  });
}

test('a private method reads its names (Babel, given `({ #p() {} })`, fell back to arg0, arg1)', (t) => {
  const fn = evalFn('new (class { #p(q, r = 1) {} get p() { return this.#p; } })().p');
  t.deepEqual(functionParams(fn), [
    { name: 'q', hasDefault: false },
    { name: 'r', hasDefault: true, default: 1 },
  ]);
});

test('what the reader gives for defaults, rest and patterns', (t) => {
  const fn = evalFn("function f(a, b = [1, -2], c = 'x', { d }, ...rest) {}");
  t.deepEqual(functionParams(fn), [
    { name: 'a', hasDefault: false },
    { name: 'b', hasDefault: true, default: [1, -2] },
    { name: 'c', hasDefault: true, default: 'x' },
    { name: 'arg3', hasDefault: false, unsupported: 'pattern' },
    { name: 'rest', hasDefault: false, unsupported: 'rest' },
  ]);
  t.deepEqual(functionParams(Math.max), [
    { name: 'arg0', hasDefault: false },
    { name: 'arg1', hasDefault: false },
  ]);
});

const TS_SOURCE = `
  export class Model {
    forward(x: number, scale: number = 2, opts: { k: [number, string] } = { k: [1, ')'] }, ...more: number[]): number {
      return x;
    }
    async step({ a }: { a: number }, lr = 1e-3): Promise<void> {}
  }
  export const arrow = <T,>(input: T, flag = false): T => input;
  export function plain(a: string = 'a,b', b?: number) {}
`;

/** The exports of `js` (CommonJS or ESM output, with its `export`s turned into assignments). */
function load(js: string): Record<string, unknown> {
  const exports: Record<string, unknown> = {};
  const body = js.replace(
    /^export (const|class|function) (\w+)/gm,
    (_m, kw: string, name: string) => `exports.${name} = ${kw === 'const' ? '' : `${kw} `}${name}`,
  );
  new Function('exports', 'require', body)(exports, () => ({}));
  return exports;
}

function shapesOf(exports: Record<string, unknown>): Fn[] {
  const Model = exports.Model as new () => { forward: Fn; step: Fn };
  return [Model.prototype.forward, Model.prototype.step, exports.arrow as Fn, exports.plain as Fn];
}

for (const target of [ts.ScriptTarget.ES2022, ts.ScriptTarget.ES2015]) {
  test(`reads tsc output (target ${ts.ScriptTarget[target]}) as Babel does`, (t) => {
    const js = ts.transpileModule(TS_SOURCE, { compilerOptions: { target, module: ts.ModuleKind.CommonJS } }).outputText;
    for (const fn of shapesOf(load(js))) t.deepEqual(functionParams(fn), babelParams(fn), fn.toString());
  });
}

test("reads Babel's TypeScript output as Babel does", (t) => {
  const js = transformSync(TS_SOURCE, {
    configFile: false,
    babelrc: false,
    filename: 'model.ts',
    presets: [['@babel/preset-typescript', {}]],
  })!.code!;
  for (const fn of shapesOf(load(js))) t.deepEqual(functionParams(fn), babelParams(fn), fn.toString());
});

/** Compiled by esbuild (tsx runs this file through it): its output shapes. */
class EsbuildShapes {
  forward(x: number, scale: number = 2, opts: { k: [number, string] } = { k: [1, ')'] }, ...more: number[]): number {
    return x + scale + opts.k[0] + more.length;
  }
  async step({ a }: { a: number }, lr = 1e-3): Promise<number> {
    return a * lr;
  }
}
const esArrow = <T>(input: T, flag = false): T => (flag ? input : input);

test('reads esbuild output (this file, through tsx) as Babel does', (t) => {
  const fns = [EsbuildShapes.prototype.forward, EsbuildShapes.prototype.step, esArrow] as Fn[];
  for (const fn of fns) t.deepEqual(functionParams(fn), babelParams(fn), fn.toString());
  t.deepEqual(
    functionParams(EsbuildShapes.prototype.forward as Fn).map((p) => p.name),
    ['x', 'scale', 'opts', 'more'],
  );
});
