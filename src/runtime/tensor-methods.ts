import { AutogradError, DTypeError, TraceError, ValueError } from '../errors.js';
import { isGradEnabled } from './autograd.js';
import { activeTrace } from './dispatch.js';
import { checkDType, type DType } from './dtype.js';
import { applyInplace, type Op } from './op.js';
import { full } from './ops/creation.js';
import * as E from './ops/elementwise.js';
import * as L from './ops/linalg.js';
import * as R from './ops/reduce.js';
import * as V from './ops/view.js';
import type { IndexSpec } from './ops/view.js';
import { checkBroadcastTo } from './shape.js';
import { Tensor, type ValuesIndices } from './tensor.js';
import { describe } from './validate.js';

/**
 * The tensor methods that are ops, installed on `Tensor.prototype` from the op table: `x.add(y)` is
 * `ops.add(x, y)`. `TENSOR_METHODS` says how each method calls its op (most pass their arguments through;
 * aliases such as `t`, `float` and `expandAs` bind some; in-place ones go through applyInplace), and
 * `TensorOpMethods` gives their types to `Tensor` by declaration merging.
 *
 * The types are written here rather than derived from the ops' types: an op's type is inferred from its
 * `defineOp` call, whose forward and backward call tensor methods, so deriving `Tensor`'s members from the
 * ops makes TypeScript resolve `Tensor` while resolving `Tensor` (TS2310). `TENSOR_METHODS` is checked
 * against these types, so a method whose op changes its parameters fails to compile.
 */

type AnyFn = (...args: never[]) => unknown;

/** A parameter list without its first entry (the tensor a method is called on), names kept. */
type Rest<P extends readonly unknown[]> = P extends readonly [unknown, ...infer R]
  ? R
  : P extends readonly [unknown?, ...infer R]
    ? R
    : never;

/**
 * The arguments after the input, as the method call gave them: omitted ones are `undefined`, or `null` where
 * the schema's default is null (PyTorch's None), so a traced call lists the arguments the hand-written
 * methods passed (`x.sum()` records `sum(x, null, undefined)`).
 */
function fillArgs(op: Op<AnyFn>, args: readonly unknown[]): unknown[] {
  return op.schema.params.slice(1).map((p, i) => (p.default === null && p.hasDefault ? (args[i] ?? null) : args[i]));
}

/** `x.name(...args)` is `op(x, ...args)`. */
function method<F extends AnyFn>(op: Op<F>): (this: Tensor, ...args: Rest<Parameters<F>>) => ReturnType<F> {
  const call = op as unknown as (...a: unknown[]) => ReturnType<F>;
  return function (this: Tensor, ...args: unknown[]) {
    return call(this, ...fillArgs(op as unknown as Op<AnyFn>, args));
  } as (this: Tensor, ...args: Rest<Parameters<F>>) => ReturnType<F>;
}

/** `x.name_(...args)` writes `op(x, ...args)` into x (see applyInplace) and returns x. */
function inplace<F extends AnyFn>(name: string, op: Op<F>): <T extends Tensor>(this: T, ...args: Rest<Parameters<F>>) => T {
  const call = op as unknown as (...a: unknown[]) => Tensor;
  return function <T extends Tensor>(this: T, ...args: unknown[]): T {
    const rest = fillArgs(op as unknown as Op<AnyFn>, args);
    return applyInplace(name, this, (s) => call(s, ...rest), args[0]) as T;
  } as <T extends Tensor>(this: T, ...args: Rest<Parameters<F>>) => T;
}

/**
 * An in-place metadata op (PyTorch's `t_`, `transpose_`, `unsqueeze_`): `self` takes the shape and strides of
 * the view op's result, keeps its storage, and its autograd history continues through that view's gradient.
 */
