import { activeTrace } from './dispatch.js';
import { inspect } from 'node:util';
import { AutogradError, DTypeError, IndexError, ValueError } from '../errors.js';
import { GradNode, ownedGradients, runBackward } from './autograd.js';
import { elementOffsets, gatherContiguous, isContiguousLayout } from './cpu/strided.js';
import { allocate, castValue, type DType, type TypedArray } from './dtype.js';
import { contiguousStrides, fmt, normDim, numel, sameShape, type Shape } from './shape.js';
import { TENSOR_BRAND } from './tensor-brand.js';
import { describe } from './validate.js';

/** Typed-array memory shared by a tensor and its views; `version` counts in-place writes. */
export class Storage {
  version = 0;
  constructor(readonly data: TypedArray) {}
}

export type NestedArray = number | boolean | NestedArray[];

/** A reduction along one dim returns both the values and their indices, like PyTorch's named tuple. */
export type ValuesIndices = [Tensor, Tensor] & { readonly values: Tensor; readonly indices: Tensor };

/**
 * A strided n-d array over typed-array storage, with autograd. This class holds the storage, the layout, the
 * autograd state and the methods that are not ops; the op methods (`add`, `sum`, `add_`, …) are installed on
 * its prototype from the op table by tensor-methods.ts, which also declares their types.
 */
export class Tensor {
  private _shape: readonly number[];
  /** Changed only by the in-place metadata ops (`t_`, `transpose_`, `unsqueeze_`) through `_setLayout`. */
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

  /** Take `view`'s shape and strides (same storage and offset): the in-place metadata ops. */
  _setLayout(view: Tensor): void {
    this._shape = view._shape;
    (this as { strides: readonly number[] }).strides = view.strides;
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
      const owned = grad === g && ownedGradients.has(g) && g.isContiguous() && g.gradFn === null;
      if (owned) ownedGradients.delete(g); // kept once: a second leaf must copy
      this.grad = this.grad ? this.grad.add(grad) : owned ? grad : grad.detach().clone();
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
      // onesLike(this), made here: tensor.ts imports no op (the ops import Tensor)
      seed = Tensor.fromData(allocate(this.dtype, 1).fill(1), this.shape, this.dtype);
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

Object.defineProperty(Tensor.prototype, TENSOR_BRAND, { value: true });
