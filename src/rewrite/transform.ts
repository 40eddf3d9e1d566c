import { relative } from 'node:path';
import type { NodePath } from '@babel/traverse';
import * as t from '@babel/types';
import { Analyzer, branchParts, type ClassInfo, type Finding, type FunctionPath } from '../analysis/classify.js';
import { FileContext } from '../analysis/file-context.js';
import { guardFreeVariables } from './free-vars.js';
import { SegmentError, buildSegments, type SegmentPlan } from './segments.js';

/**
 * The kiln transform: for every nn.Module subclass in a file, its `forward` (and the helper methods it
 * calls that break) become dispatchers into a plan — the body cut at graph breaks into segment functions
 * the runtime captures, guards and caches (see src/compile/plan.ts). Functions marked `/** @compile *\/`
 * are rewritten the same way; functions passed to kiln's `compile(fn)` get a plan attached and keep
 * running eagerly when called directly. The original code stays in the plan as `eager`.
 */
export interface TransformOptions {
  /** Where generated code imports the plan runtime from (default `kiln/plugin/runtime`). */
  readonly runtime?: string;
  /** Import sources that count as kiln besides `kiln` and `kiln/*` (e.g. a path to kiln's sources). */
  readonly kilnSources?: readonly string[];
  readonly backend?: 'kernels' | 'eager' | 'aot_eager';
  readonly cacheSizeLimit?: number;
}

/** What the transform did, per rewritten function (Babel's `file.metadata.kiln`; read by `kiln explain`). */
export interface PlanReport {
  readonly name: string;
  readonly line: number;
  readonly unsupported?: { reason: string; loc: string };
  readonly segments: { kind: 'graph' | 'break' | 'branch'; loc: string; reason?: string; statements: number }[];
  readonly slots: string[];
}

export interface FileReport {
  readonly plans: PlanReport[];
  /** Module classes left alone, and why (they still compile at run time by tracing). */
  readonly skipped: { name: string; line: number; reason: string }[];
}

interface Analysed {
  readonly plan: SegmentPlan | undefined;
  readonly unsupported: Finding | undefined;
}

const locOf = (n: t.Node) => (n.loc ? `${n.loc.start.line}:${n.loc.start.column + 1}` : '0:0');

