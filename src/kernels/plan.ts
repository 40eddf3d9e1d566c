import { KilnError } from '../errors.js';
import type { GraphModule } from '../graph/graph-module.js';
import { Interpreter } from '../graph/interpreter.js';
import { mapArg, nodesIn, type Argument, type Node } from '../graph/node.js';
import { annotateGraphError } from '../graph/source-lines.js';
import { Tensor } from '../runtime/tensor.js';
import { getKernelBackend, type KernelBackendName } from './backend.js';
import type { CodegenContext } from './elementwise.js';
import { numelOf, type IRNode, type TensorMeta } from './ir.js';
import type { Lowered } from './lower.js';
import { gemmBuffer } from './matmul.js';
import { planSlots, type SlotPlan } from './memory.js';
import type { Group } from './partition.js';
import {
  buildKernelStep,
  eagerStep,
  PlanMismatch,
  type Env,
  type ScratchHandle,
  type Step,
  type StepContext,
  type StepRunContext,
} from './steps/index.js';
import { metaOf, sameLayout } from './tensor-meta.js';
import { applyViewToLayout } from './views.js';

export { PlanMismatch, TooLarge, type StepInfo } from './steps/index.js';
export { metaOf } from './tensor-meta.js';

/**
 * A plan: the steps that compute one captured graph for one input signature, in order. Kernel steps run
 * generated gpu.js kernels (or the GEMM); eager steps run a graph node through the eager runtime, as the
 * GraphModule's own forward would. Values live in an environment indexed by IR id and are dropped after
 * their last reader, and GEMM results go into buffers assigned by liveness (memory.ts).
 *
 * This module is the executor: it orders the steps, plans layouts, liveness and buffers, replays the eager
 * run on the first call and finishes a call eagerly when the plan stops fitting. What each step does is
 * planned by its IR kind's builder in steps/, which sees the plan only through StepContext (while planning)
 * and StepRunContext (while running).
 *
 * Why not gpu.js `createPipeline`: it keeps intermediates inside wasm memory between steps, but every
 * pipeline call returns a Promise, and a compiled kiln program is an ordinary synchronous call. Measured on
 * this machine (softmax over [64, 1000] as three kernels: row max, row sum of exp, normalise; median of 15):
 * separate synchronous kernel calls 3.7 ms, `createPipeline` 4.0 ms (fused-threaded) and 3.5 ms (fused-sync).
 * The 5% the sync pipeline saves does not pay for making every compiled call async, so steps call their
 * kernels directly.
 */

export interface PlanSource {
  readonly gm: GraphModule;
  readonly lowered: Lowered;
  readonly groups: readonly Group[];
  /** Every node's value from the eager run the plan was made from. */
  readonly values: ReadonlyMap<Node, unknown>;
}

/** Slot and scratch buffers in wasm memory go back to the heap when their plan is garbage collected. */
const releaseWhenCollected = new FinalizationRegistry<() => void>((free) => free());

type WasmBuffer = { data: Float32Array; free: () => void };

export class Plan implements StepRunContext {
  readonly steps: Step[] = [];
  /** The layout every materialised IR value has at run time. */
  readonly layouts = new Map<number, TensorMeta>();
  private readonly interp: Interpreter;
  private readonly lastReader = new Map<number, number>();
  private readonly outputIds = new Set<number>();
  private slots: SlotPlan | null = null;
  /** Scratch buffers steps share (StepContext.reserveScratch): each one's name, size (the largest reserved) and buffer. */
  private readonly scratchBuffers: { readonly name: string; size: number; buffer?: WasmBuffer }[] = [];
  /** Slot buffers, allocated on first use (in wasm memory, where the GEMM reads and writes them in place). */
  private readonly buffers: WasmBuffer[] = [];
  /**
   * Values from the eager run the plan was made from, which eager steps reuse on the plan's first execution:
   * that run is the compile check (see KernelProgram.planAndRun), and must not run a side effect a second time.
   */
  private replay: ReadonlyMap<Node, unknown> | null;
  /** Materialised values that non-eager steps read in their planned layout (generated kernels bake it in). */
  private readonly layoutBound = new Set<number>();
  /**
   * Why this plan no longer fits its signature, once a call found out halfway (an eager step's result changed
   * shape, dtype or a number kernels bake in); that call was finished eagerly. Null while it fits.
   */
  invalidated: string | null = null;
  readonly mode: KernelBackendName;

  /** Non-tensor node values (shapes, numbers): fixed by the input signature, so kept from the eager run. */
  private readonly fixed = new Map<Node, unknown>();
  readonly src: Omit<PlanSource, 'values'>;

  constructor(source: PlanSource) {
    const { values, ...src } = source;
    this.src = src;
    this.mode = getKernelBackend();
    this.interp = new Interpreter(src.gm, false);
    this.replay = values;
    for (const [n, v] of values) if (!(v instanceof Tensor)) this.fixed.set(n, v);
    this.build(values);
  }

