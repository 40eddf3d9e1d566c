import { GraphBreakError, KilnError, TraceError } from '../errors.js';
import { COMPILE_OFF_BY_ENV, LOG, log } from '../logging.js';
import { activeTrace } from '../runtime/dispatch.js';
import { Module } from '../runtime/nn/module.js';
import { CompiledCallable, codeFrameAt, type BreakReason, type CaptureOptions } from './compiled-callable.js';
import { onlyConsoleBreaks } from './source-check.js';

/**
 * Plans: what the kiln plugin emits for each method (or function) it rewrote. The method's body is cut into
 * segments at the graph breaks the source analysis found: graph segments are captured (each its own guarded
 * cache, traced on first use), break segments always run as plain code. Values flow between segments
 * through numbered slots: `in` lists the slots a segment reads, `out` those it sets for later ones.
 *
 * How a segment function hands back control is its `exit`: `return` (its result is the method's),
 * `next` (it returns the `out` values as an array, or nothing when there are none) or `either`
 * (`[1, value]` when the source returned `value`, `[0, ...outs]` when control falls through). That protocol
 * stays out of captured graphs: a graph segment's graph outputs the user's values only, and its compiled
 * callable puts the flag and slot layout back around them (segment-output.ts).
 */
export interface SegmentSpec {
  /**
   * `graph`: captured; `break`: run as written; `branch`: an `if` whose condition must run eagerly (`test`)
   * while the arm it picks (`then`/`else`, exit `either`) is captured, each arm its own guarded cache.
   */
  readonly kind: 'graph' | 'break' | 'branch';
  /** `line:col` of the segment's first statement in `file`. */
  readonly loc: string;
  /** Why this segment cannot be captured (break segments). */
  readonly reason?: string;
  readonly in: readonly number[];
  readonly out: readonly number[];
  readonly exit: 'return' | 'next' | 'either';
  readonly fn?: (...args: unknown[]) => unknown;
  readonly test?: (...args: unknown[]) => unknown;
  readonly then?: (...args: unknown[]) => unknown;
  readonly else?: (...args: unknown[]) => unknown;
}

/** Options the plugin was configured with; `compile(instance, options)` overrides them. */
export interface PluginOptions {
  readonly backend?: 'kernels' | 'eager' | 'aot_eager';
  readonly cacheSizeLimit?: number;
}

export interface PlanSpec {
  /** `Class.method` or the function's name. */
  readonly name: string;
  readonly file: string;
  /** Slot names: the method's parameters (as bound names) first, then its other top-level variables. */
  readonly slots: readonly string[];
  /**
   * The method as written (super calls made explicit), for eager runs. Absent when the function itself
   * stayed as written (unsupported methods, functions only passed to compile): `attach` fills it in.
   */
  readonly eager?: (...args: unknown[]) => unknown;
  /** Maps the call's arguments to the parameter slots when parameters are patterns or rest. */
  readonly bind?: (...args: unknown[]) => unknown[];
  readonly segments: readonly SegmentSpec[];
  /** Set when the plugin could not split this method: it then runs eagerly, and `explain` says why. */
  readonly unsupported?: { readonly reason: string; readonly loc: string };
  readonly options?: PluginOptions;
}

export interface Plan extends PlanSpec {
  eager: (...args: unknown[]) => unknown;
  readonly ownEager: boolean;
  /** The break segments' reasons with `file:line:col`, in source order. */
  readonly breaks: readonly BreakReason[];
  /** Runners by options, then by instance (functions use FUNCTION_KEY). */
  readonly runners: WeakMap<CaptureOptions, WeakMap<object, PlanRunner>>;
  /** The plugin's options, parsed on first use. */
  defaults?: CaptureOptions;
  /**
   * The last (options, self) → runner lookup, so a model called in a loop skips the two maps. Held weakly:
   * a plan must not keep the last model it ran (and its weights) alive.
   */
  last?: { options: CaptureOptions; key: WeakRef<object>; runner: WeakRef<PlanRunner> };
  /** Per segment: whether it reads exactly the parameters in order (then the argument array is passed as is). */
  readonly readsParams: readonly boolean[];
}

const FUNCTION_KEY = {};

const PLAN = Symbol.for('kiln.plan');

