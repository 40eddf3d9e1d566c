import type { IKernelRunShortcut } from 'gpu.js';
import { KilnError } from '../errors.js';
import type { GraphModule } from '../graph/graph-module.js';
import { Interpreter } from '../graph/interpreter.js';
import { mapArg, nodesIn, type Argument, type Node } from '../graph/node.js';
import { im2row, type Window2d } from '../runtime/cpu/conv.js';
import { isContiguousLayout } from '../runtime/cpu/strided.js';
import { contiguousStrides } from '../runtime/shape.js';
import { Storage, Tensor } from '../runtime/tensor.js';
import { getKernelBackend, type KernelBackendName } from './backend.js';
import { getKernel } from './cache.js';
import { convOutputLayout, im2rowKernel, poolKernel } from './conv.js';
import { elementwiseKernel, type CodegenContext, type GeneratedKernel } from './elementwise.js';
import { checkIndices, gatherKernel } from './gather.js';
import { MAX_KERNEL_ELEMENTS } from './index-map.js';
import { numelOf, type IRNode, type Layout, type TensorMeta } from './ir.js';
import type { Lowered } from './lower.js';
import { disposePacked, gemm, gemmBuffer, isPacked, packB, simdGemmAvailable, type PackedB } from './matmul.js';
import { planSlots, type SlotPlan } from './memory.js';
import type { Group } from './partition.js';
import { reduceKernel } from './reduce.js';
import { applyViewToLayout } from './views.js';

/**
 * A plan: the steps that compute one captured graph for one input signature, in order. Kernel steps run
 * generated gpu.js kernels (or the GEMM); eager steps run a graph node through the eager runtime, as the
 * GraphModule's own forward would. Values live in an environment indexed by IR id and are dropped after
 * their last reader, and GEMM results go into buffers assigned by liveness (memory.ts).
 *
 * Why not gpu.js `createPipeline`: it keeps intermediates inside wasm memory between steps, but every
 * pipeline call returns a Promise, and a compiled kiln program is an ordinary synchronous call. Measured on
 * this machine (softmax over [64, 1000] as three kernels: row max, row sum of exp, normalise; median of 15):
 * separate synchronous kernel calls 3.7 ms, `createPipeline` 4.0 ms (fused-threaded) and 3.5 ms (fused-sync).
 * The 5% the sync pipeline saves does not pay for making every compiled call async, so steps call their
 * kernels directly.
 */

/** A kernel step's result layout differs from the one its consumers were generated for: plan again. */
export class PlanMismatch extends Error {}

/** The graph holds a tensor too large for generated kernels' index arithmetic: it runs eagerly. */
export class TooLarge extends Error {}

export interface StepInfo {
  readonly kind: string;
  /** Graph nodes whose work this step does. */
  readonly nodes: readonly Node[];
  readonly shape: readonly number[];
  /** For eager steps: why the node was not lowered. */
  readonly note: string;
}

interface Env {
  readonly ir: (Tensor | undefined)[];
  readonly nodes: Map<Node, unknown>;
}

interface Step extends StepInfo {
  /** IR ids (materialised bases) this step reads. */
  readonly reads: readonly number[];
  /** The IR id it defines, or -1. */
  readonly defines: number;
  run(env: Env, plan: Plan): void;
}

export interface PlanSource {
  readonly gm: GraphModule;
  readonly lowered: Lowered;
  readonly groups: readonly Group[];
  /** Every node's value from the eager run the plan was made from. */
  readonly values: ReadonlyMap<Node, unknown>;
}

export function metaOf(t: Tensor): TensorMeta {
  return { shape: t.shape, strides: t.strides, offset: t.offset, dtype: t.dtype, storageLength: t._storage.data.length };
}

function sameLayout(t: Tensor, m: TensorMeta): boolean {
  if (t.dtype !== m.dtype || t.offset !== m.offset || t._storage.data.length !== m.storageLength) return false;
  if (t.shape.length !== m.shape.length) return false;
  for (let i = 0; i < m.shape.length; i++) if (t.shape[i] !== m.shape[i] || t.strides[i] !== m.strides[i]) return false;
  return true;
}

/** Packed GEMM right-hand sides of weights, kept until the weight changes (optimizer steps bump the version). */
const packedWeights = new WeakMap<Storage, { version: number; key: string; packed: PackedB }>();

function packedWeight(t: Tensor, K: number, N: number, transposed: boolean): PackedB {
  const key = `${t.offset}:${K}x${N}:${transposed}:${simdGemmAvailable()}`;
  const hit = packedWeights.get(t._storage);
  if (hit && hit.version === t._storage.version && hit.key === key) return hit.packed;
  if (hit) disposePacked(hit.packed);
  const packed = packB(denseData(t), K, N, { transposed });
  packedWeights.set(t._storage, { version: t._storage.version, key, packed });
  return packed;
}

