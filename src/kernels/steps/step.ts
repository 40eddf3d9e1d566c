import type { Node } from '../../graph/node.js';
import type { Tensor } from '../../runtime/tensor.js';
import type { KernelBackendName } from '../backend.js';
import type { CodegenContext } from '../elementwise.js';
import type { IRKind, IRNode, TensorMeta } from '../ir.js';
import type { StepUse } from '../memory.js';
import type { Group } from '../partition.js';

/**
 * What the executor (plan.ts) and the step builders (one module per IR kind, this folder) agree on: a step,
 * the context a builder plans it in, and the context it runs in. Builders see these interfaces only, never
 * the Plan itself.
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

/** One call's values: tensors by IR id (dropped after their last reader), and graph nodes' values. */
export interface Env {
  readonly ir: (Tensor | undefined)[];
  readonly nodes: Map<Node, unknown>;
}

/** A step: what it reads and defines (for liveness and buffer planning, memory.ts), and how it runs. */
export interface Step extends StepInfo, StepUse {
  /** IR ids (materialised bases) this step reads. */
  readonly reads: readonly number[];
  /** The IR id it defines, or -1. */
  readonly defines: number;
  run(env: Env, rt: StepRunContext): void;
}

/** A kernel step as its builder returns it; the executor adds the graph nodes it computes and its shape. */
export type KernelStep = Omit<Step, 'nodes' | 'shape'>;

/** A named buffer in wasm memory that steps share, sized at planning time (`StepContext.reserveScratch`). */
export type ScratchHandle = number & { readonly __scratch: true };

/** What a step builder may ask of the plan while the plan is made. */
export interface StepContext {
  readonly ir: readonly IRNode[];
  /** The gpu.js mode kernels are compiled for. */
  readonly mode: KernelBackendName;
  /** What kernel source generation reads (the IR and every materialised value's layout). */
  readonly codegen: CodegenContext;
  /** The layout IR value `id` has at run time (a KilnError when none is planned). */
  layoutOf(id: number): TensorMeta;
  /** Plan the layout of the value a step defines (kernels reading it are generated for it). */
  setLayout(id: number, meta: TensorMeta): void;
  /** The materialised value under a chain of views. */
  baseOf(id: number): number;
  /** Whether `id` is (a view of) a module's parameter or buffer, fixed for the plan's life. */
  isModuleTensor(id: number): boolean;
  /** The IR value holding a graph node's value, if it was lowered or is opaque. */
  irOf(node: Node): number | undefined;
  /** Why a graph node runs eagerly, or undefined when it was lowered. */
  opaqueReason(node: Node): string | undefined;
  /**
   * A scratch buffer of at least `length` floats, shared by every step reserving the same `name` (steps run one
   * at a time, and a step's scratch is dead once it returns); allocated on first use at the largest size reserved.
   */
  reserveScratch(name: string, length: number): ScratchHandle;
}

/** What a step may ask of the plan while it runs. */
export interface StepRunContext {
  /** A value as a tensor: a materialised one from the environment, a view sharing its base's storage. */
  realise(env: Env, id: number): Tensor;
  /** The liveness-planned buffer for GEMM result `id`, or null when it must be a fresh array (it escapes). */
  buffer(id: number): Float32Array | null;
  /** The first `length` floats of a scratch buffer reserved while planning. */
  scratch(handle: ScratchHandle, length: number): Float32Array;
  /**
   * An opaque node's value: on the plan's first run the one recorded by the eager run the plan was made from
   * (so a side effect does not run twice), afterwards computed by the eager runtime from `env`.
   */
  evaluate(env: Env, node: Node): unknown;
  /** Whether kernel steps read `id` in its planned layout (generated kernels bake it in). */
  isLayoutBound(id: number): boolean;
}

/** An IR node of kind K. */
export type IRNodeOf<K extends IRKind['kind']> = IRNode & { readonly kind: K };

/** Plans the step computing `group`, whose root (the value it produces) is `root`. */
export type StepBuilder<K extends IRKind['kind']> = (ctx: StepContext, root: IRNodeOf<K>, group: Group) => KernelStep;

/** An IR kind that never roots a step, and why. */
export interface NotAStep {
  readonly notAStep: string;
}
