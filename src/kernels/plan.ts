import type { IKernelRunShortcut } from 'gpu.js';
import { KilnError } from '../errors.js';
import type { GraphModule } from '../graph/graph-module.js';
import { Interpreter } from '../graph/interpreter.js';
import { mapArg, nodesIn, type Argument, type Node } from '../graph/node.js';
import { annotateGraphError } from '../graph/source-lines.js';
import type { Window2d } from '../runtime/cpu/conv.js';
import { isContiguousLayout } from '../runtime/cpu/strided.js';
import { contiguousStrides, fmt, sameShape } from '../runtime/shape.js';
import { Storage, Tensor } from '../runtime/tensor.js';
import { getKernelBackend, type KernelBackendName } from './backend.js';
import { getKernel } from './cache.js';
import { convOutputLayout, im2rowKernel, poolKernel } from './conv.js';
import { convWeights, im2rowByColumns, im2rowChannelsLast, isChannelsLast, maxPoolInto, toChannelsLast } from './conv-host.js';
import { elementwiseKernel, type CodegenContext, type GeneratedKernel } from './elementwise.js';
import { checkIndices, gatherKernel } from './gather.js';
import { MAX_KERNEL_ELEMENTS } from './index-map.js';
import { numelOf, type IRNode, type Layout, type TensorMeta } from './ir.js';
import type { Lowered } from './lower.js';
import { disposePacked, gemm, gemmBuffer, isPacked, packB, simdGemmAvailable, type PackedB } from './matmul.js';
import { planSlots, type SlotPlan } from './memory.js';
import type { Group } from './partition.js';
import { reduceKernel } from './reduce.js';
import { intoLayout } from './relayout.js';
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

/**
 * The plan does not fit this call: a module tensor changed layout (thrown before any step runs, so the caller
 * plans again), or an eager step returned another shape, dtype or baked-in number than when the plan was made
 * (then `run` finishes the call eagerly and sets `Plan.invalidated`).
 */
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

/** Whether an eager step's non-tensor result equals the one lowered nodes baked in (numbers, shapes, flags). */
function sameConstant(a: unknown, b: unknown): boolean {
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((v, i) => sameConstant(v, b[i]));
  return Object.is(a, b);
}