/** The elements of `t` in row-major order, without copying when it is contiguous float32. */
function denseData(t: Tensor): Float32Array {
  if (t.isContiguous() && t._storage.data instanceof Float32Array) return t._storage.data.subarray(t.offset, t.offset + t.numel());
  return t.contiguous().data() as Float32Array;
}

/** Slot buffers in wasm memory go back to the heap when their plan is garbage collected. */
const releaseWhenCollected = new FinalizationRegistry<() => void>((free) => free());

export class Plan {
  readonly steps: Step[] = [];
  /** The layout every materialised IR value has at run time. */
  readonly layouts = new Map<number, TensorMeta>();
  private readonly interp: Interpreter;
  private readonly lastReader = new Map<number, number>();
  private readonly outputIds = new Set<number>();
  private slots: SlotPlan | null = null;
  /** Slot buffers, allocated on first use (in wasm memory, where the GEMM reads and writes them in place). */
  private readonly buffers: { data: Float32Array; free: () => void }[] = [];
  /** Values from the eager run that eager steps reuse on the plan's first execution (no side effect twice). */
  private replay: ReadonlyMap<Node, unknown> | null;
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

  private layoutOf = (id: number): Layout => {
    const l = this.layouts.get(id);
    if (!l) throw new KilnError(`kernels: IR value ${id} (${this.describeIR(id)}) has no planned layout`);
    return l;
  };

  describeIR(id: number): string {
    const n = this.ir[id]!;
    return n.origin ? n.origin.name : `#${id}`;
  }

  private build(values: ReadonlyMap<Node, unknown>): void {
    const { lowered, groups, gm } = this.src;
    const ctx: CodegenContext = { ir: lowered.ir, layoutOf: this.layoutOf };
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
      if (node) this.steps.push(this.eagerStep(node, id, values.get(node)));
      const g = groupAt.get(id);
      if (g) this.steps.push(this.kernelStep(ctx, g));
    }
    const out = gm.graph.outputNode;
    for (const n of out ? nodesIn(out.args as Argument) : []) {
      const id = lowered.irOf.get(n);
      if (id !== undefined) this.outputIds.add(this.baseOf(id));
    }
    this.steps.forEach((s, i) => s.reads.forEach((id) => this.lastReader.set(id, i)));
    this.slots = planSlots(
      this.steps.map((s) => ({
        defines: s.defines,
        reads: s.reads,
        gemmOutput: s.kind.startsWith('matmul') || s.kind.startsWith('conv2d'),
      })),
      (id) => numelOf(this.ir[id]!.shape),
      (id) => this.outputIds.has(id) || this.readByEager(id),
    );
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

  private eagerStep(node: Node, id: number, out: unknown): Step {
    const reads = node.allInputNodes().flatMap((n) => {
      const r = this.src.lowered.irOf.get(n);
      return r === undefined ? [] : [this.baseOf(r)];
    });
    if (out instanceof Tensor) this.layouts.set(id, metaOf(out));
    const expected = out instanceof Tensor ? metaOf(out) : null;
    return {
      kind: 'eager',
      nodes: [node],
      shape: out instanceof Tensor ? out.shape : [],
      note: this.src.lowered.opaque.get(node) ?? '',
      reads,
      defines: out instanceof Tensor ? id : -1,
      run: (env, plan) => {
        let value: unknown;
        if (plan.replay?.has(node)) value = plan.replay.get(node);
        else {
          plan.interp.env = new Map(node.allInputNodes().map((n) => [n, plan.valueOfNode(env, n)]));
          value = plan.interp.runNode(node);
          plan.interp.env = new Map();
        }
        env.nodes.set(node, value);
        if (expected) {
          if (!(value instanceof Tensor) || !sameLayout(value, expected)) throw new PlanMismatch(`${node.name} changed layout`);
          env.ir[id] = value;
        }
      },
    };
  }

  private kernelStep(ctx: CodegenContext, g: Group): Step {
    const root = this.ir[g.root]!;
    const origins = g.members.flatMap((m) => [...(this.ir[m]!.absorbed ?? []), this.ir[m]!.origin]);
    const nodes = [...new Set(origins.filter((n): n is Node => n !== null))];
    const base = { nodes, shape: root.shape };
    switch (root.kind) {
      case 'ew':
        return this.generatedStep({ ...base, kind: 'elementwise' }, g.root, elementwiseKernel(ctx, g));
      case 'reduce':
        return this.generatedStep({ ...base, kind: `reduce ${root.op}` }, g.root, reduceKernel(ctx, g));
      case 'pool2d':
        return this.generatedStep({ ...base, kind: `${root.attrs.kind}Pool2d` }, g.root, poolKernel(ctx, root));
      case 'gather': {
        const step = this.generatedStep({ ...base, kind: 'embedding' }, g.root, gatherKernel(ctx, root));
        const rows = this.ir[root.table]!.shape[0]!;
        const lookup = step.run;
        return {
          ...step,
          run: (env, plan) => {
            checkIndices(plan.realise(env, root.index), rows);
            lookup(env, plan);
          },
        };
      }
      case 'matmul':
        return this.matmulStep(base, root);
      case 'conv2d':
        return this.convStep(ctx, base, root);
      default:
        throw new KilnError(`kernels: cannot make a kernel of a ${root.kind} node`);
    }
  }

