import type { Binding, NodePath } from '@babel/traverse';
import * as t from '@babel/types';
import { guarded } from '../rewrite/free-vars.js';
import { FileContext, type ImportRef } from './file-context.js';

/**
 * Statement classification for the kiln plugin: for a method (or function) body, which top-level statements
 * can be captured into a graph and which must run as plain code, each break with a reason and the node it
 * points at. What it recognises, following TorchDynamo's rules for Python:
 *
 * - captured: tensor methods, kiln ops (`F.*`, `ops.*`, anything imported from kiln), submodule calls,
 *   reads of module attributes (the runtime guards their values), loops over module containers (unrolled
 *   when traced), helper methods, getters, static helpers and module-level functions without breaks,
 *   closures, `super` calls, pure built-ins (`Math.*`, `Object.keys`, …);
 * - graph breaks: `console.*`, `item()`/`toArray()` and other value reads, comparisons and arithmetic on a
 *   tensor's value (data-dependent `if`/`?:`/loops), iterating a tensor, `graphBreak()`, `await`, `try`,
 *   assignments deeper than `this.name` (`this.cfg.x = 1`: state stays eager; a graph replays `this.name = v`),
 *   calls the analysis cannot see into, and calls of
 *   helpers that themselves break;
 * - unsupported (the whole method runs eagerly, and `explain` says why): generators, `arguments`,
 *   `new.target`, private `#fields`, `eval`.
 */
export interface Finding {
  readonly reason: string;
  readonly node: t.Node;
}

export interface StatementInfo {
  readonly path: NodePath<t.Statement>;
  readonly brk: Finding | undefined;
  /**
   * Set for an `if` whose condition breaks (it reads tensor values) while its branches do not: the condition
   * runs eagerly, and the branch taken is captured as a graph of its own (TorchDynamo's resume at a jump).
   */
  readonly branch?: boolean;
}

export interface FunctionAnalysis {
  readonly unsupported: Finding | undefined;
  readonly statements: readonly StatementInfo[];
}

/** What a value is, as far as the evidence goes: a tensor, an nn.Module, a number, or something else. */
export type ValueKind = 'tensor' | 'module' | 'number' | 'other';

/**
 * Evidence about values beyond one file's syntax, asked per node (a parameter's or variable's identifier,
 * a call, a member read): the type checker's view in `kiln build --types`, `kiln explain` and kiln/tsc
 * (src/analysis/types.ts), or the actual argument values at run time. Undefined means "does not know".
 */
export interface TypeEvidence {
  /** Whether the evidence was taken from this very text of the file (offsets must agree); unset: always. */
  covers?(filename: string | undefined, code: string): boolean;
  kindOf(node: t.Node, filename: string | undefined): ValueKind | undefined;
  /** Whether a class declaration extends nn.Module (aliases and imported bases resolved), if known. */
  isModuleClass?(node: t.Node, filename: string | undefined): boolean | undefined;
}

export type FunctionPath = NodePath<
  t.ClassMethod | t.FunctionDeclaration | t.FunctionExpression | t.ArrowFunctionExpression | t.ObjectMethod
>;

/** Tensor methods and properties whose result is not a tensor. */
const SCALAR_METHODS = new Set(['size', 'dim', 'numel', 'isContiguous', 'stride', 'elementSize', 'equal', 'toString']);
const META_PROPS = new Set(['shape', 'ndim', 'dtype', 'requiresGrad', 'strides', 'offset', 'device', 'isLeaf', 'gradFn', 'length']);
/**
 * Methods only tensors have (not arrays, maps, sets, strings, functions or modules): calling one on an
 * unannotated parameter is evidence that it holds a tensor (test/untyped-params.test.ts checks the list).
 */