function describeConstant(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(describeConstant).join(', ')}]`;
  if (typeof v === 'string') return JSON.stringify(v);
  if (v === null || typeof v !== 'object') return String(v);
  return `a ${v.constructor?.name ?? 'object'}`;
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

/**
 * conv2d gathers and multiplies its rows a few images at a time, so that each round's rows (written by the
 * im2row loop, then read by the GEMM) stay within this many floats, 2 MiB, the L2 of one core here; a single
 * image's rows may exceed it. Measured on the bench CNN in one run, interleaved, median of 25 (two runs):
 * whole batch at once 20.0 / 20.1 ms, 2^18 floats 19.7 / 19.5, 2^19 18.7 / 19.2, 2^20 19.3 / 19.6,
 * 2^21 19.6 / 19.5; the im2row buffer shrinks from 19 MB to 1.2 MB for the CNN's last conv.
 */
const ROWS_CHUNK = 1 << 19;

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
  /** The buffers conv2d steps share (see scratch()), and their sizes (the largest any step needs). */
  private readonly scratchBuffers: ({ data: Float32Array; free: () => void } | undefined)[] = [];
  private readonly scratchSizes = [0, 0];
  /** Slot buffers, allocated on first use (in wasm memory, where the GEMM reads and writes them in place). */
  private readonly buffers: { data: Float32Array; free: () => void }[] = [];
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
    const ctx: CodegenContext = { ir: lowered.ir, layoutOf: this.layoutOf, roundEach: this.mode === 'cpu' };
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
    for (const s of this.steps) if (s.kind !== 'eager') s.reads.forEach((id) => this.layoutBound.add(id));
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
    // a non-tensor result (a shape, a number from one) that lowered nodes took in as a constant
    const baked = !expected && [...node.users.keys()].some((u) => !this.src.lowered.opaque.has(u) && this.src.lowered.irOf.has(u));
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
          if (!(value instanceof Tensor) || value.dtype !== expected.dtype || !sameShape(value.shape, expected.shape)) {
            const got = value instanceof Tensor ? `${value.dtype}${fmt(value.shape)}` : typeof value;
            throw new PlanMismatch(`${node.name} returned ${got}, planned for ${expected.dtype}${fmt(expected.shape)}`);
          }
          // Same values, other strides (its inputs came from kernels laid out unlike the eager run's): kernels
          // reading it get it in the layout they were generated for; eager readers and the output take it as is.
          let t: Tensor | null = value;
          if (plan.layoutBound.has(id) && !sameLayout(value, expected)) t = intoLayout(value, expected);
          if (!t) throw new PlanMismatch(`${node.name} returned strides [${value.strides.join(', ')}] its readers cannot be given`);
          env.ir[id] = t;
        } else if (baked && !sameConstant(value, out)) {
          throw new PlanMismatch(`${node.name} returned ${describeConstant(value)}, planned for ${describeConstant(out)}`);
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
        if (root.attrs.kind === 'max') return this.maxPoolStep(base, root);
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
   * conv2d: im2row, then a GEMM against the weight read as Bᵀ, with the bias, a folded inference batch norm
   * and relu in its epilogue, a few images at a time (ROWS_CHUNK). The JS loops write the rows straight into
   * wasm memory the GEMM reads in place; how they gather depends on the input's layout:
   * - channels-last (a conv2d result, NHWC read as NCHW): block copies of kw·C floats (conv-host.ts), against
   *   the weight permuted to [O, kh, kw, C]; a 1×1 window at stride 1 multiplies the input itself;
   * - contiguous NCHW: with 8 channels or more, copied to channels-last first, else a column-order loop;
   * - anything read through views: the generated gpu.js kernel, which folds the view into its index map (48 ms
   *   on [16, 32, 32, 32] 3×3, where the eager runtime's JS loop took 15: gpu.js pays index arithmetic per
   *   element and copies 19 MB out of its memory).
   * Measured on the bench CNN in one run (median of 21, this 2-core machine, quiet): the old steps, NCHW
   * im2row loop + GEMM, then an element-wise batch norm + relu kernel, took per conv 2.1 + 0.6 + 1.9,
   * 10.7 + 3.9 + 3.7 and 21.3 + 7.7 + 3.6 ms; gathering channels-last with the batch norm folded, 1.5 + 0.5,
   * 2.4 + 3.3 and 3.5 + 6.4 ms (the whole CNN 60.8 → 21.1 ms, then ~1 ms less in rounds of ROWS_CHUNK).
   */
  private convStep(ctx: CodegenContext, info: Omit<StepInfo, 'kind' | 'note'>, root: IRNode): Step {
    if (root.kind !== 'conv2d') throw new KilnError('kernels: not a conv2d');
    const id = root.id;
    const [N, C, H, W] = this.ir[root.x]!.shape as [number, number, number, number];
    const wShape = this.ir[root.w]!.shape as [number, number, number, number];
    const [O, , kh, kw] = wShape;
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
    const xMeta = this.ir[root.x]!.kind === 'view' || this.layouts.get(root.x)!.dtype !== 'float32' ? null : this.layouts.get(root.x)!;
    let gatherBy: 'channels-last copies' | 'to channels-last, copies' | 'column loop' | 'gpu.js' = 'gpu.js';
    if (xMeta && isChannelsLast(xMeta)) gatherBy = 'channels-last copies';
    else if (xMeta && isContiguousLayout(xMeta)) gatherBy = C >= 8 ? 'to channels-last, copies' : 'column loop';
    const transpose = gatherBy === 'to channels-last, copies';
    const channelsLast = gatherBy === 'channels-last copies' || transpose;
    // a 1×1 window over a channels-last input: the input already is the rows
    const inPlace = channelsLast && kh === 1 && kw === 1 && stride[0] === 1 && stride[1] === 1 && padding[0] === 0 && padding[1] === 0;
    const gen = gatherBy === 'gpu.js' ? im2rowKernel(ctx, root) : null;
    const gather = gen ? this.kernelFor(gen) : null;
    // images per im2row + GEMM round: their rows fill at most ROWS_CHUNK floats (or one image)
    const images = Math.min(N, Math.max(1, Math.floor(ROWS_CHUNK / (OH * OW * Kc))));
    if (gatherBy !== 'gpu.js' && !inPlace) this.scratchSizes[0] = Math.max(this.scratchSizes[0]!, images * OH * OW * Kc);
    if (transpose) this.scratchSizes[1] = Math.max(this.scratchSizes[1]!, N * C * H * W);
    const layout = convOutputLayout(root.shape);
    this.layouts.set(id, { ...layout, dtype: 'float32', storageLength: P * O });
    const bn = root.bn;
    const kind = `conv2d${root.bias !== null ? '+bias' : ''}${bn ? '+bn' : ''}${root.relu ? '+relu' : ''}`;
    const bnIds = bn ? [bn.mean, bn.variance, bn.weight, bn.bias] : [];
    const reads = [root.x, root.w, root.bias, ...bnIds].filter((r): r is number => r !== null).map((r) => this.baseOf(r));
    const weights = this.convWeightSource(root, wShape, channelsLast);
    const rounds = gatherBy === 'gpu.js' || images === N ? '' : `, ${images} image${images === 1 ? '' : 's'} a round`;
    const rowsNote = inPlace ? 'the input itself' : `im2row [${P}, ${Kc}] (${gatherBy}${rounds})`;
    return {
      ...info,
      kind,
      note: `${rowsNote} · weightᵀ${bn ? ' with the batch norm folded in' : ''}, NHWC result read as NCHW`,
      reads,
      defines: id,
      run: (env, plan) => {
        const { b, bias } = weights(env, plan);
        const out = plan.buffer(id) ?? new Float32Array(P * O);
        const opts = { bias: bias ?? undefined, activation: root.relu ? ('relu' as const) : ('none' as const), bTransposed: !isPacked(b) };
        if (gather) gemm(gather(env.ir[gen!.args[0]!]!._storage.data) as Float32Array, b, P, Kc, O, { ...opts, out });
        else {
          const x = env.ir[root.x]!;
          let data = x._storage.data as Float32Array;
          let offset = x.offset;
          let sN = x.strides[0]!;
          if (transpose) {
            const nhwc = plan.scratch(1, N * C * H * W);
            toChannelsLast(data, offset, N, C, H, W, nhwc);
            [data, offset, sN] = [nhwc, 0, C * H * W];
          }
          if (inPlace) gemm(data.subarray(offset, offset + P * Kc), b, P, Kc, O, { ...opts, out });
          else {
            const per = OH * OW;
            for (let n0 = 0; n0 < N; n0 += images) {
              const nc = Math.min(images, N - n0);
              const rows = plan.scratch(0, nc * per * Kc);
              if (channelsLast) im2rowChannelsLast(data, offset + n0 * sN, sN, nc, C, geo, rows);
              else im2rowByColumns(data, offset + n0 * C * H * W, nc, C, geo, rows);
              gemm(rows, b, nc * per, Kc, O, { ...opts, out: out.subarray(n0 * per * O, (n0 + nc) * per * O) });
            }
          }
        }
        env.ir[id] = new Tensor(new Storage(out), root.shape, layout.strides, 0, 'float32');
      },
    };
  }

  /**
   * The GEMM operand and bias of a conv2d step, per call. The weight as stored, with no batch norm and NCHW
   * rows, is packed once per weight version (packedWeight). Otherwise the weight is permuted for channels-last
   * rows and/or has the batch norm folded in (conv-host.ts): when every operand is a module tensor, the result
   * is packed and kept while every operand's storage and version stay the same (an optimizer step, a load or an
   * in-place write to a weight or a running statistic bumps its version); graph values are folded every call.
   * Folding costs O·C·kh·kw multiplies (9k for a 32→32 3×3 conv) and a pack.
   */
  private convWeightSource(
    root: IRNode & { kind: 'conv2d' },
    wShape: readonly [number, number, number, number],
    channelsLast: boolean,
  ): (env: Env, plan: Plan) => { b: Float32Array | PackedB; bias: Float32Array | null } {
    const [O, C, kh, kw] = wShape;
    const Kc = C * kh * kw;
    const bn = root.bn;
    const operandIds = [root.w, root.bias, ...(bn ? [bn.mean, bn.variance, bn.weight, bn.bias] : [])];
    const cacheable = operandIds.every((r) => r === null || this.isModuleTensor(r));
    if (!bn && !channelsLast) {
      return (env, plan) => {
        const w = plan.realise(env, root.w);
        return {
          b: cacheable ? packedWeight(w, Kc, O, true) : denseData(w),
          bias: root.bias !== null ? denseData(plan.realise(env, root.bias)) : null,
        };
      };
    }
    let cached: { storages: Storage[]; versions: number[]; b: PackedB; bias: Float32Array | null } | null = null;
    return (env, plan) => {
      const ts = operandIds.map((r) => (r === null ? null : plan.realise(env, r)));
      const present = ts.filter((t): t is Tensor => t !== null);
      if (cached && present.every((t, i) => t._storage === cached!.storages[i] && t._storage.version === cached!.versions[i])) {
        return cached;
      }
      const dense = (t: Tensor | null) => (t === null ? null : denseData(t));
      const [w, bias, mean, variance, gamma, beta] = ts.map(dense);
      const bnValues = bn ? { mean: mean!, variance: variance!, weight: gamma!, bias: beta!, eps: bn.eps } : null;
      const folded = convWeights(w!, bias!, bnValues, wShape, channelsLast);
      if (!cacheable) return { b: folded.weight, bias: folded.bias };
      if (cached) disposePacked(cached.b);
      cached = {
        // module tensors' storages are fixed for the plan's life (a replaced buffer plans again)
        storages: present.map((t) => t._storage),
        versions: present.map((t) => t._storage.version),
        b: packB(folded.weight, Kc, O, { transposed: true }),
        bias: folded.bias,
      };
      return cached;
    };
  }

  /** Max pooling as a JS loop over the input read through its strides (conv-host.ts; 2.3 against 3.9 ms for gpu.js). */
  private maxPoolStep(info: Omit<StepInfo, 'kind' | 'note'>, root: IRNode): Step {
    if (root.kind !== 'pool2d') throw new KilnError('kernels: not a pool2d');
    const id = root.id;
    const OH = root.shape[root.shape.length - 2]!;
    const OW = root.shape[root.shape.length - 1]!;
    const numel = numelOf(root.shape);
    this.layouts.set(id, { shape: root.shape, strides: contiguousStrides(root.shape), offset: 0, dtype: 'float32', storageLength: numel });
    return {
      ...info,
      kind: 'maxPool2d',
      note: 'JS loop',
      reads: [this.baseOf(root.x)],
      defines: id,
      run: (env, plan) => {
        const x = plan.realise(env, root.x);
        const out = new Float32Array(numel);
        maxPoolInto(x._storage.data as Float32Array, x, root.attrs, OH, OW, out);
        env.ir[id] = Tensor.fromData(out, root.shape, 'float32');
      },
    };
  }

  /**
   * The plan's conv2d buffers (in wasm memory, where the GEMM reads them in place), each shared by its conv2d
   * steps: 0 holds im2row rows, 1 an NCHW input copied to channels-last.
   */
  private scratch(which: 0 | 1, length: number): Float32Array {
    let buf = this.scratchBuffers[which];
    if (!buf) {
      buf = this.scratchBuffers[which] = gemmBuffer(this.scratchSizes[which]!);
      releaseWhenCollected.register(this, buf.free);
    }
    return buf.data.subarray(0, length);
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
