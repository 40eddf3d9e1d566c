import { KilnError } from '../errors.js';
import { firstGradModeNode, mayEnableGrad, restoringGradMode } from '../graph/grad-mode.js';
import type { GraphModule } from '../graph/graph-module.js';
import { Interpreter } from '../graph/interpreter.js';
import { targetName, type Node } from '../graph/node.js';
import { AotModule, isCompileFailure } from '../aot/aot-function.js';
import { AotError } from '../aot/errors.js';
import { kernelDecompositions } from '../aot/decompositions.js';
import { minCutRematerializationPartition } from '../aot/partition.js';
import { isGradEnabled } from '../runtime/autograd.js';
import { Tensor } from '../runtime/tensor.js';
import { getKernelBackend } from './backend.js';
import { countPlan } from './cache.js';
import { formatPlan, LOG_KERNELS, logLine } from './log.js';
import { lowerGraph } from './lower.js';
import { partition } from './partition.js';
import { Plan, PlanMismatch, TooLarge } from './plan.js';

/**
 * A graph compiled by the 'kernels' backend. Kernels bake in shapes, so a plan is made per input signature
 * (shapes, strides, dtypes): the first call with a new signature runs the graph once on the eager runtime,
 * which gives every node's shape and every number derived from shapes and is that call's result, then lowers,
 * fuses and compiles, and runs the plan once to build its kernels (eager nodes reuse their values from the
 * eager run, so nothing with a side effect runs twice) and throws that result away: it mixes eager values
 * with kernel values, which round differently, so `s.eq(s.max(-1, true).values)` could find no max in a row.
 * Later calls with the signature only run the plan, where each value is computed once.
 *
 * Autograd: kernels compute values only. When grad mode is on and an input or parameter requires grad, the
 * graph goes through AOT autograd (kiln/aot): one joint forward+backward graph, split by the min-cut
 * partitioner, whose forward and backward graphs are compiled to kernels like any other. A graph AOT autograd
 * cannot trace runs on the eager runtime instead (the reason is logged), which records the tape itself.
 */

/**
 * Below this many elements (inputs and parameters together) a call that records gradients runs eagerly:
 * measured on a Linear(8, 8)+ReLU, AOT autograd's compiled step took ~20 µs against eager's ~10 µs.
 */
let AOT_MIN_ELEMENTS = 1 << 12;

/** @internal Tests: compile calls that record gradients through AOT autograd from this many elements (0: always). */
export function setAotMinElements(n: number): number {
  const prev = AOT_MIN_ELEMENTS;
  AOT_MIN_ELEMENTS = n;
  return prev;
}

/** callTraining's answer when the call runs on the eager runtime instead. */
const EAGER = Symbol('eager');

function formatBytes(n: number): string {
  return n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`;
}

/** Plans kept per program; more signatures than this (shapes that keep changing) evict the oldest. */
const PLANS_PER_PROGRAM = 8;

export interface KernelProgramCallable {
  (...args: unknown[]): unknown;
  /** The fusion table of every plan made so far. */
  pprint(): string;
  readonly program: KernelProgram;
}

function describeArg(a: unknown): string {
  if (a instanceof Tensor) return `${a.dtype}[${a.shape.join(',')}]/${a.strides.join(',')}@${a.offset}#${a._storage.data.length}`;
  if (a === null || typeof a !== 'object') return `${typeof a}:${String(a)}`;
  return 'object';
}

export interface KernelProgramOptions {
  /**
   * While gradients are recorded the graph runs eagerly. With this set, such a call also plans the graph
   * from the values it computed (the plan is not run), so `pprint()` shows what would run under noGrad.
   * `explain()` sets it; its programs are thrown away after one call.
   */
  readonly planUnderGrad?: boolean;
}

