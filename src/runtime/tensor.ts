import { activeTrace } from './dispatch.js';
import { inspect } from 'node:util';
import { AutogradError, DTypeError, IndexError, ValueError } from '../errors.js';
import { GradNode, runBackward } from './autograd.js';
import { elementOffsets, gatherContiguous, isContiguousLayout } from './cpu/strided.js';
import { castValue, checkDType, type DType, type TypedArray } from './dtype.js';
import { applyInplace } from './op.js';
import * as O from './ops/index.js';
import type { IndexSpec } from './ops/view.js';
import { checkBroadcastTo, contiguousStrides, fmt, normDim, numel, sameShape, type Shape } from './shape.js';
import { describe } from './validate.js';

/** Typed-array memory shared by a tensor and its views; `version` counts in-place writes. */
export class Storage {
  version = 0;
  constructor(readonly data: TypedArray) {}
}

export type NestedArray = number | boolean | NestedArray[];

/** A reduction along one dim returns both the values and their indices, like PyTorch's named tuple. */
export type ValuesIndices = [Tensor, Tensor] & { readonly values: Tensor; readonly indices: Tensor };

/** A strided n-d array over typed-array storage, with autograd. */
export class Tensor {
  private readonly _shape: readonly number[];
  readonly strides: readonly number[];
  readonly offset: number;
  readonly dtype: DType;
  _storage: Storage;
  /** The gradient accumulated by `backward()` (leaf tensors, or non-leaf ones after `retainGrad()`). */
  grad: Tensor | null = null;
  /** The tape node that produced this tensor; null for leaves. */
  gradFn: GradNode | null = null;
  /** For views: the tensor that owns the storage, and how to remake this view from it. */
  _base: Tensor | null = null;
  _viewReplay: ((base: Tensor) => Tensor) | null = null;
  private leafRequiresGrad = false;
  private accumulator: GradNode | null = null;
  private retainsGrad = false;

  constructor(storage: Storage, shape: Shape, strides: readonly number[], offset: number, dtype: DType) {
    this._storage = storage;
    this._shape = Object.freeze([...shape]);
    this.strides = Object.freeze([...strides]);
    this.offset = offset;
    this.dtype = dtype;
  }

  /** A new contiguous tensor owning `data`. */
  static fromData(data: TypedArray, shape: Shape, dtype: DType): Tensor {
    return new Tensor(new Storage(data), shape, contiguousStrides(shape), 0, dtype);
  }

  /** The dims. A runtime trace is told when code outside kiln's ops reads them (it may bake them into the graph). */
  get shape(): readonly number[] {
    if (activeTrace !== null) activeTrace.shapeRead?.(this);
    return this._shape;
  }

  get ndim(): number {
    return this.shape.length;
  }

  numel(): number {
    return numel(this.shape);
  }

  /** `size()` is the shape; `size(d)` one dim (negative dims count from the end). */
  size(): readonly number[];
  size(dim: number): number;
  size(dim?: number): number | readonly number[] {
    if (dim === undefined) return this.shape;
    if (this.ndim === 0) throw new IndexError(`size: dim ${describe(dim)} is out of range for a 0-d tensor (it has no dims)`);
    return this.shape[normDim('size', dim, this.ndim)]!;
  }

  isContiguous(): boolean {
    return isContiguousLayout(this);
  }

  // ---- autograd state ----

  get requiresGrad(): boolean {
    return this.gradFn !== null || this.leafRequiresGrad;
  }

  set requiresGrad(flag: boolean) {
    this.requiresGrad_(flag);
  }

  get isLeaf(): boolean {
    return this.gradFn === null;
  }

  requiresGrad_(flag = true): this {
    if (typeof flag !== 'boolean') throw new ValueError(`requiresGrad_: flag must be true or false, got ${describe(flag)}`);
    if (!this.isLeaf) {
      if (flag) return this;
      throw new AutogradError(`requiresGrad_: can only change the flag of leaf tensors; detach() this ${fmt(this.shape)} result first`);
    }
    if (flag && this.dtype !== 'float32') {
      throw new DTypeError(`requiresGrad_: only float32 tensors can require gradients, got ${this.dtype}`);
    }
    this.leafRequiresGrad = flag;
    return this;
  }

