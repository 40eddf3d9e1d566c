import type { Binding, NodePath } from '@babel/traverse';
import * as t from '@babel/types';
import type { FunctionPath } from '../../analysis/classify.js';

/**
 * Shape arithmetic through the runtime's helpers (src/runtime/shape-helpers.ts), so export can record it:
 * `x.shape[0] <= 6` becomes `_kiln.le(_kiln.size(x, 0), 6)`, `Math.floor(h.shape[1] / 2)`
 * `_kiln.floorDiv(_kiln.size(h, 1), 2)`. Eagerly the helpers are the expressions they replace.
 *
 * Which values are shape-derived is a dataflow fact inside the rewritten function: shape reads (`x.shape[k]`,
 * `x.shape.at(k)`, `x.size(k)`, `x.numel()`, `x.ndim`, `x.dim()`), locals assigned or destructured from them
 * (`const [b, n] = x.shape`), arithmetic on them, parameters combined with them, and `t.item()` where its value
 * is used as a size (passed to an op, or combined with a size). Arithmetic and comparisons with a shape-derived
 * operand go through the helpers; a shape-derived value where only a plain number will do (`Math.sqrt(n)`,
 * `${n}`, `-n`, `if (n)`) is wrapped in `concrete`. Everything else is left exactly as written
 * (`console.log('x', h.shape)` stays).
 *
 * The function is changed in place, after the analysis and before its body is copied into the plan's `eager`
 * and segment functions, so every copy gets the same rewrite.
 */
type ReadKind = 'size' | 'sizeAt' | 'sizeOf' | 'numel' | 'ndim' | 'dim' | 'item' | 'shape';

const ARITH: Record<string, string> = { '+': 'add', '-': 'sub', '*': 'mul', '%': 'mod', '/': 'div' };
const COMPARE: Record<string, string> = {
  '<': 'lt',
  '<=': 'le',
  '>': 'gt',
  '>=': 'ge',
  '===': 'eq',
  '!==': 'ne',
  '==': 'looseEq',
  '!=': 'looseNe',
};
const COMPOUND: Record<string, string> = { '+=': 'add', '-=': 'sub', '*=': 'mul', '%=': 'mod', '/=': 'div' };
/** Operators whose operands must be plain numbers: a shape-derived operand is concretised. */
const NUMERIC_ONLY = new Set(['**', '|', '&', '^', '<<', '>>', '>>>']);
const CONCRETE_UNARY = new Set(['-', '+', '~', '!', 'typeof']);
const TS_WRAPPERS = new Set([
  'TSNonNullExpression',
  'TSAsExpression',
  'TSSatisfiesExpression',
  'TSTypeAssertion',
  'ParenthesizedExpression',
]);

/** What the analysis found: the nodes to replace and the values that are shape-derived. */
interface ShapeFacts {
  readonly reads: Map<t.Node, ReadKind>;
  readonly derived: Set<t.Node>;
  readonly floorDivs: Set<t.Node>;
  /** Calls and `new`s of globals (`Math.sqrt`, `String`, `console.log`): their arguments must be plain values. */
  readonly globalCalls: Set<t.Node>;
  /** `n++` / `--n` whose value is unused or is the new value: rewritten as `n = inc(n)`. */
  readonly updates: Set<t.Node>;
  /** Comparisons that are `check(...)`'s argument or `cond(...)`'s predicate: kept symbolic under export (`pred`). */
  readonly predicates: Set<t.Node>;
}

/** Comparisons a predicate keeps (loose equality stays a plain comparison). */
const PREDICATE_OPS = new Set(['<', '<=', '>', '>=', '===', '!==']);

/** `check(a < b)` or `cond(a < b, …)` (called by name or as `kiln.check`): the comparison is the first argument. */
function isPredicateArgument(p: NodePath): boolean {
  if (!p.isBinaryExpression() || !PREDICATE_OPS.has(p.node.operator)) return false;
  const call = p.parentPath;
  if (!call?.isCallExpression() || call.node.arguments[0] !== p.node) return false;
  const callee = call.node.callee;
  const name = t.isIdentifier(callee)
    ? callee.name
    : t.isMemberExpression(callee) && t.isIdentifier(callee.property)
      ? callee.property.name
      : '';
  return name === 'check' || name === 'cond';
}

