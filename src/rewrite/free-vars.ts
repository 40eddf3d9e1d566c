import type { Binding, NodePath, Scope } from '@babel/traverse';
import * as t from '@babel/types';
import type { FileContext } from '../analysis/file-context.js';

/**
 * Free variables the runtime must guard: a captured graph bakes in whatever it read, so every read of state
 * that can change between calls goes through a scope object (`_kiln.scope({ temperature: () => temperature })`)
 * whose getters let the runtime record the read and guard it (see src/compile/free-vars.ts).
 *
 * Which reads: inside functions (not constructors), reads of a file's module-level `let`/`var`, of `const`s
 * that hold objects (config objects, arrays of layers, modules, tensors), and of values imported from other
 * files (live bindings); inside rewritten classes and functions nested in another function, also that
 * function's variables (closures). Left alone: writes, `const`s of primitives, functions and classes,
 * kiln's own imports, and imports only ever called or constructed (helpers, classes).
 */
export function guardFreeVariables(
  program: NodePath<t.Program>,
  ctx: FileContext,
  closures: ReadonlySet<NodePath<t.Function>>,
  excluded: ReadonlySet<string>,
  scopeFn: () => t.Expression,
): void {
  const holders = new Map<Scope, { id: t.Identifier; names: Set<string> }>();
  const visit = (root: NodePath, accept: (b: Binding) => boolean) =>
    root.traverse({
      Identifier(p) {
        if (!p.isReferencedIdentifier() || isWrite(p) || excluded.has(p.node.name)) return;
        const b = p.scope.getBinding(p.node.name);
        if (!b || !accept(b) || !insideCapturedFunction(p, b.scope)) return;
        let h = holders.get(b.scope);
        if (!h) holders.set(b.scope, (h = { id: b.scope.generateUidIdentifier('free'), names: new Set() }));
        h.names.add(b.identifier.name);
        // At module level the holder is a hoisted function, so a function called early (an import cycle) can read it.
        replaceRead(p, b.scope.path.isProgram() ? t.callExpression(t.cloneNode(h.id), []) : t.cloneNode(h.id));
      },
    });
  visit(program, (b) => b.scope === program.scope && guarded(b, ctx));
  // Closures: variables of a function that encloses a rewritten class or function.
  for (const fn of closures) {
    visit(fn, (b) => holderPlace(b.scope) !== undefined && b.scope.path.getFunctionParent()?.node === fn.node && guarded(b, ctx));
    if (fn.node.body.type === 'BlockStatement') visit(fn, (b) => b.scope === fn.scope && guarded(b, ctx));
  }
  for (const [scope, { id, names }] of holders) {
    if (scope.path.isProgram()) {
      const decl = hoistedScope(id, names, scopeFn());
      const body = scope.path.get('body');
      const first = body.find((st) => !st.isImportDeclaration());
      if (first) first.insertBefore(decl);
      else scope.path.pushContainer('body', decl);
    } else holderPlace(scope)!.unshiftContainer('body', scopeDeclaration(id, names, scopeFn()));
  }
}

/** The block a closure scope's holder goes at the top of: a function's body or a `{ … }` block. */
function holderPlace(scope: Scope): NodePath<t.BlockStatement> | undefined {
  const p = scope.path;
  if (p.isBlockStatement()) return p;
  if (p.isFunction() && t.isBlockStatement(p.node.body)) return p.get('body') as NodePath<t.BlockStatement>;
  return undefined;
}

/** Whether reads of `b` need a guard. */
export function guarded(b: Binding, ctx: FileContext): boolean {
  const name = b.identifier.name;
  if (b.kind === 'module') return !ctx.kilnNames.has(name) && b.referencePaths.some((r) => !isCalleeOrType(r));
  if (b.path.isFunctionDeclaration()) return !b.constant; // reassigned somewhere: its identity can change
  if (b.path.isClassDeclaration()) return !b.constant || b.referencePaths.some(readsStaticField);
  if (b.kind === 'hoisted' || b.kind === 'local') return false;
  if (b.kind === 'param') return true; // an enclosing function's parameter: its value (or contents) may change
  if (b.kind === 'let' || b.kind === 'var') return true;
  if (b.kind === 'const' && b.path.isVariableDeclarator()) {
    const init = b.path.node.init;
    return !!init && !isImmutableValue(init);
  }
  return false;
}

/** `C.scale` (not `C.make(…)`): a read of a class's static field, which can be reassigned. */
function readsStaticField(r: NodePath): boolean {
  const member = r.parentPath;
  if (!member?.isMemberExpression() || member.node.object !== r.node) return false;
  if (t.isIdentifier(member.node.property, { name: 'prototype' }) && !member.node.computed) return false;
  const call = member.parentPath;
  return !(call?.isCallExpression() && call.node.callee === member.node);
}