export const TENSOR_ONLY_METHODS = new Set([
  ...['relu', 'sigmoid', 'tanh', 'exp', 'log', 'sqrt', 'abs', 'sin', 'cos', 'neg', 'pow', 'mul', 'div', 'clamp'],
  ...['sum', 'mean', 'argmax', 'softmax', 'logSoftmax', 'matmul', 'mm', 'addmm', 'reshape', 'view', 'flatten'],
  ...['transpose', 'permute', 'unsqueeze', 'squeeze', 'expand', 'expandAs', 'narrow', 'unbind', 'gather', 'contiguous'],
  ...['detach', 'numel', 'isContiguous', 'eq', 'ne', 'lt', 'le', 'gt', 'ge', 'float', 'bool'],
]);
/** Properties only tensors have: reading one is evidence too. */
const TENSOR_ONLY_PROPS = new Set(['shape', 'ndim', 'dtype', 'requiresGrad', 'grad', 'gradFn', 'isLeaf']);
/** Methods of arrays, iterables, containers and modules: calling one is evidence that a value is not a tensor. */
const NON_TENSOR_METHODS = new Set([
  ...['parameters', 'buffers', 'modules', 'children', 'namedParameters', 'namedBuffers', 'namedModules', 'namedChildren'],
  ...['forEach', 'map', 'filter', 'reduce', 'some', 'every', 'find', 'findIndex', 'includes', 'indexOf', 'join'],
  ...['keys', 'values', 'entries', 'push', 'pop', 'has', 'call', 'apply', 'bind', 'stateDict', 'train', 'eval'],
]);
/** Methods that read a tensor's values. */
const VALUE_READS = new Set(['item', 'toArray', 'tolist', 'data', 'backward']);
/** Operators that turn a tensor into a number or string (and so read its value). */
const COERCING = new Set(['<', '>', '<=', '>=', '==', '!=', '+', '-', '*', '/', '%', '**', '|', '&', '^', '<<', '>>', '>>>']);
/** Globals whose functions have no side effects worth keeping in order. */
const PURE_GLOBALS = new Set([
  'Math',
  'Number',
  'String',
  'Boolean',
  'Array',
  'Object',
  'JSON',
  'parseInt',
  'parseFloat',
  'isNaN',
  'isFinite',
  'Symbol',
  'BigInt',
  'Reflect',
  'Map',
  'Set',
  'WeakMap',
  'Error',
  'TypeError',
  'RangeError',
  'Float32Array',
  'Float64Array',
  'Int32Array',
  'Uint8Array',
  'undefined',
  'Infinity',
  'NaN',
]);
const IMPURE_MEMBERS = new Set(['Math.random', 'Date.now', 'performance.now']);
/** Globals whose every use is a side effect or differs between calls (the host process, clocks, randomness). */
const IMPURE_GLOBALS = new Set(['crypto', 'process', 'performance', 'globalThis', 'window', 'document', 'localStorage', 'fetch']);
/**
 * Methods that change the object they are called on (arrays, maps, sets, module containers); tensors' in-place
 * ops end in `_`. `Set.add` is not among them: it cannot be told from `Tensor.add` without types.
 */
const MUTATING_METHODS = new Set([
  'push',
  'pop',
  'shift',
  'unshift',
  'splice',
  'sort',
  'reverse',
  'fill',
  'copyWithin',
  'set',
  'delete',
  'clear',
  'append',
  'extend',
  'insert',
]);
/** Built-ins that change their first argument. */
const MUTATING_BUILTINS = new Set([
  'Object.assign',
  'Object.defineProperty',
  'Object.defineProperties',
  'Object.setPrototypeOf',
  'Reflect.set',
  'Reflect.defineProperty',
  'Reflect.deleteProperty',
]);

const lineOf = (n: t.Node) => (n.loc ? ` (line ${n.loc.start.line})` : '');
const code = (n: t.Node, max = 40) => {
  const s = exprText(n);
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
};

/** Short source-like text for a member chain or call, for messages. */
function exprText(n: t.Node): string {
  if (t.isIdentifier(n)) return n.name;
  if (t.isThisExpression(n)) return 'this';
  if (t.isSuper(n)) return 'super';
  if (t.isMemberExpression(n)) return `${exprText(n.object)}${t.isIdentifier(n.property) && !n.computed ? `.${n.property.name}` : '[…]'}`;
  if (t.isCallExpression(n)) return `${exprText(n.callee)}()`;
  if (t.isTSNonNullExpression(n) || t.isTSAsExpression(n) || t.isParenthesizedExpression(n)) return exprText(n.expression);
  return n.type;
}

/** A class's members as the analysis needs them: methods, getters, statics and instance attributes. */
export class ClassInfo {
  readonly methods = new Map<string, NodePath<t.ClassMethod>>();
  readonly getters = new Map<string, NodePath<t.ClassMethod>>();
  readonly statics = new Map<string, NodePath<t.ClassMethod>>();
  /** Names set on instances (class fields, `this.x = …` in the constructor): they shadow methods. */
  readonly attributes = new Set<string>();
  parent: ClassInfo | undefined;

  constructor(readonly path: NodePath<t.ClassDeclaration>) {
    for (const m of path.get('body').get('body')) {
      if (m.isClassMethod()) {
        const key = m.node.key;
        const name = t.isIdentifier(key) && !m.node.computed ? key.name : t.isStringLiteral(key) ? key.value : undefined;
        if (name === undefined) continue;
        if (m.node.static) this.statics.set(name, m);
        else if (m.node.kind === 'get') this.getters.set(name, m);
        else if (m.node.kind === 'method') this.methods.set(name, m);
        else if (m.node.kind === 'constructor') {
          m.traverse({
            AssignmentExpression: (a) => {
              const l = a.node.left;
              if (t.isMemberExpression(l) && t.isThisExpression(l.object) && t.isIdentifier(l.property) && !l.computed)
                this.attributes.add(l.property.name);
            },
          });
        }
      } else if (m.isClassProperty() && !m.node.static && t.isIdentifier(m.node.key)) {
        this.attributes.add(m.node.key.name);
      }
    }
  }

