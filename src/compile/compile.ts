import { KilnError, RecompileError, TraceError, ValueError } from '../errors.js';
import { LOG, log } from '../logging.js';
import { userFrame } from '../graph/tracer.js';
import { activeTrace } from '../runtime/dispatch.js';
import { Module } from '../runtime/nn/module.js';
import { resolveBackend, type BackendOption } from './backends.js';
import { CompiledCallable, type CaptureOptions } from './compiled-callable.js';
import { markKilnClass, noticeNotRewritten } from './source-check.js';
import { forwardingToOrig } from './forward-to-orig.js';
import { hookedFrame, hooksCapturable } from './hooked-frame.js';
import { PlanRunner, compileDisabled, planOf, setPlanOptionResolver, type Plan } from './plan.js';

export interface CompileOptions {
  backend?: BackendOption;
  /** Throw GraphBreakError instead of falling back to eager code where capture breaks. */
  fullgraph?: boolean;
  /** Unset: automatic dynamic shapes; false: specialise every shape; true: start with every dim symbolic. */
  dynamic?: boolean;
  /** Compilations per callable before it runs eagerly for good (default 8). */
  cacheSizeLimit?: number;
  /** Told the text of the guard that failed each time a recompile happens. */
  onGuardFail?: (failure: string) => void;
  errorOnRecompile?: boolean;
}

const OPTION_NAMES = ['backend', 'fullgraph', 'dynamic', 'cacheSizeLimit', 'onGuardFail', 'errorOnRecompile'];

export function captureOptions(options: CompileOptions): CaptureOptions {
  for (const k of Object.keys(options)) {
    if (!OPTION_NAMES.includes(k)) throw new ValueError(`compile: unknown option '${k}' (expected one of ${OPTION_NAMES.join(', ')})`);
  }
  const limit = options.cacheSizeLimit ?? 8;
  if (!Number.isInteger(limit) || limit < 0) throw new ValueError(`compile: cacheSizeLimit must be a non-negative integer, got ${limit}`);
  return {
    backend: resolveBackend(options.backend),
    fullgraph: options.fullgraph ?? false,
    dynamic: options.dynamic,
    cacheSizeLimit: limit,
    onGuardFail: options.onGuardFail,
    errorOnRecompile: options.errorOnRecompile ?? false,
  };
}

// A rewritten class runs with the plugin's options unless compile() gives its own.
setPlanOptionResolver((pluginOptions) => captureOptions({ ...pluginOptions }));

/**
 * What `compile(module)` returns: an nn.Module whose `origMod` is the original (same parameter and buffer
 * objects; state-dict keys gain the `origMod.` prefix, as PyTorch's `_orig_mod.`) and whose forward runs
 * the captured graphs. The original's own forward hooks run around them, as when calling it eagerly.
 */
export class OptimizedModule extends Module {
  readonly origMod: Module;
  declare readonly _compiled: CompiledCallable;
  /** Runners for plugin-rewritten forwards (by plan: forward may be swapped for another rewritten one). */
  declare private readonly _runners: Map<Plan, PlanRunner>;
  /** @internal The options compile() was given (explain reads the backend). */
  declare readonly _options: CompileOptions;
  /** The cache the last call used (a plan's runner, or run-time capture). */
  declare private _last: PlanRunner | CompiledCallable | undefined;

  constructor(origMod: Module, options: CompileOptions = {}) {
    super();
    this.origMod = origMod;
    const hidden = (value: unknown) => ({ value, enumerable: false });
    Object.defineProperties(this, {
      _compiled: hidden(new CompiledCallable(origMod.forward as (...a: unknown[]) => unknown, origMod, captureOptions(options))),
      _runners: hidden(new Map()),
      _options: hidden(options),
      _last: { value: undefined, enumerable: false, writable: true },
      _fields: hidden(() => Object.entries(this)),
      _hooked: hidden(new Map()),
    });
    // Attribute reads and writes it does not own go to origMod (PyTorch's __getattr__/__setattr__/__dir__).
    return forwardingToOrig(this);
  }

