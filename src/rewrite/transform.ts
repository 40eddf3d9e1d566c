import { relative } from 'node:path';
import type { NodePath } from '@babel/traverse';
import * as t from '@babel/types';
import { Analyzer, type ClassInfo, type Finding, type FunctionPath, type TypeEvidence } from '../analysis/classify.js';
import { FileContext } from '../analysis/file-context.js';
import { attach, attachInline, bindFunctionFor, dispatcher, eagerFunction, replaceBody } from './emit/dispatch.js';
import { emitPrologue } from './emit/imports.js';
import { planLiteral } from './emit/plan-literal.js';
import { segmentLiteral } from './emit/segment.js';
import { recordShapeArithmetic } from './emit/shape-arith.js';
import { makeSuperExplicit } from './emit/super.js';
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
  /**
   * Route shape arithmetic through the runtime's recording helpers (emit/shape-arith.ts; default true). Off
   * only to compare with code rewritten without it; the plugin's own options do not include it.
   */
  readonly shapeArith?: boolean;
  /**
   * The type checker's view of the file (src/analysis/types.ts: `kiln build --types`, `kiln explain`,
   * kiln/tsc): which values are tensors, modules and numbers where annotations do not say.
   */
  readonly types?: TypeEvidence;
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
  // Type evidence applies only where the checker saw the text Babel parsed (its offsets are looked up).
  const code = (program.hub as unknown as { file?: { code?: string } } | undefined)?.file?.code;
  const types =
    options.types && (!options.types.covers || (code !== undefined && options.types.covers(filename, code))) ? options.types : undefined;
  const ctx = new FileContext(program, filename, (s) => s === 'kiln' || s.startsWith('kiln/') || kilnSources.has(s), types);
  const analyzer = new Analyzer(ctx, types);
  const report: FileReport = { plans: [], skipped: [] };
  const file = filename ? relative(cwd, filename) || filename : '<unknown>';
  let runtimeId: t.Identifier | undefined;
  const runtime = () => (runtimeId ??= program.scope.generateUidIdentifier('kiln'));
  const pluginOptions =
    options.backend || options.cacheSizeLimit !== undefined
      ? { backend: options.backend || undefined, cacheSizeLimit: options.cacheSizeLimit }
      : undefined;
  /** Plan declarations not yet placed: before their class, or (functions) at the top of the file. */
  const pending: t.Statement[] = [];
  const planIds = new Set<string>();
  /** Functions that enclose a rewritten class or function: their variables are closures of captured code. */
  const closures = new Set<NodePath<t.Function>>();

  /** Emit `const _id = _kiln.plan({...})` for `fn` (pending) and build its dispatcher body; returns the plan's identifier. */
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
    // Before the body is copied into `eager` and the segments, so every copy records the same way.
    if (plan && !unsupported && options.shapeArith !== false) recordShapeArithmetic(fn, runtime());
    const paramSlots = plan?.slots.slice(0, plan.paramCount);
    const segments = plan && !unsupported ? plan.segments : [];
    const segReport: PlanReport['segments'] = segments.map((seg) => ({
      kind: seg.kind,
      loc: locOf(seg.brk?.node ?? seg.statements[0]!.node),
      ...(seg.brk ? { reason: seg.brk.reason } : {}),
      statements: seg.statements.length,
    }));
    const why = unsupported && { reason: unsupported.reason, loc: locOf(unsupported.node) };
    const literal = planLiteral({
      runtime: runtime(),
      name,
      file,
      slots: plan?.slots ?? [],
      eager: keep ? undefined : eagerFunction(fn, methodName(fn)),
      bind: plan?.needsBind ? bindFunctionFor(fn, paramSlots!) : undefined,
      segments: segments.map((seg, i) => segmentLiteral(seg, plan!, segReport[i]!.loc)),
      unsupported: why,
      options: pluginOptions,
    });
    report.plans.push({
      name,
      line: fn.node.loc?.start.line ?? 0,
      ...(why ? { unsupported: why } : {}),
      segments: segReport,
      slots: plan?.slots ?? [],
    });
    pending.push(t.variableDeclaration('const', [t.variableDeclarator(id, literal)]));
    if (keep) return { id, dispatch: undefined };
    return { id, dispatch: dispatcher(runtime(), id, fn, plan && !plan.needsBind ? paramSlots : undefined) };
  };

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
        const method = t.memberExpression(t.memberExpression(t.identifier(className), t.identifier('prototype')), t.identifier(name));
        attachStatements.push(attach(runtime(), method, id));
      }
      flush(statement);
      if (attachStatements.length) statement.insertAfter(attachStatements);
    },
  });

  report.skipped.push(...unrewrittenModuleClasses(program, ctx));
  // Functions marked /** @compile */ (rewritten) and functions handed to kiln's compile() (plan attached).
  const { compiled, compiledExprs, closures: compiledClosures } = compileTargets(program, ctx);
  report.skipped.push(...compiledClosures);
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
    if (after) after.insertAfter(attach(runtime(), t.identifier(name), id));
    else fn.replaceWith(attachInline(runtime(), fn.node, id));
  }
  const topAttach: t.Statement[] = [];
  for (const [name, fn] of ctx.functions) {
    const marked = hasCompileTag(fn);
    if (!marked && !compiled.has(name)) continue;
    const { id, dispatch } = planFor(fn, name, undefined, marked);
    if (dispatch) replaceBody(fn, dispatch);
    topAttach.push(attach(runtime(), t.identifier(name), id));
  }
  // Plans of functions go first, with their attach calls: declarations hoist, so compile(f) may run early.
  const fnDecls = pending.splice(0);

  // Free variables: reads of state that can change between calls go through guarded scope objects.
  if (report.plans.length > 0 || ctx.kilnNames.size > 0) {
    // No crawl first: references in the emitted segment copies resolve by name through their scopes.
    const excluded = new Set([...planIds, ...(runtimeId ? [runtimeId.name] : [])]);
    guardFreeVariables(program, ctx, closures, excluded, () => t.memberExpression(t.cloneNode(runtime()), t.identifier('scope')));
  }

  if (runtimeId) {
    emitPrologue(program, runtimeId, options.runtime ?? 'kiln/plugin/runtime', [...fnDecls, ...topAttach]);
    program.scope.crawl(); // new references (e.g. to kiln imports inside segments) must count for later plugins
  }
  return report;

  /** Emit the pending plan declarations before `statement` (the class they belong to). */
  function flush(statement: NodePath): void {
    const decls = pending.splice(0);
    if (decls.length) statement.insertBefore(decls);
  }
}

