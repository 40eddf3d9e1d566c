import { traverse } from '@babel/core';
import { parse, parseExpression, type ParserOptions } from '@babel/parser';
import type { NodePath } from '@babel/traverse';
import * as t from '@babel/types';
import { Analyzer, type ClassInfo, type FunctionPath, type TypeEvidence, type ValueKind } from './classify.js';
import { FileContext } from './file-context.js';

/**
 * The plugin's classifier run over code the plugin never saw: a function's source as
 * `Function.prototype.toString` gives it (tsc or esbuild output, plain JS), wrapped in a small program so
 * the Analyzer can run on it. The function becomes a method of a class that extends the instance's class
 * lineage (each class's own source), so `this.helper()` calls and getters are judged as the plugin would.
 *
 * A lone function's source does not show its imports, so free identifiers are sorted here: names the caller
 * says are kiln's (`F`, `ops`, `kiln_1`, …) are declared as imports from kiln (ordinary kiln calls stay
 * capturable; the tracer records them through the op table), esbuild's `__name` helper is declared as the
 * identity it is, and everything else that is neither a parameter, a local nor a well-known global is a
 * free variable the caller must decide about. This module only reports; it throws nothing of kiln's own
 * (it is loaded lazily, and may be a second instance of kiln's modules under a loader such as tsx).
 */
export interface SourceQuery {
  /** `Function.prototype.toString` of the function to analyse (a function, an arrow or a method). */
  readonly fn: string;
  /** Sources of the classes `this` is an instance of, base-most first (user classes only), or empty. */
  readonly classes: readonly string[];
  /** Whether a free identifier names one of kiln's exports (or a namespace import of kiln). */
  readonly isKilnName: (name: string) => boolean;
  /**
   * What the arguments of this call are (a tensor, a module, a number, something else), by position: the
   * run-time evidence that decides untyped parameters, which compiled code has no annotations for.
   */
  readonly paramKinds?: readonly (ValueKind | undefined)[];
}

export interface SourceVerdict {
  /** The first statement that cannot be captured: why, and its text. */
  readonly brk?: { readonly reason: string; readonly code: string };
  /** Free variables read (sorted): values run-time capture cannot see, so cannot guard. */
  readonly free: readonly string[];
  /** Set when the source could not be parsed (native or bound functions, syntax Babel does not know). */
  readonly unparsable?: string;
}

/** Node's and the web platform's globals a function may read (ES built-ins are Babel's own list). */
const HOST_GLOBALS = new Set([
  'console',
  'process',
  'performance',
  'crypto',
  'Buffer',
  'globalThis',
  'global',
  'setTimeout',
  'setInterval',
  'setImmediate',
  'clearTimeout',
  'clearInterval',
  'clearImmediate',
  'queueMicrotask',
  'structuredClone',
  'URL',
  'URLSearchParams',
  'TextEncoder',
  'TextDecoder',
  'AbortController',
  'fetch',
  'require',
  'module',
  'exports',
  '__dirname',
  '__filename',
]);

const TARGET = '__kiln_target';
const PARSE: ParserOptions = { plugins: ['typescript', 'decorators-legacy'] };

export function classifySource(q: SourceQuery): SourceVerdict {
  let text: string;
  try {
    text = programText(q);
  } catch (e) {
    return { free: [], unparsable: e instanceof Error ? e.message.split('\n')[0]! : String(e) };
  }
  let ast: t.File;
  try {
    ast = parse(text, { ...PARSE, sourceType: 'module' });
  } catch (e) {
    return { free: [], unparsable: e instanceof Error ? e.message.split('\n')[0]! : String(e) };
  }
  // `(0, kiln_1.relu)(x)` (tsc's CommonJS output) is the call `kiln_1.relu(x)` without `this`: judged as such.
  traverse(ast, {
    CallExpression(p) {
      const c = p.node.callee;
      if (t.isSequenceExpression(c) && c.expressions.length === 2 && t.isNumericLiteral(c.expressions[0])) {
        const callee = c.expressions[1]!;
        if (t.isMemberExpression(callee)) p.node.callee = callee;
      }
    },
  });
  let program: NodePath<t.Program> | undefined;
  traverse(ast, {
    Program(p) {
      program = p;
      p.stop();
    },
  });
  const ctx = new FileContext(program!, undefined, (s) => s === 'kiln');
  const own = ctx.classes.get('__kiln_own')!;
  const targetNode = own.node.body.body.find((m) => t.isClassMethod(m) && t.isIdentifier(m.key, { name: TARGET })) as t.ClassMethod;
  const analyzer = new Analyzer(ctx, q.paramKinds && argumentEvidence(targetNode, q.paramKinds));
  const info = analyzer.classInfo(own);
  const target = info.method(TARGET)!.path;
  const analysis = analyzer.analyze(target, info);
  const slice = (n: t.Node) => text.slice(n.start ?? 0, n.end ?? 0);
  let brk: SourceVerdict['brk'];
  if (analysis.unsupported) brk = { reason: analysis.unsupported.reason, code: snippet(slice(analysis.unsupported.node)) };
  else {
    const s = analysis.statements.find((st) => st.brk);
    if (s) brk = { reason: s.brk!.reason, code: snippet(slice(s.path.node)) };
  }
  // Line numbers in reasons count lines of this synthetic program, not the user's file: drop them.
  if (brk) brk = { reason: brk.reason.replace(/ \(line \d+\)/g, ''), code: brk.code };
  return { ...(brk ? { brk } : {}), free: freeVariables(target, info) };
}