/** Rewrite `fn`'s shape arithmetic in place; returns whether anything changed. */
export function recordShapeArithmetic(fn: FunctionPath, runtime: t.Identifier): boolean {
  const facts = analyse(fn);
  if (facts.reads.size === 0 && facts.derived.size === 0) return false;
  const helper = (name: string, args: t.Expression[]) =>
    t.callExpression(t.memberExpression(t.cloneNode(runtime), t.identifier(name)), args);
  const body = fn.node.body as t.Node;
  let changed = false;
  const visit = (n: t.Node): t.Node => {
    const out = rewriteNode(n, facts, helper, visit);
    if (out !== n) changed = true;
    return out;
  };
  visitChildren(body, visit);
  return changed;
}

// ---- Analysis -------------------------------------------------------------------------------------------

function unwrap(p: NodePath): NodePath {
  while (TS_WRAPPERS.has(p.node.type)) p = p.get('expression') as NodePath;
  return p;
}

/** The path holding `p` once TypeScript wrappers and parentheses are stepped over. */
function holder(p: NodePath): { parent: NodePath | null; child: NodePath } {
  let child = p;
  while (child.parentPath && TS_WRAPPERS.has(child.parentPath.node.type)) child = child.parentPath;
  return { parent: child.parentPath, child };
}

const isProp = (n: t.Node, name: string) => t.isIdentifier(n, { name });
const isNamedMember = (p: NodePath, name: string): p is NodePath<t.MemberExpression> =>
  p.isMemberExpression() && !p.node.computed && isProp(p.node.property, name);
const isMethodCall = (p: NodePath, name: string, arity?: number): p is NodePath<t.CallExpression> =>
  p.isCallExpression() &&
  isNamedMember(p.get('callee') as NodePath, name) &&
  (arity === undefined || p.node.arguments.length === arity) &&
  !p.node.arguments.some((a) => t.isSpreadElement(a));

/** `x.shape` (a member read that is not itself written). */
const isShapeMember = (p: NodePath) => isNamedMember(p, 'shape') && !isWritten(p);

function isWritten(p: NodePath): boolean {
  const { parent, child } = holder(p);
  if (!parent) return false;
  if (parent.isAssignmentExpression() && parent.node.left === child.node) return true;
  if (parent.isUpdateExpression()) return true;
  if (parent.isUnaryExpression({ operator: 'delete' })) return true;
  return false;
}

/** Whether the callee of `call` is a global (no binding): `Math.sqrt`, `String`, `console.log`. */
function calleeIsGlobal(call: NodePath<t.CallExpression | t.NewExpression>): boolean {
  let c: t.Node = call.node.callee;
  while (t.isMemberExpression(c)) c = c.object;
  return t.isIdentifier(c) && !call.scope.hasBinding(c.name, true);
}

const isMathFloorOfDivision = (p: NodePath): p is NodePath<t.CallExpression> =>
  p.isCallExpression() &&
  t.isMemberExpression(p.node.callee) &&
  t.isIdentifier(p.node.callee.object, { name: 'Math' }) &&
  isProp(p.node.callee.property, 'floor') &&
  !p.node.callee.computed &&
  !p.scope.hasBinding('Math', true) &&
  p.node.arguments.length === 1 &&
  t.isBinaryExpression(p.node.arguments[0], { operator: '/' });

class Flow {
  readonly derivedBindings = new Set<Binding>();
  readonly shapeArrays = new Set<Binding>();
  readonly items = new Set<t.Node>();

  /** A read of one size (not of the whole shape), by kind. */
  sizeRead(p: NodePath): ReadKind | undefined {
    if (p.isMemberExpression() && p.node.computed && isShapeMember(p.get('object')) && !isWritten(p) && !isCallee(p)) return 'size';
    if (isMethodCall(p, 'at', 1) && isShapeMember((p.get('callee') as NodePath<t.MemberExpression>).get('object'))) return 'sizeAt';
    if (isMethodCall(p, 'size') && p.node.arguments.length > 0) return 'sizeOf';
    if (isMethodCall(p, 'numel', 0)) return 'numel';
    if (isMethodCall(p, 'dim', 0)) return 'dim';
    if (isNamedMember(p, 'ndim') && !isWritten(p) && !isCallee(p)) return 'ndim';
    return undefined;
  }