  get name(): string {
    return this.path.node.id?.name ?? '<anonymous>';
  }

  /** This class, then its ancestors in the same file. */
  private *lineage(): Generator<ClassInfo> {
    yield this;
    if (this.parent) yield* this.parent.lineage();
  }

  private shadowed(name: string): boolean {
    for (const c of this.lineage()) if (c.attributes.has(name)) return true;
    return false;
  }

  /** The method `this.name(…)` calls, unless an instance attribute of that name shadows it. */
  method(name: string): { cls: ClassInfo; path: NodePath<t.ClassMethod> } | undefined {
    if (this.shadowed(name)) return undefined;
    for (const c of this.lineage()) {
      const m = c.methods.get(name);
      if (m) return { cls: c, path: m };
    }
    return undefined;
  }

  getter(name: string): { cls: ClassInfo; path: NodePath<t.ClassMethod> } | undefined {
    for (const c of this.lineage()) {
      const m = c.getters.get(name);
      if (m) return { cls: c, path: m };
    }
    return undefined;
  }
}

export class Analyzer {
  private readonly classInfos = new Map<t.Node, ClassInfo>();
  private readonly results = new Map<t.Node, FunctionAnalysis>();
  private readonly inProgress = new Set<t.Node>();

  constructor(
    readonly ctx: FileContext,
    /** Evidence beyond the syntax: the type checker (`kiln build --types`, kiln/tsc) or run-time values. */
    readonly evidence?: TypeEvidence,
  ) {}

  classInfo(cls: NodePath<t.ClassDeclaration>): ClassInfo {
    let info = this.classInfos.get(cls.node);
    if (!info) {
      info = new ClassInfo(cls);
      this.classInfos.set(cls.node, info);
      const sup = cls.node.superClass;
      if (t.isIdentifier(sup)) {
        const parent = this.ctx.classes.get(sup.name);
        if (parent && parent.node !== cls.node) info.parent = this.classInfo(parent);
      }
    }
    return info;
  }

  /** Classify each top-level statement of a function's body (memoised per function). */
  analyze(fn: FunctionPath, cls: ClassInfo | undefined): FunctionAnalysis {
    const done = this.results.get(fn.node);
    if (done) return done;
    this.inProgress.add(fn.node);
    try {
      const unsupported = this.unsupported(fn);
      const body = fn.get('body');
      const statements: StatementInfo[] = [];
      if (!unsupported && body.isBlockStatement()) {
        const tensors = this.tensorBindings(fn);
        for (const s of body.get('body')) statements.push(this.classifyStatement(s, cls, tensors));
      } else if (!unsupported && body.isExpression()) {
        const tensors = this.tensorBindings(fn);
        const brk = this.findBreak(body, cls, tensors);
        statements.push({ path: body as unknown as NodePath<t.Statement>, brk });
      }
      const result = { unsupported, statements };
      this.results.set(fn.node, result);
      return result;
    } finally {
      this.inProgress.delete(fn.node);
    }
  }

  /** The first reason calling `fn` breaks a graph, or undefined when its whole body can be captured. */
  functionBreak(fn: FunctionPath, cls: ClassInfo | undefined): Finding | undefined {
    if (this.inProgress.has(fn.node)) return undefined; // recursion: judged by the outer analysis
    const a = this.analyze(fn, cls);
    return a.unsupported ?? a.statements.find((s) => s.brk)?.brk;
  }

  private unsupported(fn: FunctionPath): Finding | undefined {
    if (fn.node.generator) return { reason: 'generator functions run eagerly (a graph cannot yield)', node: fn.node };
    if (fn.node.async) return { reason: 'async functions run eagerly (a graph cannot await)', node: fn.node };
    let found: Finding | undefined;
    fn.traverse({
      Function(p) {
        if (!p.isArrowFunctionExpression()) p.skip(); // their arguments/new.target are their own
      },
      Identifier(p) {
        if (p.node.name === 'arguments' && p.isReferencedIdentifier())
          found ??= { reason: "uses 'arguments'; name the parameters instead", node: p.node };
        if (p.node.name === 'eval' && p.parentPath.isCallExpression()) found ??= { reason: 'calls eval()', node: p.node };
      },
      MetaProperty(p) {
        found ??= { reason: `uses ${p.node.meta.name}.${p.node.property.name}`, node: p.node };
      },
      PrivateName(p) {
        found ??= { reason: `reads the private field #${p.node.id.name}, which code outside the class cannot reach`, node: p.node };
      },
    });
    return found;
  }

