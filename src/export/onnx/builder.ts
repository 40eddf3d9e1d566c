import type { DType } from '../../runtime/dtype.js';
import { attribute, elemTypeCode, tensorProto, type AttrValue, type ElemType, type OnnxTypes } from './proto.js';
import { knownSizes, type StaticSize } from './static-sizes.js';
import { Unsupported, type SizeValue, type TensorValue } from './values.js';

/** ONNX's int64 max: a Slice end of "to the end". */
export const INT64_MAX = 9223372036854775807n;

/**
 * The ONNX graph under construction: nodes in order, initializers, unique value names, and the small patterns
 * the emitters share (constants, casts, reductions whose axes moved from attribute to input in some opset,
 * shapes computed from a tensor at run time).
 */
export class OnnxBuilder {
  readonly nodes: OnnxTypes.INodeProto[] = [];
  readonly initializers: OnnxTypes.ITensorProto[] = [];
  private readonly taken = new Set<string>();
  private readonly constCache = new Map<string, string>();
  private readonly shapeCache = new Map<string, string>();

  constructor(readonly opset: number) {}

  /** Reserve `name` as it is (inputs, initializers named by state-dict key). */
  claim(name: string): string {
    this.taken.add(name);
    return name;
  }

  /** A name not used yet: `base`, else `base_1`, `base_2`, … */
  fresh(base: string): string {
    let name = base;
    for (let i = 1; this.taken.has(name); i++) name = `${base}_${i}`;
    this.taken.add(name);
    return name;
  }

  /** One ONNX node; returns its output names (`outputs` of them; '' inputs stand for an omitted optional input). */
  op(type: string, inputs: readonly string[], attrs: Record<string, AttrValue | undefined> = {}, outputs = 1): string[] {
    const outs = Array.from({ length: outputs }, () => this.fresh(type.toLowerCase()));
    const attribute_ = Object.entries(attrs).flatMap(([k, v]) => (v === undefined ? [] : [attribute(k, v)]));
    this.nodes.push({ opType: type, name: this.fresh(`${type}_node`), input: [...inputs], output: outs, attribute: attribute_ });
    return outs;
  }

  one(type: string, inputs: readonly string[], attrs: Record<string, AttrValue | undefined> = {}): string {
    return this.op(type, inputs, attrs, 1)[0]!;
  }

  initializer(name: string, type: ElemType, dims: readonly number[], values: ArrayLike<number>): string {
    this.initializers.push(tensorProto(name, type, dims, values));
    return name;
  }

  /** A constant tensor (shared between uses with the same contents). */
  constant(type: ElemType, dims: readonly number[], values: readonly number[]): string {
    const key = `${type}|${dims.join(',')}|${values.join(',')}`;
    let name = this.constCache.get(key);
    if (name === undefined) {
      name = this.initializer(this.fresh('const'), type, dims, values);
      this.constCache.set(key, name);
    }
    return name;
  }

  /** A 1-D int64 constant (axes, shapes, pads given as inputs). */
  ints(values: readonly (number | bigint)[]): string {
    const key = `int64|${values.length}|${values.join(',')}`;
    let name = this.constCache.get(key);
    if (name === undefined) {
      name = this.fresh('ints');
      const data = BigInt64Array.from(values, (v) => BigInt(v));
      this.initializers.push({ ...tensorProto(name, 'int64', [values.length], []), rawData: new Uint8Array(data.buffer) });
      this.constCache.set(key, name);
    }
    return name;
  }

  /** A 0-d constant of `dtype`. */
  scalar(value: number, dtype: DType): string {
    return this.constant(dtype, [], [value]);
  }

  cast(name: string, from: ElemType, to: ElemType): string {
    return from === to ? name : this.one('Cast', [name], { to: elemTypeCode(to) });
  }

  /** `v` as a tensor of `dtype`: a kiln tensor cast if needed, or a number as a 0-d constant. */
  operand(v: unknown, dtype: DType): string {
    if (typeof v === 'number' || typeof v === 'boolean') return this.scalar(Number(v), dtype);
    const t = v as TensorValue;
    return this.cast(t.name, t.dtype, dtype);
  }

  /**
   * ReduceSum/Mean/Max/Min over `axes` (null: every axis). ReduceSum takes its axes as an input from opset 13,
   * the others from opset 18.
   */
  reduce(
    type: 'ReduceSum' | 'ReduceMean' | 'ReduceMax' | 'ReduceMin',
    x: string,
    axes: readonly number[] | null,
    keepdims: boolean,
  ): string {
    const asInput = type === 'ReduceSum' || this.opset >= 18;
    const keep = keepdims ? 1 : 0;
    if (axes === null) return this.one(type, [x], { keepdims: keep });
    return asInput ? this.one(type, [x, this.ints(axes)], { keepdims: keep }) : this.one(type, [x], { axes, keepdims: keep });
  }

  /** The run-time shape of `x` (one Shape node per value). */
  shape(x: string): string {
    let s = this.shapeCache.get(x);
    if (s === undefined) this.shapeCache.set(x, (s = this.one('Shape', [x])));
    return s;
  }

  /** Dims [start, end) of `x`'s run-time shape, as int64 [end - start]. */
  shapeSlice(x: string, start: number, end: number): string {
    return this.one('Slice', [this.shape(x), this.ints([start]), this.ints([end]), this.ints([0])]);
  }

  /** A size as an int64 [1] tensor. */
  sizeTensor(s: SizeValue): string {
    return s.size.dynamic ? s.name! : this.ints([s.size.hint]);
  }

  /**
   * A shape argument (numbers and sizes, as `view`/`reshape`/`expand` take) as an int64 vector: a constant
   * when every entry is static, else the entries concatenated at run time.
   */
  shapeVector(entries: readonly unknown[]): string {
    const sizes = entries.map((e) =>
      typeof e === 'number' ? ({ kind: 'size', size: { hint: e, dynamic: false } } as SizeValue) : (e as SizeValue),
    );
    if (sizes.every((s) => !s.size.dynamic)) return this.ints(sizes.map((s) => s.size.hint));
    return this.one(
      'Concat',
      sizes.map((s) => this.sizeTensor(s)),
      { axis: 0 },
    );
  }
}

/** The rank of `t`, or an Unsupported naming what is missing. */
export function rankOf(t: TensorValue): number {
  if (t.shape === undefined)
    throw new Unsupported('the rank of its input is not known (give the graph input shapes: run ShapeProp on examples)');
  return t.shape.length;
}

/** `t`'s sizes, null where dynamic. */
export function sizesOf(t: TensorValue): (number | null)[] {
  rankOf(t);
  return knownSizes(t.shape!);
}

/** A dim index made non-negative against `rank`. */
export function normDim(d: number, rank: number): number {
  return d < 0 ? d + rank : d;
}

/** An int|int[] argument as a list of `n` ints. */
export function pair(v: number | readonly number[], n = 2): number[] {
  return typeof v === 'number' ? Array(n).fill(v) : v.length === 1 ? Array(n).fill(v[0]) : [...v];
}

export type { StaticSize };