  /** A value holding a whole shape: `x.shape`, `x.size()`, or a local assigned one. */
  isShapeArray(p: NodePath): boolean {
    p = unwrap(p);
    if (isShapeMember(p)) return true;
    if (isMethodCall(p, 'size', 0)) return true;
    if (p.isIdentifier()) {
      const b = p.scope.getBinding(p.node.name);
      return b !== undefined && this.shapeArrays.has(b);
    }
    return false;
  }

  isDerived(p: NodePath): boolean {
    p = unwrap(p);
    if (p.isIdentifier()) {
      const b = p.scope.getBinding(p.node.name);
      return b !== undefined && this.derivedBindings.has(b);
    }
    if (this.sizeRead(p)) return true;
    if (p.isMemberExpression() && p.node.computed && this.isShapeArray(p.get('object'))) return true;
    if (isMethodCall(p, 'at', 1) && this.isShapeArray((p.get('callee') as NodePath<t.MemberExpression>).get('object'))) return true;
    if (this.items.has(p.node)) return true;
    if (p.isBinaryExpression() && ['+', '-', '*', '%'].includes(p.node.operator))
      return this.isDerived(p.get('left')) || this.isDerived(p.get('right'));
    if (isMathFloorOfDivision(p)) {
      const d = p.get('arguments')[0] as NodePath<t.BinaryExpression>;
      return this.isDerived(d.get('left')) || this.isDerived(d.get('right'));
    }
    if (p.isConditionalExpression()) return this.isDerived(p.get('consequent')) || this.isDerived(p.get('alternate'));
    if (p.isAssignmentExpression({ operator: '=' })) return this.isDerived(p.get('right'));
    if (p.isSequenceExpression()) return this.isDerived(p.get('expressions').at(-1)!);
    return false;
  }

  /** Whether the value at `p` (an `item()` call or a local holding one) is used as a size. */
  usedAsSize(p: NodePath, seen = new Set<t.Node>()): boolean {
    if (seen.has(p.node)) return false;
    seen.add(p.node);
    const { parent, child } = holder(p);
    if (!parent) return false;
    if (parent.isBinaryExpression()) {
      const other = parent.get(parent.node.left === child.node ? 'right' : 'left') as NodePath;
      if (this.isDerived(other)) return true;
      return ['+', '-', '*', '%'].includes(parent.node.operator) && this.usedAsSize(parent, seen);
    }
    if (parent.isCallExpression() && parent.node.callee !== child.node) {
      if (isMathFloorOfDivision(parent)) return this.usedAsSize(parent, seen);
      return !calleeIsGlobal(parent);
    }
    if (parent.isArrayExpression() || parent.isConditionalExpression()) return this.usedAsSize(parent, seen);
    if (parent.isVariableDeclarator() && t.isIdentifier(parent.node.id)) {
      const b = parent.scope.getBinding(parent.node.id.name);
      return b !== undefined && b.referencePaths.some((r) => this.usedAsSize(r, seen));
    }
    return false;
  }