  /** Keep `.grad` for this non-leaf tensor after backward. */
  retainGrad(): this {
    if (this.isLeaf || this.retainsGrad) return this;
    if (!this.gradFn) return this;
    this.retainsGrad = true;
    this.gradFn.preHooks.push((g) => {
      this.grad = this.grad ? this.grad.add(g) : g.clone();
    });
    return this;
  }

  /** The tape node that adds incoming gradients into `.grad` of this leaf. */
  _gradAccumulator(): GradNode {
    this.accumulator ??= new GradNode('AccumulateGrad', [], (g) => {
      const grad = g.dtype === this.dtype && sameShape(g.shape, this.shape) ? g : g.to(this.dtype).expand(this.shape);
      this.grad = this.grad ? this.grad.add(grad) : grad.detach().clone();
      return [];
    });
    return this.accumulator;
  }

  backward(grad?: Tensor): void {
    if (!this.requiresGrad) {
      throw new AutogradError(
        `backward: this ${fmt(this.shape)} tensor does not require grad and has no gradFn ` +
          `(did you create its inputs with requiresGrad: true, or call it inside noGrad?)`,
      );
    }
    if (grad !== undefined && !(grad instanceof Tensor)) {
      throw new AutogradError(`backward: grad must be a Tensor of the output's shape ${fmt(this.shape)}, got ${describe(grad)}`);
    }
    let seed = grad;
    if (!seed) {
      if (this.numel() !== 1) {
        throw new AutogradError(
          `backward: a gradient can be implicitly created only for one-element outputs, got shape ${fmt(this.shape)}; ` +
            `pass a grad of that shape`,
        );
      }
      seed = O.onesLike(this);
    } else if (!sameShape(seed.shape, this.shape)) {
      throw new AutogradError(`backward: grad has shape ${fmt(seed.shape)}, but the output has shape ${fmt(this.shape)}`);
    }
    runBackward(this.gradFn ?? this._gradAccumulator(), seed);
  }

  /** A tensor sharing this storage, cut off from the tape. */
  detach(): Tensor {
    const t = new Tensor(this._storage, this.shape, this.strides, this.offset, this.dtype);
    activeTrace?.derived?.(this, t, 'detach');
    return t;
  }

  detach_(): this {
    this.gradFn = null;
    this.leafRequiresGrad = false;
    return this;
  }

  // ---- reading values ----

  /** A copy of the elements in row-major order. */
  data(): TypedArray {
    activeTrace?.valueRead?.(this, 'data()');
    return gatherContiguous(this._storage.data, this, this.dtype).slice();
  }

  /** The elements as (nested) JS arrays; bool tensors give booleans. */
  toArray(): NestedArray {
    activeTrace?.valueRead?.(this, 'toArray()');
    const flat = gatherContiguous(this._storage.data, this, this.dtype);
    const asJs = (v: number) => (this.dtype === 'bool' ? v !== 0 : v);
    if (this.ndim === 0) return asJs(flat[0]!);
    let pos = 0;
    const build = (d: number): NestedArray[] => {
      const n = this.shape[d]!;
      const out: NestedArray[] = new Array(n);
      for (let i = 0; i < n; i++) out[i] = d === this.ndim - 1 ? asJs(flat[pos++]!) : build(d + 1);
      return out;
    };
    return build(0);
  }

  /** The value of a one-element tensor as a JS number (bool: 0 or 1). */
  item(): number {
    activeTrace?.valueRead?.(this, 'item()');
    if (this.numel() !== 1) {
      throw new ValueError(`item: only one-element tensors can be converted to a number, got shape ${fmt(this.shape)}`);
    }
    return this._storage.data[this.offset]!;
  }