interface CompiledExpression {
  readonly fn: NodePath<t.ArrowFunctionExpression | t.FunctionExpression>;
  readonly name: string;
  readonly after?: NodePath;
}

/**
 * What the file hands to kiln's `compile()`: names of module-level function declarations, and arrows or
 * function expressions, bound to a module-level constant (`after`: its declaration) or written inline.
 */
function compileTargets(
  program: NodePath<t.Program>,
  ctx: FileContext,
): { compiled: Set<string>; compiledExprs: CompiledExpression[]; closures: FileReport['skipped'] } {
  const compiled = new Set<string>();
  // Inline functions left to run-time capture because they read an enclosing function's variables.
  const closures: FileReport['skipped'] = [];
  // Arrows and function expressions handed to compile(): bound to a module-level variable, or inline.
  const compiledExprs: CompiledExpression[] = [];
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
        else {
          closures.push({
            name: `compile(${arg.isArrowFunctionExpression() ? '(…) => …' : 'function …'})`,
            line: arg.node.loc?.start.line ?? 0,
            reason:
              "it reads variables of the function around it (or that function's `this`), and rewritten code lives at module level; compile() captures it at run time",
          });
        }
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
  return { compiled, compiledExprs, closures };
}

/**
 * Module classes the transform does not rewrite, for the report's `skipped` list: class expressions, and
 * classes whose base is a variable holding a kiln class that the file's analysis cannot resolve to one
 * (`const Base = kiln.nn.Module` is resolved). They still compile at run time by tracing.
 */
function unrewrittenModuleClasses(program: NodePath<t.Program>, ctx: FileContext): FileReport['skipped'] {
  const out: FileReport['skipped'] = [];
  const line = (n: t.Node) => n.loc?.start.line ?? 0;
  program.traverse({
    ClassExpression(cls) {
      if (!ctx.isModuleClass(cls) && !aliasOfKiln(cls, ctx)) return;
      const holder = cls.parentPath;
      const name =
        cls.node.id?.name ?? (holder.isVariableDeclarator() && t.isIdentifier(holder.node.id) ? holder.node.id.name : '<class expression>');
      out.push({
        name,
        line: line(cls.node),
        reason: `a class expression is not rewritten (only class declarations are): write \`class ${name.startsWith('<') ? 'Name' : name} extends …\`; compile() captures it at run time`,
      });
    },
    ClassDeclaration(cls) {
      if (ctx.isModuleClass(cls)) return;
      const alias = aliasOfKiln(cls, ctx);
      if (!alias) return;
      out.push({
        name: cls.node.id?.name ?? '<anonymous class>',
        line: line(cls.node),
        reason: `it extends ${alias.name}, a variable holding ${alias.value}, which the plugin does not follow: extend ${alias.value} directly to have it rewritten; compile() captures it at run time`,
      });
    },
  });
  return out;
}

/** `extends Base` where `const Base = kiln.nn.Module` (a kiln name read into a variable): the alias and what it holds. */
function aliasOfKiln(cls: NodePath<t.ClassDeclaration | t.ClassExpression>, ctx: FileContext): { name: string; value: string } | undefined {
  const sup = cls.node.superClass;
  if (!t.isIdentifier(sup)) return undefined;
  const decl = cls.scope.getBinding(sup.name)?.path;
  if (!decl?.isVariableDeclarator()) return undefined;
  const init = decl.node.init;
  const root = init ? FileContext.chainRoot(init) : undefined;
  if (!init || !root || !ctx.isKilnBinding(decl, root.name)) return undefined;
  return { name: sup.name, value: decl.get('init').toString() };
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