export class KernelProgram {
  readonly plans = new Map<string, Plan | string>();
  /** Plans made while gradients were recorded (`planUnderGrad`), shown by pprint, never run. */
  private readonly gradPlans = new Map<string, Plan | string>();
  /** Why the graph runs eagerly on every call, or null. */
  readonly eagerReason: string | null;
  private readonly params: readonly Tensor[];
  private readonly paramElements: number;
  private running = false;
  private loggedGrad = false;
  /** The graph switches grad mode (`_set_grad_enabled` nodes); `enablesGrad`: it may turn it on inside. */
  private readonly switchesGradMode: boolean;
  private readonly enablesGrad: boolean;
  /** The graph under AOT autograd, for calls that record gradients; a string: why it runs eagerly instead. */
  private training?: AotModule | string;
  /** The kernel programs AOT autograd compiled for calls that record gradients (forward, then backward, per program). */
  private readonly aotPrograms: KernelProgram[] = [];

  constructor(
    readonly gm: GraphModule,
    private readonly options: KernelProgramOptions = {},
  ) {
    this.params = gm.parameters();
    this.paramElements = this.params.reduce((n, p) => n + p.numel(), 0);
    this.switchesGradMode = firstGradModeNode(gm.graph) !== undefined;
    this.enablesGrad = mayEnableGrad(gm.graph);
    const inPlace = gm.graph.nodes.find(
      (n) =>
        (n.op === 'call_method' || n.op === 'call_function') && targetName(n.target).endsWith('_') && targetName(n.target) !== '_assert',
    );
    this.eagerReason = inPlace ? `in-place op ${inPlace.name}: the graph runs eagerly so the write is seen in order` : null;
  }

  get name(): string {
    return this.gm.className;
  }

  /** Read-only, for tests and diagnostics: the kernel programs of the AOT forward and backward graphs compiled so far. */
  get trainingPrograms(): readonly KernelProgram[] {
    return this.aotPrograms;
  }

  /** Read-only: why calls that record gradients run eagerly (the joint graph could not be traced), or undefined. */
  get trainingEagerReason(): string | undefined {
    return typeof this.training === 'string' ? this.training : undefined;
  }

  /** Kernels record no tape: a graph that records gradients (on entry, or in a region that turns grad mode on) runs eagerly. */
  private needsGrad(args: readonly unknown[]): boolean {
    if (!isGradEnabled() && !this.enablesGrad) return false;
    return args.some((a) => a instanceof Tensor && a.requiresGrad) || this.params.some((p) => p.requiresGrad);
  }

  call(args: unknown[]): unknown {
    // Eager steps run the graph's grad-mode switches: a kernel that throws between two must not leave the mode changed.
    return this.switchesGradMode ? restoringGradMode(() => this.callOnce(args)) : this.callOnce(args);
  }

  private callOnce(args: unknown[]): unknown {
    if (this.eagerReason !== null || this.running) return this.gm.forward(...args);
    if (this.needsGrad(args)) {
      const trained = this.callTraining(args);
      if (trained !== EAGER) return trained.result;
      // Eager under grad: explain() still plans from this run, to show what would run under noGrad.
      this.loggedGrad = true;
      const key = this.keyOf(args);
      if (!this.options.planUnderGrad || this.gradPlans.has(key)) return this.gm.forward(...args);
      const rec = new Interpreter(this.gm, false);
      const result = rec.run(...args); // records the tape as gm.forward would
      this.gradPlans.set(key, this.makePlan(key, rec.env));
      return result;
    }
    const key = this.keyOf(args);
    const plan = this.plans.get(key);
    if (typeof plan === 'string') return this.gm.forward(...args);
    this.running = true;
    try {
      if (plan) {
        try {
          const result = plan.run(args);
          this.dropIfInvalidated(key, plan);
          return result;
        } catch (e) {
          if (!(e instanceof PlanMismatch)) throw e;
          this.plans.delete(key); // a module tensor changed layout before any step ran: record and plan again
        }
      }
      return this.planAndRun(key, args);
    } finally {
      this.running = false;
    }
  }

