import type { parseExpression as ParseExpression } from '@babel/parser';
import type * as t from '@babel/types';
import { createRequire } from 'node:module';

/** Babel's parser, loaded on the first export rather than when kiln/export is imported (keeps Babel off the run-time path). */
let parser: { parseExpression: typeof ParseExpression } | undefined;
const loadParser = () => (parser ??= createRequire(import.meta.url)('@babel/parser') as { parseExpression: typeof ParseExpression });

/**
 * The parameter names of a module's `forward`, read from its source as PyTorch reads Python's signature:
 * exported placeholders are named after them (`x`, `x_0`, `x_foo_0`). A rest parameter `...args` names its
 * entries `args_0`, `args_1`, …; a destructured parameter, or a source that cannot be read, is `arg<i>`.
 */
export function forwardParamNames(fn: (...a: never[]) => unknown): { names: string[]; rest: string | undefined } {
  const params = parseParams(Function.prototype.toString.call(fn));
  if (!params) return { names: [], rest: 'args' };
  const names: string[] = [];
  let rest: string | undefined;
  params.forEach((p, i) => {
    if (p.type === 'RestElement') rest = p.argument.type === 'Identifier' ? p.argument.name : 'args';
    else if (p.type === 'Identifier') names.push(p.name);
    else if (p.type === 'AssignmentPattern' && p.left.type === 'Identifier') names.push(p.left.name);
    else names.push(`arg${i}`);
  });
  return { names, rest };
}

function parseParams(src: string): t.Node[] | undefined {
  // a class method prints as `forward(x) { … }` (an object method in an object literal); functions and arrows parse as they are
  for (const wrapped of [`(${src})`, `({ ${src} })`]) {
    try {
      const e = loadParser().parseExpression(wrapped, { plugins: ['typescript'] });
      if (e.type === 'FunctionExpression' || e.type === 'ArrowFunctionExpression') return e.params;
      if (e.type === 'ObjectExpression' && e.properties[0]?.type === 'ObjectMethod') return e.properties[0].params;
    } catch {
      // try the next form
    }
  }
  return undefined;
}