  /**
   * Bindings of `fn` that hold tensors, by a forward pass over parameters, declarations and assignments.
   * A parameter is a tensor on evidence only (issue 17): the type checker or the run-time value where the
   * caller has them, else its annotation, else how the body uses it. An unannotated parameter nothing
   * shows to be a tensor is not one here; should it turn out to be one, the run-time trace still refuses
   * to read its value, so the worst case is a segment that runs eagerly, never a wrong result.
   */
  private tensorBindings(fn: FunctionPath): Set<Binding> {
    const tensors = new Set<Binding>();
    for (const p of fn.get('params')) {
      const id = p.isAssignmentPattern() ? p.get('left') : p;
      if (!id.isIdentifier()) continue;
      const b = fn.scope.getBinding(id.node.name);
      if (b && this.parameterKind(id, p.isAssignmentPattern() ? p.node.right : undefined, b) === 'tensor') tensors.add(b);
    }
    // Two passes so a value assigned from a later-declared tensor variable in a loop is seen too.
    for (let pass = 0; pass < 2; pass++) {
      fn.traverse({
        VariableDeclarator: (d) => {
          const init = d.get('init');
          const id = d.get('id');
          const known = id.isIdentifier() ? this.evidenceKind(id.node) : undefined;
          if (known !== undefined ? known !== 'tensor' : !init.node || !this.isTensorExpr(init as NodePath<t.Expression>, tensors)) return;
          for (const name of Object.keys(d.getBindingIdentifiers())) {
            const b = d.scope.getBinding(name);
            if (b) tensors.add(b);
          }
        },
        AssignmentExpression: (a) => {
          const l = a.node.left;
          if (!t.isIdentifier(l) || !this.isTensorExpr(a.get('right'), tensors)) return;
          const b = a.scope.getBinding(l.name);
          if (b) tensors.add(b);
        },
      });
    }
    return tensors;
  }

  /** What the evidence says a node holds (type checker, run-time value), or undefined without any. */
  private evidenceKind(n: t.Node): ValueKind | undefined {
    return this.evidence?.kindOf(n, this.ctx.filename);
  }

  /** A parameter's kind: external evidence, then its annotation, then a literal default, then its uses. */
  private parameterKind(id: NodePath<t.Identifier>, def: t.Expression | undefined, b: Binding): ValueKind | undefined {
    const known = this.evidenceKind(id.node);
    if (known !== undefined) return known;
    const ann = id.node.typeAnnotation;
    if (t.isTSTypeAnnotation(ann)) return annotationKind(ann.typeAnnotation);
    if (def !== undefined && (t.isLiteral(def) || t.isObjectExpression(def) || t.isArrayExpression(def))) return 'other';
    return usageKind(b);
  }

  /** Whether an expression (probably) evaluates to a tensor. */
  private isTensorExpr(p: NodePath<t.Expression | t.Node>, tensors: ReadonlySet<Binding>): boolean {
    const n = p.node;
    // The checker knows what a helper returns, or what an untyped local holds, across files.
    if (this.evidence && (t.isCallExpression(n) || t.isMemberExpression(n) || t.isIdentifier(n))) {
      const known = this.evidenceKind(n);
      if (known !== undefined) return known === 'tensor';
    }
    if (t.isIdentifier(n)) {
      const b = p.scope.getBinding(n.name);
      return b !== undefined && tensors.has(b);
    }
    if (t.isTSAsExpression(n) || t.isTSNonNullExpression(n) || t.isParenthesizedExpression(n) || t.isAwaitExpression(n)) {
      return this.isTensorExpr(p.get(t.isAwaitExpression(n) ? 'argument' : 'expression') as NodePath, tensors);
    }
    if (t.isMemberExpression(n)) {
      const obj = p.get('object') as NodePath;
      if (!this.isTensorExpr(obj, tensors)) return false;
      if (n.computed) return !t.isStringLiteral(n.property) || !META_PROPS.has(n.property.value);
      return t.isIdentifier(n.property) && !META_PROPS.has(n.property.name);
    }
    if (t.isCallExpression(n)) {
      const callee = n.callee;
      if (t.isMemberExpression(callee) && t.isIdentifier(callee.property)) {
        const name = callee.property.name;
        if ((name === 'call' || name === 'forward') && n.arguments.length > 0) return true; // module call
        const obj = (p.get('callee') as NodePath<t.MemberExpression>).get('object');
        if (this.isTensorExpr(obj, tensors)) return !SCALAR_METHODS.has(name) && !VALUE_READS.has(name);
      }
      const root = FileContext.chainRoot(callee);
      if (root && this.ctx.isKilnBinding(p, root.name)) return true;
      return false;
    }
    if (t.isBinaryExpression(n) || t.isLogicalExpression(n)) {
      return this.isTensorExpr(p.get('left') as NodePath, tensors) || this.isTensorExpr(p.get('right') as NodePath, tensors);
    }
    if (t.isConditionalExpression(n))
      return this.isTensorExpr(p.get('consequent') as NodePath, tensors) || this.isTensorExpr(p.get('alternate') as NodePath, tensors);
    return false;
  }

