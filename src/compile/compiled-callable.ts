import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { functionParams } from '../analysis/signature.js';
import { GraphBreakError, KilnError, RecompileError, TraceError } from '../errors.js';
import { LOG, log } from '../logging.js';
import { GraphModule } from '../graph/graph-module.js';
import { lookupAttr } from '../graph/attrs.js';
import { isKilnFrame } from '../graph/source-lines.js';
import { Tracer, userFrame, type AttributeRead } from '../graph/tracer.js';
import { FreeReads, recordingFreeReads } from './free-vars.js';
import { RealMembers, refuseValueRead } from './real-members.js';
import { listeningToReal } from '../runtime/nn/traced-attributes.js';
import { StateWrites, type StateWrite } from '../graph/state-writes.js';
import { TensorTree, holdsTensors, tensorLeaves } from '../graph/tensor-tree.js';
import { treeArgGuards } from './tree-guards.js';
import { Node, isPlainObject } from '../graph/node.js';
import { activeTrace } from '../runtime/dispatch.js';
import { withShapeRecorder } from '../runtime/shape-recording.js';
import { Module } from '../runtime/nn/module.js';
import { Tensor } from '../runtime/tensor.js';
import { countOps, type Backend } from './backends.js';
import { argGuards, firstFailing, gradModeGuard, isInstance, moduleGuards, type Guard } from './guards.js';
import { ExampleValues } from './example-values.js';
import { TracedSizes, type TracedInput } from './traced-sizes.js';
import { splitSegmentResult, type SegmentExit } from './segment-output.js';
import { PLUGIN_FIX, onlyConsoleBreaks, sourceBreak, type SourceBreak } from './source-check.js';
import { trippingConsole } from './console-tripwire.js';
import { hooksCapturable } from './capturable-hooks.js';
import { splitAtOpaqueCalls } from './opaque-calls.js';

export interface CaptureOptions {
  readonly backend: Backend;
  readonly fullgraph: boolean;
  /** undefined: automatic (specialise, then free the dims that changed); false: always specialise; true: free every dim. */
  readonly dynamic: boolean | undefined;
  readonly cacheSizeLimit: number;
  readonly onGuardFail?: (failure: string) => void;
  readonly errorOnRecompile: boolean;
}

export interface BreakReason {
  readonly reason: string;
  readonly loc: string;
}

/** One compiled specialisation: the guards it holds under and what to run. */
export interface CacheEntry {
  readonly guards: readonly Guard[];
  readonly run: (...args: unknown[]) => unknown;
  /** The captured graph, or undefined when capture failed and this entry runs eagerly. */
  readonly graph: GraphModule | undefined;
  readonly breakReason: BreakReason | undefined;
  readonly shapes: readonly (readonly number[] | undefined)[];
}

/** Bumped by resetCompileCaches(); a callable whose generation is older drops its entries. */
let generation = 0;
export function resetCompileCaches(): void {
  generation++;
}

const PLAN = Symbol.for('kiln.plan');

/** A tracer that records attribute reads for guards and keeps hooked modules whole so their hooks run at run time. */
class GuardingTracer extends Tracer {
  override attributeReads = new Map<string, AttributeRead>();
  override adoptForeignModules = true;
  override stateWrites = new StateWrites();
  readonly freeReads = new FreeReads(this);
  /** `ones([10])`, `arange(n)` in forward are call_function nodes, as in TorchDynamo's graphs, not frozen constants. */
  readonly recordsFactories = true;
  /** Parameters and buffers `parameters()` and friends handed out for real during the trace. */
  readonly realMembers = new RealMembers();

  /** A module's own tensor is recorded (get_attr) in every op it enters, even with no proxy beside it. */
  override isTraced(x: unknown): boolean {
    return super.isTraced(x) || this.isModuleTensor(x);
  }

  /** Each tensor input's example shape and its dims left free: the guarded rest is static (`x.ndim`, `x.numel()`). */
  readonly inputShapes = new Map<string, { shape: readonly number[]; free: ReadonlySet<number> }>();