export function transformProgram(
  program: NodePath<t.Program>,
  filename: string | undefined,
  cwd: string,
  options: TransformOptions,
): FileReport {
  const kilnSources = new Set(options.kilnSources ?? []);
  const ctx = new FileContext(program, filename, (s) => s === 'kiln' || s.startsWith('kiln/') || kilnSources.has(s));
  const analyzer = new Analyzer(ctx);
  const report: FileReport = { plans: [], skipped: [] };
  const file = filename ? relative(cwd, filename) || filename : '<unknown>';
  let runtimeId: t.Identifier | undefined;
  const runtime = () => (runtimeId ??= program.scope.generateUidIdentifier('kiln'));
  const rt = (member: string) => t.memberExpression(t.cloneNode(runtime()), t.identifier(member));
  const pluginOptions = t.objectExpression([
    ...(options.backend ? [t.objectProperty(t.identifier('backend'), t.stringLiteral(options.backend))] : []),
    ...(options.cacheSizeLimit !== undefined
      ? [t.objectProperty(t.identifier('cacheSizeLimit'), t.numericLiteral(options.cacheSizeLimit))]
      : []),
  ]);

  /** Build `_kiln.plan({...})` for `fn` and the dispatcher body; returns the plan's identifier. */
  const planFor = (
    fn: FunctionPath,
    name: string,
    cls: ClassInfo | undefined,
    rewriteBody: boolean,
    { plan, unsupported }: Analysed = analyse(fn, cls),
  ): { id: t.Identifier; dispatch: t.BlockStatement | undefined } => {
    const id = program.scope.generateUidIdentifier(name.replace('.', '_'));
    planIds.add(id.name);
    for (let f = fn.parentPath.getFunctionParent(); f; f = f.parentPath?.getFunctionParent() ?? null) closures.add(f);
    // Unsupported code and functions that keep their body stay as written: the attached function is the eager code.
    const keep = unsupported !== undefined || !rewriteBody;
    if (cls && !keep) makeSuperExplicit(fn, cls);
    const props: t.ObjectProperty[] = [
      prop('name', t.stringLiteral(name)),
      prop('file', t.stringLiteral(file)),
      prop('slots', t.arrayExpression((plan?.slots ?? []).map((s) => t.stringLiteral(s)))),
      ...(keep
        ? []
        : [
            prop(
              'eager',
              t.functionExpression(t.identifier(methodName(fn) ?? 'eager'), params(fn), t.cloneNode(fn.node.body as t.BlockStatement)),
            ),
          ]),
    ];
    const segReport: PlanReport['segments'] = [];
    if (plan?.needsBind) {
      const bound = plan.slots.slice(0, plan.paramCount).map((s) => t.identifier(s));
      props.push(prop('bind', t.functionExpression(null, params(fn), t.blockStatement([t.returnStatement(t.arrayExpression(bound))]))));
    }
    if (plan && !unsupported) {
      props.push(
        prop(
          'segments',
          t.arrayExpression(
            plan.segments.map((seg) => {
              const loc = locOf(seg.brk?.node ?? seg.statements[0]!.node);
              segReport.push({ kind: seg.kind, loc, ...(seg.brk ? { reason: seg.brk.reason } : {}), statements: seg.statements.length });
              const common = [
                prop('kind', t.stringLiteral(seg.kind)),
                prop('loc', t.stringLiteral(loc)),
                ...(seg.brk ? [prop('reason', t.stringLiteral(seg.brk.reason))] : []),
                prop('in', t.arrayExpression(seg.in.map((i) => t.numericLiteral(i)))),
                prop('out', t.arrayExpression(seg.out.map((i) => t.numericLiteral(i)))),
              ];
              if (seg.kind === 'branch') {
                const { test, then, otherwise } = branchArms(seg.statements[0]!);
                const params = seg.in.map((i) => t.identifier(plan!.slots[i]!));
                const arm = (body: t.Statement[]) => segmentFunction(body, plan!.slots, seg.in, seg.out, true).fn;
                return t.objectExpression([
                  ...common,
                  prop('exit', t.stringLiteral('either')),
                  prop('test', t.functionExpression(null, params, t.blockStatement([t.returnStatement(test)]))),
                  prop('then', arm(then)),
                  prop('else', arm(otherwise)),
                ]);
              }
              const { fn: segFn, exit } = segmentFunction(
                seg.statements.map((p) => p.node),
                plan!.slots,
                seg.in,
                seg.out,
              );
              return t.objectExpression([...common, prop('exit', t.stringLiteral(exit)), prop('fn', segFn)]);
            }),
          ),
        ),
      );
    } else {
      props.push(prop('segments', t.arrayExpression([])));
      props.push(
        prop(
          'unsupported',
          t.objectExpression([
            prop('reason', t.stringLiteral(unsupported!.reason)),
            prop('loc', t.stringLiteral(locOf(unsupported!.node))),
          ]),
        ),
      );
    }
    if (pluginOptions.properties.length) props.push(prop('options', pluginOptions));
    report.plans.push({
      name,
      line: fn.node.loc?.start.line ?? 0,
      ...(unsupported ? { unsupported: { reason: unsupported.reason, loc: locOf(unsupported.node) } } : {}),
      segments: segReport,
      slots: plan?.slots ?? [],
    });
    const decl = t.variableDeclaration('const', [t.variableDeclarator(id, t.callExpression(rt('plan'), [t.objectExpression(props)]))]);
    pending.push(decl);
    if (keep) return { id, dispatch: undefined };
    const args = plan && !plan.needsBind ? t.arrayExpression(plan.slots.slice(0, plan.paramCount).map((s) => t.identifier(s))) : undefined;
    const dispatch = t.blockStatement([
      t.returnStatement(
        t.callExpression(rt('run'), [
          fn.isArrowFunctionExpression() ? t.identifier('undefined') : t.thisExpression(),
          t.cloneNode(id),
          args ?? t.identifier(RUN_ARGS),
        ]),
      ),
    ]);
    return { id, dispatch };
  };
  const pending: t.Statement[] = [];
  const planIds = new Set<string>();
  /** Functions that enclose a rewritten class or function: their variables are closures of captured code. */
  const closures = new Set<NodePath<t.Function>>();

  /** Classify `fn` and cut it into segments; a finding that forbids cutting makes it run eagerly. No AST changes. */
  function analyse(fn: FunctionPath, cls: ClassInfo | undefined): Analysed {
    const analysis = analyzer.analyze(fn, cls);
    if (analysis.unsupported) return { plan: undefined, unsupported: analysis.unsupported };
    try {
      return { plan: buildSegments(fn, analysis), unsupported: undefined };
    } catch (e) {
      if (!(e instanceof SegmentError)) throw e;
      return { plan: undefined, unsupported: e.finding };
    }
  }

  // Module classes.
  program.traverse({
    ClassDeclaration(cls) {
      if (!ctx.isModuleClass(cls)) return;
      const className = cls.node.id?.name;
      if (!className) {
        report.skipped.push({
          name: '<anonymous class>',
          line: cls.node.loc?.start.line ?? 0,
          reason: 'an anonymous class cannot be referred to; give it a name',
        });
        return;
      }
      const info = analyzer.classInfo(cls);
      // Analyse every method before changing anything: code the analysis trips over is left as written
      // (captured at run time instead) rather than failing the build.
      let analysed: [NodePath<t.ClassMethod>, Analysed][];
      try {
        analysed = methodsToRewrite(info, analyzer).map((m) => [m, analyse(m, info)]);
      } catch (e) {
        const why = e instanceof Error ? e.message.split('\n')[0] : String(e);
        report.skipped.push({
          name: className,
          line: cls.node.loc?.start.line ?? 0,
          reason: `the plugin's analysis failed (${why}); compile() captures it at run time`,
        });
        return;
      }
      const statement = cls.parentPath.isExportDeclaration() ? cls.parentPath : cls;
      const attachStatements: t.Statement[] = [];
      for (const [m, result] of analysed) {
        const name = methodName(m)!;
        const { id, dispatch } = planFor(m, `${className}.${name}`, info, true, result);
        if (dispatch) replaceBody(m, dispatch);
        attachStatements.push(
          t.expressionStatement(
            t.callExpression(rt('attach'), [
              t.memberExpression(t.memberExpression(t.identifier(className), t.identifier('prototype')), t.identifier(name)),
              t.cloneNode(id),
            ]),
          ),
        );
      }
      flush(statement);
      if (attachStatements.length) statement.insertAfter(attachStatements);
    },
  });

  // Functions marked /** @compile */ (rewritten) and functions handed to kiln's compile() (plan attached).
  const compiled = new Set<string>();
  // Arrows and function expressions handed to compile(): bound to a module-level variable, or inline.
  const compiledExprs: { fn: NodePath<t.ArrowFunctionExpression | t.FunctionExpression>; name: string; after?: NodePath }[] = [];
  program.traverse({
    CallExpression(call) {
      const callee = call.node.callee;
      const arg = call.get('arguments')[0];
      const isCompile =
        (t.isIdentifier(callee) && callee.name === 'compile' && ctx.isKilnBinding(call, 'compile')) ||
        (t.isMemberExpression(callee) &&
          t.isIdentifier(callee.property, { name: 'compile' }) &&
          t.isIdentifier(callee.object) &&
          ctx.isKilnBinding(call, callee.object.name));
      if (!isCompile || !arg) return;
      if (arg.isArrowFunctionExpression() || arg.isFunctionExpression()) {
        const holder = call.parentPath;
        const name = holder.isVariableDeclarator() && t.isIdentifier(holder.node.id) ? holder.node.id.name : 'compiled';
        if (standsAlone(arg, program)) compiledExprs.push({ fn: arg, name });
        return;
      }
      if (!arg.isIdentifier()) return;
      const binding = call.scope.getBinding(arg.node.name);
      if (binding?.scope !== program.scope) return;
      if (ctx.functions.has(arg.node.name)) compiled.add(arg.node.name);
      else if (binding.constant && binding.path.isVariableDeclarator() && !compiledExprs.some((e) => e.fn.parentPath === binding.path)) {
        const init = binding.path.get('init');
        const decl = binding.path.parentPath!;
        const after = decl.parentPath?.isExportNamedDeclaration() ? decl.parentPath : decl;
        if ((init.isArrowFunctionExpression() || init.isFunctionExpression()) && standsAlone(init, program))
          compiledExprs.push({ fn: init, name: arg.node.name, after });
      }
    },
  });
  // Like declarations passed by name: a plan attached, the function itself left as written (it is the eager code).
  for (const { fn, name, after } of compiledExprs) {
    // `x => e` is `x => { return e; }`: statements to segment (the return keeps `e`'s location for reports)
    if (t.isArrowFunctionExpression(fn.node) && !t.isBlockStatement(fn.node.body)) {
      const arrow: NodePath<t.ArrowFunctionExpression> = fn as NodePath<t.ArrowFunctionExpression>;
      const loc = fn.node.body.loc;
      arrow.ensureBlock();
      (arrow.node.body as t.BlockStatement).body[0]!.loc = loc;
    }
    const { id } = planFor(fn, name, undefined, false);
    if (after) after.insertAfter(t.expressionStatement(t.callExpression(rt('attach'), [t.identifier(name), t.cloneNode(id)])));
    else fn.replaceWith(t.callExpression(rt('attach'), [fn.node, t.cloneNode(id)]));
  }
  const topAttach: t.Statement[] = [];
  for (const [name, fn] of ctx.functions) {
    const marked = hasCompileTag(fn);
    if (!marked && !compiled.has(name)) continue;
    const { id, dispatch } = planFor(fn, name, undefined, marked);
    if (dispatch) replaceBody(fn, dispatch);
    topAttach.push(t.expressionStatement(t.callExpression(rt('attach'), [t.identifier(name), t.cloneNode(id)])));
  }
  // Plans of functions go first, with their attach calls: declarations hoist, so compile(f) may run early.
  const fnDecls = pending.splice(0);

  // Free variables: reads of state that can change between calls go through guarded scope objects.
  if (report.plans.length > 0 || ctx.kilnNames.size > 0) {
    // No crawl first: references in the emitted segment copies resolve by name through their scopes.
    const excluded = new Set([...planIds, ...(runtimeId ? [runtimeId.name] : [])]);
    guardFreeVariables(program, ctx, closures, excluded, () => rt('scope'));
  }

  if (runtimeId) {
    const source = options.runtime ?? 'kiln/plugin/runtime';
    const imp = t.importDeclaration([t.importNamespaceSpecifier(t.cloneNode(runtimeId))], t.stringLiteral(source));
    program.unshiftContainer('body', imp);
    if (fnDecls.length || topAttach.length) {
      const body = program.get('body');
      const first = body.find((st) => !st.isImportDeclaration());
      if (first) {
        // A comment between the imports and `first` belongs to `first` (e.g. `/** @compile */`), not the import.
        const prev = body[body.indexOf(first) - 1];
        const leading = new Set(first.node.leadingComments ?? []);
        if (prev?.node.trailingComments) prev.node.trailingComments = prev.node.trailingComments.filter((c) => !leading.has(c));
        first.insertBefore([...fnDecls, ...topAttach]);
      } else program.pushContainer('body', [...fnDecls, ...topAttach]);
    }
    program.scope.crawl(); // new references (e.g. to kiln imports inside segments) must count for later plugins
  }
  return report;

  /** Emit the pending plan declarations before `statement` (the class they belong to). */
  function flush(statement: NodePath): void {
    const decls = pending.splice(0);
    if (decls.length) statement.insertBefore(decls);
  }
}

