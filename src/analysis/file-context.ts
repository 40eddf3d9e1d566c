import { readFileSync, existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parse } from '@babel/parser';
import { traverse } from '@babel/core';
import type { NodePath } from '@babel/traverse';
import * as t from '@babel/types';

export interface ImportRef {
  readonly source: string;
  /** The exported name (`default` for a default import, `*` for a namespace). */
  readonly imported: string;
}

/** A declaration found behind an import: the file's context and the declaration's path. */
export interface Resolved<N extends t.Node> {
  readonly ctx: FileContext;
  readonly path: NodePath<N>;
}

/**
 * What the analysis knows about one source file: which local names come from kiln, the module-level
 * functions and classes, and which classes are nn.Module subclasses (directly, through a chain of classes
 * in this file, or through a class imported from a relative file, re-exports followed).
 */
export class FileContext {
  /** Local names bound by `import … from 'kiln'` (or another configured kiln source). */
  readonly kilnNames = new Set<string>();
  /** Local names bound by any other import, with the source they come from. */
  readonly otherImports = new Map<string, ImportRef>();
  readonly functions = new Map<string, NodePath<t.FunctionDeclaration>>();
  readonly classes = new Map<string, NodePath<t.ClassDeclaration>>();

  constructor(
    readonly program: NodePath<t.Program>,
    readonly filename: string | undefined,
    readonly isKilnSource: (source: string) => boolean,
    /** The type checker's answers, when the caller has one (see TypeEvidence in classify.ts). */
    readonly evidence?: { isModuleClass?(node: t.Node, filename: string | undefined): boolean | undefined },
  ) {
    for (const stmt of program.get('body')) {
      if (stmt.isImportDeclaration()) {
        const source = stmt.node.source.value;
        for (const s of stmt.node.specifiers) {
          if (this.isKilnSource(source)) this.kilnNames.add(s.local.name);
          else this.otherImports.set(s.local.name, { source, imported: importedName(s) });
        }
        continue;
      }
      const decl = stmt.isExportNamedDeclaration() || stmt.isExportDefaultDeclaration() ? (stmt.get('declaration') as NodePath) : stmt;
      if (decl.isFunctionDeclaration() && decl.node.id) this.functions.set(decl.node.id.name, decl);
      if (decl.isClassDeclaration() && decl.node.id) this.classes.set(decl.node.id.name, decl);
    }
  }

  /** Whether `name` (as seen from `path`) is a binding imported from kiln. */
  isKilnBinding(path: NodePath, name: string): boolean {
    const b = path.scope.getBinding(name);
    return b !== undefined && b.kind === 'module' && this.kilnNames.has(name) && b.scope === this.program.scope;
  }

  /** The root identifier of a member chain (`nn` in `nn.Module`, `kiln` in `kiln.nn.Linear`). */
  static chainRoot(e: t.Node): t.Identifier | undefined {
    while (t.isMemberExpression(e) || t.isTSNonNullExpression(e)) e = t.isMemberExpression(e) ? e.object : e.expression;
    return t.isIdentifier(e) ? e : undefined;
  }

  /** The function an import names, when it is a function declaration in a relative file. */
  importedFunction(imp: ImportRef): Resolved<t.FunctionDeclaration> | undefined {
    return this.follow(imp, (ctx, local) => ctx.functions.get(local));
  }

  /** Whether the class extends nn.Module, directly or through other module classes (in this file or imported). */
  isModuleClass(cls: NodePath<t.ClassDeclaration | t.ClassExpression>, seen = new Set<t.Node>()): boolean {
    if (seen.has(cls.node)) return false;
    seen.add(cls.node);
    const known = this.evidence?.isModuleClass?.(cls.node, this.filename);
    if (known !== undefined) return known;
    const sup = cls.node.superClass;
    const root = sup ? FileContext.chainRoot(sup) : undefined;
    if (!sup || !root) return false;
    if (this.isKilnBinding(cls, root.name)) return t.isMemberExpression(sup) || root.name !== 'Tensor';
    if (!t.isIdentifier(sup)) return false;
    // `const Base = kiln.nn.Module` (or `= nn.Module`) at module level: an alias of kiln's class.
    const alias = cls.scope.getBinding(sup.name);
    if (alias?.constant && alias.scope === this.program.scope && alias.path.isVariableDeclarator()) {
      const init = alias.path.node.init;
      const aliasRoot = init ? FileContext.chainRoot(init) : undefined;
      if (init && t.isMemberExpression(init) && aliasRoot && this.isKilnBinding(alias.path, aliasRoot.name)) return true;
    }
    const local = this.classes.get(sup.name);
    if (local && cls.scope.getBinding(sup.name)?.path.node === local.node) return this.isModuleClass(local, seen);
    const imp = this.otherImports.get(sup.name);
    const parent = imp && this.follow(imp, (ctx, name) => ctx.classes.get(name));
    return parent !== undefined && parent.ctx.isModuleClass(parent.path, seen);
  }

