import { DTypeError, ShapeError, ValueError } from '../../errors.js';
import { allocate, castValue, checkDType, type DType, type TypedArray } from '../dtype.js';
import { normal, uniform } from '../random.js';
import { checkShape, fmt, MAX_NUMEL, numel } from '../shape.js';
import { activeTrace } from '../dispatch.js';
import { Tensor, type NestedArray } from '../tensor.js';
import { checkBoolean, checkOptions, describe } from '../validate.js';

export interface CreateOptions {
  dtype?: DType;
  requiresGrad?: boolean;
}

export interface TensorOptions extends CreateOptions {
  shape?: readonly number[];
}

export type ShapeArg = readonly number[] | number;

function shapeOf(op: string, shape: unknown): number[] {
  const s = typeof shape === 'number' ? [shape] : shape;
  checkShape(op, s);
  return [...s];
}

const CREATE_OPTIONS = ['dtype', 'requiresGrad'] as const;

/** The options object of a factory: known keys only, a valid dtype, a boolean requiresGrad. */
function createOptions(op: string, opts: unknown, allowed: readonly string[] = CREATE_OPTIONS): TensorOptions {
  const o = checkOptions(op, opts, allowed) as TensorOptions;
  if (o.dtype !== undefined) checkDType(op, o.dtype);
  if (o.requiresGrad !== undefined) checkBoolean(op, 'requiresGrad', o.requiresGrad);
  return o;
}

/**
 * A runtime trace records calls of these creation functions as graph nodes instead of freezing their result,
 * so `full(x.shape, 2)` and `zerosLike(x)` follow the input's shape when the trace generalises.
 */
/** Factories compile's tracer records (random draws stay out: the source check keeps code that draws eager). */
const FACTORIES = new Set(['full', 'zerosLike', 'onesLike', 'arange']);

function recorded<F extends (...args: never[]) => Tensor>(fn: F, name = fn.name): F {
  const wrapped = (...args: unknown[]): Tensor =>
    activeTrace?.recordsEveryOp || (activeTrace?.recordsFactories && FACTORIES.has(name))
      ? (activeTrace.callOp(wrapped, args, undefined) as Tensor)
      : (fn as unknown as (...a: unknown[]) => Tensor)(...args);
  Object.defineProperty(wrapped, 'name', { value: name });
  return wrapped as unknown as F;
}

function finish(t: Tensor, opts: CreateOptions | undefined): Tensor {
  if (opts?.requiresGrad) t.requiresGrad_(true);
  return t;
}

/** Typed arrays whose values a tensor holds exactly (Float64Array as float32, like plain JS numbers). */
export type TensorData = NestedArray | TypedArray | Float64Array | Int16Array | Uint16Array | Int8Array | readonly NestedArray[];

/**
 * Build a tensor from a number, nested arrays or a typed array. JS numbers carry no int/float distinction,
 * so plain numbers become float32 (booleans become bool) unless `dtype` says otherwise.
 */