  get ir(): readonly IRNode[] {
    return this.src.lowered.ir;
  }

  private layoutOf = (id: number): TensorMeta => {
    const l = this.layouts.get(id);
    if (!l) throw new KilnError(`kernels: IR value ${id} (${this.describeIR(id)}) has no planned layout`);
    return l;
  };

  describeIR(id: number): string {
    const n = this.ir[id]!;
    return n.origin ? n.origin.name : `#${id}`;
  }

  /** What step builders may read and plan while this plan is made. */
  private stepContext(): StepContext {
    const { lowered } = this.src;
    const codegen: CodegenContext = { ir: lowered.ir, layoutOf: this.layoutOf, roundEach: this.mode === 'cpu' };
    return {
      ir: lowered.ir,
      mode: this.mode,
      codegen,
      layoutOf: this.layoutOf,
      setLayout: (id, meta) => void this.layouts.set(id, meta),
      baseOf: (id) => this.baseOf(id),
      isModuleTensor: (id) => this.isModuleTensor(id),
      irOf: (node) => lowered.irOf.get(node),
      opaqueReason: (node) => lowered.opaque.get(node),
      reserveScratch: (name, length) => this.reserveScratch(name, length),
    };
  }

  private build(values: ReadonlyMap<Node, unknown>): void {
    const { lowered, groups, gm } = this.src;
    const ctx = this.stepContext();
    // Layouts of values that exist before any step: inputs and module tensors.
    for (const n of lowered.ir) {
      if (n.kind !== 'value') continue;
      const v = n.source.from === 'tensor' ? n.source.tensor : values.get(n.source.node);
      if (v instanceof Tensor) this.layouts.set(n.id, metaOf(v));
    }
    const groupAt = new Map(groups.map((g) => [g.root, g]));
    const eagerAt = new Map<number, Node>();
    for (const node of gm.graph.nodes) {
      if (lowered.opaque.has(node)) eagerAt.set(lowered.irOf.get(node)!, node);
    }
    for (let id = 0; id < lowered.ir.length; id++) {
      const node = eagerAt.get(id);
      if (node) this.steps.push(eagerStep(ctx, node, id, values.get(node)));
      const g = groupAt.get(id);
      if (g) this.steps.push(this.kernelStep(ctx, g));
    }
    const out = gm.graph.outputNode;
    for (const n of out ? nodesIn(out.args as Argument) : []) {
      const id = lowered.irOf.get(n);
      if (id !== undefined) this.outputIds.add(this.baseOf(id));
    }
    this.steps.forEach((s, i) => s.reads.forEach((id) => this.lastReader.set(id, i)));
    for (const s of this.steps) if (s.kind !== 'eager') s.reads.forEach((id) => this.layoutBound.add(id));
    this.slots = planSlots(
      this.steps,
      (id) => numelOf(this.ir[id]!.shape),
      (id) => this.outputIds.has(id) || this.readByEager(id),
    );
  }

  /** A fusion group's step, with the graph nodes whose work it does (those an epilogue absorbed too). */
  private kernelStep(ctx: StepContext, g: Group): Step {
    const root = this.ir[g.root]!;
    const origins = g.members.flatMap((m) => [...(this.ir[m]!.absorbed ?? []), this.ir[m]!.origin]);
    const nodes = [...new Set(origins.filter((n): n is Node => n !== null))];
    return { nodes, shape: root.shape, ...buildKernelStep(ctx, g) };
  }

  private readByEager(id: number): boolean {
    return this.steps.some((s) => s.kind === 'eager' && s.reads.includes(id));
  }

  /** The materialised value under a chain of views. */
  private baseOf(id: number): number {
    let n = this.ir[id]!;
    while (n.kind === 'view') n = this.ir[n.arg]!;
    return n.id;
  }

  private isModuleTensor(id: number): boolean {
    const n = this.ir[this.baseOf(id)]!;
    return n.kind === 'value' && n.source.from === 'tensor';
  }

  /** A view's value as a tensor sharing its base's storage (or, for a reshape no strides express, a copy). */
  realise(env: Env, id: number): Tensor {
    const n = this.ir[id]!;
    if (n.kind !== 'view') {
      const t = env.ir[id];
      if (!t) throw new KilnError(`kernels: value ${this.describeIR(id)} is not available (freed or never computed)`);
      return t;
    }
    const base = this.realise(env, n.arg);
    const l = applyViewToLayout(base, n.view);
    if (!l) return base.reshape(n.shape);
    return new Tensor(base._storage, l.shape, l.strides, l.offset, base.dtype);
  }

  private valueOfNode(env: Env, node: Node): unknown {
    if (env.nodes.has(node)) return env.nodes.get(node);
    const id = this.src.lowered.irOf.get(node);
    if (id !== undefined) return this.realise(env, id);
    return this.fixed.get(node);
  }