/** Name of the argument array the dispatcher passes when parameters need binding (rest/patterns). */
const RUN_ARGS = 'args';

/** The parameters, cloned (TypeScript parameter properties only occur in constructors, never rewritten). */
function params(fn: FunctionPath): t.FunctionParameter[] {
  return fn.node.params.map((p) => t.cloneNode(p as t.FunctionParameter));
}

function prop(key: string, value: t.Expression): t.ObjectProperty {
  return t.objectProperty(t.identifier(key), value);
}

function methodName(fn: FunctionPath): string | undefined {
  if (fn.isClassMethod()) {
    const k = fn.node.key;
    return t.isIdentifier(k) ? k.name : t.isStringLiteral(k) ? k.value : undefined;
  }
  if (fn.isFunctionDeclaration()) return fn.node.id?.name;
  return undefined;
}

/**
 * Whether a function expression's segments can live at module level, where plans go: it reads no variable
 * of an enclosing function (a closure) and, for an arrow, not `this` (its own would then be lost).
 */
function standsAlone(fn: NodePath<t.ArrowFunctionExpression | t.FunctionExpression>, program: NodePath<t.Program>): boolean {
  let ok = true;
  fn.traverse({
    ThisExpression(p) {
      const owner = p.findParent((q) => q.isFunction() && !q.isArrowFunctionExpression());
      if (fn.isArrowFunctionExpression() && (!owner || !isWithin(owner, fn))) ok = false;
    },
    Identifier(p) {
      if (!p.isReferencedIdentifier()) return;
      const b = p.scope.getBinding(p.node.name);
      if (b && b.scope !== program.scope && !isWithin(b.scope.path, fn)) ok = false;
    },
  });
  return ok;
}

