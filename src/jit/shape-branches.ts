import { parseSync, traverse, type NodePath } from '@babel/core';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * Does a shape read decide control flow? A runtime trace cannot record `x.shape[0] > 3` (a comparison of plain
 * numbers), so it looks at the source of each site where user code read a shape: a read under a comparison,
 * or in the test of an `if`, `?:`, loop or `switch`, means the trace follows one branch for those shapes only
 * (PyTorch's "Converting a tensor to a Python boolean might cause the trace to be incorrect").
 */

const COMPARISONS = new Set(['<', '>', '<=', '>=', '==', '===', '!=', '!==']);

const parsed = new Map<string, ReturnType<typeof parseSync> | null>();

function parseFile(file: string): ReturnType<typeof parseSync> | null {
  if (!parsed.has(file)) {
    let ast: ReturnType<typeof parseSync> | null = null;
    try {
      ast = parseSync(readFileSync(file, 'utf8'), {
        filename: file,
        configFile: false,
        babelrc: false,
        sourceType: 'unambiguous',
        parserOpts: { plugins: ['typescript', 'jsx'], errorRecovery: true },
      });
    } catch {
      ast = null; // not readable or not parseable: no verdict
    }
    parsed.set(file, ast);
  }
  return parsed.get(file)!;
}

/** `at fn (/path/file.ts:12:7)` or `at /path/file.ts:12:7` → its file, line and column. */
export function parseSite(site: string): { file: string; line: number; column: number } | undefined {
  const m = /\(?((?:file:\/\/)?[^\s()]+):(\d+):(\d+)\)?$/.exec(site.trim());
  if (!m) return undefined;
  const file = m[1]!.startsWith('file://') ? fileURLToPath(m[1]!) : m[1]!;
  return { file, line: Number(m[2]), column: Number(m[3]) };
}

/** Whether the shape read at `site` (a stack frame of user code) feeds a comparison or a branch test. */
export function decidesControlFlow(site: string): boolean {
  const at = parseSite(site);
  const ast = at && parseFile(at.file);
  if (!at || !ast) return false;
  let verdict = false;
  traverse(ast, {
    MemberExpression(path) {
      const { loc } = path.node;
      if (verdict || !loc || loc.start.line > at.line || loc.end.line < at.line) return;
      const prop = path.node.property;
      const isShape = prop.type === 'Identifier' && ['shape', 'size', 'numel', 'ndim'].includes(prop.name);
      // Stack columns are 1-based and point into the member expression (at the property or the dot).
      const col = at.column - 1;
      const within = loc.start.line === at.line && loc.start.column <= col && (loc.end.line > at.line || loc.end.column >= col);
      if (isShape && within && inBranchTest(path)) verdict = true;
    },
  });
  return verdict;
}

function inBranchTest(path: NodePath): boolean {
  for (let p: NodePath | null = path; p && !p.isStatement(); p = p.parentPath) {
    const parent = p.parentPath;
    if (!parent) break;
    if (parent.isBinaryExpression() && COMPARISONS.has(parent.node.operator)) return true;
    if ((parent.isIfStatement() || parent.isConditionalExpression() || parent.isWhileStatement()) && p.key === 'test') return true;
    if ((parent.isForStatement() || parent.isDoWhileStatement()) && p.key === 'test') return true;
    if (parent.isSwitchStatement() && p.key === 'discriminant') return true;
  }
  return false;
}