/** Validate and index a plan the plugin emitted. */
export function plan(spec: PlanSpec): Plan {
  const EXITS = ['return', 'next', 'either'];
  const fn = (f: unknown) => typeof f === 'function';
  const segmentOk = (s: SegmentSpec) =>
    EXITS.includes(s.exit) &&
    (s.kind === 'branch'
      ? s.exit === 'either' && fn(s.test) && fn(s.then) && fn(s.else)
      : (s.kind === 'graph' || s.kind === 'break') && fn(s.fn));
  if (
    !spec ||
    (spec.eager !== undefined && typeof spec.eager !== 'function') ||
    !Array.isArray(spec.segments) ||
    !spec.segments.every(segmentOk)
  ) {
    throw new KilnError(`kiln plugin runtime: malformed plan for ${spec?.name ?? '<unknown>'}; rebuild with the same kiln version`);
  }
  const breaks = spec.unsupported
    ? [{ reason: spec.unsupported.reason, loc: `${spec.file}:${spec.unsupported.loc}` }]
    : spec.segments.filter((s) => s.kind !== 'graph').map((s) => ({ reason: s.reason ?? 'graph break', loc: `${spec.file}:${s.loc}` }));
  const eager =
    spec.eager ??
    (() => {
      throw new KilnError(`kiln plugin runtime: the plan for ${spec.name} was never attached to its function`);
    });
  const readsParams = spec.segments.map((seg: SegmentSpec) => seg.in.every((slot: number, i: number) => slot === i));
  return { ...spec, eager, ownEager: spec.eager !== undefined, breaks, runners: new WeakMap(), readsParams };
}

/**
 * Mark `fn` (a rewritten method or function) as running `p`, so `compile` and `explain` can find the plan.
 * Returns `fn`, so an inline `compile((x) => …)` can be rewritten to `compile(attach((x) => …, plan))`.
 */
export function attach<F>(fn: F, p: Plan): F {
  if (typeof fn !== 'function') throw new KilnError(`kiln plugin runtime: cannot attach the plan for ${p.name} to a ${typeof fn}`);
  Object.defineProperty(fn, PLAN, { value: p, configurable: true });
  if (!p.ownEager) p.eager = fn as (...args: unknown[]) => unknown; // the function as written is the eager code
  return fn;
}

/** The plan behind a rewritten method or function, if the plugin rewrote it. */
export function planOf(fn: unknown): Plan | undefined {
  return typeof fn === 'function' ? (fn as unknown as { [PLAN]?: Plan })[PLAN] : undefined;
}

/** Options for `p` with the plugin's defaults under anything passed to compile. */
export type ResolveOptions = (pluginOptions: PluginOptions | undefined) => CaptureOptions;

let resolveDefaults: ResolveOptions | undefined;
/** Set by compile.ts (which owns option parsing) so this module does not import it. */
export function setPlanOptionResolver(f: ResolveOptions): void {
  resolveDefaults = f;
}

/**
 * `KILN_COMPILE=0|false|off` (read once, at load: src/logging.ts) turns every compiled callable back into
 * plain eager code; `testing.eagerly(f)` does the same while `f` runs.
 */
const disabledByEnv = COMPILE_OFF_BY_ENV;
let eagerDepth = 0;
export const compileDisabled = () => disabledByEnv || eagerDepth > 0;

/** Run `f` with every compiled callable running its original code (as under `KILN_COMPILE=0`). */
export function eagerly<T>(f: () => T): T {
  eagerDepth++;
  try {
    return f();
  } finally {
    eagerDepth--;
  }
}

/**
 * The options of the plan runner now running, if any. Rewritten code called from it (helpers that break,
 * submodules called from eager segments) runs with the same options, as TorchDynamo compiles every frame
 * entered while a compiled function runs.
 */
let ambient: CaptureOptions | undefined;

/** What `explain` collects while a plan runs: every runner entered (helpers too) and every break run. */
export interface PlanRecorder {
  readonly runners: Set<PlanRunner>;
  readonly breaks: BreakReason[];
}
let recorder: PlanRecorder | undefined;

/** Run `f` with `r` collecting runners and breaks. */
export function recording<T>(r: PlanRecorder, f: () => T): T {
  const outer = recorder;
  recorder = r;
  try {
    return f();
  } finally {
    recorder = outer;
  }
}

/**
 * What a rewritten method's body does: `return run(this, plan, [x, y])`. Runs the plan with this
 * instance's runner for the current options (the enclosing runner's, else the plugin's), or eagerly
 * when compilation is off.
 */
export function run(self: unknown, p: Plan, args: unknown[]): unknown {
  if (compileDisabled()) return p.eager.apply(self, args);
  const options = ambient ?? (p.defaults ??= resolveDefaults!(p.options));
  // A function's `this` (undefined, or e.g. a module namespace it was called through) is not state to guard.
  const key = self instanceof Module ? self : FUNCTION_KEY;
  const last = p.last;
  if (last !== undefined && last.options === options && last.key.deref() === key) {
    const cached = last.runner.deref();
    if (cached) return cached.call(args);
  }
  let bySelf = p.runners.get(options);
  if (!bySelf) p.runners.set(options, (bySelf = new WeakMap()));
  let runner = bySelf.get(key);
  if (!runner) bySelf.set(key, (runner = new PlanRunner(p, key === FUNCTION_KEY ? undefined : (self as Module), options)));
  p.last = { options, key: new WeakRef(key), runner: new WeakRef(runner) };
  return runner.call(args);
}

/**
 * One plan's segments for one instance and one set of options: a CompiledCallable per graph segment
 * (created on first use), break segments run as they are.
 */