function isWithin(p: NodePath, ancestor: NodePath): boolean {
  return p === ancestor || p.isDescendant(ancestor);
}

function hasCompileTag(fn: NodePath<t.FunctionDeclaration>): boolean {
  const holder = fn.parentPath.isExportDeclaration() ? fn.parentPath.node : fn.node;
  return (holder.leadingComments ?? []).some((c) => c.type === 'CommentBlock' && /(^|\s|\*)@compile\b/.test(c.value));
}

/** `forward`, plus every own method that breaks and is called as `this.name(…)` somewhere in the class. */
function methodsToRewrite(info: ClassInfo, analyzer: Analyzer): NodePath<t.ClassMethod>[] {
  const called = new Set<string>();
  info.path.traverse({
    CallExpression(c) {
      const callee = c.node.callee;
      if (t.isMemberExpression(callee) && t.isThisExpression(callee.object) && t.isIdentifier(callee.property) && !callee.computed)
        called.add(callee.property.name);
    },
  });
  const out: NodePath<t.ClassMethod>[] = [];
  for (const [name, m] of info.methods) {
    if (name === 'forward') out.push(m);
    else if (called.has(name) && info.method(name)?.path === m && analyzer.functionBreak(m, info)) out.push(m);
  }
  return out;
}

/** Replace a function's body with the dispatcher; rest/pattern parameters become one `...args`. */
function replaceBody(fn: FunctionPath, dispatch: t.BlockStatement): void {
  const usesArgs = (dispatch.body[0] as t.ReturnStatement).argument;
  const passesArray = t.isCallExpression(usesArgs) && t.isIdentifier(usesArgs.arguments[2], { name: RUN_ARGS });
  if (passesArray) fn.node.params = [t.restElement(t.identifier(RUN_ARGS))];
  fn.get('body').replaceWith(dispatch);
}