/** Evidence from the actual arguments: the target's parameter identifiers have the kinds of the values passed. */
function argumentEvidence(target: t.ClassMethod, kinds: readonly (ValueKind | undefined)[]): TypeEvidence {
  const byNode = new Map<t.Node, ValueKind | undefined>();
  target.params.forEach((p, i) => {
    const id = t.isAssignmentPattern(p) ? p.left : p;
    if (t.isIdentifier(id)) byNode.set(id, kinds[i]);
  });
  return { kindOf: (node) => byNode.get(node) };
}

/**
 * The program the Analyzer sees: imports for the kiln names used, `__name`, the class lineage (renamed
 * where anonymous) and `class __kiln_own extends <last> { __kiln_target(params) body }`.
 */
function programText(q: SourceQuery): string {
  const lines: string[] = [];
  let parent: string | undefined;
  const seen = new Set<string>();
  q.classes.forEach((src, i) => {
    const cls = parseExpression(`(${src})`, PARSE);
    if (!t.isClassExpression(cls)) throw new Error('not a class');
    const body = src.slice(cls.body.start! - 1, cls.body.end! - 1);
    const given = cls.id?.name;
    const name = given && !seen.has(given) && given !== '__kiln_own' ? given : `__kiln_class${i}`;
    seen.add(name);
    // The base-most user class extends a stand-in for kiln's Module (its `super()` calls must parse).
    lines.push(`class ${name} extends ${parent ?? '__kiln_Module'} ${body}`);
    parent = name;
  });
  lines.push(`class __kiln_own${parent ? ` extends ${parent}` : ''} { ${asMethod(q.fn)} }`);
  const code = lines.join('\n');
  // Declarations go first; which names need them is found on the code itself.
  const names = identifiersIn(code);
  const kiln = [...names].filter((n) => q.isKilnName(n));
  const head = [
    ...(kiln.length ? [`import { ${kiln.join(', ')} } from 'kiln';`] : []),
    'function __name(f) { return f; }',
    'class __kiln_Module {}',
  ];
  return `${head.join('\n')}\n${code}`;
}

/** A function's source as the text of a method named `__kiln_target`, keeping `async`/`*` and the body. */
function asMethod(src: string): string {
  const fn = functionNode(src);
  if (!fn) throw new Error('not a function');
  const { node, offset } = fn;
  const at = (n: t.Node) => [n.start! - offset, n.end! - offset] as const;
  const params = node.params.length ? src.slice(at(node.params[0]!)[0], at(node.params[node.params.length - 1]!)[1]) : '';
  const [b0, b1] = at(node.body);
  const body = t.isBlockStatement(node.body) ? src.slice(b0, b1) : `{ return (${src.slice(b0, b1)}); }`;
  return `${node.async ? 'async ' : ''}${node.generator ? '*' : ''}${TARGET}(${params}) ${body}`;
}

function functionNode(src: string): { node: t.Function; offset: number } | undefined {
  try {
    const e = parseExpression(`(${src})`, PARSE);
    if (t.isFunctionExpression(e) || t.isArrowFunctionExpression(e)) return { node: e, offset: 1 };
  } catch {
    // not an expression: a method's source (`forward(x) { … }`)
  }
  try {
    const e = parseExpression(`({${src}})`, PARSE);
    const p = t.isObjectExpression(e) && e.properties.length === 1 ? e.properties[0] : undefined;
    if (t.isObjectMethod(p)) return { node: p, offset: 2 };
  } catch {
    return undefined;
  }
  return undefined;
}

/** Every identifier name in `code` (cheap superset: the parse below decides which are references). */
function identifiersIn(code: string): Set<string> {
  const out = new Set<string>();
  const ast = parse(code, { ...PARSE, sourceType: 'module' });
  traverse(ast, {
    Identifier(p) {
      if (p.isReferencedIdentifier() && !p.scope.hasBinding(p.node.name, true)) out.add(p.node.name);
    },
  });
  return out;
}

/** One line of at most 60 characters. */
function snippet(s: string): string {
  const one = s.replace(/\s+/g, ' ').trim();
  return one.length > 60 ? `${one.slice(0, 59)}…` : one;
}

/**
 * Free variables read by the target and by the methods and getters of `this` it reaches: references
 * bound nowhere in the program that are not ES built-ins (Babel's list) or host globals.
 */
function freeVariables(target: FunctionPath, info: ClassInfo): string[] {
  const free = new Set<string>();
  const visited = new Set<t.Node>();
  const visit = (fn: NodePath, cls: ClassInfo) => {
    if (visited.has(fn.node)) return;
    visited.add(fn.node);
    fn.traverse({
      Identifier(p) {
        const name = p.node.name;
        if (!p.isReferencedIdentifier() || p.scope.hasBinding(name) || HOST_GLOBALS.has(name)) return;
        free.add(name);
      },
      MemberExpression(p) {
        const m = p.node;
        if (!t.isThisExpression(m.object) || m.computed || !t.isIdentifier(m.property)) return;
        const name = m.property.name;
        const reached = p.parentPath.isCallExpression({ callee: m }) ? cls.method(name) : cls.getter(name);
        if (reached) visit(reached.path, reached.cls);
      },
    });
  };
  visit(target, info);
  return [...free].sort();
}
