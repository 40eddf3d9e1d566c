import { createRequire } from 'node:module';
import { GraphModule } from '../graph/graph-module.js';
import * as nn from '../runtime/nn/index.js';
import { Module } from '../runtime/nn/module.js';
import { Tensor } from '../runtime/tensor.js';

/**
 * Run-time capture of code the kiln plugin never rewrote (tsc output, `npx tsx`, plain JS) first reads the
 * code's source and runs the plugin's classifier over it (src/analysis/source-classify.ts): a trace runs
 * the code once and the graph never again, so a side effect, a nondeterministic value or a value-dependent
 * branch in it would silently happen once, or be frozen. Such code runs eagerly instead, whole.
 *
 * Free variables are treated the same way. From a lone function's source a module-level `let` cannot be
 * told from a `const`, and a closure's value cannot be read, so a value baked into a graph could go stale
 * without any guard noticing. Never a silently wrong result comes first: a function that reads a free
 * variable (other than kiln's own exports, ES and Node globals) runs eagerly, with a warning naming the
 * variables and the fix (pass them as arguments or module attributes, which are guarded, or let the
 * plugin rewrite the file: it sees the declarations and guards what may change). Calls of free functions
 * are breaks by the classifier's own rules (it cannot see into them) and end the same way.
 */
export interface SourceBreak {
  /** One line for `explain` and GraphBreakError: the statement and why. */
  readonly reason: string;
  /** Where: `file:line:col` when known (plugin plans), else `Class.forward` or the function's name. */
  readonly loc: string;
  /** The KilnWarning text: the same, with how to let the plugin rewrite the file. */
  readonly warning: string;
}

type SourceClassify = typeof import('../analysis/source-classify.js');
type Verdict = ReturnType<SourceClassify['classifySource']>;

export const PLUGIN_FIX =
  "let the kiln plugin rewrite the file: run with `node --import kiln/register`, or add 'kiln/plugin' to your Babel config";

let loaded: SourceClassify | { error: string } | undefined;
/** The analysis, loaded on first use: Babel's parser and traverse are not needed until code is captured. */
function analysis(): SourceClassify | { error: string } {
  if (!loaded) {
    try {
      loaded = createRequire(import.meta.url)('../analysis/source-classify.js') as SourceClassify;
    } catch (e) {
      loaded = { error: e instanceof Error ? e.message.split('\n')[0]! : String(e) };
    }
  }
  return loaded;
}

/**
 * Free names taken for kiln's own exports (as `src/index.ts` exports them, and the namespaces tsc and
 * esbuild bind `import … from 'kiln'` to): calls through them are ops the tracer records. Left out, so
 * they stay unknown calls (breaks): bare random draws and `manualSeed` (a trace would freeze them: they
 * take no traced value), `optim`,
 * `testing` and `compile` (not graph code). Bare op names (`relu`, `log`) are not kiln exports: a free
 * `log(…)` is the user's.
 */
const KILN_NAMES = new Set([
  ...['kiln', 'F', 'ops', 'nn', 'fx', 'Tensor', 'tensor', 'zeros', 'ones', 'full', 'arange', 'zerosLike', 'onesLike'],
  ...['cat', 'stack', 'isGradEnabled', 'allclose', 'graphBreak', 'KilnError', 'ShapeError', 'DTypeError', 'IndexError'],
  ...['ValueError', 'TraceError', 'noGrad', 'withGradMode'],
]);
const isKilnName = (n: string) => KILN_NAMES.has(n) || /^(kiln_\d+|import_kiln\d*)$/.test(n);

/** Classes whose `forward` is kiln's own code: standard layers, containers, Module, GraphModule, OptimizedModule. */
const KILN_CLASSES = new Set<unknown>([Module, GraphModule, ...Object.values(nn).filter((v) => typeof v === 'function')]);
export function markKilnClass(c: abstract new (...a: never[]) => unknown): void {
  KILN_CLASSES.add(c);
}

const PLAN = Symbol.for('kiln.plan');
interface PlanBreaks {
  readonly name: string;
  readonly breaks: readonly { reason: string; loc: string }[];
}

/** Verdicts by function, then by the class lineage it was analysed with (the constructor, or NO_CLASS). */
const verdicts = new WeakMap<object, WeakMap<object, Map<string, Verdict>>>();
const NO_CLASS = {};

