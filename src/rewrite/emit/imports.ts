import { statement } from '@babel/template';
import type { NodePath } from '@babel/traverse';
import * as t from '@babel/types';

/**
 * The top of a rewritten file: the runtime's import, then the plans of rewritten functions with their
 * `attach` calls, before the first statement that is not an import (function declarations hoist, so a
 * `compile(f)` may run before `f`'s own line).
 */
const runtimeImport = statement(`import * as %%runtime%% from %%source%%;`);

export function emitPrologue(program: NodePath<t.Program>, runtime: t.Identifier, source: string, hoisted: t.Statement[]): void {
  program.unshiftContainer('body', runtimeImport({ runtime: t.cloneNode(runtime), source: t.stringLiteral(source) }));
  if (!hoisted.length) return;
  const body = program.get('body');
  const first = body.find((st) => !st.isImportDeclaration());
  if (!first) {
    program.pushContainer('body', hoisted);
    return;
  }
  // A comment between the imports and `first` belongs to `first` (e.g. `/** @compile */`), not the import.
  const prev = body[body.indexOf(first) - 1];
  const leading = new Set(first.node.leadingComments ?? []);
  if (prev?.node.trailingComments) prev.node.trailingComments = prev.node.trailingComments.filter((c) => !leading.has(c));
  first.insertBefore(hoisted);
}