  /** Whether a whole shape at `p` is used for its sizes (indexed, destructured, handed to an op), so it is worth reading symbolically. */
  consumesSizes(p: NodePath, seen = new Set<t.Node>()): boolean {
    if (seen.has(p.node)) return false;
    seen.add(p.node);
    const { parent, child } = holder(p);
    if (!parent) return false;
    if (parent.isMemberExpression() && parent.node.object === child.node)
      return parent.node.computed ? !isWritten(parent) : isProp(parent.node.property, 'at') && parent.parentPath.isCallExpression();
    if (parent.isVariableDeclarator()) {
      if (t.isArrayPattern(parent.node.id)) return true;
      if (!t.isIdentifier(parent.node.id)) return false;
      const b = parent.scope.getBinding(parent.node.id.name);
      return b !== undefined && b.constant && b.referencePaths.length > 0 && b.referencePaths.every((r) => this.consumesSizes(r, seen));
    }
    if (parent.isAssignmentExpression() && parent.node.right === child.node) return t.isArrayPattern(parent.node.left);
    if (parent.isForOfStatement() && parent.node.right === child.node) return true;
    if (parent.isSpreadElement()) {
      const outer = parent.parentPath;
      return (outer.isCallExpression() && !calleeIsGlobal(outer)) || (outer.isArrayExpression() && this.consumesSizes(outer, seen));
    }
    if (parent.isCallExpression() && parent.node.callee !== child.node) return !calleeIsGlobal(parent);
    return false;
  }
}

function isCallee(p: NodePath): boolean {
  const { parent, child } = holder(p);
  return !!parent && (parent.isCallExpression() || parent.isNewExpression()) && parent.node.callee === child.node;
}

/**
 * Bindings a pattern binds from the elements of a shape: sizes (`[b, n]`, `[b = 1]`) and, for a rest element
 * (`[b, ...rest]`), the rest of the shape.
 */
function elementBindings(pattern: NodePath, scope: NodePath): { sizes: Binding[]; rest: Binding[] } {
  const out = { sizes: [] as Binding[], rest: [] as Binding[] };
  if (!pattern.isArrayPattern()) return out;
  for (const el of pattern.get('elements')) {
    const rest = el.isRestElement();
    const target = el.isAssignmentPattern() ? el.get('left') : rest ? (el.get('argument') as NodePath) : el;
    if (target.isIdentifier()) {
      const b = scope.scope.getBinding(target.node.name);
      if (b) (rest ? out.rest : out.sizes).push(b);
    }
  }
  return out;
}

