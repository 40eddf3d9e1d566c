import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type * as TS from 'typescript';
import type * as t from '@babel/types';
import type { TypeEvidence, ValueKind } from './classify.js';

/**
 * Type-aware evidence for the plugin's analysis: the TypeScript checker of a whole program decides which
 * values are tensors, modules and numbers — untyped locals, what helpers return, classes imported from
 * other files, aliases of `nn.Module` — where one file's annotations do not say. Used by
 * `kiln build --types` and `kiln explain` (a ts-morph project, src/analysis/project.ts) and by kiln/tsc
 * (the program tsc is compiling).
 *
 * The analysis asks about Babel nodes; they are found in the program's source file by their offsets, which
 * agree because both parsed the same text (`covers` checks that first: a file that changed since the
 * program was loaded gets no evidence, and the analysis falls back to annotations and uses).
 *
 * A type is kiln's when it is declared in the `kiln` package (found by the nearest package.json's name),
 * so a user's own class called `Tensor` is not taken for kiln's. `any`, `unknown` and type errors are no
 * evidence at all.
 */
export class CheckerEvidence implements TypeEvidence {
  private readonly checker: TS.TypeChecker;
  private readonly kilnDirs = new Map<string, boolean>();

  constructor(
    private readonly ts: typeof TS,
    private readonly program: TS.Program,
  ) {
    this.checker = program.getTypeChecker();
  }

  /** Whether the program's copy of `filename` is `code` (the text Babel parsed). */
  covers(filename: string | undefined, code: string): boolean {
    const sf = filename ? this.sourceFile(filename) : undefined;
    return sf !== undefined && sf.text === code;
  }

  kindOf(node: t.Node, filename: string | undefined): ValueKind | undefined {
    const found = this.find(node, filename);
    if (!found) return undefined;
    try {
      return this.typeKind(this.checker.getTypeAtLocation(found));
    } catch {
      return undefined; // the checker gave up on this node: no evidence
    }
  }

  isModuleClass(node: t.Node, filename: string | undefined): boolean | undefined {
    // A class is found by its name (TypeScript's class node starts at `export`, Babel's at `class`).
    const id = (node as t.ClassDeclaration | t.ClassExpression).id;
    const name = id ? this.find(id, filename) : undefined;
    const found = name?.parent;
    if (!name || !found || !(this.ts.isClassDeclaration(found) || this.ts.isClassExpression(found))) return undefined;
    if (!found.heritageClauses?.some((h) => h.token === this.ts.SyntaxKind.ExtendsKeyword)) return false;
    const sym = this.checker.getSymbolAtLocation(name);
    if (!sym) return undefined;
    const kind = this.typeKind(this.checker.getDeclaredTypeOfSymbol(sym));
    // an unresolved base (any) is no evidence: the syntactic rules decide
    return kind === undefined ? undefined : kind === 'module';
  }

  private sourceFile(filename: string): TS.SourceFile | undefined {
    return this.program.getSourceFile(filename) ?? this.program.getSourceFile(resolve(filename));
  }

  /** The TypeScript node a Babel node stands for: same start offset, same kind, the same end where it has one. */
  private find(node: t.Node, filename: string | undefined): TS.Node | undefined {
    if (!filename || node.start == null || node.end == null) return undefined;
    const sf = this.sourceFile(filename);
    if (!sf) return undefined;
    const ts = this.ts;
    const fits = (n: TS.Node): boolean => {
      switch (node.type) {
        case 'Identifier':
          // Babel's identifier spans its type annotation (`x: Tensor`): the start and the name decide
          return ts.isIdentifier(n) && n.text === node.name;
        case 'CallExpression':
          return ts.isCallExpression(n) && n.end === node.end;
        case 'MemberExpression':
          return (ts.isPropertyAccessExpression(n) || ts.isElementAccessExpression(n)) && n.end === node.end;
        default:
          return false;
      }
    };
    const start = node.start;
    let match: TS.Node | undefined;
    const visit = (n: TS.Node): void => {
      if (n.pos > start || n.end < start) return;
      if (n.getStart(sf) === start && fits(n)) match = n;
      ts.forEachChild(n, visit);
    };
    ts.forEachChild(sf, visit);
    return match;
  }

  /** tensor / module / number / other for a type; undefined for any, unknown and error types. */
  private typeKind(type: TS.Type): ValueKind | undefined {
    const F = this.ts.TypeFlags;
    if (type.flags & (F.Any | F.Unknown | F.Never)) return undefined;
    if (type.isUnion()) {
      const kinds = type.types.filter((m) => !(m.flags & (F.Null | F.Undefined | F.Void))).map((m) => this.typeKind(m));
      if (kinds.length === 0 || kinds.includes(undefined)) return undefined;
      return kinds.every((k) => k === kinds[0]) ? kinds[0] : 'other';
    }
    if (type.flags & F.NumberLike) return 'number';
    for (const cls of this.lineage(type)) {
      const sym = cls.getSymbol();
      if (!sym || !this.isKilnSymbol(sym)) continue;
      if (sym.getName() === 'Tensor') return 'tensor';
      if (sym.getName() === 'Module') return 'module';
    }
    return 'other';
  }

  /** A class instance type and its base classes (generic instantiations through their targets). */
  private *lineage(type: TS.Type, depth = 0): Generator<TS.Type> {
    if (depth > 32) return;
    yield type;
    const O = this.ts.ObjectFlags;
    const target =
      type.flags & this.ts.TypeFlags.Object && (type as TS.ObjectType).objectFlags & O.Reference ? (type as TS.TypeReference).target : type;
    if (!(target.flags & this.ts.TypeFlags.Object) || !((target as TS.ObjectType).objectFlags & O.ClassOrInterface)) return;
    for (const base of this.checker.getBaseTypes(target as TS.InterfaceType)) yield* this.lineage(base, depth + 1);
  }

  private isKilnSymbol(sym: TS.Symbol): boolean {
    return (sym.getDeclarations() ?? []).some((d) => this.inKiln(dirname(d.getSourceFile().fileName)));
  }

  /** Whether `dir` lies in the `kiln` package (its nearest package.json is kiln's). */
  private inKiln(dir: string): boolean {
    let known = this.kilnDirs.get(dir);
    if (known === undefined) {
      const pkg = join(dir, 'package.json');
      if (existsSync(pkg)) {
        try {
          known = (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'kiln';
        } catch {
          known = false;
        }
      } else known = dirname(dir) === dir ? false : this.inKiln(dirname(dir));
      this.kilnDirs.set(dir, known);
    }
    return known;
  }
}
