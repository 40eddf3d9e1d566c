import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

/**
 * The run-time import graph of src/, for test/import-graph.test.ts. `import type` and `export type` (and
 * imports whose every name is `type`) vanish at run time and are not edges.
 */

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const SRC = join(ROOT, 'src');

export function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return path.endsWith('.ts') && !path.endsWith('.d.ts') ? [path] : [];
  });
}

/** The run-time import specifiers of a module: imports and re-exports that are not type-only, and `import('…')`. */
export function runtimeImports(code: string): string[] {
  const file = ts.createSourceFile('module.ts', code, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const out: string[] = [];
  const specifier = (node: ts.Expression | undefined) => {
    if (node && ts.isStringLiteral(node)) out.push(node.text);
  };
  for (const st of file.statements) {
    if (ts.isImportDeclaration(st)) {
      const clause = st.importClause;
      if (clause?.isTypeOnly) continue;
      // `import { type A, type B } from` carries nothing at run time either (a bare `import './x.js'` does).
      const named = clause?.namedBindings;
      if (
        clause &&
        !clause.name &&
        named &&
        ts.isNamedImports(named) &&
        named.elements.length > 0 &&
        named.elements.every((e) => e.isTypeOnly)
      )
        continue;
      specifier(st.moduleSpecifier);
    } else if (ts.isExportDeclaration(st)) {
      if (st.isTypeOnly || !st.moduleSpecifier) continue;
      const named = st.exportClause;
      if (named && ts.isNamedExports(named) && named.elements.length > 0 && named.elements.every((e) => e.isTypeOnly)) continue;
      specifier(st.moduleSpecifier);
    }
  }
  const visit = (node: ts.Node): void => {
    if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) specifier(node.arguments[0]);
    ts.forEachChild(node, visit);
  };
  visit(file);
  return out;
}

/** A relative specifier resolved to the .ts file it names (`./x.js` is `./x.ts`); null for packages and builtins. */
function resolveSpecifier(from: string, spec: string): string | null {
  if (!spec.startsWith('.')) return null;
  const base = resolve(dirname(from), spec);
  for (const candidate of [base.replace(/\.js$/, '.ts'), base.replace(/\.mjs$/, '.mts'), `${base}.ts`, join(base, 'index.ts')]) {
    try {
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not this one
    }
  }
  return null;
}

/** Each file's run-time imports among the files under `root`. */
export function importGraph(files: readonly string[], root = SRC): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of files) {
    const deps = runtimeImports(readFileSync(file, 'utf8'))
      .map((spec) => resolveSpecifier(file, spec))
      .filter((d): d is string => d !== null && d.startsWith(root));
    graph.set(file, [...new Set(deps)]);
  }
  return graph;
}

/** Every elementary cycle through the strongly connected components, as file lists (first file repeated last). */
export function findCycles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  // Tarjan's strongly connected components; a cycle lives inside one component.
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  const visit = (v: string) => {
    index.set(v, counter);
    low.set(v, counter++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1 || (graph.get(v) ?? []).includes(v)) components.push(comp);
    }
  };
  for (const v of [...graph.keys()].sort()) if (!index.has(v)) visit(v);

  // Within each component, one shortest cycle through each file (enough to name every edge that closes a loop).
  const cycles: string[][] = [];
  const seen = new Set<string>();
  for (const comp of components) {
    const members = new Set(comp);
    for (const start of [...comp].sort()) {
      const prev = new Map<string, string>();
      const queue = [start];
      let found: string[] | null = null;
      while (queue.length > 0 && !found) {
        const v = queue.shift()!;
        for (const w of graph.get(v) ?? []) {
          if (!members.has(w)) continue;
          if (w === start) {
            const path = [v];
            while (path[0] !== start) path.unshift(prev.get(path[0]!)!);
            found = [...path, start];
            break;
          }
          if (!prev.has(w)) {
            prev.set(w, v);
            queue.push(w);
          }
        }
      }
      if (!found) continue;
      const key = canonical(found);
      if (!seen.has(key)) {
        seen.add(key);
        cycles.push(found);
      }
    }
  }
  return cycles;
}

/** A cycle's text, rotated to start at its smallest file so the same loop found from two files reads the same. */
export function canonical(cycle: readonly string[]): string {
  const ring = cycle.slice(0, -1).map((f) => relative(ROOT, f));
  let best = 0;
  for (let i = 1; i < ring.length; i++) if (ring[i]! < ring[best]!) best = i;
  const rotated = [...ring.slice(best), ...ring.slice(0, best)];
  return [...rotated, rotated[0]].join(' -> ');
}