function analyse(fn: FunctionPath): ShapeFacts {
  const flow = new Flow();
  const body = fn.get('body') as NodePath;
  // Grow the shape-derived bindings (and the item() calls used as sizes) until nothing changes.
  for (let changed = true; changed;) {
    changed = false;
    const add = <T>(set: Set<T>, v: T) => {
      if (!set.has(v)) {
        set.add(v);
        changed = true;
      }
    };
    body.traverse({
      VariableDeclarator(p) {
        const init = p.get('init');
        if (!init.node) return;
        if (p.get('id').isIdentifier()) {
          const b = p.scope.getBinding((p.node.id as t.Identifier).name);
          if (!b) return;
          if (flow.isDerived(init as NodePath)) add(flow.derivedBindings, b);
          if (flow.isShapeArray(init as NodePath)) add(flow.shapeArrays, b);
        } else if (flow.isShapeArray(init as NodePath)) {
          const { sizes, rest } = elementBindings(p.get('id'), p);
          for (const b of sizes) add(flow.derivedBindings, b);
          for (const b of rest) add(flow.shapeArrays, b);
        }
      },
      AssignmentExpression(p) {
        const left = p.get('left');
        if (left.isIdentifier()) {
          const b = p.scope.getBinding(left.node.name);
          const right = p.get('right');
          const derived = p.node.operator === '=' ? flow.isDerived(right) : p.node.operator in COMPOUND && flow.isDerived(right);
          if (b && derived) add(flow.derivedBindings, b);
        } else if (p.node.operator === '=' && flow.isShapeArray(p.get('right'))) {
          const { sizes, rest } = elementBindings(left, p);
          for (const b of sizes) add(flow.derivedBindings, b);
          for (const b of rest) add(flow.shapeArrays, b);
        }
      },
      ForOfStatement(p) {
        const left = p.get('left');
        if (!flow.isShapeArray(p.get('right')) || !left.isVariableDeclaration()) return;
        const id = left.get('declarations')[0]?.get('id');
        if (id?.isIdentifier()) {
          const b = p.scope.getBinding(id.node.name) ?? id.scope.getBinding(id.node.name);
          if (b) add(flow.derivedBindings, b);
        }
      },
      BinaryExpression(p) {
        // Evidence for a parameter (or any local) being a size: it is combined with one.
        const op = p.node.operator;
        if (!(op in ARITH) && !(op in COMPARE)) return;
        for (const [side, other] of [
          ['left', 'right'],
          ['right', 'left'],
        ] as const) {
          const v = unwrap(p.get(side) as NodePath);
          if (!v.isIdentifier()) continue;
          const b = p.scope.getBinding(v.node.name);
          if (b && b.kind === 'param' && flow.isDerived(p.get(other) as NodePath)) add(flow.derivedBindings, b);
        }
      },
      CallExpression(p) {
        if (isMethodCall(p, 'item', 0) && !flow.items.has(p.node) && flow.usedAsSize(p)) add(flow.items, p.node);
      },
    });
  }
  const facts: ShapeFacts = {
    reads: new Map(),
    derived: new Set(),
    floorDivs: new Set(),
    globalCalls: new Set(),
    updates: new Set(),
    predicates: new Set(),
  };
  body.traverse({
    enter(p) {
      if (!p.isExpression()) return;
      const read = flow.sizeRead(p);
      if (read) facts.reads.set(p.node, read);
      else if (flow.items.has(p.node)) facts.reads.set(p.node, 'item');
      else if (isShapeMember(p) && !flow.sizeRead(holder(p).parent ?? p) && !isSizeAtTarget(p) && flow.consumesSizes(p))
        facts.reads.set(p.node, 'shape');
      else if (isMethodCall(p, 'size', 0) && flow.consumesSizes(p)) facts.reads.set(p.node, 'sizeOf');
      if (flow.isDerived(p)) facts.derived.add(p.node);
      if (isMathFloorOfDivision(p)) {
        const d = p.get('arguments')[0] as NodePath<t.BinaryExpression>;
        if (flow.isDerived(d.get('left')) || flow.isDerived(d.get('right'))) facts.floorDivs.add(p.node);
      }
      if ((p.isCallExpression() || p.isNewExpression()) && calleeIsGlobal(p)) facts.globalCalls.add(p.node);
      if (isPredicateArgument(p)) facts.predicates.add(p.node);
      if (p.isUpdateExpression()) {
        const { parent } = holder(p);
        const valueUnused = parent?.isExpressionStatement() || (parent?.isForStatement() && parent.node.update === holder(p).child.node);
        if (p.node.prefix || valueUnused) facts.updates.add(p.node);
      }
    },
  });
  return facts;
}

/** `x.shape` as the object of `x.shape.at(k)` (read by sizeAt as a whole). */
function isSizeAtTarget(p: NodePath): boolean {
  const { parent } = holder(p);
  return !!parent && isNamedMember(parent, 'at') && !!parent.parentPath && isMethodCall(parent.parentPath, 'at', 1);
}

// ---- Rewrite --------------------------------------------------------------------------------------------

type Helper = (name: string, args: t.Expression[]) => t.CallExpression;

/** Replace every child of `n` by `visit(child)`. */
function visitChildren(n: t.Node, visit: (c: t.Node) => t.Node): void {
  for (const key of t.VISITOR_KEYS[n.type] ?? []) {
    const rec = n as unknown as Record<string, t.Node | (t.Node | null)[] | null | undefined>;
    const child = rec[key];
    if (Array.isArray(child)) rec[key] = child.map((c) => (c ? visit(c) : c));
    else if (child) rec[key] = visit(child);
  }
}

const isTypeOnly = (n: t.Node) => n.type.startsWith('TS') && !TS_WRAPPERS.has(n.type);