function metadataInplace<A extends unknown[]>(name: string, view: (x: Tensor, ...a: A) => Tensor) {
  return function <T extends Tensor>(this: T, ...args: A): T {
    if (activeTrace && !activeTrace.metadataMutated) {
      throw new TraceError(`${name}: in-place metadata mutation cannot be traced by this tracer; use the out-of-place op`);
    }
    if (isGradEnabled() && this.requiresGrad && this.isLeaf) {
      throw new AutogradError(`${name}: a leaf Variable that requires grad is being used in an in-place operation.`);
    }
    const v = view(this, ...args);
    this._setLayout(v);
    if (v.gradFn) this.gradFn = v.gradFn;
    if (this._base) this._viewReplay = v._viewReplay;
    this._storage.version++;
    activeTrace?.metadataMutated?.(this, v, name);
    return this;
  };
}

/** `x.max()` reduces everything; `x.max(dim, keepdim?)` gives the values and their indices along `dim`. */
function extremum(all: Op<(input: Tensor) => Tensor>, alongDim: Op<(input: Tensor, dim: number, keepdim?: boolean) => [Tensor, Tensor]>) {
  function reduce(this: Tensor): Tensor;
  function reduce(this: Tensor, dim: number, keepdim?: boolean): ValuesIndices;
  function reduce(this: Tensor, dim?: number, keepdim = false): Tensor | ValuesIndices {
    if (dim === undefined) return all(this);
    const [values, indices] = alongDim(this, dim, keepdim);
    return Object.assign([values, indices] as [Tensor, Tensor], { values, indices });
  }
  return reduce;
}

/** The op methods of every tensor (see TENSOR_METHODS for what each one calls). */
export interface TensorOpMethods {
  // ---- element-wise ----
  add(other: Tensor | number, alpha?: number): Tensor;
  sub(other: Tensor | number, alpha?: number): Tensor;
  mul(other: Tensor | number): Tensor;
  div(other: Tensor | number): Tensor;
  pow(exponent: Tensor | number): Tensor;
  neg(): Tensor;
  exp(): Tensor;
  exp2(): Tensor;
  log(): Tensor;
  sqrt(): Tensor;
  abs(): Tensor;
  sin(): Tensor;
  cos(): Tensor;
  tanh(): Tensor;
  sigmoid(): Tensor;
  relu(): Tensor;
  clamp(min?: number | null, max?: number | null): Tensor;
  /** `x.where(condition, other)` is `where(condition, x, other)`. */
  where(condition: Tensor, other: Tensor | number): Tensor;
  eq(other: Tensor | number): Tensor;
  ne(other: Tensor | number): Tensor;
  lt(other: Tensor | number): Tensor;
  le(other: Tensor | number): Tensor;
  gt(other: Tensor | number): Tensor;
  ge(other: Tensor | number): Tensor;
  /** Cast to another dtype (a no-op returning `this` when the dtype already matches). */
  to(dtype: DType): Tensor;
  float(): Tensor;
  int(): Tensor;
  bool(): Tensor;
  clone(): Tensor;
  contiguous(): Tensor;

  // ---- reductions ----
  sum(dim?: number | readonly number[] | null, keepdim?: boolean): Tensor;
  mean(dim?: number | readonly number[] | null, keepdim?: boolean): Tensor;
  max(): Tensor;
  max(dim: number, keepdim?: boolean): ValuesIndices;
  min(): Tensor;
  min(dim: number, keepdim?: boolean): ValuesIndices;
  argmax(dim?: number | null, keepdim?: boolean): Tensor;
  softmax(dim: number): Tensor;
  logSoftmax(dim: number): Tensor;

  // ---- linear algebra ----
  matmul(other: Tensor): Tensor;
  /** The product of two matrices (`torch.mm`: 2-D only, no broadcasting). */
  mm(mat2: Tensor): Tensor;
  /** beta·x + alpha·(mat1 @ mat2) (`torch.addmm`; beta = 0 ignores x). */
  addmm(mat1: Tensor, mat2: Tensor, beta?: number, alpha?: number): Tensor;