  /** Write `src` (same shape) into this tensor's memory, element by element, and bump the version. */
  _writeFrom(src: Tensor): void {
    let values = gatherContiguous(src._storage.data, src, src.dtype);
    if (src._storage === this._storage) values = values.slice();
    const dst = this._storage.data;
    if (src.dtype === 'float32' && this.dtype !== 'float32') {
      for (let i = 0; i < values.length; i++) values[i] = castValue(this.dtype, values[i]!);
    }
    if (this.isContiguous()) {
      if (this.dtype === 'bool' && src.dtype !== 'bool') {
        for (let i = 0; i < values.length; i++) dst[this.offset + i] = values[i] ? 1 : 0;
      } else dst.set(values, this.offset);
    } else {
      const offs = elementOffsets(this.shape, this.strides, this.offset);
      for (let i = 0; i < offs.length; i++) dst[offs[i]!] = this.dtype === 'bool' ? (values[i] ? 1 : 0) : values[i]!;
    }
    this._storage.version++;
  }

  // ---- element-wise ----
  add(other: Tensor | number, alpha?: number): Tensor {
    return O.add(this, other, alpha);
  }
  sub(other: Tensor | number, alpha?: number): Tensor {
    return O.sub(this, other, alpha);
  }
  mul(other: Tensor | number): Tensor {
    return O.mul(this, other);
  }
  div(other: Tensor | number): Tensor {
    return O.div(this, other);
  }
  pow(exponent: Tensor | number): Tensor {
    return O.pow(this, exponent);
  }
  neg(): Tensor {
    return O.neg(this);
  }
  exp(): Tensor {
    return O.exp(this);
  }
  exp2(): Tensor {
    return O.exp2(this);
  }
  sin(): Tensor {
    return O.sin(this);
  }
  cos(): Tensor {
    return O.cos(this);
  }
  log(): Tensor {
    return O.log(this);
  }
  sqrt(): Tensor {
    return O.sqrt(this);
  }
  abs(): Tensor {
    return O.abs(this);
  }
  tanh(): Tensor {
    return O.tanh(this);
  }
  sigmoid(): Tensor {
    return O.sigmoid(this);
  }
  relu(): Tensor {
    return O.relu(this);
  }
  clamp(min?: number | null, max?: number | null): Tensor {
    return O.clamp(this, min ?? null, max ?? null);
  }
  where(condition: Tensor, other: Tensor | number): Tensor {
    return O.where(condition, this, other);
  }
  eq(other: Tensor | number): Tensor {
    return O.eq(this, other);
  }
  ne(other: Tensor | number): Tensor {
    return O.ne(this, other);
  }
  lt(other: Tensor | number): Tensor {
    return O.lt(this, other);
  }
  le(other: Tensor | number): Tensor {
    return O.le(this, other);
  }
  gt(other: Tensor | number): Tensor {
    return O.gt(this, other);
  }
  ge(other: Tensor | number): Tensor {
    return O.ge(this, other);
  }
  /** Cast to another dtype (a no-op returning `this` when the dtype already matches). */
  to(dtype: DType): Tensor {
    return dtype === this.dtype ? this : O.toDType(this, checkDType('to', dtype));
  }
  float(): Tensor {
    return this.to('float32');
  }
  int(): Tensor {
    return this.to('int32');
  }
  bool(): Tensor {
    return this.to('bool');
  }
  clone(): Tensor {
    return O.clone(this);
  }
  contiguous(): Tensor {
    return this.isContiguous() ? this : O.clone(this);
  }

  // ---- reductions ----
  sum(dim?: number | readonly number[] | null, keepdim?: boolean): Tensor {
    return O.sum(this, dim ?? null, keepdim);
  }
  mean(dim?: number | readonly number[] | null, keepdim?: boolean): Tensor {
    return O.mean(this, dim ?? null, keepdim);
  }
  max(): Tensor;
  max(dim: number, keepdim?: boolean): ValuesIndices;
  max(dim?: number, keepdim = false): Tensor | ValuesIndices {
    return dim === undefined ? O.amax(this) : valuesIndices(O.maxDim(this, dim, keepdim));
  }
  min(): Tensor;
  min(dim: number, keepdim?: boolean): ValuesIndices;
  min(dim?: number, keepdim = false): Tensor | ValuesIndices {
    return dim === undefined ? O.amin(this) : valuesIndices(O.minDim(this, dim, keepdim));
  }
  argmax(dim?: number | null, keepdim?: boolean): Tensor {
    return O.argmax(this, dim ?? null, keepdim);
  }
  softmax(dim: number): Tensor {
    return O.softmax(this, dim);
  }
  logSoftmax(dim: number): Tensor {
    return O.logSoftmax(this, dim);
  }

