import { DTypeError, ShapeError, ValueError } from '../../errors.js';
import { allocate, dtypeOfArray, isDType, type DType, type TypedArray } from '../dtype.js';
import { normal, uniform } from '../random.js';
import { checkShape, fmt, numel } from '../shape.js';
import { activeTrace } from '../dispatch.js';
import { Tensor, type NestedArray } from '../tensor.js';

export interface CreateOptions {
  dtype?: DType;
  requiresGrad?: boolean;
}

export interface TensorOptions extends CreateOptions {
  shape?: readonly number[];
}

export type ShapeArg = readonly number[] | number;

function shapeOf(op: string, shape: ShapeArg): number[] {
  const s = typeof shape === 'number' ? [shape] : [...shape];
  if (!Array.isArray(shape) && typeof shape !== 'number') {
    throw new ShapeError(`${op}: shape must be an array of sizes, got ${typeof shape}`);
  }
  checkShape(op, s);
  return s;
}

/**
 * A runtime trace records calls of these creation functions as graph nodes instead of freezing their result,
 * so `full(x.shape, 2)` and `zerosLike(x)` follow the input's shape when the trace generalises.
 */
function recorded<F extends (...args: never[]) => Tensor>(fn: F, name = fn.name): F {
  const wrapped = (...args: unknown[]): Tensor =>
    activeTrace?.recordsEveryOp
      ? (activeTrace.callOp(wrapped, args, undefined) as Tensor)
      : (fn as unknown as (...a: unknown[]) => Tensor)(...args);
  Object.defineProperty(wrapped, 'name', { value: name });
  return wrapped as unknown as F;
}

function finish(t: Tensor, opts: CreateOptions | undefined): Tensor {
  if (opts?.requiresGrad) t.requiresGrad_(true);
  return t;
}

function checkDType(op: string, dtype: unknown): DType {
  if (!isDType(dtype)) throw new DTypeError(`${op}: unknown dtype '${String(dtype)}' (expected float32, int32 or bool)`);
  return dtype;
}

/**
 * Build a tensor from a number, nested arrays or a typed array. JS numbers carry no int/float distinction,
 * so plain numbers become float32 (booleans become bool) unless `dtype` says otherwise.
 */
export function tensor(data: NestedArray | TypedArray | readonly NestedArray[], opts: TensorOptions = {}): Tensor {
  let flat: ArrayLike<number | boolean>;
  let shape: number[];
  let inferred: DType;
  if (ArrayBuffer.isView(data)) {
    flat = data;
    shape = [data.length];
    inferred = dtypeOfArray(data);
  } else {
    shape = [];
    let probe: unknown = data;
    while (Array.isArray(probe)) {
      shape.push(probe.length);
      probe = probe[0];
    }
    const out: (number | boolean)[] = [];
    const walk = (v: unknown, d: number) => {
      if (d === shape.length) {
        if (typeof v !== 'number' && typeof v !== 'boolean') {
          throw new ValueError(`tensor: expected numbers or booleans, got ${Array.isArray(v) ? 'an array' : typeof v} at depth ${d}`);
        }
        out.push(v);
        return;
      }
      if (!Array.isArray(v) || v.length !== shape[d]) {
        throw new ShapeError(
          `tensor: expected a sequence of length ${shape[d]} at dim ${d} (got ${Array.isArray(v) ? v.length : typeof v})`,
        );
      }
      for (const x of v) walk(x, d + 1);
    };
    walk(data, 0);
    flat = out;
    inferred = typeof probe === 'boolean' ? 'bool' : 'float32';
  }
  const dtype = opts.dtype === undefined ? inferred : checkDType('tensor', opts.dtype);
  if (opts.shape) {
    const want = shapeOf('tensor', opts.shape);
    if (numel(want) !== flat.length) {
      throw new ShapeError(`tensor: shape ${fmt(want)} needs ${numel(want)} elements, got ${flat.length}`);
    }
    shape = want;
  }
  const arr = allocate(dtype, flat.length);
  for (let i = 0; i < flat.length; i++) {
    const v = Number(flat[i]);
    arr[i] = dtype === 'bool' ? (v ? 1 : 0) : v;
  }
  return finish(Tensor.fromData(arr, shape, dtype), opts);
}

