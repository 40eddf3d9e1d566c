import { readFileSync, existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parse } from '@babel/parser';
import { traverse } from '@babel/core';
import type { NodePath } from '@babel/traverse';
import * as t from '@babel/types';

/**
 * What the analysis knows about one source file: which local names come from kiln, the module-level
 * functions and classes, and which classes are nn.Module subclasses (directly, through a chain of classes
 * in this file, or through a class imported from a relative file, re-exports followed).
 */
export class FileContext {
  /** Local names bound by `import … from 'kiln'` (or another configured kiln source). */
  readonly kilnNames = new Set<string>();
  /** Local names bound by any other import, with the source they come from. */
  readonly otherImports = new Map<string, { source: string; imported: string }>();
  readonly functions = new Map<string, NodePath<t.FunctionDeclaration>>();
  readonly classes = new Map<string, NodePath<t.ClassDeclaration>>();

  constructor(
    readonly program: NodePath<t.Program>,
    readonly filename: string | undefined,
    readonly isKilnSource: (source: string) => boolean,
  ) {
    for (const stmt of program.get('body')) {
      if (stmt.isImportDeclaration()) {
        const source = stmt.node.source.value;
        for (const s of stmt.node.specifiers) {
          if (this.isKilnSource(source)) this.kilnNames.add(s.local.name);
          else {
            const imported = t.isImportSpecifier(s)
              ? t.isIdentifier(s.imported)
                ? s.imported.name
                : s.imported.value
              : t.isImportDefaultSpecifier(s)
                ? 'default'
                : '*';
            this.otherImports.set(s.local.name, { source, imported });
          }
        }
        continue;
      }
      const decl = stmt.isExportNamedDeclaration() || stmt.isExportDefaultDeclaration() ? (stmt.get('declaration') as NodePath) : stmt;
      if (decl.isFunctionDeclaration() && decl.node.id) this.functions.set(decl.node.id.name, decl);
      if (decl.isClassDeclaration() && decl.node.id) this.classes.set(decl.node.id.name, decl);
    }
  }

  /** Whether `name` (as seen from `scope`) is a binding imported from kiln. */
  isKilnBinding(path: NodePath, name: string): boolean {
    const b = path.scope.getBinding(name);
    return b !== undefined && b.kind === 'module' && this.kilnNames.has(name) && b.scope === this.program.scope;
  }

  /** The root identifier of a member chain (`nn` in `nn.Module`, `kiln` in `kiln.nn.Linear`). */
  static chainRoot(e: t.Node): t.Identifier | undefined {
    while (t.isMemberExpression(e) || t.isTSNonNullExpression(e)) e = t.isMemberExpression(e) ? e.object : e.expression;
    return t.isIdentifier(e) ? e : undefined;
  }

  /** The function declaration an import names, in a relative file (following `export { f }` of a local). */
  importedFunction(imp: {
    source: string;
    imported: string;
  }): { file: string; ctx: FileContext; fn: NodePath<t.FunctionDeclaration> } | undefined {
    if (!this.filename || !imp.source.startsWith('.')) return undefined;
    const file = resolveRelative(this.filename, imp.source);
    const ctx = file ? contextFor(file, this.isKilnSource) : null;
    if (!file || !ctx) return undefined;
    const local = ctx.exportedLocal(imp.imported);
    const fn = local ? ctx.functions.get(local) : undefined;
    return fn ? { file, ctx, fn } : undefined;
  }

  /** The local name behind export `name` of this file (`export function f`, `export { g as f }`). */
  private exportedLocal(name: string): string | undefined {
    for (const stmt of this.program.node.body) {
      if (!t.isExportNamedDeclaration(stmt) || stmt.source) continue;
      const d = stmt.declaration;
      if (t.isFunctionDeclaration(d) && d.id?.name === name) return name;
      for (const sp of stmt.specifiers) {
        if (t.isExportSpecifier(sp) && (t.isIdentifier(sp.exported) ? sp.exported.name : sp.exported.value) === name) return sp.local.name;
      }
    }
    return undefined;
  }

