import { DTypeError, ShapeError, ValueError } from '../errors.js';
import { stack, tensor } from '../runtime/ops/index.js';
import { isPlainObject } from '../runtime/plain-object.js';
import { Tensor } from '../runtime/tensor.js';
import { describe } from '../runtime/validate.js';

/**
 * The DataLoader's default collate (PyTorch's `default_collate`): a list of samples becomes one batch of the
 * same structure. Tensors are stacked along a new first dim; numbers become a tensor (int32, kiln's integer
 * dtype, when every one is an integer, else float32); booleans a bool tensor; strings stay a list; arrays
 * (of equal length) and plain objects (with equal keys) are collated element by element.
 */
export function defaultCollate(samples: readonly unknown[]): unknown {
  if (!Array.isArray(samples) || samples.length === 0) {
    throw new ValueError(`defaultCollate: expects a non-empty array of samples, got ${describe(samples)}`);
  }
  return collate(samples, 'sample');
}

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

/** `path` names the place in each sample being collated, for messages: sample[1].label. */
function collate(batch: readonly unknown[], path: string): unknown {
  const first = batch[0];
  const kind = kindOf(first);
  batch.forEach((v, i) => {
    if (kindOf(v) !== kind) {
      throw new ValueError(`defaultCollate: ${path} is ${describe(first)} in sample 0 but ${describe(v)} in sample ${i}`);
    }
  });
  switch (kind) {
    case 'tensor':
      return stackTensors(batch as Tensor[], path);
    case 'number': {
      const nums = batch as number[];
      if (!nums.every(Number.isInteger)) return tensor(Float32Array.from(nums));
      const big = nums.find((v) => v < INT32_MIN || v > INT32_MAX);
      if (big !== undefined) throw new DTypeError(`defaultCollate: the integer ${big} at ${path} does not fit int32, kiln's integer dtype`);
      return tensor(Int32Array.from(nums));
    }
    case 'boolean':
      return tensor(batch as boolean[], { dtype: 'bool' });
    case 'string':
      return [...(batch as string[])];
    case 'array': {
      const arrays = batch as unknown[][];
      const n = arrays[0]!.length;
      const bad = arrays.findIndex((a) => a.length !== n);
      if (bad >= 0) {
        throw new ShapeError(
          `defaultCollate: ${path} has ${n} elements in sample 0 but ${arrays[bad]!.length} in sample ${bad}; each must have the same length`,
        );
      }
      return Array.from({ length: n }, (_, j) =>
        collate(
          arrays.map((a) => a[j]),
          `${path}[${j}]`,
        ),
      );
    }
    case 'object': {
      const objects = batch as Record<string, unknown>[];
      const keys = Object.keys(objects[0]!);
      objects.forEach((o, i) => {
        const ks = Object.keys(o);
        if (ks.length !== keys.length || !keys.every((k) => k in o)) {
          throw new ValueError(`defaultCollate: ${path} has keys ${keys.join(', ')} in sample 0 but ${ks.join(', ')} in sample ${i}`);
        }
      });
      return Object.fromEntries(
        keys.map((k) => [
          k,
          collate(
            objects.map((o) => o[k]),
            `${path}.${k}`,
          ),
        ]),
      );
    }
    default:
      throw new ValueError(
        `defaultCollate: ${path} is ${describe(first)}; the default collate takes Tensors, numbers, booleans, strings, ` +
          'arrays and plain objects of them (pass a collateFn for anything else)',
      );
  }
}

function kindOf(v: unknown): string {
  if (v instanceof Tensor) return 'tensor';
  if (Array.isArray(v)) return 'array';
  if (isPlainObject(v)) return 'object';
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'string') return typeof v;
  return 'other';
}

function stackTensors(ts: Tensor[], path: string): Tensor {
  const [t0] = ts;
  ts.forEach((t, i) => {
    if (t.shape.length !== t0!.shape.length || t.shape.some((d, k) => d !== t0!.shape[k])) {
      throw new ShapeError(
        `defaultCollate: the tensors at ${path} have different shapes: [${t0!.shape.join(', ')}] in sample 0, [${t.shape.join(', ')}] in sample ${i}`,
      );
    }
    if (t.dtype !== t0!.dtype)
      throw new DTypeError(`defaultCollate: the tensors at ${path} are ${t0!.dtype} in sample 0 but ${t.dtype} in sample ${i}`);
  });
  return stack(ts);
}