export function tensor(data: TensorData, opts: TensorOptions = {}): Tensor {
  createOptions('tensor', opts, ['dtype', 'shape', 'requiresGrad']);
  let flat: ArrayLike<number | boolean>;
  let shape: number[];
  let inferred: DType;
  if (ArrayBuffer.isView(data)) {
    inferred = typedArrayDType(data);
    flat = data as unknown as ArrayLike<number>;
    shape = [flat.length];
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
          throw new ValueError(`tensor: expected numbers or booleans, got ${describe(v)} at depth ${d}`);
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
  const dtype = opts.dtype ?? inferred;
  if (opts.shape) {
    const want = shapeOf('tensor', opts.shape);
    if (numel(want) !== flat.length) {
      throw new ShapeError(`tensor: shape ${fmt(want)} needs ${numel(want)} elements, got ${flat.length}`);
    }
    shape = want;
  }
  const arr = allocate(dtype, flat.length);
  for (let i = 0; i < flat.length; i++) {
    arr[i] = castValue(dtype, Number(flat[i]));
  }
  return finish(Tensor.fromData(arr, shape, dtype), opts);
}

/** `shape` filled with `value`: the body of full, zeros, ones and their *Like forms, errors named after `op`. */
function filled(op: string, shape: unknown, value: unknown, opts: unknown): Tensor {
  const s = shapeOf(op, shape);
  const o = createOptions(op, opts);
  if (typeof value !== 'number' && typeof value !== 'boolean') {
    throw new ValueError(`${op}: fill value must be a number or a boolean, got ${describe(value)}`);
  }
  const dtype = o.dtype ?? (typeof value === 'boolean' ? 'bool' : 'float32');
  const arr = allocate(dtype, numel(s));
  arr.fill(castValue(dtype, Number(value)));
  return finish(Tensor.fromData(arr, s, dtype), o);
}

export const full = recorded(function full(shape: ShapeArg, value: number | boolean, opts: CreateOptions = {}): Tensor {
  return filled('full', shape, value, opts);
});

// zeros and ones are recorded as `full` by a runtime trace; eagerly their errors carry their own name.
/** PyTorch's sizes as separate arguments, optionally followed by the options: `zeros(2, 3)`, `rand(2, 3, { requiresGrad })`. */
type SizesThenOptions = [...sizes: number[], opts: CreateOptions] | number[];

/** Split a factory's arguments into its shape and options; extra arguments are an error, never ignored. */
function shapeAndOptions(op: string, args: readonly unknown[]): [unknown, unknown] {
  if (args.length >= 2 && typeof args[0] === 'number' && typeof args[1] === 'number') {
    const sizes = args.filter((a) => typeof a === 'number');
    const rest = args.slice(sizes.length);
    if (rest.length > 1 || args.slice(0, sizes.length).some((a) => typeof a !== 'number')) {
      throw new ValueError(`${op}: expected sizes then one options object, got ${describe(args)}`);
    }
    return [sizes, rest[0]];
  }
  if (args.length > 2) throw new ValueError(`${op}: expected (shape, options?), got ${args.length} arguments ${describe(args)}`);
  return [args[0], args[1]];
}

export function zeros(shape: ShapeArg, opts?: CreateOptions): Tensor;
export function zeros(...sizes: SizesThenOptions): Tensor;
export function zeros(...args: unknown[]): Tensor {
  const [shape, opts] = shapeAndOptions('zeros', args);
  return activeTrace?.recordsEveryOp || activeTrace?.recordsFactories
    ? full(shape as ShapeArg, 0, opts as CreateOptions)
    : filled('zeros', shape, 0, opts);
}

export function ones(shape: ShapeArg, opts?: CreateOptions): Tensor;
export function ones(...sizes: SizesThenOptions): Tensor;
export function ones(...args: unknown[]): Tensor {
  const [shape, opts] = shapeAndOptions('ones', args);
  return activeTrace?.recordsEveryOp || activeTrace?.recordsFactories
    ? full(shape as ShapeArg, 1, opts as CreateOptions)
    : filled('ones', shape, 1, opts);
}

function likeOf(op: string, t: unknown): Tensor {
  if (!(t instanceof Tensor)) throw new ValueError(`${op}: expected a Tensor, got ${describe(t)}`);
  return t;
}

export const zerosLike = recorded(function zerosLike(t: Tensor, opts: CreateOptions = {}): Tensor {
  const x = likeOf('zerosLike', t);
  return filled('zerosLike', x.shape, 0, { dtype: x.dtype, ...createOptions('zerosLike', opts) });
});

export const onesLike = recorded(function onesLike(t: Tensor, opts: CreateOptions = {}): Tensor {
  const x = likeOf('onesLike', t);
  return filled('onesLike', x.shape, 1, { dtype: x.dtype, ...createOptions('onesLike', opts) });
});

/**
 * The dtype a typed array's values become: kiln's three storage types as they are, other arrays whose
 * values convert exactly (Float64Array like plain JS numbers, small integer arrays) too.
 */
function typedArrayDType(data: ArrayBufferView): DType {
  if (data instanceof Float32Array || data instanceof Float64Array) return 'float32';
  if (data instanceof Int32Array || data instanceof Int16Array || data instanceof Uint16Array || data instanceof Int8Array) return 'int32';
  if (data instanceof Uint8Array && !(data instanceof Uint8ClampedArray)) return 'bool';
  throw new DTypeError(
    `tensor: a ${data.constructor.name} cannot be stored exactly (use a Float32Array, an Int32Array, a Uint8Array for bool, or a plain array)`,
  );
}

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
function arangeOf(...args: unknown[]): Tensor {
  while (args.length > 0 && args[args.length - 1] === undefined) args.pop();
  const opts = createOptions('arange', args.length > 1 && typeof args[args.length - 1] === 'object' ? args.pop() : {});
  if (args.length === 0 || args.length > 3 || !args.every((x) => typeof x === 'number' && Number.isFinite(x))) {
    throw new ValueError(`arange: expected (end) or (start, end, step?) as finite numbers, got ${describe(args)}`);
  }
  const nums = args as number[];
  const [start, end, step] = nums.length === 1 ? [0, nums[0]!, 1] : [nums[0]!, nums[1]!, nums[2] ?? 1];
  if (step === 0) throw new ValueError('arange: step must be non-zero');
  if ((end - start) / step < 0) {
    throw new ValueError(`arange: upper bound and larger bound inconsistent with step sign (start=${start}, end=${end}, step=${step})`);
  }
  const n = Math.max(0, Math.ceil((end - start) / step));
  if (n > MAX_NUMEL)
    throw new ShapeError(`arange: ${n} elements (start=${start}, end=${end}, step=${step}) exceed the ${MAX_NUMEL} a tensor can hold`);
  const dtype = opts.dtype ?? ([start, end, step].every(Number.isInteger) ? 'int32' : 'float32');
  const arr = allocate(dtype, n);
  for (let i = 0; i < n; i++) arr[i] = start + i * step;
  return finish(Tensor.fromData(arr, [n], dtype), opts);
}

export const arange = recorded(arangeOf, 'arange');

function randomTensor(op: string, args: readonly unknown[], sample: () => number): Tensor {
  const [shape, options] = shapeAndOptions(op, args);
  const s = shapeOf(op, shape);
  const opts = createOptions(op, options);
  if (opts.dtype && opts.dtype !== 'float32') throw new DTypeError(`${op}: only float32 is supported, got ${opts.dtype}`);
  const arr = new Float32Array(numel(s));
  for (let i = 0; i < arr.length; i++) arr[i] = sample();
  return finish(Tensor.fromData(arr, s, 'float32'), opts);
}

/** Uniform samples in [0, 1). */
function randOf(shape: ShapeArg, opts?: CreateOptions): Tensor;
function randOf(...sizes: SizesThenOptions): Tensor;
function randOf(...args: unknown[]): Tensor {
  return randomTensor('rand', args, uniform);
}
export const rand = recorded(randOf, 'rand');

/** Standard normal samples. */
function randnOf(shape: ShapeArg, opts?: CreateOptions): Tensor;
function randnOf(...sizes: SizesThenOptions): Tensor;
function randnOf(...args: unknown[]): Tensor {
  return randomTensor('randn', args, normal);
}
export const randn = recorded(randnOf, 'randn');