  evaluate(env: Env, node: Node): unknown {
    if (this.replay?.has(node)) return this.replay.get(node);
    this.interp.env = new Map(node.allInputNodes().map((n) => [n, this.valueOfNode(env, n)]));
    const value = this.interp.runNode(node);
    this.interp.env = new Map();
    return value;
  }

  isLayoutBound(id: number): boolean {
    return this.layoutBound.has(id);
  }

  private reserveScratch(name: string, length: number): ScratchHandle {
    let at = this.scratchBuffers.findIndex((s) => s.name === name);
    if (at < 0) at = this.scratchBuffers.push({ name, size: 0 }) - 1;
    this.scratchBuffers[at]!.size = Math.max(this.scratchBuffers[at]!.size, length);
    return at as ScratchHandle;
  }

  /** A scratch buffer (in wasm memory, where the GEMM reads it in place), allocated on first use at its reserved size. */
  scratch(handle: ScratchHandle, length: number): Float32Array {
    const s = this.scratchBuffers[handle]!;
    if (length > s.size) {
      throw new KilnError(`kernels: a step asked for ${length} floats of scratch '${s.name}', which was reserved at ${s.size}`);
    }
    if (!s.buffer) {
      s.buffer = gemmBuffer(s.size);
      releaseWhenCollected.register(this, s.buffer.free);
    }
    return s.buffer.data.subarray(0, length);
  }

  buffer(id: number): Float32Array | null {
    const slot = this.slots?.slotOf.get(id);
    if (slot === undefined) return null;
    if (!this.buffers[slot]) {
      this.buffers[slot] = gemmBuffer(this.slots!.sizes[slot]!);
      releaseWhenCollected.register(this, this.buffers[slot].free);
    }
    return this.buffers[slot].data.subarray(0, numelOf(this.ir[id]!.shape));
  }

  /** Module tensors the plan reads directly; a changed layout (a replaced buffer) needs a new plan. */
  private checkModuleTensors(env: Env): void {
    for (const n of this.ir) {
      if (n.kind !== 'value' || n.source.from !== 'tensor') continue;
      const t = n.source.tensor;
      if (!sameLayout(t, this.layouts.get(n.id)!)) throw new PlanMismatch(`${n.source.path} changed layout`);
      env.ir[n.id] = t;
    }
  }

  /** Run the plan on the call's arguments; returns what the graph's output node returns. */
  run(args: readonly unknown[]): unknown {
    const env: Env = { ir: new Array(this.ir.length), nodes: new Map() };
    const { gm, lowered } = this.src;
    let k = 0;
    for (const node of gm.graph.nodes) {
      if (node.op !== 'placeholder') continue;
      const v = k < args.length ? args[k] : node.args[0];
      k++;
      env.nodes.set(node, v);
      const id = lowered.irOf.get(node);
      if (id !== undefined && v instanceof Tensor) env.ir[id] = v;
    }
    this.checkModuleTensors(env);
    let at = 0;
    try {
      for (let i = 0; i < this.steps.length; i++) {
        at = i;
        const step = this.steps[i]!;
        step.run(env, this);
        for (const r of step.reads) if (this.lastReader.get(r) === i && !this.outputIds.has(r)) env.ir[r] = undefined;
      }
    } catch (e) {
      if (!(e instanceof PlanMismatch)) throw annotateGraphError(e, this.steps[at]?.nodes[0]); // an eager step's node, or a kernel's first
      this.invalidated = e.message;
      return this.finishEagerly(env);
    } finally {
      this.replay = null;
    }
    const out = gm.graph.outputNode;
    return out ? mapArg(out.args[0] as Argument, (n) => this.valueOfNode(env, n)) : undefined;
  }

  /**
   * The rest of a call whose plan stopped at an eager step: every node not run yet runs through the eager
   * runtime, in graph order. Eager nodes that already ran keep their values (a side effect never runs twice),
   * and values kernels computed are kept while still held (a freed one's buffer may be reused, so it is
   * computed again; lowered nodes are pure).
   */
  private finishEagerly(env: Env): unknown {
    const { gm, lowered } = this.src;
    const interp = new Interpreter(gm, false);
    for (const node of gm.graph.nodes) {
      let value: unknown;
      if (env.nodes.has(node)) value = env.nodes.get(node);
      else if (node.op === 'output' || lowered.opaque.has(node)) value = interp.runNode(node);
      else value = this.heldValue(env, node) ?? interp.runNode(node);
      if (node.op === 'output') return value;
      interp.env.set(node, value);
    }
    return undefined;
  }

  /** A lowered node's value, when a step computed it and it is still held (its base not freed). */
  private heldValue(env: Env, node: Node): Tensor | undefined {
    const id = this.src.lowered.irOf.get(node);
    if (id === undefined || env.ir[this.baseOf(id)] === undefined) return undefined;
    return this.realise(env, id);
  }
}