function rewriteNode(n: t.Node, f: ShapeFacts, helper: Helper, visit: (c: t.Node) => t.Node): t.Node {
  if (isTypeOnly(n)) return n;
  const derived = (c: t.Node | null | undefined) => !!c && f.derived.has(c);
  const concrete = (c: t.Expression) => helper('concrete', [c]);
  // Math.floor(a / b): the division is not visited on its own (it would become a fractional div()).
  if (f.floorDivs.has(n)) {
    const d = (n as t.CallExpression).arguments[0] as t.BinaryExpression;
    return helper('floorDiv', [visit(d.left) as t.Expression, visit(d.right) as t.Expression]);
  }
  const was = derived; // keyed by the original children, read before they are replaced
  const originals = { ...n } as Record<string, unknown>;
  visitChildren(n, visit);
  const now = <T extends t.Node>(key: string): T => (n as unknown as Record<string, T>)[key]!;
  const wasKey = (key: string) => was(originals[key] as t.Node);

  const read = f.reads.get(n);
  if (read) return readCall(n, read, helper);

  if (t.isBinaryExpression(n) && (wasKey('left') || wasKey('right'))) {
    const left = n.left as t.Expression;
    const name = ARITH[n.operator] ?? COMPARE[n.operator];
    if (name && f.predicates.has(n)) return helper('pred', [t.stringLiteral(name), left, n.right]);
    if (name) return helper(name, [left, n.right]);
    if (NUMERIC_ONLY.has(n.operator)) {
      if (wasKey('left')) n.left = concrete(left);
      if (wasKey('right')) n.right = concrete(n.right);
    }
    return n;
  }
  if (t.isAssignmentExpression(n) && t.isIdentifier(n.left) && n.operator in COMPOUND && (wasKey('left') || wasKey('right'))) {
    return t.assignmentExpression('=', n.left, helper(COMPOUND[n.operator]!, [t.cloneNode(n.left), n.right]));
  }
  if (t.isUpdateExpression(n) && t.isIdentifier(n.argument) && wasKey('argument') && f.updates.has(n)) {
    return t.assignmentExpression('=', n.argument, helper(n.operator === '++' ? 'inc' : 'dec', [t.cloneNode(n.argument)]));
  }
  if (t.isUnaryExpression(n) && CONCRETE_UNARY.has(n.operator) && wasKey('argument')) {
    n.argument = concrete(n.argument);
    return n;
  }
  if (t.isLogicalExpression(n)) {
    if (wasKey('left')) n.left = concrete(n.left);
    if (wasKey('right')) n.right = concrete(n.right);
    return n;
  }
  if ((t.isIfStatement(n) || t.isWhileStatement(n) || t.isDoWhileStatement(n) || t.isConditionalExpression(n)) && wasKey('test')) {
    n.test = concrete(now<t.Expression>('test'));
    return n;
  }
  if (t.isForStatement(n) && n.test && wasKey('test')) {
    n.test = concrete(n.test);
    return n;
  }
  if (t.isMemberExpression(n) && wasKey('object')) {
    // `n.toFixed(2)`, `n.toString()`: a method of a plain number
    n.object = concrete(n.object as t.Expression);
    return n;
  }
  if (t.isTemplateLiteral(n)) {
    const before = originals.expressions as t.Node[];
    n.expressions = n.expressions.map((e, i) => (was(before[i]) ? concrete(e as t.Expression) : e));
    return n;
  }
  if ((t.isCallExpression(n) || t.isNewExpression(n)) && f.globalCalls.has(n)) {
    const before = originals.arguments as t.Node[];
    n.arguments = n.arguments.map((a, i) => (was(before[i]) && t.isExpression(a) ? concrete(a) : a));
    return n;
  }
  return n;
}

/** The helper call for a shape read, from the (already rewritten) parts of the expression it replaces. */
function readCall(n: t.Node, kind: ReadKind, helper: Helper): t.Expression {
  const member = (e: t.Node) => e as t.MemberExpression;
  const call = n as t.CallExpression;
  const receiver = () => member(call.callee).object;
  switch (kind) {
    case 'size': {
      const m = member(n);
      return helper('size', [member(m.object).object, m.property as t.Expression]);
    }
    case 'sizeAt':
      return helper('sizeAt', [member(receiver()).object, call.arguments[0] as t.Expression]);
    case 'sizeOf':
      return helper('sizeOf', [receiver(), ...(call.arguments as t.Expression[])]);
    case 'numel':
    case 'dim':
    case 'item':
      return helper(kind, [receiver()]);
    case 'ndim':
    case 'shape':
      return helper(kind, [member(n).object]);
  }
}