  protected override staticRead(node: Node, prop: string): { value: unknown } | undefined {
    const s = node.op === 'placeholder' ? this.inputShapes.get(node.target as string) : undefined;
    if (!s) return undefined;
    if (prop === 'ndim') return { value: s.shape.length };
    if (prop === 'dim') return { value: () => s.shape.length };
    if (prop === 'numel' && s.free.size === 0) return { value: () => s.shape.reduce((a, b) => a * b, 1) };
    return undefined;
  }

  valueRead(t: unknown, what: string): void {
    if (this.isModuleTensor(t)) refuseValueRead(what);
  }

  /** Plain objects and arrays held by a module are guarded by the fields read from them (`self.blocks[0]`), like free variables. */
  protected override readAttribute(owner: Module, name: string, path: string, value: unknown, reads: Map<string, AttributeRead>): unknown {
    if (isInstance(value)) return methodsRefused(super.readAttribute(owner, name, path, value, reads) as object, this.foreignLabel(path));
    if (value === null || typeof value !== 'object' || !(Array.isArray(value) || isPlainObject(value))) {
      return super.readAttribute(owner, name, path, value, reads);
    }
    const label = this.foreignLabel(path);
    this.freeReads.read(label, () => (owner as unknown as Record<string, unknown>)[name], value);
    // A function stored in it (`this.tracker = { record() { … } }`) may change state: only kiln's ops are traced.
    const userFunction = (v: unknown) => typeof v === 'function' && typeof (v as { opName?: unknown }).opName !== 'string';
    return Object.values(value).some(userFunction) ? methodsRefused(value, label, true) : value;
  }

  /** `self.blocks` for the compiled module's own attributes; a foreign module's path as the graph names it. */
  private foreignLabel(path: string): string {
    const head = path.split('.')[0]!;
    return this.foreignModules.has(head) ? path : `self.${path}`;
  }
  /** Submodules whose own forward breaks, with why: each is one call the graph is cut at (opaque-calls.ts). */
  readonly opaque = new Map<Module, BreakReason>();

  /** `checkSource`: code the plugin never saw, whose submodules' source is checked too (else their plans are). */
  constructor(private readonly checkSource = false) {
    super();
  }

  override isLeafModule(m: Module, path: string): boolean {
    // A user module whose hooks can be traced is traced through, hooks inlined (its call runs them), as TorchDynamo does.
    if (super.isLeafModule(m, path) || (path !== '' && m.hasForwardHooks() && !hooksCapturable(m))) return true;
    if (path === '' || m === this.root) return false;
    const b = this.opaque.get(m) ?? this.breakIn(m);
    if (b) this.opaque.set(m, b);
    return b !== undefined;
  }

  /** Why `m`'s own forward cannot be traced into: its plan's first break, or (unseen code) its source's. */
  private breakIn(m: Module): BreakReason | undefined {
    const plan = (m.forward as unknown as { [PLAN]?: { breaks: readonly BreakReason[] } })[PLAN];
    if (plan || !this.checkSource) {
      const b = plan?.breaks[0];
      return b && { reason: `${m.constructor.name}.forward breaks: ${b.reason}`, loc: b.loc };
    }
    const b = sourceBreak(m.forward as (...a: never[]) => unknown, m, `${m.constructor.name}.forward`);
    return b && { reason: `${m.constructor.name}.forward breaks: ${b.reason}`, loc: b.loc };
  }

  /** A module from outside the tree (a closure, a plain array or object): its forward is checked before the trace enters it. */
  override adopt(m: Module, hint: string): string {
    if (!this.isKnownModule(m) && !super.isLeafModule(m, '')) {
      const b = sourceBreak(m.forward as (...a: never[]) => unknown, m, `${m.constructor.name}.forward`);
      if (b) throw new TraceError(`symbolic tracing: ${b.loc} ${b.reason}${userFrame()}`);
    }
    return super.adopt(m, hint);
  }

  /** `m.forward(x)` runs no hooks eagerly: a module that is a leaf for its hooks is traced through instead. */
  override callModuleForward(m: Module, forward: (...args: unknown[]) => unknown, args: readonly unknown[]): unknown {
    return m.hasForwardHooks() ? forward(...args) : super.callModuleForward(m, forward, args);
  }
}

