import type { Node } from '../graph/node.js';
import type { DType } from '../runtime/dtype.js';
import type { Conv2dAttrs, KView as ViewOp, Pool2dAttrs, Prim } from '../runtime/lowering.js';
import type { Tensor } from '../runtime/tensor.js';

/**
 * The kernel IR: what a captured graph becomes once its shapes are known. Each graph node lowers to one
 * IR node, or to a few (softmax is a max, a sum and an element-wise step); nodes kiln cannot lower stay
 * `opaque` and run through the eager runtime inside the compiled program.
 */

/** Where a tensor's elements sit in its storage (kiln's strided layout). */
export interface Layout {
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  readonly offset: number;
}

/** A layout plus what a kernel must know about the storage behind it. */
export interface TensorMeta extends Layout {
  readonly dtype: DType;
  readonly storageLength: number;
}

/** An element-wise operand: another IR value, or a number baked into the kernel. */
export type Operand = { readonly ir: number } | { readonly value: number };

/** Element-wise IR nodes apply one primitive; the set is declared with the op table's lowering interface. */
export type { Prim } from '../runtime/lowering.js';

/** A metadata-only view op, applied to a layout (never to data). */
export type { KView as ViewOp, Conv2dAttrs, Pool2dAttrs } from '../runtime/lowering.js';

/**
 * An inference batch norm over a conv2d's output channels, y = (x − mean) / √(var + eps) · weight + bias: the
 * IR values of its per-channel [C] operands (weight and bias are null without affine).
 */
export interface FoldedBatchNorm {
  readonly mean: number;
  readonly variance: number;
  readonly weight: number | null;
  readonly bias: number | null;
  readonly eps: number;
}

export type IRKind =
  /** A value the program holds at run time: a graph input, a parameter, an opaque node's result. */
  | { readonly kind: 'value'; readonly source: ValueSource }
  | { readonly kind: 'ew'; readonly op: Prim; readonly args: readonly Operand[] }
  | { readonly kind: 'view'; readonly arg: number; readonly view: ViewOp }
  /** sum/max/min over `dims` of the argument; `scale` multiplies a sum (mean), `keepdim` as in PyTorch. */
  | {
      readonly kind: 'reduce';
      readonly op: 'sum' | 'max' | 'min';
      readonly arg: number;
      readonly dims: readonly number[];
      readonly keepdim: boolean;
      readonly divisor?: number;
    }
  /** a · b (+ bias along the last dim) (then relu, folded from `max(·, 0)`); `b` holds [K, N], or [N, K] when `bTransposed`. */
  | {
      readonly kind: 'matmul';
      readonly a: number;
      readonly b: number;
      readonly bTransposed: boolean;
      readonly bias: number | null;
      readonly relu: boolean;
      /** ReLU's backward as an epilogue, `where(mask > 0, ·, 0)`: the IR value (the saved ReLU output) whose ≤ 0 entries zero the product. */
      readonly mask?: number;
    }
  /** conv2d (+ bias) (then an eval-mode batch norm folded into its weight and bias) (then relu, from `max(·, 0)`). */
  | {
      readonly kind: 'conv2d';
      readonly x: number;
      readonly w: number;
      readonly bias: number | null;
      readonly bn: FoldedBatchNorm | null;
      readonly relu: boolean;
      readonly attrs: Conv2dAttrs;
    }
  | { readonly kind: 'pool2d'; readonly x: number; readonly attrs: Pool2dAttrs }
  /** Rows of a 2-D `table` picked by the int32 `index` (embedding): shape [...index.shape, D]. */
  | { readonly kind: 'gather'; readonly table: number; readonly index: number };

export type ValueSource =
  { readonly from: 'node'; readonly node: Node } | { readonly from: 'tensor'; readonly tensor: Tensor; readonly path: string };

export type IRNode = IRKind & {
  readonly id: number;
  readonly shape: readonly number[];
  readonly dtype: DType;
  /** The graph node this IR node computes (the last IR node of an expansion), or the node it helps compute. */
  readonly origin: Node | null;
  /** True when this IR node's value is the origin graph node's value. */
  readonly isOriginValue: boolean;
  /** Graph nodes an epilogue fold merged into this one (a matmul's node when this is its bias add). */
  readonly absorbed?: readonly Node[];
};

/** The runtime's numel, under the name the kernels use (`numel` is a common local name there). */
export { numel as numelOf } from '../runtime/shape.js';

export function isIR(o: Operand): o is { readonly ir: number } {
  return 'ir' in o;
}