export class PlanRunner {
  /** One guarded cache per graph segment and per arm of a branch segment, by segment index (the hot path: no keys built). */
  private readonly callables: (CompiledCallable | undefined)[] = [];
  private readonly thenArms: (CompiledCallable | undefined)[] = [];
  private readonly elseArms: (CompiledCallable | undefined)[] = [];

  constructor(
    readonly plan: Plan,
    readonly self: Module | undefined,
    readonly options: CaptureOptions,
  ) {
    if (LOG.graph_breaks) for (const b of plan.breaks) log('graph_breaks', `${plan.name}: graph break at ${b.loc}: ${b.reason}`);
  }

  call(args: unknown[]): unknown {
    const p = this.plan;
    if (activeTrace) {
      // Called from inside another capture: inline, unless this code must break the enclosing graph.
      const b = p.breaks[0];
      if (b && activeTrace.symbolic)
        throw new TraceError(`${p.name} has a graph break at ${b.loc} (${b.reason}); the calling graph breaks here too\n    at ${b.loc}`);
      return p.eager.apply(this.self, args);
    }
    if (p.unsupported) {
      if (this.options.fullgraph) this.fullgraphError(p.breaks[0]!);
      recorder?.breaks.push(p.breaks[0]!);
      return p.eager.apply(this.self, args);
    }
    if (this.options.fullgraph && p.breaks.length > 0) {
      // A break only where it runs: when every break is a console call, the method is traced whole and a call
      // that runs trips there; otherwise the plan cannot be one graph.
      const whole = this.wholeMethod();
      if (!whole) this.fullgraphError(p.breaks[0]!);
      recorder?.runners.add(this);
      return whole.call(args);
    }
    recorder?.runners.add(this);
    const outer = ambient;
    ambient = this.options;
    try {
      return this.runSegments(args);
    } finally {
      ambient = outer;
    }
  }

  private runSegments(args: unknown[]): unknown {
    const p = this.plan;
    // `args` is the dispatcher's own fresh array, so it can hold the slots.
    const slots = p.bind ? p.bind.apply(this.self, args) : args;
    const segments = p.segments;
    for (let i = 0; i < segments.length; i++) {
      const seg = segments[i]!;
      const ins = p.readsParams[i] && seg.in.length === slots.length ? slots : seg.in.map((j) => slots[j]);
      let r: unknown;
      if (seg.kind === 'graph') r = this.callable(i, seg.fn!).call(ins);
      else {
        recorder?.breaks.push({ reason: seg.reason ?? 'graph break', loc: `${p.file}:${seg.loc}` });
        if (seg.kind === 'branch') {
          const arm = seg.test!.apply(this.self, ins) ? 'then' : 'else';
          r = this.callable(i, seg[arm]!, arm).call(ins);
        } else r = seg.fn!.apply(this.self, ins);
      }
      if (seg.exit === 'return') return r;
      const values = r as unknown[];
      let first = 0;
      if (seg.exit === 'either') {
        if (values[0] === 1) return values[1];
        first = 1;
      }
      for (let k = 0; k < seg.out.length; k++) slots[seg.out[k]!] = values[first + k];
    }
    return undefined;
  }

  /** The compiled callables of every graph segment and branch arm used so far (for `explain`). */
  graphCallables(): CompiledCallable[] {
    const all = [...this.callables, ...this.thenArms, ...this.elseArms, ...(this.whole ? [this.whole] : [])];
    return all.filter((c): c is CompiledCallable => c !== undefined);
  }

  /** The method as written captured as one graph (fullgraph), when its breaks are console calls only; else null. */
  private whole: CompiledCallable | null | undefined;
  private wholeMethod(): CompiledCallable | null {
    if (this.whole !== undefined) return this.whole;
    const p = this.plan;
    const consoleOnly = p.segments.every(
      (s) => s.kind === 'graph' || (s.kind === 'break' && onlyConsoleBreaks(s.fn as never, this.self, false)),
    );
    if (!consoleOnly) return (this.whole = null);
    const c = new CompiledCallable(p.eager, this.self, this.options, false, `${p.name} (whole, at ${p.file}:${p.segments[0]!.loc})`, false);
    c.tripsConsole = true;
    return (this.whole = c);
  }

  private callable(i: number, fn: (...args: unknown[]) => unknown, arm?: 'then' | 'else'): CompiledCallable {
    const table = arm === 'then' ? this.thenArms : arm === 'else' ? this.elseArms : this.callables;
    let c = table[i];
    if (!c) {
      const seg = this.plan.segments[i]!;
      const where = `${this.plan.name} (${arm ? `${arm} branch of the if` : 'segment'} at ${this.plan.file}:${seg.loc})`;
      table[i] = c = new CompiledCallable(fn, this.self, this.options, false, where, false, seg.exit);
    }
    return c;
  }

  private fullgraphError(b: BreakReason): never {
    const frame = codeFrameAt(b.loc);
    throw new GraphBreakError(
      `compile(fullgraph): ${this.plan.name} cannot be captured as one graph at ${b.loc}: ${b.reason}${frame ? `\n${frame}` : ''}`,
    );
  }
}