  private classifyStatement(s: NodePath<t.Statement>, cls: ClassInfo | undefined, tensors: ReadonlySet<Binding>): StatementInfo {
    const brk = this.findBreak(s, cls, tensors);
    const parts = brk ? branchParts(s) : undefined;
    if (!parts) return { path: s, brk };
    const clean = (p: NodePath | undefined) => !p?.node || !this.findBreak(p, cls, tensors);
    const testBreaks = this.findBreak(parts.test, cls, tensors) !== undefined;
    return { path: s, brk, branch: testBreaks && clean(parts.consequent) && clean(parts.alternate) };
  }

  /** The first break inside `root` (itself included), in source order. */
  private findBreak(root: NodePath, cls: ClassInfo | undefined, tensors: ReadonlySet<Binding>): Finding | undefined {
    let found: Finding | undefined;
    const check = (p: NodePath) => {
      found ??= this.nodeBreak(p, cls, tensors);
      if (found) p.stop();
    };
    check(root);
    if (!found) root.traverse({ enter: check });
    return found;
  }

  private nodeBreak(p: NodePath, cls: ClassInfo | undefined, tensors: ReadonlySet<Binding>): Finding | undefined {
    const n = p.node;
    if (p.isTryStatement()) return { reason: 'try/catch runs eagerly: a captured graph cannot catch errors from tensor code', node: n };
    if (p.isDebuggerStatement()) return { reason: 'debugger statement', node: n };
    if (p.isAwaitExpression()) return { reason: 'await: a captured graph cannot wait on a promise', node: n };
    if (p.isCallExpression()) return this.callBreak(p, cls, tensors);
    if (p.isNewExpression()) {
      const root = FileContext.chainRoot(p.node.callee);
      if (root && (this.ctx.isKilnBinding(p, root.name) || (PURE_GLOBALS.has(root.name) && !isBound(p, root.name)))) return undefined;
      if (root && this.isLocal(p, root.name)) return undefined;
      return { reason: `new ${code(p.node.callee)}(): the plugin cannot see what this constructor does`, node: n };
    }
    if (p.isAssignmentExpression() || p.isUpdateExpression() || (p.isUnaryExpression() && p.node.operator === 'delete')) {
      const target = p.isAssignmentExpression()
        ? p.node.left
        : p.isUpdateExpression()
          ? p.node.argument
          : (p.node as t.UnaryExpression).argument;
      const root = memberRoot(target);
      // `this.counter += 1`, `this.cache = h`: a captured graph records the write and assigns it after every
      // run (TorchDynamo's side-effect replay). Writes deeper in (`this.cfg.x = 1`, `delete this.x`) stay eager.
      if (isOwnAttribute(target) && !(p.isUnaryExpression() && p.node.operator === 'delete')) return undefined;
      if (root && t.isThisExpression(root)) {
        return { reason: `assigns ${code(target)}: changes to module state run eagerly, in order, every call`, node: n };
      }
      if (root && t.isIdentifier(root) && !this.isLocal(p, root.name) && !t.isIdentifier(target)) {
        return { reason: `assigns ${code(target)}, state outside this function: kept eager`, node: n };
      }
      if (
        t.isIdentifier(target) &&
        !this.isLocal(p, target.name) &&
        p.scope.getBinding(target.name)?.kind !== 'module' &&
        !isBound(p, target.name)
      ) {
        return { reason: `assigns the global ${target.name}: kept eager`, node: n };
      }
      if (t.isIdentifier(target) && p.scope.getBinding(target.name)?.scope === this.ctx.program.scope) {
        return { reason: `assigns the module-level variable ${target.name}: kept eager`, node: n };
      }
      return undefined;
    }
    if (p.isBinaryExpression() && COERCING.has(p.node.operator)) {
      for (const side of ['left', 'right'] as const) {
        if (this.isTensorExpr(p.get(side) as NodePath, tensors)) {
          const inTest = p.findParent(
            (q) => q.isIfStatement() || q.isConditionalExpression() || q.isWhileStatement() || q.isForStatement() || q.isDoWhileStatement(),
          );
          const what = inTest ? 'data-dependent control flow' : 'reads a tensor value';
          return {
            reason: `${what}: '${p.node.operator}' on tensor ${code(p.node[side])} needs its value, which a graph does not have`,
            node: n,
          };
        }
      }
    }
    if (p.isTemplateLiteral()) {
      for (const e of p.get('expressions')) {
        if (this.isTensorExpr(e as NodePath, tensors))
          return { reason: `formats tensor ${code(e.node)} as text, which reads its values`, node: n };
      }
    }
    if (p.isForOfStatement() && this.isTensorExpr(p.get('right'), tensors)) {
      return { reason: `iterates over tensor ${code(p.node.right)} (data-dependent length and values)`, node: n };
    }
    if (p.isSpreadElement() && this.isTensorExpr(p.get('argument'), tensors)) {
      return { reason: `spreads tensor ${code(p.node.argument)} (data-dependent)`, node: n };
    }
    if (p.isIdentifier() && IMPURE_GLOBALS.has(p.node.name) && p.isReferencedIdentifier() && !isBound(p, p.node.name)) {
      return { reason: `reads ${p.node.name}, host state that changes between calls: it runs eagerly, every call`, node: n };
    }
    if (p.isMemberExpression() && cls) {
      const m = p.node;
      if (t.isThisExpression(m.object) && t.isIdentifier(m.property) && !m.computed && !p.parentPath.isCallExpression({ callee: m })) {
        const g = cls.getter(m.property.name);
        const b = g && this.functionBreak(g.path, g.cls);
        if (b) return { reason: `reads getter this.${m.property.name}, which breaks: ${b.reason}${lineOf(b.node)}`, node: m };
      }
    }
    return undefined;
  }