/** A const's initial value that can never change: a primitive literal, a function or a class. */
function isImmutableValue(e: t.Expression): boolean {
  if (t.isTSAsExpression(e) || t.isTSSatisfiesExpression(e) || t.isParenthesizedExpression(e)) return isImmutableValue(e.expression);
  if (t.isNumericLiteral(e) || t.isStringLiteral(e) || t.isBooleanLiteral(e) || t.isNullLiteral(e) || t.isBigIntLiteral(e)) return true;
  if (t.isUnaryExpression(e) && ['-', '+', '!'].includes(e.operator)) return isImmutableValue(e.argument);
  if (t.isTemplateLiteral(e)) return e.expressions.length === 0;
  if (t.isIdentifier(e, { name: 'undefined' })) return true;
  return t.isFunction(e) || t.isClass(e);
}

function isCalleeOrType(r: NodePath): boolean {
  const parent = r.parentPath;
  if (!parent) return false;
  if ((parent.isCallExpression() || parent.isNewExpression()) && parent.node.callee === r.node) return true;
  if (parent.isClass() && parent.node.superClass === r.node) return true;
  return parent.isTSTypeReference() || parent.isTSQualifiedName() || parent.isTSTypeQuery() || parent.isExportSpecifier();
}

function isWrite(p: NodePath<t.Identifier>): boolean {
  const parent = p.parentPath;
  if (parent.isUpdateExpression()) return true;
  if (parent.isAssignmentExpression() && parent.node.left === p.node) return true;
  if ((parent.isForOfStatement() || parent.isForInStatement()) && parent.node.left === p.node) return true;
  return parent.isExportSpecifier();
}

/**
 * Whether the read `p` runs later than its binding's scope, inside a function nested in it (not in a
 * constructor or a field initialiser, which run once when a module is built).
 */
function insideCapturedFunction(p: NodePath, owner: Scope): boolean {
  const fn = p.getFunctionParent();
  if (!fn || fn.scope === owner || fn.isClassMethod({ kind: 'constructor' })) return false;
  // A field initialiser runs once, at construction, unless the read sits in a function it creates (`f = (x) => …`).
  const stop = p.findParent((q) => q.isFunction() || q.isClassProperty() || q.node === owner.path.node);
  return stop !== null && !stop.isClassProperty();
}

/** `x` → `_free.x`; a call `x(a)` → `(0, _free.x)(a)` so `this` stays undefined; `{ x }` → `{ x: _free.x }`. */
function replaceRead(p: NodePath<t.Identifier>, holder: t.Expression): void {
  const read = t.memberExpression(holder, t.identifier(p.node.name));
  const parent = p.parentPath;
  if (parent.isObjectProperty() && parent.node.shorthand && parent.node.value === p.node) {
    parent.node.shorthand = false;
    parent.node.key = t.identifier(p.node.name);
  }
  if ((parent.isCallExpression() || parent.isOptionalCallExpression()) && parent.node.callee === p.node) {
    p.replaceWith(t.sequenceExpression([t.numericLiteral(0), read]));
  } else if (parent.isTaggedTemplateExpression() && parent.node.tag === p.node) {
    p.replaceWith(t.sequenceExpression([t.numericLiteral(0), read]));
  } else p.replaceWith(read);
  p.skip();
}

function accessors(names: Iterable<string>): t.ObjectExpression {
  return t.objectExpression([...names].map((n) => t.objectProperty(t.identifier(n), t.arrowFunctionExpression([], t.identifier(n)))));
}

/** `function _free() { return (_free.vars ??= _kiln.scope({ a: () => a, … })); }`: a module's guarded variables. */
function hoistedScope(holder: t.Identifier, names: Iterable<string>, scopeFn: t.Expression): t.FunctionDeclaration {
  const cache = t.memberExpression(t.cloneNode(holder), t.identifier('vars'));
  const made = t.assignmentExpression('??=', cache, t.callExpression(scopeFn, [accessors(names)]));
  return t.functionDeclaration(t.cloneNode(holder), [], t.blockStatement([t.returnStatement(made)]));
}

/** `const _free = _kiln.scope({ a: () => a, … })` for one scope's guarded variables. */
function scopeDeclaration(holder: t.Identifier, names: Iterable<string>, scopeFn: t.Expression): t.VariableDeclaration {
  return t.variableDeclaration('const', [t.variableDeclarator(t.cloneNode(holder), t.callExpression(scopeFn, [accessors(names)]))]);
}
