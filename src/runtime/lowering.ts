import type { DType } from './dtype.js';

/**
 * How each op reaches the kernels backend, declared beside its `defineOp` as the op's `lower` field: either a
 * lowering (a function building kernel IR through `LowerContext`) or `{ eager: 'why' }`. The field is required,
 * so an op without one does not compile. This file holds types (and the `isEager` guard) only: the runtime never
 * imports the kernels; `src/kernels/lower.ts` implements `LowerContext`.
 */

/**
 * The element-wise primitives (jax-js's and tinygrad's model): every element-wise lowering is composed of
 * these, and the kernels hold one piece of code per primitive. `sigmoid`, `tanh` and `erf` are primitives
 * rather than compositions of `exp` because their kernel code is a fused, range-reduced formula: composing
 * `1 / (1 + exp(-x))` or `(1 - e^-2x) / (1 + e^-2x)` loses accuracy near 0 and costs an extra exp.
 * `copy` is a float32 copy (a cast to float32), `toBool` a cast to bool (0/1).
 */
export type Prim =
  | 'add'
  | 'sub'
  | 'mul'
  | 'div'
  | 'pow'
  | 'max'
  | 'min'
  | 'neg'
  | 'abs'
  | 'exp'
  | 'exp2'
  | 'log'
  | 'sqrt'
  | 'sin'
  | 'cos'
  | 'tanh'
  | 'sigmoid'
  | 'erf'
  | 'where'
  | 'eq'
  | 'ne'
  | 'lt'
  | 'le'
  | 'gt'
  | 'ge'
  | 'copy'
  | 'toBool';

/** An op (or a layer) that runs through the eager runtime inside compiled programs, and why: `explain` prints it. */
export interface Eager {
  readonly eager: string;
}

/** A value in the kernel IR being built (its id). */
export interface KValue {
  readonly ir: number;
}

/** An element-wise operand: an IR value, or a number baked into the kernel. */
export type KOperand = KValue | number;

/** A metadata-only view, applied to a layout (never to data). */
export type KView =
  | { readonly op: 'reshape'; readonly shape: readonly number[] }
  | { readonly op: 'permute'; readonly dims: readonly number[] }
  | { readonly op: 'expand'; readonly shape: readonly number[] }
  | { readonly op: 'select'; readonly dim: number; readonly index: number }
  | { readonly op: 'slice'; readonly dim: number; readonly start: number; readonly end: number; readonly step: number };

export interface Conv2dAttrs {
  readonly stride: readonly [number, number];
  readonly padding: readonly [number, number];
  readonly dilation: readonly [number, number];
}

export interface Pool2dAttrs {
  readonly kind: 'max' | 'avg';
  readonly kernel: readonly [number, number];
  readonly stride: readonly [number, number];
  readonly padding: readonly [number, number];
  readonly dilation: readonly [number, number];
  readonly countIncludePad: boolean;
  readonly divisorOverride: number | null;
}

/** An inference batch norm's per-channel operands, y = (x − mean) / √(var + eps) · weight + bias. */
export interface BatchNormOperands {
  readonly mean: KValue;
  readonly variance: KValue;
  readonly weight: KValue | null;
  readonly bias: KValue | null;
  readonly eps: number;
}

/** What a lowering builds IR with (implemented by the kernels' lowering). */
export interface LowerContext {
  /** The IR value of a tensor argument (a graph value or a tensor a module holds), or null when it is neither. */
  tensor(v: unknown): KValue | null;
  /** A tensor argument as an IR value, or a number (booleans as 0/1); null otherwise. */
  operand(v: unknown): KOperand | null;
  shape(x: KValue): readonly number[];
  dtype(x: KValue): DType;
  /** An element-wise primitive, broadcasting its operands (comparisons and `toBool` give bool, the rest float32). */
  prim(p: Prim, ...args: KOperand[]): KValue;
  /** A view of `x` with result shape `shape` (a reshape to `x`'s own shape is `x`). */
  view(x: KValue, view: KView, shape: readonly number[]): KValue;
  /** sum/max/min over `dims` (sorted, non-negative); a sum is divided by `divisor` when given (mean). */
  reduce(op: 'sum' | 'max' | 'min', x: KValue, dims: readonly number[], keepdim: boolean, divisor?: number): KValue;
  /** `a · b` (+ `bias` along the last dim); `b` is [K, N], [N, K] when `bTransposed`, or batched like `a`. */
  matmul(a: KValue, b: KValue, bTransposed: boolean, bias: KValue | null): KValue | Eager;
  conv2d(x: KValue, w: KValue, bias: KValue | null, attrs: Conv2dAttrs, shape: readonly number[]): KValue;
  pool2d(x: KValue, attrs: Pool2dAttrs, shape: readonly number[]): KValue;
  /** Rows of the 2-D float32 `table` picked by the int32 `index` (embedding). */
  gather(table: KValue, index: KValue, shape: readonly number[]): KValue;
  /** An inference batch norm over dim 1 of `x`, which a conv2d producing `x` may take into its weights. */
  batchNorm(x: KValue, bn: BatchNormOperands): KValue;
}

/** An op's arguments bound to its schema by parameter name: tensors as graph values, the rest as numbers, arrays, …. */
export type LowerArgs = Readonly<Record<string, unknown>>;

/** The eager result's shape and dtype (lowering runs after one eager run, so both are known). */
export interface LowerResult {
  readonly shape: readonly number[];
  readonly dtype: DType;
}

/**
 * An op's lowering: the IR value of its result, `{ eager }` when these arguments need the eager kernel (and
 * why), or null when a tensor argument is not one the kernels hold.
 */
export type Lowering = (k: LowerContext, a: LowerArgs, out: LowerResult) => KValue | Eager | null;

/** A layer's forward as the kernels see it: the op it calls with its arguments, its input itself, or eager and why. */
export type LayerForm =
  | { readonly op: { readonly opName: string; readonly lower: Lowering | Eager }; readonly args: readonly unknown[] }
  | { readonly identity: unknown }
  | Eager;

export function isEager(v: unknown): v is Eager {
  return typeof v === 'object' && v !== null && typeof (v as { eager?: unknown }).eager === 'string';
}