  // ---- linear algebra ----
  matmul(other: Tensor): Tensor {
    return O.matmul(this, other);
  }

  // ---- shape and views ----
  reshape(shape: readonly number[]): Tensor {
    return O.reshape(this, shape);
  }
  view(shape: readonly number[]): Tensor {
    return O.view(this, shape);
  }
  flatten(startDim?: number, endDim?: number): Tensor {
    return O.flatten(this, startDim, endDim);
  }
  transpose(dim0: number, dim1: number): Tensor {
    return O.transpose(this, dim0, dim1);
  }
  /** The 2-D transpose (`x.t()` in PyTorch). */
  t(): Tensor {
    return this.ndim < 2 ? this : O.transpose(this, 0, 1);
  }
  permute(dims: readonly number[]): Tensor {
    return O.permute(this, dims);
  }
  unsqueeze(dim: number): Tensor {
    return O.unsqueeze(this, dim);
  }
  squeeze(dim?: number | null): Tensor {
    return O.squeeze(this, dim ?? null);
  }
  expand(shape: readonly number[]): Tensor {
    return O.expand(this, shape);
  }
  expandAs(other: Tensor): Tensor {
    return O.expand(this, other.shape);
  }
  narrow(dim: number, start: number, length: number): Tensor {
    return O.narrow(this, dim, start, length);
  }
  select(dim: number, index: number): Tensor {
    return O.select(this, dim, index);
  }
  /** Python-style indexing: `x.index([0, '1:3', null, '...'])` is `x[0, 1:3, None, ...]`. */
  index(slices: IndexSpec | readonly IndexSpec[]): Tensor {
    return O.index(this, slices);
  }
  gather(dim: number, index: Tensor): Tensor {
    return O.gather(this, dim, index);
  }

  // ---- in-place ----
  add_(other: Tensor | number, alpha?: number): this {
    return applyInplace('add_', this, (s) => O.add(s, other, alpha), other) as this;
  }
  sub_(other: Tensor | number, alpha?: number): this {
    return applyInplace('sub_', this, (s) => O.sub(s, other, alpha), other) as this;
  }
  mul_(other: Tensor | number): this {
    return applyInplace('mul_', this, (s) => O.mul(s, other), other) as this;
  }
  div_(other: Tensor | number): this {
    return applyInplace('div_', this, (s) => O.div(s, other), other) as this;
  }
  clamp_(min?: number | null, max?: number | null): this {
    return applyInplace('clamp_', this, (s) => O.clamp(s, min ?? null, max ?? null)) as this;
  }
  fill_(value: number): this {
    if (activeTrace === null && typeof value !== 'number' && typeof value !== 'boolean') {
      throw new ValueError(`fill_: value must be a number or a boolean, got ${describe(value)}`);
    }
    return applyInplace('fill_', this, (s) => O.full(s.shape, value, { dtype: s.dtype })) as this;
  }
  zero_(): this {
    return applyInplace('zero_', this, (s) => O.full(s.shape, 0, { dtype: s.dtype })) as this;
  }
  copy_(src: Tensor): this {
    if (activeTrace === null) {
      if (!(src instanceof Tensor)) throw new DTypeError(`copy_: src must be a Tensor, got ${describe(src)}`);
      checkBroadcastTo('copy_', src._shape, this._shape);
    }
    return applyInplace('copy_', this, (s) => O.expand(src, s.shape).to(s.dtype)) as this;
  }

  // ---- printing ----
  toString(): string {
    const body = inspect(this.toArray(), { depth: null, breakLength: 100, maxArrayLength: 20 });
    const grad = this.gradFn ? `, gradFn=${this.gradFn.name}` : this.requiresGrad ? ', requiresGrad=true' : '';
    return `tensor(${body}, dtype=${this.dtype}, shape=${fmt(this.shape)}${grad})`;
  }

  [inspect.custom](): string {
    return this.toString();
  }
}

function valuesIndices([values, indices]: [Tensor, Tensor]): ValuesIndices {
  return Object.assign([values, indices] as [Tensor, Tensor], { values, indices });
}