/**
 * A user-class object a module holds (`this.tracker`), as traced code sees it: fields and getters read as they
 * are (its content is guarded), but calling one of its methods is a TraceError, so that code runs eagerly. The
 * trace would run the method once and the graph never again, dropping whatever it changes (`this.tracker.record(x)`).
 * With `ownFunctions`, the same for functions stored in a plain object's own fields (kiln's ops excepted).
 */
function methodsRefused(obj: object, label: string, ownFunctions = false): object {
  return new Proxy(obj, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof v !== 'function' || typeof prop === 'symbol') return v;
      const own = Object.prototype.hasOwnProperty.call(target, prop);
      if (own !== ownFunctions || typeof (v as { opName?: unknown }).opName === 'string') return v;
      if (v === (Object.prototype as unknown as Record<string, unknown>)[prop]) return v; // toString and friends
      return () => {
        throw new TraceError(
          `calls ${label}.${prop}(), a method of ${target.constructor?.name ?? 'an object'} that a graph cannot see into (it may change state); it runs eagerly${userFrame()}`,
        );
      };
    },
  });
}

/**
 * Guards on every module the trace went into: the compiled module's tree (`self`), and each module it
 * adopted from outside that tree (closures, plain arrays, arguments) under the path the graph gives it.
 */
function treeGuards(self: Module | undefined, tracer: GuardingTracer): Guard[] {
  const foreign = [...tracer.foreignModules];
  const under = (prefix: string) =>
    [...tracer.attributeReads]
      .filter(([path]) => path.startsWith(`${prefix}.`))
      .map(([path, read]): [string, AttributeRead] => [path.slice(prefix.length + 1), read]);
  const own = [...tracer.attributeReads].filter(([path]) => !foreign.some(([p]) => path.startsWith(`${p}.`)));
  const writtenOnly = tracer.stateWrites.writtenOnly();
  return [
    ...(self ? moduleGuards(self, own, 'self', writtenOnly) : []),
    ...foreign.flatMap(([path, m]) => moduleGuards(m, under(path), path, writtenOnly)),
  ];
}

/**
 * Arguments the trace specialises on instead of recording: everything but tensors and containers that may
 * hold tensors. Their values are guarded (`scale == 2`), so branching on them is safe. Lists and plain
 * objects of tensors are pytrees: one placeholder per tensor (tensor-tree.ts).
 */
function concreteArgs(
  names: readonly string[],
  args: readonly unknown[],
  trees: readonly (TensorTree | undefined)[],
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  args.forEach((a, i) => {
    if (i < names.length && trees[i]) out[names[i]!] = trees[i];
    else if (i < names.length && !(a instanceof Tensor) && !mayHoldTensors(a)) out[names[i]!] = a;
  });
  return out;
}

/** The graph's arguments for a call: each pytree argument's tensors in its place, the rest as they are. */
function flatArgs(args: readonly unknown[], trees: readonly (TensorTree | undefined)[]): unknown[] {
  return trees.some((tr) => tr) ? args.flatMap((a, i) => (trees[i] ? tensorLeaves(a) : [a])) : (args as unknown[]);
}

function mayHoldTensors(a: unknown): boolean {
  if (a instanceof Tensor) return true;
  if (Array.isArray(a)) return a.some(mayHoldTensors);
  if (a !== null && typeof a === 'object' && !(a instanceof Module)) return Object.values(a).some(mayHoldTensors);
  return false;
}

/**
 * What runs after the graph when the traced code assigned module state: the graph's output is then
 * `[result, ...values]`, and each value is assigned to its attribute, in the order the trace first wrote them.
 */
function replayWrites(writes: readonly StateWrite[], aliases: readonly (number | undefined)[]): (graphOutput: unknown) => unknown {
  if (!writes.length) return (out) => out;
  return (out) => {
    const [result, ...values] = out as unknown[];
    writes.forEach((w, i) => {
      const a = aliases[i];
      const v = a === -1 ? result : a !== undefined && a >= 0 ? (result as unknown[])[a] : values[i];
      (w.owner as unknown as Record<string, unknown>)[w.name] = v;
    });
    return result;
  };
}