  declare private readonly _hooked: Map<PlanRunner | CompiledCallable, CompiledCallable | undefined>;
  /** @internal Its own fields only: origMod's names, which the proxy also lists, are origMod's members. */
  declare private readonly _fields: () => [string, unknown][];
  protected override ownEntries(): [string, unknown][] {
    return this._fields();
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  override forward(...args: any[]): any {
    const m = this.origMod;
    if (compileDisabled()) return m.call(...(args as never[]));
    const run = this.runnerFor(m.forward) ?? this._compiled;
    if (run !== this._last) this.switchTo(run);
    if (!m.hasForwardHooks()) return run.call(args);
    const hooked = hooksCapturable(m) ? this.hookedFor(run) : undefined;
    if (hooked) return hooked.call(args);
    return m.callWithHooks(args, (a) => run.call(a));
  }

  /** The frame that captures origMod's hooks with `run`'s forward (see hooked-frame.ts), made once per run. */
  private hookedFor(run: PlanRunner | CompiledCallable): CompiledCallable | undefined {
    if (!this._hooked.has(run)) this._hooked.set(run, hookedFrame(this.origMod, run));
    return this._hooked.get(run);
  }

  /** A replaced forward moves to another cache: report it as the failed guard it is. */
  private switchTo(run: PlanRunner | CompiledCallable): void {
    if (this._last) {
      const failure = 'self.forward is the function that was captured';
      if (LOG.recompiles) log('recompiles', `Recompiling ${this.origMod.constructor.name}.forward: guard '${failure}' failed`);
      this._compiled.options.onGuardFail?.(failure);
      if (this._compiled.options.errorOnRecompile) {
        throw new RecompileError(`compile: recompiling because guard '${failure}' failed (errorOnRecompile is set)`);
      }
    }
    this._last = run;
  }

  /** The plan runner when `forward` is one the plugin rewrote (its options under compile's). */
  private runnerFor(forward: unknown): PlanRunner | undefined {
    const p = planOf(forward);
    if (!p) return undefined;
    let r = this._runners.get(p);
    if (!r) this._runners.set(p, (r = new PlanRunner(p, this.origMod, captureOptions({ ...p.options, ...this._options }))));
    return r;
  }
}

// Its forward is kiln's dispatcher, not user code for the source check (the original module's is).
markKilnClass(OptimizedModule);

type AnyFn = (...args: never[]) => unknown;

/** Capture a module or function into guarded graphs run by `backend` (API §3). */
export function compile<M extends Module>(model: M, options?: CompileOptions): OptimizedModule & { origMod: M };
export function compile<F extends AnyFn>(fn: F, options?: CompileOptions): F;
export function compile(model: Module | AnyFn, options: CompileOptions = {}): unknown {
  if (model instanceof Module) {
    noticeNotRewritten(model);
    return new OptimizedModule(model, options);
  }
  if (typeof model !== 'function') throw new KilnError('compile: expected an nn.Module or a function');
  const p = planOf(model);
  const callable = p
    ? new PlanRunner(p, undefined, captureOptions({ ...p.options, ...options }))
    : new CompiledCallable(model as (...a: unknown[]) => unknown, undefined, captureOptions(options));
  const compiled = (...args: unknown[]) => (compileDisabled() ? model(...(args as never[])) : callable.call(args));
  Object.defineProperty(compiled, 'name', { value: model.name });
  Object.defineProperty(compiled, '_compiled', { value: callable });
  Object.defineProperty(compiled, '_options', { value: options }); // explain(compile(fn)) reads the backend
  return compiled;
}

/** Force a graph break here: captured code splits around it. Does nothing when run eagerly. */
export function graphBreak(): void {
  if (activeTrace?.symbolic) throw new TraceError(`graphBreak() was called: the graph breaks here${userFrame()}`);
}