/** The user classes an instance belongs to, base-most first (kiln's own classes left out). */
function lineage(self: Module | undefined): (abstract new (...a: never[]) => unknown)[] {
  const out: (abstract new (...a: never[]) => unknown)[] = [];
  for (let c = self?.constructor; typeof c === 'function' && !KILN_CLASSES.has(c); c = Object.getPrototypeOf(c)) out.unshift(c as never);
  return out;
}

/** Whether `fn` is `forward` of one of kiln's classes (or a GraphModule's generated forward). */
function kilnOwned(fn: unknown, self: Module | undefined): boolean {
  if (self instanceof GraphModule && fn === self.forward) return true;
  for (const c of KILN_CLASSES) if ((c as { prototype?: { forward?: unknown } }).prototype?.forward === fn) return true;
  return false;
}

function verdictFor(fn: (...a: never[]) => unknown, self: Module | undefined, args?: readonly unknown[]): Verdict | { error: string } {
  const a = analysis();
  if ('error' in a) return a;
  const key = self?.constructor ?? NO_CLASS;
  let byClass = verdicts.get(fn);
  if (!byClass) verdicts.set(fn, (byClass = new WeakMap()));
  let byKinds = byClass.get(key);
  if (!byKinds) byClass.set(key, (byKinds = new Map()));
  // The arguments' kinds decide untyped parameters (issue 17: evidence, not the absence of a type).
  const paramKinds = args?.map(valueKind);
  const kindsKey = paramKinds?.join() ?? '';
  let v = byKinds.get(kindsKey);
  if (!v) {
    const classes = lineage(self).map((c) => Function.prototype.toString.call(c));
    byKinds.set(kindsKey, (v = a.classifySource({ fn: Function.prototype.toString.call(fn), classes, isKilnName, paramKinds })));
  }
  return v;
}

function valueKind(v: unknown): 'tensor' | 'module' | 'number' | 'other' {
  return v instanceof Tensor ? 'tensor' : v instanceof Module ? 'module' : typeof v === 'number' ? 'number' : 'other';
}

/**
 * Why `fn` (run with `this` = `self`), and the forwards of the user modules under `self` that a trace
 * enters, cannot be captured at run time, or undefined when they can. `name` is how messages call `fn`.
 */
export function sourceBreak(
  fn: (...a: never[]) => unknown,
  self: Module | undefined,
  name: string,
  args?: readonly unknown[],
): SourceBreak | undefined {
  const parts: { name: string; fn: (...a: never[]) => unknown; self: Module | undefined; args?: readonly unknown[]; path?: string }[] = [
    { name, fn, self, args },
  ];
  for (const [path, m] of self?.namedModules() ?? []) {
    if (path !== '') parts.push({ name: `${m.constructor.name}.forward (self.${path})`, fn: m.forward as never, self: m, path });
  }
  const free: string[] = [];
  let freeIn = '';
  // A submodule whose forward breaks is called whole (opaque-calls.ts): the capture resumes after it.
  const alone: string[] = [];
  const under = (path: string | undefined) => path !== undefined && alone.some((p) => path.startsWith(`${p}.`));
  for (const part of parts) {
    if (kilnOwned(part.fn, part.self) || under(part.path)) continue;
    const found = partBreak(part, free);
    if (found && part.path !== undefined) alone.push(part.path);
    else if (found) return found;
  }
  return freeBreak(free, freeIn);

  /** Why one part cannot be traced into; its free variables are added to `free`. */
  function partBreak(part: (typeof parts)[number], free: string[]): SourceBreak | undefined {
    const plan = (part.fn as unknown as { [PLAN]?: PlanBreaks })[PLAN];
    if (plan) {
      // Rewritten by the plugin: its own analysis stands (its breaks run eagerly only when called as a plan).
      const b = plan.breaks[0];
      return b && explained(`${part.name}: ${b.reason}`, b.loc, part.name);
    }
    const v = verdictFor(part.fn, part.self, part.args);
    if ('error' in v) return explained(`its source cannot be analysed here (${v.error})`, part.name, part.name);
    if (v.unparsable) return explained(`its source cannot be read (${v.unparsable})`, part.name, part.name);
    if (v.brk) return explained(`\`${v.brk.code}\`: ${v.brk.reason}`, part.name, part.name, free);
    // A submodule's free variables matter only when it is traced into: collected for it alone first.
    if (part.path !== undefined && v.free.length) return freeBreak(v.free, part.name);
    if (v.free.length && !freeIn) freeIn = part.name;
    free.push(...v.free.filter((f) => !free.includes(f)));
    return undefined;
  }
}