  // ---- shape and views ----
  reshape(shape: readonly number[]): Tensor;
  view(shape: readonly number[]): Tensor;
  flatten(startDim?: number, endDim?: number): Tensor;
  transpose(dim0: number, dim1: number): Tensor;
  /** The 2-D transpose (`x.t()` in PyTorch). */
  t(): Tensor;
  permute(dims: readonly number[]): Tensor;
  unsqueeze(dim: number): Tensor;
  squeeze(dim?: number | null): Tensor;
  expand(shape: readonly number[]): Tensor;
  expandAs(other: Tensor): Tensor;
  narrow(dim: number, start: number, length: number): Tensor;
  select(dim: number, index: number): Tensor;
  /** Every slice along `dim`, as views. */
  unbind(dim?: number): Tensor[];
  /** Python-style indexing: `x.index([0, '1:3', null, '...'])` is `x[0, 1:3, None, ...]`. */
  index(slices: IndexSpec | readonly IndexSpec[]): Tensor;
  gather(dim: number, index: Tensor): Tensor;
  /** PyTorch's `scatter_add`: a copy with `src` added at `index` along `dim`. */
  scatterAdd(dim: number, index: Tensor, src: Tensor): Tensor;
  /** In place: `self` becomes its 2-D transpose (same storage). */
  t_(): this;
  /** In place: `self` swaps dims `dim0` and `dim1` (same storage). */
  transpose_(dim0: number, dim1: number): this;
  /** In place: `self` gains a size-1 dim at `dim` (same storage). */
  unsqueeze_(dim: number): this;
  /** PyTorch's `slice_scatter`: a copy whose slice along `dim` is `src`. */
  sliceScatter(src: Tensor, dim?: number, start?: number | null, end?: number | null, step?: number): Tensor;
  /** PyTorch's `select_scatter`: a copy whose entry `index` along `dim` is `src`. */
  selectScatter(src: Tensor, dim: number, index: number): Tensor;

  // ---- in-place ----
  add_(other: Tensor | number, alpha?: number): this;
  sub_(other: Tensor | number, alpha?: number): this;
  mul_(other: Tensor | number): this;
  div_(other: Tensor | number): this;
  clamp_(min?: number | null, max?: number | null): this;
  fill_(value: number): this;
  zero_(): this;
  copy_(src: Tensor): this;
}

declare module './tensor.js' {
  // eslint-disable-next-line @typescript-eslint/no-empty-object-type
  interface Tensor extends TensorOpMethods {}
}

/**
 * Each method's implementation, checked against its declared parameters: called on a tensor with the
 * arguments `TensorOpMethods` allows (the last overload for max/min).
 */
type MethodImpls = {
  readonly [K in keyof TensorOpMethods]: (this: Tensor, ...args: Parameters<TensorOpMethods[K]>) => Tensor | Tensor[] | ValuesIndices;
};