  /** A step running one generated gpu.js kernel whose result is the IR value `id`. */
  private generatedStep(info: Omit<StepInfo, 'note'>, id: number, gen: GeneratedKernel): Step {
    const n = this.ir[id]!;
    this.layouts.set(id, {
      shape: n.shape,
      strides: contiguousStrides(n.shape),
      offset: 0,
      dtype: n.dtype,
      storageLength: numelOf(n.shape),
    });
    const kernel = this.kernelFor(gen);
    const numel = numelOf(n.shape);
    return {
      ...info,
      note: '',
      reads: gen.args,
      defines: id,
      run: (env) => {
        const data = numel === 0 ? new Float32Array(0) : (kernel(...gen.args.map((a) => env.ir[a]!._storage.data)) as Float32Array);
        env.ir[id] = Tensor.fromData(n.dtype === 'bool' ? Uint8Array.from(data) : data, n.shape, n.dtype);
      },
    };
  }

  private kernelFor(gen: GeneratedKernel): IKernelRunShortcut {
    const metas = gen.args.map((a) => this.layoutOf(a) as TensorMeta);
    if (numelOf(gen.output) >= MAX_KERNEL_ELEMENTS || metas.some((m) => m.storageLength >= MAX_KERNEL_ELEMENTS)) {
      throw new TooLarge(`a kernel over 2^24 elements or more is beyond gpu.js's float32 index arithmetic`);
    }
    return getKernel(this.mode, gen, metas.map((m) => `${m.dtype}${m.storageLength}`).join(','));
  }

  private matmulStep(info: Omit<StepInfo, 'kind' | 'note'>, root: IRNode): Step {
    if (root.kind !== 'matmul') throw new KilnError('kernels: not a matmul');
    const id = root.id;
    const aShape = this.ir[root.a]!.shape;
    const bShape = this.ir[root.b]!.shape;
    const K = aShape[aShape.length - 1]!;
    const N = root.shape[root.shape.length - 1]!;
    const batched = bShape.length > 2;
    const batch = batched ? numelOf(bShape.slice(0, -2)) : 1;
    const M = numelOf(aShape) / K / batch;
    const bIsModuleTensor = this.isModuleTensor(root.b);
    this.layouts.set(id, {
      shape: root.shape,
      strides: contiguousStrides(root.shape),
      offset: 0,
      dtype: 'float32',
      storageLength: numelOf(root.shape),
    });
    const kind = `matmul${root.bias !== null ? '+bias' : ''}${root.relu ? '+relu' : ''}`;
    const reads = [root.a, root.b, ...(root.bias !== null ? [root.bias] : [])].map((r) => this.baseOf(r));
    return {
      ...info,
      kind,
      note: '',
      reads,
      defines: id,
      run: (env, plan) => {
        const a = denseData(plan.realise(env, root.a));
        const bt = plan.realise(env, root.b);
        const bias = root.bias !== null ? denseData(plan.realise(env, root.bias)) : undefined;
        const out = plan.buffer(id) ?? new Float32Array(numelOf(root.shape));
        const opts = { bias, activation: root.relu ? ('relu' as const) : ('none' as const) };
        if (!batched) {
          // B as stored: [K, N], [N, K] (bTransposed, a Linear weight), or a transposed view of [N, K]
          const transposedView = !root.bTransposed && bt.ndim === 2 && bt.strides[0] === 1 && bt.strides[1] === K && K > 1;
          const bT = root.bTransposed || transposedView;
          let b: Float32Array | PackedB;
          if (bIsModuleTensor) b = packedWeight(transposedView ? bt.t() : bt, K, N, bT);
          else b = transposedView ? denseData(bt.t()) : denseData(bt);
          gemm(a, b, M, K, N, { ...opts, bTransposed: !isPacked(b) && bT, out });
        } else {
          const b = denseData(bt);
          for (let i = 0; i < batch; i++) {
            gemm(a.subarray(i * M * K, (i + 1) * M * K), b.subarray(i * K * N, (i + 1) * K * N), M, K, N, {
              ...opts,
              out: out.subarray(i * M * N, (i + 1) * M * N),
            });
          }
        }
        env.ir[id] = Tensor.fromData(out, root.shape, 'float32');
      },
    };
  }