export const full = recorded(function full(shape: ShapeArg, value: number | boolean, opts: CreateOptions = {}): Tensor {
  const s = shapeOf('full', shape);
  const dtype = opts.dtype ? checkDType('full', opts.dtype) : typeof value === 'boolean' ? 'bool' : 'float32';
  const arr = allocate(dtype, numel(s));
  arr.fill(dtype === 'bool' ? (value ? 1 : 0) : Number(value));
  return finish(Tensor.fromData(arr, s, dtype), opts);
});

export function zeros(shape: ShapeArg, opts: CreateOptions = {}): Tensor {
  return full(shape, 0, opts);
}

export function ones(shape: ShapeArg, opts: CreateOptions = {}): Tensor {
  return full(shape, 1, opts);
}

export const zerosLike = recorded(function zerosLike(t: Tensor, opts: CreateOptions = {}): Tensor {
  return full(t.shape, 0, { dtype: t.dtype, ...opts });
});

export const onesLike = recorded(function onesLike(t: Tensor, opts: CreateOptions = {}): Tensor {
  return full(t.shape, 1, { dtype: t.dtype, ...opts });
});

/** A 0-d tensor holding `value`. */
export function scalarTensor(value: number, dtype: DType): Tensor {
  const arr = allocate(dtype, 1);
  arr[0] = value;
  return Tensor.fromData(arr, [], dtype);
}

/**
 * `arange(end)` or `arange(start, end, step = 1)`, optionally ending with options. Integer arguments give
 * int32 (PyTorch gives int64), any fractional one float32.
 */
function arangeOf(end: number, opts?: CreateOptions): Tensor;
function arangeOf(start: number, end: number, step?: number, opts?: CreateOptions): Tensor;
function arangeOf(...args: (number | CreateOptions | undefined)[]): Tensor {
  const opts = (typeof args[args.length - 1] === 'object' ? args.pop() : {}) as CreateOptions;
  const nums = args.filter((x): x is number => typeof x === 'number');
  const [start, end, step] = nums.length === 1 ? [0, nums[0]!, 1] : [nums[0]!, nums[1]!, nums[2] ?? 1];
  if (step === 0) throw new ValueError('arange: step must be non-zero');
  if (![start, end, step].every(Number.isFinite)) throw new ValueError(`arange: start, end and step must be finite numbers`);
  if ((end - start) / step < 0) {
    throw new ValueError(`arange: upper bound and larger bound inconsistent with step sign (start=${start}, end=${end}, step=${step})`);
  }
  const n = Math.max(0, Math.ceil((end - start) / step));
  const dtype = opts.dtype ?? ([start, end, step].every(Number.isInteger) ? 'int32' : 'float32');
  const arr = allocate(checkDType('arange', dtype), n);
  for (let i = 0; i < n; i++) arr[i] = start + i * step;
  return finish(Tensor.fromData(arr, [n], dtype), opts);
}

export const arange = recorded(arangeOf, 'arange');

function randomTensor(op: string, shape: ShapeArg, opts: CreateOptions, sample: () => number): Tensor {
  const s = shapeOf(op, shape);
  if (opts.dtype && opts.dtype !== 'float32') throw new DTypeError(`${op}: only float32 is supported, got ${opts.dtype}`);
  const arr = new Float32Array(numel(s));
  for (let i = 0; i < arr.length; i++) arr[i] = sample();
  return finish(Tensor.fromData(arr, s, 'float32'), opts);
}

/** Uniform samples in [0, 1). */
export const rand = recorded(function rand(shape: ShapeArg, opts: CreateOptions = {}): Tensor {
  return randomTensor('rand', shape, opts, uniform);
});

/** Standard normal samples. */
export const randn = recorded(function randn(shape: ShapeArg, opts: CreateOptions = {}): Tensor {
  return randomTensor('randn', shape, opts, normal);
});