  /** Whether the class extends nn.Module, directly or through other module classes. */
  isModuleClass(cls: NodePath<t.ClassDeclaration | t.ClassExpression>, seen = new Set<t.Node>()): boolean {
    if (seen.has(cls.node)) return false;
    seen.add(cls.node);
    const sup = cls.node.superClass;
    if (!sup) return false;
    const root = FileContext.chainRoot(sup);
    if (!root) return false;
    if (this.isKilnBinding(cls, root.name)) return t.isMemberExpression(sup) || root.name !== 'Tensor';
    if (t.isIdentifier(sup)) {
      const local = this.classes.get(sup.name);
      if (local && cls.scope.getBinding(sup.name)?.path.node === local.node) return this.isModuleClass(local, seen);
      const imp = this.otherImports.get(sup.name);
      if (imp && this.filename && imp.source.startsWith('.')) {
        return moduleClassInFile(resolveRelative(this.filename, imp.source), imp.imported, this.isKilnSource, seen.size);
      }
    }
    return false;
  }
}

/** Program paths of other files the analysis looked into, by file name. */
const programs = new Map<string, FileContext | null>();

/** A FileContext for another file on disk (parsed once), or null when it cannot be parsed. */
function contextFor(file: string, isKilnSource: (s: string) => boolean): FileContext | null {
  if (!programs.has(file)) {
    const ast = parseFile(file);
    let ctx: FileContext | null = null;
    if (ast) {
      traverse(ast, {
        Program(p) {
          ctx = new FileContext(p, file, isKilnSource);
          p.stop();
        },
      });
    }
    programs.set(file, ctx);
  }
  return programs.get(file)!;
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

const parsedFiles = new Map<string, t.File | null>();
function parseFile(file: string): t.File | null {
  if (!parsedFiles.has(file)) {
    try {
      parsedFiles.set(file, parse(readFileSync(file, 'utf8'), { sourceType: 'module', plugins: ['typescript', 'decorators-legacy'] }));
    } catch {
      parsedFiles.set(file, null);
    }
  }
  return parsedFiles.get(file)!;
}

/** Whether `file` exports (or re-exports) a class `name` that extends nn.Module. Depth-limited against cycles. */
function moduleClassInFile(file: string | undefined, name: string, isKilnSource: (s: string) => boolean, depth: number): boolean {
  if (!file || depth > 16) return false;
  const ast = parseFile(file);
  if (!ast) return false;
  const kiln = new Set<string>();
  const imports = new Map<string, { source: string; imported: string }>();
  const classes = new Map<string, t.ClassDeclaration>();
  let exportedLocal: string | undefined;
  for (const s of ast.program.body) {
    if (t.isImportDeclaration(s)) {
      for (const sp of s.specifiers) {
        if (isKilnSource(s.source.value)) kiln.add(sp.local.name);
        else if (t.isImportSpecifier(sp))
          imports.set(sp.local.name, {
            source: s.source.value,
            imported: t.isIdentifier(sp.imported) ? sp.imported.name : sp.imported.value,
          });
      }
    }
    const decl = t.isExportNamedDeclaration(s) || t.isExportDefaultDeclaration(s) ? s.declaration : s;
    if (t.isClassDeclaration(decl) && decl.id) {
      classes.set(decl.id.name, decl);
      if (t.isExportDefaultDeclaration(s) && name === 'default') exportedLocal = decl.id.name;
    }
    if (t.isExportNamedDeclaration(s)) {
      if (t.isClassDeclaration(s.declaration) && s.declaration.id?.name === name) exportedLocal = name;
      for (const sp of s.specifiers) {
        if (!t.isExportSpecifier(sp)) continue;
        const exported = t.isIdentifier(sp.exported) ? sp.exported.name : sp.exported.value;
        if (exported !== name) continue;
        if (s.source) return moduleClassInFile(resolveRelative(file, s.source.value), sp.local.name, isKilnSource, depth + 1);
        exportedLocal = sp.local.name;
      }
    }
    if (t.isExportAllDeclaration(s) && moduleClassInFile(resolveRelative(file, s.source.value), name, isKilnSource, depth + 1)) return true;
  }
  const check = (local: string | undefined, d: number): boolean => {
    if (!local || d > 16) return false;
    const cls = classes.get(local);
    if (!cls) {
      const imp = imports.get(local);
      return (
        imp !== undefined &&
        imp.source.startsWith('.') &&
        moduleClassInFile(resolveRelative(file, imp.source), imp.imported, isKilnSource, depth + 1)
      );
    }
    const root = cls.superClass ? FileContext.chainRoot(cls.superClass) : undefined;
    if (!root) return false;
    if (kiln.has(root.name)) return true;
    return t.isIdentifier(cls.superClass) && check(cls.superClass.name, d + 1);
  };
  return check(exportedLocal, 0);
}
