import type { NodePath, PluginObj, PluginPass } from '@babel/core';
import type * as t from '@babel/types';
import { existsSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/**
 * The Babel plugin `kiln build` adds last: relative import specifiers that Node cannot load once the build
 * has turned `.ts` into `.js` — `./model.ts` and extensionless `./model` or `./layers` (a folder with an
 * index), which `kiln/register` and bundlers resolve — become the emitted file (`./model.js`,
 * `./layers/index.js`). Static imports, re-exports and `import('…')` with a literal are rewritten;
 * specifiers that already name an existing file (`./data.json`, `./model.js`) are left alone.
 */
const EMITTED: Record<string, string> = { '.ts': '.js', '.tsx': '.js', '.mts': '.mjs', '.cts': '.cjs' };
const TRY = ['.ts', '.tsx', '.mts', '.cts', '.js', '.mjs', '.cjs'];

const isFile = (p: string) => existsSync(p) && statSync(p).isFile();
const isDir = (p: string) => existsSync(p) && statSync(p).isDirectory();
const emitted = (ext: string) => EMITTED[ext] ?? ext;

/** The specifier the built `from` file must use for `spec`, or undefined to keep it. */
export function emittedSpecifier(spec: string, from: string): string | undefined {
  if (!spec.startsWith('./') && !spec.startsWith('../')) return undefined;
  const ts = /\.([cm]?tsx?)$/.exec(spec);
  if (ts && !spec.endsWith('.d.ts')) return spec.slice(0, -ts[0].length) + emitted(ts[0]);
  const abs = resolve(dirname(from), spec);
  if (isFile(abs)) return undefined;
  for (const ext of TRY) if (isFile(abs + ext)) return spec + emitted(ext);
  if (isDir(abs)) {
    for (const ext of TRY) if (isFile(resolve(abs, `index${ext}`))) return `${spec.replace(/\/$/, '')}/index${emitted(ext)}`;
  }
  return undefined;
}

type WithSource = t.ImportDeclaration | t.ExportNamedDeclaration | t.ExportAllDeclaration;

export function rewriteRelativeImports(): PluginObj {
  const fix = (lit: t.StringLiteral | null | undefined, state: PluginPass) => {
    if (!lit || !state.filename) return;
    const to = emittedSpecifier(lit.value, state.filename);
    if (to !== undefined) lit.value = to;
  };
  const source = (path: NodePath<WithSource>, state: PluginPass) => fix(path.node.source, state);
  return {
    name: 'kiln-build-import-specifiers',
    visitor: {
      ImportDeclaration: source,
      ExportNamedDeclaration: source,
      ExportAllDeclaration: source,
      CallExpression(path, state) {
        const arg = path.node.arguments[0];
        if (path.node.callee.type === 'Import' && arg?.type === 'StringLiteral') fix(arg, state);
      },
      ImportExpression(path, state) {
        if (path.node.source.type === 'StringLiteral') fix(path.node.source, state);
      },
    },
  };
}