/** The break for reading free variables (run-time capture cannot guard them), or undefined when there are none. */
function freeBreak(free: readonly string[], freeIn: string): SourceBreak | undefined {
  if (!free.length) return undefined;
  const names = free.join(', ');
  const reason = `reads ${names}, free variable${free.length > 1 ? 's' : ''} run-time capture cannot see, so cannot guard (a changed value would go unnoticed)`;
  return {
    reason,
    loc: freeIn,
    warning: `kiln.compile: ${freeIn} runs eagerly: it ${reason}. Pass ${free.length > 1 ? 'them' : 'it'} as an argument or a module attribute (those are guarded), or ${PLUGIN_FIX}.`,
  };
}

export const REWRITE_RECIPES =
  'node --import kiln/register (tsx and plain node), kiln/plugin in a Babel config, `plugins: [{ transform: "kiln/tsc" }]` ' +
  'with ts-patch (tsc 5.x), `tsc --noEmit && kiln build src -d dist` (tsc 7), or kiln/bundler for esbuild, Vite, Rollup and webpack ' +
  "(README: 'Routes')";

let toldNotRewritten = false;
/**
 * compile(module) of a user class whose forward the plugin did not rewrite (tsc output, tsx, a bundler
 * without kiln/bundler): say so once per process, with the recipes, since such code can only be captured
 * whole by tracing and any break runs the whole forward eagerly.
 */
export function noticeNotRewritten(m: Module): void {
  if (toldNotRewritten || kilnOwned(m.forward, m) || (m.forward as unknown as Record<symbol, unknown>)[PLAN]) return;
  toldNotRewritten = true;
  process.emitWarning(
    `kiln.compile: ${m.constructor.name}.forward was not rewritten by the kiln plugin, so compile() captures it by tracing at run time, ` +
      `where a graph break sends the whole forward to eager code. To split it at breaks and capture the rest, compile the file with ` +
      `one of: ${REWRITE_RECIPES}. (Said once per process.)`,
    'KilnPluginWarning',
  );
}

function explained(what: string, loc: string, name: string, free: readonly string[] = []): SourceBreak {
  const also = free.length
    ? ` It also reads the free variable${free.length > 1 ? 's' : ''} ${free.join(', ')}, which run-time capture cannot guard.`
    : '';
  return {
    reason: what,
    loc,
    warning:
      `kiln.compile: ${name} runs eagerly: ${what}. compile() met this code at run time, without the kiln plugin, and cannot ` +
      `split it around that statement.${also} To capture the rest of it, ${PLUGIN_FIX}.`,
  };
}

const consoleVerdicts = new WeakMap<object, WeakMap<object, Verdict>>();

/**
 * Whether the only breaks in `fn`'s source (and, with `submodules`, in the forwards of the user modules under
 * `self`) are console calls: judged again with `console` taken as known, nothing else may break and no free
 * variable may be read. A trace of such code is sound under `trippingConsole` (console-tripwire.ts).
 */
export function onlyConsoleBreaks(fn: (...a: never[]) => unknown, self: Module | undefined, submodules = true): boolean {
  const a = analysis();
  if ('error' in a) return false;
  const parts: [(...a: never[]) => unknown, Module | undefined][] = [[fn, self]];
  if (submodules) for (const [path, m] of self?.namedModules() ?? []) if (path !== '') parts.push([m.forward as never, m]);
  return parts.every(([f, s]) => {
    if (kilnOwned(f, s)) return true;
    const plan = (f as unknown as { [PLAN]?: PlanBreaks })[PLAN];
    if (plan) return plan.breaks.length === 0;
    const key = s?.constructor ?? NO_CLASS;
    let byClass = consoleVerdicts.get(f);
    if (!byClass) consoleVerdicts.set(f, (byClass = new WeakMap()));
    let v = byClass.get(key);
    if (!v) {
      const classes = lineage(s).map((c) => Function.prototype.toString.call(c));
      const known = (n: string) => isKilnName(n) || n === 'console';
      byClass.set(key, (v = a.classifySource({ fn: Function.prototype.toString.call(f), classes, isKilnName: known })));
    }
    return !v.unparsable && !v.brk && v.free.length === 0;
  });
}
