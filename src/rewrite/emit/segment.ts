import { expression } from '@babel/template';
import type { NodePath } from '@babel/traverse';
import * as t from '@babel/types';
import { branchParts } from '../../analysis/classify.js';
import type { Segment, SegmentPlan } from '../segments.js';
import { leaveOutAbsent, numbers, optional } from './plan-literal.js';

/**
 * One entry of a plan's `segments`: where it is, why it breaks, the slots it reads and writes, how it
 * exits, and its code — one function (graph and break segments), or for a branch the eager condition and
 * one function per arm (see src/compile/plan.ts's SegmentSpec).
 */
const straightSegment = expression(`{
  kind: %%kind%%,
  loc: %%loc%%,
  reason: %%reason%%,
  in: %%ins%%,
  out: %%outs%%,
  exit: %%exit%%,
  fn: %%fn%%,
}`);

const branchSegment = expression(`{
  kind: "branch",
  loc: %%loc%%,
  reason: %%reason%%,
  in: %%ins%%,
  out: %%outs%%,
  exit: "either",
  test: function (%%params%%) {
    return %%test%%;
  },
  then: %%then%%,
  else: %%otherwise%%,
}`);

/** The segment's entry in the plan literal; `loc` is its `line:col`. */
export function segmentLiteral(seg: Segment, plan: SegmentPlan, loc: string): t.Expression {
  const common = {
    loc: t.stringLiteral(loc),
    reason: optional(seg.brk ? t.stringLiteral(seg.brk.reason) : undefined),
    ins: numbers(seg.in),
    outs: numbers(seg.out),
  };
  if (seg.kind === 'branch') {
    const { test, then, otherwise } = branchArms(seg.statements[0]!);
    const arm = (body: t.Statement[]) => segmentFunction(body, plan.slots, seg.in, seg.out, true).fn;
    return leaveOutAbsent(
      branchSegment({
        ...common,
        params: seg.in.map((i) => t.identifier(plan.slots[i]!)),
        test,
        then: arm(then),
        otherwise: arm(otherwise),
      }),
    );
  }
  const { fn, exit } = segmentFunction(
    seg.statements.map((p) => p.node),
    plan.slots,
    seg.in,
    seg.out,
  );
  return leaveOutAbsent(straightSegment({ ...common, kind: t.stringLiteral(seg.kind), exit: t.stringLiteral(exit), fn }));
}

/**
 * One segment as a function of the slots it reads, and how it exits:
 * - `return`: it always ends in the source's `return`; its result is the method's;
 * - `next`: it never returns; it ends with `return [...out]` for the later segments (or nothing, if none);
 * - `either`: it may do both, so each `return e` becomes `return [1, e]` and the end `return [0, ...out]`.
 */
function segmentFunction(
  statements: readonly t.Statement[],
  slots: readonly string[],
  ins: readonly number[],
  outs: readonly number[],
  either = false,
): { fn: t.FunctionExpression; exit: 'return' | 'next' | 'either' } {
  const body = statements.map((s) => t.cloneNode(s));
  const last = body[body.length - 1];
  const endsInExit = last !== undefined && (t.isReturnStatement(last) || t.isThrowStatement(last));
  const innerReturn = body.some((s, i) => (i < body.length - 1 || !t.isReturnStatement(s)) && containsReturn(s));
  const outValues = outs.map((i) => t.identifier(slots[i]!));
  let exit: 'return' | 'next' | 'either';
  if (!innerReturn && endsInExit && !either) exit = 'return';
  else if (!innerReturn && !either) {
    exit = 'next';
    if (outValues.length) body.push(t.returnStatement(t.arrayExpression(outValues)));
  } else {
    exit = 'either';
    for (const s of body) markReturns(s);
    if (!endsInExit) body.push(t.returnStatement(t.arrayExpression([t.numericLiteral(0), ...outValues])));
  }
  const fn = t.functionExpression(
    null,
    ins.map((i) => t.identifier(slots[i]!)),
    t.blockStatement(body),
  );
  return { fn, exit };
}

/**
 * A branch statement as its condition and two arms of statements: an `if`'s blocks, or the statement
 * rebuilt around each side of its conditional (`return a` / `return b`, `const v = a` / `const v = b`, …).
 */
function branchArms(stmt: NodePath<t.Statement>): { test: t.Expression; then: t.Statement[]; otherwise: t.Statement[] } {
  const parts = branchParts(stmt)!;
  const test = t.cloneNode(parts.test.node as t.Expression);
  if (stmt.isIfStatement()) {
    const block = (n: t.Statement | null | undefined) => (!n ? [] : t.isBlockStatement(n) ? n.body : [n]);
    return { test, then: block(stmt.node.consequent), otherwise: block(stmt.node.alternate) };
  }
  const around = (value: t.Expression): t.Statement => {
    const n = t.cloneNode(stmt.node);
    if (t.isReturnStatement(n)) n.argument = value;
    else if (t.isVariableDeclaration(n)) n.declarations[0]!.init = value;
    else ((n as t.ExpressionStatement).expression as t.AssignmentExpression).right = value;
    return n;
  };
  return { test, then: [around(parts.consequent.node as t.Expression)], otherwise: [around(parts.alternate!.node as t.Expression)] };
}

/** Whether `node` holds a `return` of the function it is in (not one of a nested function or class). */
function containsReturn(node: t.Node): boolean {
  if (t.isFunction(node) || t.isClass(node)) return false;
  if (t.isReturnStatement(node)) return true;
  for (const key of t.VISITOR_KEYS[node.type] ?? []) {
    const child = (node as unknown as Record<string, t.Node | t.Node[] | null | undefined>)[key];
    if (Array.isArray(child) ? child.some((c) => c && containsReturn(c)) : child && containsReturn(child)) return true;
  }
  return false;
}

/** `return e` → `return [1, e]` throughout `node`, not inside nested functions or classes. */
function markReturns(node: t.Node): void {
  if (t.isFunction(node) || t.isClass(node)) return;
  if (t.isReturnStatement(node)) {
    node.argument = t.arrayExpression([t.numericLiteral(1), node.argument ?? t.identifier('undefined')]);
    return;
  }
  for (const key of t.VISITOR_KEYS[node.type] ?? []) {
    const child = (node as unknown as Record<string, t.Node | t.Node[] | null | undefined>)[key];
    if (Array.isArray(child)) child.forEach((c) => c && markReturns(c));
    else if (child) markReturns(child);
  }
}