  private callBreak(p: NodePath<t.CallExpression>, cls: ClassInfo | undefined, tensors: ReadonlySet<Binding>): Finding | undefined {
    const n = p.node;
    const callee = n.callee;
    if (t.isV8IntrinsicIdentifier(callee)) return { reason: 'V8 intrinsic call', node: n };
    if (t.isMemberExpression(callee) && t.isIdentifier(callee.property) && !callee.computed) {
      const name = callee.property.name;
      const obj = callee.object;
      if (t.isIdentifier(obj) && obj.name === 'console' && !isBound(p, 'console')) {
        return { reason: `console.${name}() is a side effect: it runs eagerly, every call`, node: n };
      }
      const fullName = t.isIdentifier(obj) ? `${obj.name}.${name}` : '';
      if (IMPURE_MEMBERS.has(fullName) && !isBound(p, (obj as t.Identifier).name)) {
        return { reason: `${fullName}() gives a different value every call: it runs eagerly, every call`, node: n };
      }
      if (MUTATING_BUILTINS.has(fullName) && !isBound(p, (obj as t.Identifier).name) && n.arguments[0]) {
        const target = n.arguments[0];
        const root = t.isExpression(target) ? (memberRoot(target) ?? target) : undefined;
        if (root && (t.isThisExpression(root) || (t.isIdentifier(root) && !this.isLocal(p, root.name)))) {
          return { reason: `${fullName}() changes ${code(target)}, state outside the graph: it runs eagerly, every call`, node: n };
        }
      }
      if (MUTATING_METHODS.has(name) && !this.isTensorExpr((p.get('callee') as NodePath<t.MemberExpression>).get('object'), tensors)) {
        const root = memberRoot(callee);
        const outside =
          (root && t.isThisExpression(root) && t.isMemberExpression(obj)) ||
          (root && t.isIdentifier(root) && !this.isLocal(p, root.name) && !this.ctx.isKilnBinding(p, root.name));
        if (outside) {
          return { reason: `${code(callee)}() changes state outside the graph: it runs eagerly, every call`, node: n };
        }
      }
      if (
        VALUE_READS.has(name) &&
        (name !== 'data' && name !== 'backward'
          ? true
          : this.isTensorExpr((p.get('callee') as NodePath<t.MemberExpression>).get('object'), tensors))
      ) {
        return { reason: `${code(callee)}() reads a tensor's value: what follows depends on data, so the graph ends here`, node: n };
      }
      if (t.isThisExpression(obj) && cls) {
        const m = cls.method(name);
        const b = m && this.functionBreak(m.path, m.cls);
        if (b) return { reason: `calls this.${name}(), which breaks: ${b.reason}${lineOf(b.node)}`, node: n };
        return undefined;
      }
      if (t.isSuper(obj) && cls?.parent) {
        const m = cls.parent.method(name);
        const b = m && this.functionBreak(m.path, m.cls);
        if (b) return { reason: `calls super.${name}(), which breaks: ${b.reason}${lineOf(b.node)}`, node: n };
        return undefined;
      }
      if (t.isIdentifier(obj) && this.ctx.classes.has(obj.name) && p.scope.getBinding(obj.name)?.scope === this.ctx.program.scope) {
        const info = this.classInfo(this.ctx.classes.get(obj.name)!);
        const m = info.statics.get(name);
        const b = m && this.functionBreak(m, info);
        if (b) return { reason: `calls ${obj.name}.${name}(), which breaks: ${b.reason}${lineOf(b.node)}`, node: n };
        return undefined;
      }
    }
    const root = FileContext.chainRoot(callee);
    if (!root) return undefined; // (f())(), obj[k](): values computed here; the runtime trace checks them
    const name = root.name;
    if (this.ctx.isKilnBinding(p, name)) {
      if (t.isIdentifier(callee) && name === 'graphBreak') return { reason: 'graphBreak() called', node: n };
      return undefined;
    }
    if (this.isLocal(p, name)) return undefined;
    const binding = p.scope.getBinding(name);
    if (binding?.scope === this.ctx.program.scope) {
      const fn = this.ctx.functions.get(name);
      if (fn && t.isIdentifier(callee)) {
        const b = this.functionBreak(fn, undefined);
        return b ? { reason: `calls ${name}(), which breaks: ${b.reason}${lineOf(b.node)}`, node: n } : undefined;
      }
      if (binding.kind === 'const' || binding.kind === 'let' || binding.kind === 'var') {
        const init = binding.path.isVariableDeclarator() ? binding.path.get('init') : undefined;
        if (init && (init.isArrowFunctionExpression() || init.isFunctionExpression()) && t.isIdentifier(callee)) {
          const b = this.functionBreak(init, undefined);
          return b ? { reason: `calls ${name}(), which breaks: ${b.reason}${lineOf(b.node)}`, node: n } : undefined;
        }
        // A function written in an object literal (`const log = { add(x) { … } }`): the plugin does not see into it.
        if (t.isMemberExpression(callee) && !callee.computed && t.isIdentifier(callee.property) && init?.isObjectExpression()) {
          const key = callee.property.name;
          const fnProp = init.node.properties.find(
            (pr) =>
              (t.isObjectMethod(pr) || (t.isObjectProperty(pr) && t.isFunction(pr.value))) &&
              !pr.computed &&
              t.isIdentifier(pr.key, { name: key }),
          );
          if (fnProp && t.isIdentifier(callee.object, { name })) {
            return {
              reason: `calls ${name}.${key}(), a function of a module-level object that may change state; it runs eagerly`,
              node: n,
            };
          }
        }
        // An instance of a user class: its methods may change it (registry.remember(x)), which a graph would drop.
        if (t.isMemberExpression(callee) && init?.isNewExpression()) {
          const ctor = FileContext.chainRoot(init.node.callee);
          if (ctor && !this.ctx.isKilnBinding(init, ctor.name) && !(PURE_GLOBALS.has(ctor.name) && !isBound(init, ctor.name))) {
            return {
              reason: `calls ${code(callee)}() on an instance of ${ctor.name}, which the plugin does not see into; it runs eagerly`,
              node: n,
            };
          }
        }
        return undefined; // a module-level value (config object, table): methods on data
      }
      const imp = this.ctx.otherImports.get(name);
      if (!imp) return undefined;
      if (t.isIdentifier(callee)) {
        const verdict = importedFunctionBreak(this.ctx, imp, this.evidence);
        if (verdict === 'clean') return undefined;
        if (verdict)
          return { reason: `calls ${name}() from '${imp.source}', which breaks: ${verdict.reason}${lineOf(verdict.node)}`, node: n };
      }
      return {
        reason: `calls ${code(callee)}() imported from '${imp.source}', which the plugin does not see into; it runs eagerly`,
        node: n,
      };
    }
    if (!binding) {
      if (PURE_GLOBALS.has(name)) return undefined;
      return { reason: `calls ${code(callee)}(), which the plugin does not know; it runs eagerly`, node: n };
    }
    return undefined;
  }