export const TENSOR_METHODS: MethodImpls = {
  // ---- element-wise ----
  add: method(E.add),
  sub: method(E.sub),
  mul: method(E.mul),
  div: method(E.div),
  pow: method(E.pow),
  neg: method(E.neg),
  exp: method(E.exp),
  exp2: method(E.exp2),
  log: method(E.log),
  sqrt: method(E.sqrt),
  abs: method(E.abs),
  sin: method(E.sin),
  cos: method(E.cos),
  tanh: method(E.tanh),
  sigmoid: method(E.sigmoid),
  relu: method(E.relu),
  clamp: method(E.clamp),
  /** `x.where(condition, other)` is `where(condition, x, other)`. */
  where: function (this: Tensor, condition: Tensor, other: Tensor | number): Tensor {
    return E.where(condition, this, other);
  },
  eq: method(E.eq),
  ne: method(E.ne),
  lt: method(E.lt),
  le: method(E.le),
  gt: method(E.gt),
  ge: method(E.ge),
  /** Cast to another dtype (a no-op returning `this` when the dtype already matches). */
  to: function (this: Tensor, dtype: DType): Tensor {
    if (dtype !== this.dtype) return E.toDType(this, checkDType('to', dtype));
    return (activeTrace?.skippedOp?.(this, 'to', [this, dtype]) as Tensor | undefined) ?? this;
  },
  float: function (this: Tensor): Tensor {
    return this.to('float32');
  },
  int: function (this: Tensor): Tensor {
    return this.to('int32');
  },
  bool: function (this: Tensor): Tensor {
    return this.to('bool');
  },
  clone: method(E.clone),
  contiguous: function (this: Tensor): Tensor {
    if (!this.isContiguous()) return E.clone(this);
    return (activeTrace?.skippedOp?.(this, 'contiguous', [this]) as Tensor | undefined) ?? this;
  },

  // ---- reductions ----
  sum: method(R.sum),
  mean: method(R.mean),
  max: extremum(R.amax, R.maxDim),
  min: extremum(R.amin, R.minDim),
  argmax: method(R.argmax),
  softmax: method(R.softmax),
  logSoftmax: method(R.logSoftmax),

  // ---- linear algebra ----
  matmul: method(L.matmul),
  mm: method(L.mm),
  addmm: method(L.addmm),

  // ---- shape and views ----
  reshape: method(V.reshape),
  view: method(V.view),
  flatten: method(V.flatten),
  transpose: method(V.transpose),
  /** The 2-D transpose (`x.t()` in PyTorch). */
  t: method(V.t),
  permute: method(V.permute),
  unsqueeze: method(V.unsqueeze),
  squeeze: method(V.squeeze),
  expand: method(V.expand),
  expandAs: function (this: Tensor, other: Tensor): Tensor {
    return V.expand(this, other.shape);
  },
  narrow: method(V.narrow),
  select: method(V.select),
  unbind: method(V.unbind),
  /** Python-style indexing: `x.index([0, '1:3', null, '...'])` is `x[0, 1:3, None, ...]`. */
  index: method(V.index),
  gather: method(V.gather),
  scatterAdd: method(R.scatterAdd),
  t_: metadataInplace('t_', (x: Tensor) => V.t(x)),
  transpose_: metadataInplace('transpose_', (x: Tensor, dim0: number, dim1: number) => V.transpose(x, dim0, dim1)),
  unsqueeze_: metadataInplace('unsqueeze_', (x: Tensor, dim: number) => V.unsqueeze(x, dim)),
  sliceScatter: method(V.sliceScatter),
  selectScatter: method(V.selectScatter),

  // ---- in-place ----
  add_: inplace('add_', E.add),
  sub_: inplace('sub_', E.sub),
  mul_: inplace('mul_', E.mul),
  div_: inplace('div_', E.div),
  clamp_: inplace('clamp_', E.clamp),
  fill_: function <T extends Tensor>(this: T, value: number): T {
    if (activeTrace === null && typeof value !== 'number' && typeof value !== 'boolean') {
      throw new ValueError(`fill_: value must be a number or a boolean, got ${describe(value)}`);
    }
    return applyInplace('fill_', this, (s) => full(s.shape, value, { dtype: s.dtype })) as T;
  },
  zero_: function <T extends Tensor>(this: T): T {
    return applyInplace('zero_', this, (s) => full(s.shape, 0, { dtype: s.dtype })) as T;
  },
  copy_: function <T extends Tensor>(this: T, src: Tensor): T {
    if (activeTrace === null) {
      if (!(src instanceof Tensor)) throw new DTypeError(`copy_: src must be a Tensor, got ${describe(src)}`);
      checkBroadcastTo('copy_', src.shape, this.shape);
    }
    return applyInplace('copy_', this, (s) => V.expand(src, s.shape).to(s.dtype)) as T;
  },
};

// Installed like class methods: non-enumerable, writable, named (stack traces and `fn.name` read the same).
for (const [name, fn] of Object.entries(TENSOR_METHODS)) {
  Object.defineProperty(fn, 'name', { value: name });
  Object.defineProperty(Tensor.prototype, name, { value: fn, writable: true, configurable: true, enumerable: false });
}
