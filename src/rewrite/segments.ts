import type { NodePath } from '@babel/traverse';
import * as t from '@babel/types';
import type { Finding, FunctionAnalysis, FunctionPath } from '../analysis/classify.js';

/**
 * Cut a function body into segments at its graph breaks and work out the values that flow between them.
 * Consecutive capturable statements form one graph segment; each statement that breaks is its own
 * segment. Every variable of the function's own scope gets a slot (parameters first); a segment reads
 * the slots of variables declared before it and used in it, and writes back the ones it declares or
 * assigns that a later segment uses.
 */
export interface Segment {
  /** `branch`: an `if` whose condition breaks; the branch taken is captured (see StatementInfo.branch). */
  readonly kind: 'graph' | 'break' | 'branch';
  readonly statements: NodePath<t.Statement>[];
  readonly brk: Finding | undefined;
  in: number[];
  out: number[];
}

export interface SegmentPlan {
  /** Slot names: the parameters' bound names in order, then the body's variables. */
  readonly slots: string[];
  readonly paramCount: number;
  /**
   * Parameters are patterns, rest or defaults: arguments need a bind step (defaults too, so a caller that
   * runs the plan without the rewritten method, such as compile()'s OptimizedModule, still gets them).
   */
  readonly needsBind: boolean;
  readonly segments: Segment[];
}

export class SegmentError extends Error {
  constructor(readonly finding: Finding) {
    super(finding.reason);
  }
}

export function buildSegments(fn: FunctionPath, analysis: FunctionAnalysis): SegmentPlan {
  const params: string[] = [];
  let needsBind = false;
  for (const p of fn.node.params) {
    if (!t.isIdentifier(p)) needsBind = true;
    params.push(...Object.keys(t.getBindingIdentifiers(p as t.Node)));
  }
  const segments: Segment[] = [];
  for (const s of analysis.statements) {
    const last = segments[segments.length - 1];
    if (!s.brk && last?.kind === 'graph') last.statements.push(s.path);
    else segments.push({ kind: s.brk ? (s.branch ? 'branch' : 'break') : 'graph', statements: [s.path], brk: s.brk, in: [], out: [] });
  }
  const segmentOf = new Map<t.Node, number>();
  segments.forEach((seg, i) => seg.statements.forEach((s) => segmentOf.set(s.node, i)));
  /** The segment holding `p` (-1 for parameters), found through its top-level statement. */
  const where = (p: NodePath): number => {
    for (let q: NodePath | null = p; q; q = q.parentPath) {
      const i = segmentOf.get(q.node);
      if (i !== undefined) return i;
      if (q.node === fn.node) break;
    }
    return -1;
  };
  const slots = [...params];
  const slotOf = new Map(params.map((n, i) => [n, i]));
  for (const [name, b] of Object.entries(fn.scope.bindings)) {
    if (b.kind === 'param') continue;
    const declared = where(b.path);
    const uses = new Set<number>();
    const assigns = new Set<number>();
    for (const r of b.referencePaths) uses.add(where(r));
    for (const c of b.constantViolations) {
      const i = where(c);
      uses.add(i);
      assigns.add(i);
    }
    for (const i of uses) {
      if (i < declared && segments.length > 1) {
        throw new SegmentError({
          reason: `'${name}' is used before its declaration across a graph break (hoisting); declare it before first use`,
          node: b.identifier,
        });
      }
    }
    if ([...uses].every((i) => i === declared)) continue; // local to one segment
    slotOf.set(name, slots.length);
    slots.push(name);
    link(segments, slotOf.get(name)!, declared, uses, assigns);
  }
  for (const name of params) {
    const b = fn.scope.getBinding(name)!;
    const uses = new Set<number>();
    const assigns = new Set<number>();
    for (const r of b.referencePaths) uses.add(where(r));
    for (const c of b.constantViolations) {
      const i = where(c);
      if (i >= 0) {
        uses.add(i);
        assigns.add(i);
      }
    }
    link(segments, slotOf.get(name)!, -1, uses, assigns);
  }
  for (const seg of segments) {
    seg.in.sort((a, b) => a - b);
    seg.out.sort((a, b) => a - b);
  }
  return { slots, paramCount: params.length, needsBind, segments };
}

/** Record that slot `slot` is read by the segments that use it and written by those that set it for later ones. */
function link(segments: Segment[], slot: number, declared: number, uses: ReadonlySet<number>, assigns: ReadonlySet<number>): void {
  const lastUse = Math.max(-1, ...uses);
  for (const i of uses) if (i !== declared && i >= 0) segments[i]!.in.push(slot);
  const writers = new Set([...assigns, declared]);
  for (const i of writers) if (i >= 0 && i < lastUse) segments[i]!.out.push(slot);
}