  /**
   * Follow an import into its relative file (through `export { a as b }`, `export … from` and
   * `export *`) to the local declaration `pick` finds there.
   */
  private follow<N extends t.Node>(
    imp: ImportRef,
    pick: (ctx: FileContext, local: string) => NodePath<N> | undefined,
    depth = 0,
  ): Resolved<N> | undefined {
    if (!this.filename || !imp.source.startsWith('.') || depth > 16) return undefined;
    const file = resolveRelative(this.filename, imp.source);
    const ctx = file ? contextFor(file, this.isKilnSource) : null;
    if (!ctx) return undefined;
    for (const stmt of ctx.program.node.body) {
      if (t.isExportDefaultDeclaration(stmt) && imp.imported === 'default') {
        const d = stmt.declaration;
        const local = (t.isClassDeclaration(d) || t.isFunctionDeclaration(d)) && d.id ? d.id.name : t.isIdentifier(d) ? d.name : undefined;
        return ctx.local(local, pick, depth);
      }
      if (t.isExportNamedDeclaration(stmt)) {
        const d = stmt.declaration;
        if ((t.isClassDeclaration(d) || t.isFunctionDeclaration(d)) && d.id?.name === imp.imported)
          return ctx.local(imp.imported, pick, depth);
        for (const sp of stmt.specifiers) {
          if (!t.isExportSpecifier(sp) || exportedName(sp) !== imp.imported) continue;
          if (stmt.source) return ctx.follow({ source: stmt.source.value, imported: sp.local.name }, pick, depth + 1);
          return ctx.local(sp.local.name, pick, depth);
        }
      }
      if (t.isExportAllDeclaration(stmt)) {
        const found = ctx.follow({ source: stmt.source.value, imported: imp.imported }, pick, depth + 1);
        if (found) return found;
      }
    }
    return undefined;
  }

  /** A local name of this file: its declaration, or, when it was imported, where the import leads. */
  private local<N extends t.Node>(
    name: string | undefined,
    pick: (ctx: FileContext, local: string) => NodePath<N> | undefined,
    depth: number,
  ): Resolved<N> | undefined {
    if (name === undefined) return undefined;
    const path = pick(this, name);
    if (path) return { ctx: this, path };
    const imp = this.otherImports.get(name);
    return imp ? this.follow(imp, pick, depth + 1) : undefined;
  }
}

function importedName(s: t.ImportDeclaration['specifiers'][number]): string {
  if (t.isImportSpecifier(s)) return t.isIdentifier(s.imported) ? s.imported.name : s.imported.value;
  return t.isImportDefaultSpecifier(s) ? 'default' : '*';
}

function exportedName(sp: t.ExportSpecifier): string {
  return t.isIdentifier(sp.exported) ? sp.exported.name : sp.exported.value;
}

/** `./layers.js` from `/src/model.ts`: the file on disk, trying the TypeScript twins of `.js` imports. */
function resolveRelative(from: string, source: string): string | undefined {
  const base = resolve(dirname(from), source);
  const candidates = [
    base,
    base.replace(/\.js$/, '.ts'),
    base.replace(/\.mjs$/, '.mts'),
    `${base}.ts`,
    `${base}.js`,
    `${base}/index.ts`,
    `${base}/index.js`,
  ];
  return candidates.find((c) => existsSync(c) && !c.endsWith('/'));
}

/** Contexts of other files the analysis looked into (parsed once), or null when a file cannot be parsed. */
const contexts = new Map<string, FileContext | null>();

function contextFor(file: string, isKilnSource: (s: string) => boolean): FileContext | null {
  if (!contexts.has(file)) {
    let ctx: FileContext | null = null;
    try {
      const ast = parse(readFileSync(file, 'utf8'), { sourceType: 'module', plugins: ['typescript', 'decorators-legacy'] });
      traverse(ast, {
        Program(p) {
          ctx = new FileContext(p, file, isKilnSource);
          p.stop();
        },
      });
    } catch {
      ctx = null; // unreadable or not parseable: treated as unknown
    }
    contexts.set(file, ctx);
  }
  return contexts.get(file)!;
}