  /** Whether `name` is bound inside the function being analysed (a parameter, variable or closure). */
  private isLocal(p: NodePath, name: string): boolean {
    const b = p.scope.getBinding(name);
    return b !== undefined && b.scope !== this.ctx.program.scope;
  }
}

/**
 * A function imported from a relative file: 'clean' when its body can be captured, its first break
 * otherwise, undefined when it cannot be found (not a function declaration, not a relative import).
 */
function importedFunctionBreak(ctx: FileContext, imp: ImportRef, evidence: TypeEvidence | undefined): Finding | 'clean' | undefined {
  const target = ctx.importedFunction(imp);
  if (!target) return undefined;
  if (resolving.has(target.path.node)) return 'clean'; // a cycle: judged where it started
  resolving.add(target.path.node);
  try {
    let byEvidence = analyzers.get(target.ctx);
    if (!byEvidence) analyzers.set(target.ctx, (byEvidence = new Map()));
    let analyzer = byEvidence.get(evidence);
    if (!analyzer) byEvidence.set(evidence, (analyzer = new Analyzer(target.ctx, evidence)));
    return analyzer.functionBreak(target.path, undefined) ?? unguardedState(target.ctx, target.path) ?? 'clean';
  } finally {
    resolving.delete(target.path.node);
  }
}
/**
 * A helper in a file the plugin leaves as it is (no kiln import, nothing to rewrite) that reads its own
 * module-level state: nothing guards that read, so calling the helper breaks the graph.
 */
function unguardedState(ctx: FileContext, fn: NodePath<t.FunctionDeclaration>): Finding | undefined {
  // A file that imports kiln or has module classes is rewritten too, and its reads guarded there.
  if (ctx.kilnNames.size > 0 || [...ctx.classes.values()].some((c) => ctx.isModuleClass(c))) return undefined;
  let found: Finding | undefined;
  fn.traverse({
    Identifier(p) {
      if (found || !p.isReferencedIdentifier()) return;
      const b = p.scope.getBinding(p.node.name);
      if (b && b.scope === ctx.program.scope && guarded(b, ctx)) {
        found = {
          reason: `reads ${p.node.name}, state of a file the plugin does not rewrite (it imports nothing from kiln), so no guard sees it change`,
          node: p.node,
        };
      }
    },
  });
  return found;
}