  /**
   * A call that records gradients: the forward and backward graphs of AOT autograd, each a kernel program of
   * its own (run under noGrad, so they plan normally). When the joint graph cannot be traced the graph runs
   * eagerly from then on; that eager run also raises the program's own errors, if the trace failed on one.
   */
  private callTraining(args: unknown[]): { result: unknown } | typeof EAGER {
    // Grad-mode regions inside the graph decide what records a tape: the eager runtime keeps them exact.
    if (this.switchesGradMode) this.training ??= 'the graph switches grad mode inside (noGrad / withGradMode regions)';
    if (typeof this.training === 'string') return EAGER;
    const compiler = (g: GraphModule) => {
      const compiled = kernelsBackend(g);
      this.aotPrograms.push(compiled.program);
      return compiled as unknown as (...a: Tensor[]) => unknown;
    };
    // Tiny graphs: AOT autograd's per-call bookkeeping (~10 µs) costs more than fused kernels save.
    if (this.work(args) < AOT_MIN_ELEMENTS) return EAGER;
    this.training ??= new AotModule(
      this.gm,
      { fwCompiler: compiler, bwCompiler: compiler, partitionFn: minCutRematerializationPartition, decompositions: kernelDecompositions },
      [...this.gm.parameters(), ...this.gm.buffers()], // compile guards their identity and order
    );
    try {
      return { result: this.training.forward(...args) };
    } catch (e) {
      // A compiled graph that failed to run is a real error; so is the program's own (a ShapeError on bad input).
      if (!isCompileFailure(e) || (e instanceof KilnError && !(e instanceof AotError))) throw e;
      this.training = `AOT autograd could not trace it: ${(e as Error)?.message ?? String(e)}`;
      logLine(`kiln kernels: ${this.name} runs eagerly while gradients are recorded (${this.training})`);
      return EAGER;
    }
  }

  /** Elements the call's tensors and the graph's parameters hold: a measure of how much work a call is. */
  private work(args: readonly unknown[]): number {
    let n = this.paramElements;
    for (const a of args) if (a instanceof Tensor) n += a.numel();
    return n;
  }

  /** While gradients are recorded: the AOT programs (forward and backward plans, bytes saved), or why it is eager. */
  private pprintTraining(title: string): string[] {
    if (typeof this.training === 'string') return [`${title} runs eagerly while gradients are recorded (${this.training})`];
    if (!this.training) return [];
    return this.training.compiledPrograms().flatMap((p) => {
      const { forward, backward, backwardGraph, savedTensors, savedBytes } = p.describe();
      const plan = (f: unknown) => (f as { pprint?: () => string } | undefined)?.pprint?.() ?? '';
      const head = `${title} while gradients are recorded: AOT autograd graph ${p.id}, ${savedTensors} tensors (${formatBytes(savedBytes)}) saved for backward`;
      // not compiled yet: the backward graph itself, so explain shows what the first backward() will compile
      const graph = backwardGraph ? `:\n${backwardGraph.code.replace(/^/gm, '    ')}` : '';
      const bw = backward
        ? plan(backward).replace(/^kiln kernels: [\w$]+/, `${title} backward`)
        : `${title} backward: compiled at the first backward()${graph}`;
      return [head, plan(forward).replace(/^kiln kernels: [\w$]+/, `${title} forward`), bw];
    });
  }

  /**
   * After a call whose plan stopped halfway (an eager step's result changed shape, dtype or a baked-in number; the
   * call was finished eagerly), the signature runs eagerly: planning again would only meet the same change.
   */
  private dropIfInvalidated(key: string, plan: Plan): void {
    if (plan.invalidated === null) return;
    const reason = `the plan stopped: ${plan.invalidated}`;
    this.plans.set(key, reason);
    logLine(`kiln kernels: ${this.name} runs eagerly for ${key}: ${reason}`);
  }

  /** Plans are per input signature, and per kernel backend: after setKernelBackend the next call plans for the new mode. */
  private keyOf(args: readonly unknown[]): string {
    return `${getKernelBackend()} ${args.map(describeArg).join(' ')}`;
  }