  /**
   * conv2d: im2row, then one GEMM against the weight read as Bᵀ. A contiguous input is gathered by the eager
   * runtime's im2row loop straight into wasm memory the GEMM reads in place: measured 15 ms against 48 ms for
   * the gpu.js im2row kernel on [16, 32, 32, 32] with a 3×3 window (gpu.js pays index arithmetic per element
   * and copies 19 MB out of its memory). Inputs read through views go through the generated kernel instead,
   * which folds the view into its index map.
   */
  private convStep(ctx: CodegenContext, info: Omit<StepInfo, 'kind' | 'note'>, root: IRNode): Step {
    if (root.kind !== 'conv2d') throw new KilnError('kernels: not a conv2d');
    const id = root.id;
    const [N, C, H, W] = this.ir[root.x]!.shape as [number, number, number, number];
    const [O, , kh, kw] = this.ir[root.w]!.shape as [number, number, number, number];
    const [, , OH, OW] = root.shape as [number, number, number, number];
    const P = N * OH * OW;
    const Kc = C * kh * kw;
    const { stride, padding, dilation } = root.attrs;
    const geo: Window2d = {
      kh,
      kw,
      sh: stride[0],
      sw: stride[1],
      ph: padding[0],
      pw: padding[1],
      dh: dilation[0],
      dw: dilation[1],
      H,
      W,
      OH,
      OW,
    };
    const xMeta = this.ir[root.x]!.kind === 'view' ? null : this.layouts.get(root.x)!;
    const direct = xMeta !== null && xMeta.dtype === 'float32' && isContiguousLayout(xMeta);
    const gen = direct ? null : im2rowKernel(ctx, root);
    const gather = gen ? this.kernelFor(gen) : null;
    const layout = convOutputLayout(root.shape);
    this.layouts.set(id, { ...layout, dtype: 'float32', storageLength: P * O });
    const kind = `conv2d${root.bias !== null ? '+bias' : ''}${root.relu ? '+relu' : ''}`;
    const reads = [root.x, root.w, ...(root.bias !== null ? [root.bias] : [])].map((r) => this.baseOf(r));
    let scratch: Float32Array | null = null;
    return {
      ...info,
      kind,
      note: `im2row [${P}, ${Kc}] (${direct ? 'JS loop' : 'gpu.js'}) · weightᵀ, NHWC result read as NCHW`,
      reads,
      defines: id,
      run: (env, plan) => {
        let rows: Float32Array;
        if (gather) rows = gather(env.ir[gen!.args[0]!]!._storage.data) as Float32Array;
        else {
          if (!scratch) {
            const buf = gemmBuffer(P * Kc);
            releaseWhenCollected.register(plan, buf.free);
            scratch = buf.data;
          }
          const x = env.ir[root.x]!;
          const data = x._storage.data as Float32Array;
          for (let n = 0; n < N; n++)
            im2row(data, x.offset + n * C * H * W, C, geo, scratch.subarray(n * OH * OW * Kc, (n + 1) * OH * OW * Kc));
          rows = scratch;
        }
        const w = plan.realise(env, root.w);
        const packed = this.isModuleTensor(root.w) ? packedWeight(w, Kc, O, true) : denseData(w);
        const bias = root.bias !== null ? denseData(plan.realise(env, root.bias)) : undefined;
        const out = plan.buffer(id) ?? new Float32Array(P * O);
        gemm(rows, packed, P, Kc, O, {
          bias,
          activation: root.relu ? 'relu' : 'none',
          bTransposed: !isPacked(packed),
          out,
        });
        env.ir[id] = new Tensor(new Storage(out), root.shape, layout.strides, 0, 'float32');
      },
    };
  }

  private isModuleTensor(id: number): boolean {
    let n = this.ir[id]!;
    while (n.kind === 'view') n = this.ir[n.arg]!;
    return n.kind === 'value' && n.source.from === 'tensor';
  }

  /** The liveness-planned buffer for GEMM result `id`, or null when it must be a fresh array (it escapes). */
  private buffer(id: number): Float32Array | null {
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
    try {
      this.steps.forEach((step, i) => {
        step.run(env, this);
        for (const r of step.reads) if (this.lastReader.get(r) === i && !this.outputIds.has(r)) env.ir[r] = undefined;
      });
    } finally {
      this.replay = null;
    }
    const out = gm.graph.outputNode;
    return out ? mapArg(out.args[0] as Argument, (n) => this.valueOfNode(env, n)) : undefined;
  }
}