/**
 * Code outside the class cannot say `super`: `super.m(a)` becomes `Object.getPrototypeOf(C.prototype).m.call(this, a)`
 * and a `super.x` read `Reflect.get(Object.getPrototypeOf(C.prototype), "x", this)` (so getters see `this`).
 */
function makeSuperExplicit(fn: FunctionPath, cls: ClassInfo): void {
  const home = () => {
    const c = t.identifier(cls.name);
    const target = fn.isClassMethod() && fn.node.static ? c : t.memberExpression(c, t.identifier('prototype'));
    return t.callExpression(t.memberExpression(t.identifier('Object'), t.identifier('getPrototypeOf')), [target]);
  };
  fn.traverse({
    Function(p) {
      if (!p.isArrowFunctionExpression()) p.skip();
    },
    Class(p) {
      p.skip();
    },
    Super(p) {
      const member = p.parentPath;
      if (!member.isMemberExpression()) return;
      const computed = member.node.computed;
      const key = computed ? (member.node.property as t.Expression) : t.stringLiteral((member.node.property as t.Identifier).name);
      const call = member.parentPath;
      if (call.isCallExpression() && call.node.callee === member.node) {
        const method = t.memberExpression(home(), computed ? key : t.identifier((member.node.property as t.Identifier).name), computed);
        call.replaceWith(t.callExpression(t.memberExpression(method, t.identifier('call')), [t.thisExpression(), ...call.node.arguments]));
      } else {
        member.replaceWith(
          t.callExpression(t.memberExpression(t.identifier('Reflect'), t.identifier('get')), [home(), key, t.thisExpression()]),
        );
      }
    },
  });
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