  /** Lower, fuse and compile from one eager run's values; a graph too large for kernels gets the reason instead. */
  private makePlan(key: string, values: ReadonlyMap<Node, unknown>): Plan | string {
    try {
      const lowered = lowerGraph(this.gm, values);
      const out = this.gm.graph.outputNode;
      const parts = partition(lowered, out ? out.allInputNodes() : []);
      const plan = new Plan({ gm: this.gm, lowered, groups: parts.groups, values });
      countPlan();
      if (LOG_KERNELS) logLine(formatPlan(plan, `kiln kernels: ${this.name}`)); // the table is built only to be logged
      return plan;
    } catch (e) {
      if (!(e instanceof TooLarge)) throw e;
      logLine(`kiln kernels: ${this.name} runs eagerly for ${key}: ${e.message}`);
      return e.message;
    }
  }

  /**
   * Run eagerly once, recording every value (this call's result), then plan, and run the plan once to build its
   * kernels; its result is dropped (see the class comment).
   */
  private planAndRun(key: string, args: unknown[]): unknown {
    const rec = new Interpreter(this.gm, false);
    const eagerResult = rec.run(...args);
    if (this.plans.size >= PLANS_PER_PROGRAM) this.plans.delete(this.plans.keys().next().value!);
    const plan = this.makePlan(key, rec.env);
    this.plans.set(key, plan);
    if (typeof plan === 'string') return eagerResult;
    try {
      plan.run(args);
      this.dropIfInvalidated(key, plan);
      return eagerResult;
    } catch (e) {
      if (e instanceof KilnError) throw e;
      // A kernel gpu.js could not build or run: this signature runs eagerly; the eager run above already
      // produced this call's result (eager steps replayed it, so nothing ran twice).
      const reason = `a kernel failed: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}`;
      this.plans.set(key, reason);
      process.emitWarning(`kiln: ${this.name} runs eagerly for inputs ${key} (${reason})`, 'KilnWarning');
      return eagerResult;
    }
  }

  /** Why a call records gradients, for the log and pprint. */
  private gradWhy(): string {
    return this.enablesGrad ? 'grad mode on, or turned on by a region of the graph' : 'grad mode on';
  }

  pprint(): string {
    const title = `kiln kernels: ${this.name}`;
    if (this.eagerReason) return `${title} runs eagerly (${this.eagerReason})`;
    const underGrad = `${title} runs eagerly while gradients are recorded`;
    // A graph that turns grad mode on records gradients under noGrad too, unless nothing requires grad.
    const otherwise = this.enablesGrad ? 'when nothing requires grad' : 'under noGrad';
    const lines = [
      ...this.pprintTraining(title),
      ...[...this.plans].map(([key, p]) => (typeof p === 'string' ? `${title} for ${key}: eager (${p})` : formatPlan(p, title))),
      ...[...this.gradPlans].map(([key, p]) =>
        typeof p === 'string' ? `${underGrad}; for ${key} ${otherwise}: eager (${p})` : formatPlan(p, `${underGrad}; ${otherwise}`),
      ),
    ];
    if (lines.length > 0) return lines.join('\n');
    if (this.loggedGrad) return `${underGrad} (${this.gradWhy()}, inputs or parameters require grad); ${otherwise} it runs kernels`;
    return `${title} has not run yet (plans are made per input signature on first call)`;
  }
}

/** The 'kernels' backend (API §8): lower the captured graph to fused gpu.js kernels. */
export function kernelsBackend(
  gm: GraphModule,
  _exampleInputs?: readonly unknown[],
  options: KernelProgramOptions = {},
): KernelProgramCallable {
  const program = new KernelProgram(gm, options);
  const run = ((...args: unknown[]) => program.call(args)) as KernelProgramCallable;
  Object.defineProperties(run, {
    pprint: { value: () => program.pprint() },
    program: { value: program },
  });
  return run;
}
