import { IndexError, ShapeError, ValueError } from '../errors.js';
import { Tensor } from '../runtime/tensor.js';
import { describe } from '../runtime/validate.js';

/**
 * Map-style datasets (PyTorch's `torch.utils.data.Dataset`): `length` samples, the i-th read by
 * `getItem(i)`, which may return a Promise (then iterate its DataLoader with `for await`).
 */
export abstract class Dataset<T = unknown> {
  abstract readonly length: number;
  abstract getItem(index: number): T | Promise<T>;
}

/** What a DataLoader reads from: a Dataset, any object with `length` and `getItem`, or an array of samples. */
export type DatasetLike<T> = { readonly length: number; getItem(index: number): T | Promise<T> } | readonly T[];

/** The sample at `index` of a dataset or an array of samples. */
export function itemOf<T>(dataset: DatasetLike<T>, index: number): T | Promise<T> {
  return Array.isArray(dataset) ? (dataset as readonly T[])[index]! : (dataset as Dataset<T>).getItem(index);
}

/** Checks that `dataset` can be read as one; returns its length. */
export function datasetLength(op: string, dataset: unknown): number {
  const ok =
    Array.isArray(dataset) || (typeof dataset === 'object' && dataset !== null && typeof (dataset as Dataset).getItem === 'function');
  if (!ok)
    throw new ValueError(`${op}: dataset must be a Dataset (length and getItem(index)) or an array of samples, got ${describe(dataset)}`);
  const n = (dataset as { length: unknown }).length;
  if (!Number.isSafeInteger(n) || (n as number) < 0)
    throw new ValueError(`${op}: dataset.length must be an integer ≥ 0, got ${describe(n)}`);
  return n as number;
}

/**
 * Samples that are rows of tensors (PyTorch's `TensorDataset`): sample i is the list of every tensor's i-th
 * row (`t.select(0, i)`), so all tensors need the same first dimension.
 */
export class TensorDataset extends Dataset<Tensor[]> {
  readonly tensors: readonly Tensor[];

  constructor(...tensors: Tensor[]) {
    super();
    if (tensors.length === 0) throw new ValueError('TensorDataset: needs at least one tensor');
    tensors.forEach((t, i) => {
      if (!(t instanceof Tensor)) throw new ValueError(`TensorDataset: argument ${i} must be a Tensor, got ${describe(t)}`);
      if (t.shape.length === 0)
        throw new ShapeError(`TensorDataset: tensor ${i} is a scalar; every tensor needs a first (sample) dimension`);
    });
    const n = tensors[0]!.shape[0]!;
    const bad = tensors.findIndex((t) => t.shape[0] !== n);
    if (bad >= 0) {
      throw new ShapeError(
        `TensorDataset: size mismatch between tensors: tensor 0 has shape [${tensors[0]!.shape.join(', ')}], ` +
          `tensor ${bad} has shape [${tensors[bad]!.shape.join(', ')}] (the first dimensions must be equal)`,
      );
    }
    this.tensors = tensors;
  }

  get length(): number {
    return this.tensors[0]!.shape[0]!;
  }

  /** Row `index` of every tensor (negative indices count from the end, as in PyTorch). */
  getItem(index: number): Tensor[] {
    const n = this.length;
    if (!Number.isSafeInteger(index) || index < -n || index >= n) {
      throw new IndexError(`TensorDataset: index ${describe(index)} is out of range for a dataset of ${n} samples`);
    }
    return this.tensors.map((t) => t.select(0, index < 0 ? index + n : index));
  }
}