/** Where a trace failure happened, from the TraceError's own "at …" line, as `file:line:col`. */
function locationOf(e: Error): string {
  return fileLocation(e.message.split('\n').slice(1).join('\n'));
}

/** The `file:line:col` a stack line ends with (`at f (file:///m.ts:3:5)`), without `file://`, or `<unknown>`. */
function fileLocation(text: string | undefined): string {
  const m = text ? /\(?((?:file:\/\/)?[^\s()]+:\d+:\d+)\)?\s*$/m.exec(text) : null;
  return m ? m[1]!.replace(/^file:\/\//, '') : '<unknown>';
}

/** Where a non-Kiln error was thrown: its first stack frame in user code, as `file:line:col`. */
function thrownAt(e: unknown): string {
  const frames = (e instanceof Error ? (e.stack ?? '') : '').split('\n').slice(1);
  return fileLocation(frames.find((l) => /^\s*at /.test(l) && !isKilnFrame(l)));
}

/** A Babel code frame around `file:line:col`, or '' when the source cannot be read. */
export function codeFrameAt(loc: string): string {
  const m = /^(.*):(\d+):(\d+)$/.exec(loc);
  if (!m || !existsSync(m[1]!)) return '';
  const source = readFileSync(m[1]!, 'utf8');
  // Loaded here, for an error message: Babel stays off the run-time path.
  const { codeFrameColumns } = createRequire(import.meta.url)('@babel/code-frame') as typeof import('@babel/code-frame');
  return codeFrameColumns(
    source,
    { start: { line: Number(m[2]), column: Number(m[3]) } },
    { highlightCode: false, linesAbove: 2, linesBelow: 1 },
  );
}

/**
 * The guarded cache behind one compiled function or module (TorchDynamo's frame cache): find the first
 * entry whose guards hold and run it; otherwise capture a new graph by symbolic tracing, specialised on
 * the current arguments and module state, compile it with the backend and remember it.
 */
export class CompiledCallable {
  entries: CacheEntry[] = [];
  compileCount = 0;
  private generation = generation;
  private warned = false;
  private warnedSource = false;
  private readonly names: string[];
  /** Trace with console calls tripping (see console-tripwire.ts): set for code whose only breaks are console calls. */
  tripsConsole = false;
  private readonly dynamicDims = new Map<number, Set<number>>();

  /**
   * `viaForward`: `fn` is `self.forward` as it was when compiled; eager runs and traces use whatever
   * `self.forward` is at the time (a replaced forward fails the identity guard and recompiles). Otherwise
   * `fn` itself runs with `this` = `self` (a function, or a segment of a plugin-rewritten method).
   */
  constructor(
    readonly fn: (...args: unknown[]) => unknown,
    readonly self: Module | undefined,
    readonly options: CaptureOptions,
    readonly viaForward = self !== undefined,
    private readonly label?: string,
    /**
     * Code the plugin never saw (everything but plugin segments, which pass a label): its source is
     * classified before it is traced (see source-check.ts).
     */
    private readonly unseen = label === undefined,
    /** A plugin segment's exit: its graph outputs the user's values, the plan's flag and slot layout go around it. */
    private readonly exit?: SegmentExit,
    /** The frame is `self`'s call: its forward pre-hooks and hooks are captured with it (TorchDynamo's `_call_impl`). */
    private readonly withHooks = false,
  ) {
    this.names = functionParams(fn).map((p) => p.name);
  }

  call(args: unknown[]): unknown {
    if (activeTrace) return this.eager(args); // inside another capture: inline
    if (this.generation !== generation) {
      this.entries = [];
      this.generation = generation;
    }
    let failure: string | undefined;
    for (const e of this.entries) {
      const i = firstFailing(e.guards, args, this.self);
      if (i < 0) return e.run(...args);
      failure ??= e.guards[i]!.text;
    }
    if (failure !== undefined) {
      if (LOG.recompiles)
        log('recompiles', `Recompiling ${this.describe()}: guard '${failure}' failed (compilation ${this.compileCount + 1})`);
      this.options.onGuardFail?.(failure);
      if (this.options.errorOnRecompile)
        throw new RecompileError(`compile: recompiling because guard '${failure}' failed (errorOnRecompile is set)`);
    }
    if (this.compileCount >= this.options.cacheSizeLimit) {
      if (!this.warned) {
        this.warned = true;
        process.emitWarning(
          `kiln.compile: ${this.describe()} hit cacheSizeLimit (${this.options.cacheSizeLimit}) recompilations; the guard that kept failing was '${failure}'. Running eagerly from now on.`,
          'KilnRecompileWarning',
        );
      }
      return this.eager(args);
    }
    const entry = this.capture(args);
    this.entries.push(entry);
    return entry.run(...args);
  }

  /** The uncompiled code: the module's current forward, or the function. */
  eager(args: unknown[]): unknown {
    if (this.withHooks) return this.self!.callWithHooks(args, (a) => this.unhooked(a));
    return this.unhooked(args);
  }

  private unhooked(args: unknown[]): unknown {
    return this.viaForward ? this.self!.forward(...args) : this.fn.apply(this.self, args);
  }

  describe(): string {
    if (this.label) return this.label;
    return this.self ? `${this.self.constructor.name}.forward` : `function ${this.fn.name || '<anonymous>'}`;
  }

  private name(i: number): string {
    return this.names[i] ?? `arg${i}`;
  }

  /** Dims that differ from the last entry's example become dynamic (unless `dynamic: false`). */
  private updateDynamic(args: unknown[]): void {
    const last = this.entries[this.entries.length - 1];
    if (!last || this.options.dynamic === false) return;
    args.forEach((a, i) => {
      const was = last.shapes[i];
      if (!(a instanceof Tensor) || !was || was.length !== a.shape.length) return;
      a.shape.forEach((d, k) => {
        if (d !== was[k]) (this.dynamicDims.get(i) ?? this.dynamicDims.set(i, new Set()).get(i)!).add(k);
      });
    });
  }

  /**
   * Capture a graph for `args`, or decide to run eagerly. `locate`: when the source check says eager, trace
   * anyway to report where the trace itself stops, with its exact location (explain, fullgraph).
   */
  capture(args: unknown[], locate = this.options.fullgraph): CacheEntry {
    this.compileCount++;
    this.updateDynamic(args);
    const guards: Guard[] = [gradModeGuard()];
    const inputShapes = new Map<string, { shape: readonly number[]; free: ReadonlySet<number> }>();
    const trees = args.map((a, i) => (i < this.names.length && holdsTensors(a) ? new TensorTree(this.name(i), a) : undefined));
    args.forEach((a, i) => {
      const all = this.options.dynamic === true && a instanceof Tensor ? new Set(a.shape.keys()) : this.dynamicDims.get(i);
      guards.push(...(trees[i] ? treeArgGuards(this.name(i), i, a, this.options.dynamic === true) : argGuards(this.name(i), i, a, all)));
      if (a instanceof Tensor) inputShapes.set(this.name(i), { shape: [...a.shape], free: all ?? new Set() });
    });
    const shapes = args.map((a) => (a instanceof Tensor ? [...a.shape] : undefined));
    let source = this.unseen ? this.sourceBreak(args) : undefined;
    // Console calls are the only breaks: trace anyway, each trips where it runs (a break only where it runs).
    const tripping = this.tripsConsole || (source !== undefined && onlyConsoleBreaks(this.sourceFn(), this.self));
    if (source && !locate && !tripping) {
      // Not traced at all: a trace would run the side effects it found once more before the eager run.
      this.warnSource(source);
      if (this.self) guards.push(...moduleGuards(this.self, new Map()));
      const breakReason = { reason: source.reason, loc: source.loc };
      if (LOG.graph_breaks || LOG.guards) this.logCapture(undefined, guards, breakReason);
      return { guards, run: (...a) => this.eager(a), graph: undefined, breakReason, shapes };
    }
    const tracer = new GuardingTracer(this.unseen);
    for (const [k, v] of inputShapes) tracer.inputShapes.set(k, v);
    const freeReads = tracer.freeReads;
    let gm: GraphModule | undefined;
    let breakReason: BreakReason | undefined;
    let rebuild: ((graphOutput: unknown) => unknown) | undefined;
    const inputs = this.tracedInputs(args);
    const examples = new ExampleValues(tracer, new Map([...inputs].map(([name, i]) => [name, args[i.index]])));
    const sizes = new TracedSizes(tracer, inputs, examples);
    const exit = this.exit;
    let writes: StateWrite[] = [];
    let aliases: (number | undefined)[] = [];
    // The graph outputs the user's values, then (when forward assigned module state) the value of each write.
    const output = (result: unknown) => {
      let out = result;
      if (exit) {
        const split = splitSegmentResult(exit, result);
        rebuild = split.rebuild;
        out = split.output;
      }
      const changed = trees.map((tr) => tr?.changed() && `${tr.name}${tr.changed()}`).find((c) => c);
      if (changed)
        throw new TraceError(`forward changes its argument ${changed}, a list or object the caller holds; a graph cannot${userFrame()}`);
      writes = tracer.stateWrites.finish();
      if (!writes.length) return out;
      const outArg = tracer.createArg(out, 'the return value');
      const values = writes.map((w) => tracer.createArg(w.value, `the value assigned to self.${w.path}`));
      // A value that is also returned is assigned as the very object returned (`mod.textEncoding is out`).
      const at = (v: unknown) => (Array.isArray(outArg) && outArg.includes(v as Node) ? outArg.indexOf(v as Node) : undefined);
      aliases = values.map((v) => (v instanceof Node ? (v === outArg ? -1 : at(v)) : undefined));
      return [outArg, ...values];
    };
    try {
      const root = this.self ?? (this.fn as (...a: never[]) => unknown);
      const method = this.viaForward ? undefined : (this.fn as (...a: never[]) => unknown);
      const graph = recordingFreeReads(freeReads, () =>
        listeningToReal(tracer.realMembers.seen, () => {
          const around = this.withHooks ? (call: (a: unknown[]) => unknown, a: unknown[]) => this.self!.callWithHooks(a, call) : undefined;
          const trace = () => tracer.trace(root, concreteArgs(this.names, args, trees), method, (r) => output(r), around);
          return withShapeRecorder(sizes, () => (tripping ? trippingConsole(trace) : trace()));
        }),
      );
      const name = this.self ? this.self.constructor.name : this.fn.name || 'GraphModule';
      gm = new GraphModule(tracer.targetRoot(), graph, name, tracer.constants);
    } catch (e) {
      // Any error, not only kiln's: code that runs fine eagerly (`x.shape.join('x')`) may still defeat a trace.
      // The eager run then either works or throws the same error to the caller.
      breakReason =
        e instanceof KilnError
          ? { reason: e.message.split('\n')[0]!, loc: locationOf(e) }
          : { reason: `tracing threw ${e instanceof Error ? `${e.name}: ${e.message.split('\n')[0]}` : String(e)}`, loc: thrownAt(e) };
      tracer.stateWrites.undo();
      if (this.options.fullgraph && !(source && tripping)) {
        const frame = codeFrameAt(breakReason.loc);
        throw new GraphBreakError(
          `compile(fullgraph): ${this.describe()} cannot be captured as one graph at ${breakReason.loc}: ${breakReason.reason}${frame ? `\n${frame}` : ''}`,
        );
      }
    }
    if (source && tripping && gm) source = undefined; // no console call ran: the graph holds
    if (source && (gm || tripping)) {
      // The trace went through, but the source says a graph would drop or freeze something.
      gm = undefined;
      breakReason = { reason: source.reason, loc: source.loc };
      if (tripping && !locate) this.warnSource(source);
      if (this.options.fullgraph) {
        throw new GraphBreakError(
          `compile(fullgraph): ${this.describe()} cannot be captured as one graph: in ${source.loc}, ${source.reason}. To capture it in pieces, ${PLUGIN_FIX}.`,
        );
      }
    }
    guards.push(...freeReads.guards());
    guards.push(...treeGuards(this.self, tracer));
    guards.push(...tracer.realMembers.guards());
    if (gm) guards.push(...sizes.guards);
    if (LOG.graph_breaks || LOG.guards || LOG.graph_code) this.logCapture(gm, guards, breakReason);
    if (!gm) return { guards, run: (...a) => this.eager(a), graph: undefined, breakReason, shapes };
    const around = rebuild;
    const replayed = replayWrites(writes, aliases);
    const plain = writes.length === 0 && trees.every((tr) => !tr);
    const withLayout = (f: (...a: unknown[]) => unknown) => {
      const g = plain ? f : (...a: unknown[]) => replayed(f(...flatArgs(a, trees)));
      return around ? (...a: unknown[]) => around(g(...a)) : g;
    };
    // As TorchDynamo: a graph that does no work is not worth a backend compile; run its code as is.
    if (countOps(gm) === 0)
      return { guards, run: withLayout((...a) => gm.forward(...a)), graph: undefined, breakReason: undefined, shapes };
    const opaque = new Set(
      gm.graph.nodes.filter((n) => n.op === 'call_module' && tracer.opaque.has(lookupAttr(gm, n.target as string) as Module)),
    );
    if (opaque.size && this.options.fullgraph) {
      const b = tracer.opaque.get(lookupAttr(gm, [...opaque][0]!.target as string) as Module)!;
      throw new GraphBreakError(
        `compile(fullgraph): ${this.describe()} cannot be captured as one graph: it calls self.${String([...opaque][0]!.target)}, and ${b.reason} (${b.loc})`,
      );
    }
    const compiled = opaque.size
      ? splitAtOpaqueCalls(gm, opaque, this.options.backend)
      : this.options.backend(
          gm,
          flatArgs(args, trees).filter((a): a is Tensor => a instanceof Tensor),
        );
    return { guards, run: withLayout(compiled as (...a: unknown[]) => unknown), graph: gm, breakReason: undefined, shapes };
  }

  /** Each tensor argument by the parameter name its placeholder gets: its shape and which dims are dynamic. */
  private tracedInputs(args: unknown[]): Map<string, TracedInput> {
    return new Map(
      args.flatMap((a, i) => {
        if (!(a instanceof Tensor)) return [];
        const dynamic = this.options.dynamic === true ? new Set(a.shape.keys()) : (this.dynamicDims.get(i) ?? new Set<number>());
        return [[this.name(i), { index: i, shape: [...a.shape], dynamic }] as const];
      }),
    );
  }

  /** KILN_LOG's graph_breaks, guards and graph_code for one capture. */
  private logCapture(gm: GraphModule | undefined, guards: readonly Guard[], breakReason: BreakReason | undefined): void {
    const what = this.describe();
    if (breakReason) log('graph_breaks', `${what}: graph break at ${breakReason.loc}: ${breakReason.reason}`);
    if (gm && LOG.graph_code) log('graph_code', `${what}: captured graph\n${gm.code}`);
    if (LOG.guards) log('guards', `${what}: guards\n${guards.map((g) => g.text).join('\n')}`);
  }

  /** What the source check finds in the code this captures (its function or forward, and user submodules). */
  private sourceBreak(args: readonly unknown[]): SourceBreak | undefined {
    return sourceBreak(this.sourceFn(), this.self, this.describe(), args);
  }

  /** The code this captures: its function, or the module's current forward. */
  private sourceFn(): (...a: never[]) => unknown {
    return this.viaForward ? (this.self!.forward as (...a: never[]) => unknown) : (this.fn as (...a: never[]) => unknown);
  }

  /** One KilnWarning per compiled callable, the first time its source check sends it eager. */
  private warnSource(b: SourceBreak): void {
    if (this.warnedSource) return;
    this.warnedSource = true;
    process.emitWarning(b.warning, 'KilnWarning');
  }
}