/** One analyzer per other file looked into, so each imported helper is analysed once. */
const analyzers = new WeakMap<FileContext, Map<TypeEvidence | undefined, Analyzer>>();
const resolving = new Set<t.Node>();

/**
 * The condition and the two arms of a statement that chooses between them: `if (c) A else B`, and a
 * conditional that is the whole value of a `return`, a declaration `const v = c ? a : b` or an assignment
 * `v = c ? a : b`. Undefined for any other statement.
 */
export function branchParts(
  s: NodePath<t.Statement>,
): { test: NodePath; consequent: NodePath; alternate: NodePath | undefined } | undefined {
  if (s.isIfStatement()) return { test: s.get('test'), consequent: s.get('consequent'), alternate: s.get('alternate') as NodePath };
  let value: NodePath | undefined;
  if (s.isReturnStatement()) value = s.get('argument') as NodePath;
  else if (s.isVariableDeclaration() && s.node.declarations.length === 1 && t.isIdentifier(s.node.declarations[0]!.id)) {
    value = s.get('declarations')[0]!.get('init') as NodePath;
  } else if (s.isExpressionStatement()) {
    const e = s.get('expression');
    if (e.isAssignmentExpression({ operator: '=' }) && t.isIdentifier(e.node.left)) value = e.get('right');
  }
  if (!value?.isConditionalExpression()) return undefined;
  return { test: value.get('test'), consequent: value.get('consequent'), alternate: value.get('alternate') };
}

/**
 * What a type annotation says: `Tensor`, `kiln.Tensor`, `Parameter` (optionally `| null | undefined`) are
 * tensors, number types numbers, other built-in types (string, arrays, literals…) something else; `any`,
 * `unknown` and other named types say nothing by themselves.
 */
function annotationKind(ty: t.TSType): ValueKind | undefined {
  if (t.isTSAnyKeyword(ty) || t.isTSUnknownKeyword(ty)) return undefined;
  if (t.isTSNumberKeyword(ty)) return 'number';
  if (t.isTSUnionType(ty)) {
    const kinds = ty.types.filter((m) => !t.isTSNullKeyword(m) && !t.isTSUndefinedKeyword(m)).map((m) => annotationKind(m));
    return kinds.length > 0 && kinds.every((k) => k === kinds[0]) ? kinds[0] : kinds.includes(undefined) ? undefined : 'other';
  }
  if (t.isTSTypeReference(ty)) {
    const name = t.isIdentifier(ty.typeName) ? ty.typeName.name : ty.typeName.right.name;
    if (name === 'Tensor' || name === 'Parameter') return 'tensor';
    return undefined; // another named type may be an alias of Tensor: the checker or the uses decide
  }
  return 'other';
}

/**
 * What the uses of an unannotated binding show: a tensor-only method or property read makes it a tensor;
 * spreading or iterating it, calling it, or a container/module method or `.length` makes it something
 * else (which wins: a value used both ways is not taken for a tensor). Undefined when nothing shows.
 */
function usageKind(b: Binding): ValueKind | undefined {
  let tensor = false;
  for (const ref of b.referencePaths) {
    const parent = ref.parentPath;
    if (!parent) continue;
    if (parent.isSpreadElement() || (parent.isForOfStatement() && parent.node.right === ref.node)) return 'other';
    if ((parent.isCallExpression() || parent.isNewExpression()) && parent.node.callee === ref.node) return 'other';
    if (parent.isMemberExpression() && parent.node.object === ref.node && !parent.node.computed && t.isIdentifier(parent.node.property)) {
      const prop = parent.node.property.name;
      const called = parent.parentPath?.isCallExpression() && parent.parentPath.node.callee === parent.node;
      if (prop === 'length' || (called && NON_TENSOR_METHODS.has(prop))) return 'other';
      if (called ? TENSOR_ONLY_METHODS.has(prop) : TENSOR_ONLY_PROPS.has(prop)) tensor = true;
    }
  }
  return tensor ? 'tensor' : undefined;
}

/** Whether `name` is declared in the program (not a global such as `Math` or `console`). */
function isBound(p: NodePath, name: string): boolean {
  return p.scope.getBinding(name) !== undefined;
}

/** `this.name` (not computed, not deeper): a module attribute a graph can record a write to. */
function isOwnAttribute(target: t.Node): boolean {
  return t.isMemberExpression(target) && t.isThisExpression(target.object) && !target.computed && t.isIdentifier(target.property);
}

/** The object at the root of a member chain (`this` in `this.a.b`), or undefined for a non-member. */
function memberRoot(e: t.Node): t.Node | undefined {
  if (!t.isMemberExpression(e)) return undefined;
  while (t.isMemberExpression(e)) e = e.object;
  return e;
}
