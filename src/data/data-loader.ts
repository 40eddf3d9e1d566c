import { ValueError } from '../errors.js';
import type { Tensor } from '../runtime/tensor.js';
import { Generator as RandomGenerator, defaultGenerator } from '../runtime/random.js';
import { checkBoolean, checkFunction, checkNumber, checkOptions, describe } from '../runtime/validate.js';
import { defaultCollate } from './collate.js';
import { datasetLength, itemOf, type DatasetLike } from './dataset.js';

/**
 * What defaultCollate makes of samples of type T: tensors, numbers and booleans become one Tensor, strings a
 * list of them, and arrays and objects keep their structure with each part collated.
 */
export type Collated<T> = T extends Tensor
  ? Tensor
  : T extends number | boolean
    ? Tensor
    : T extends string
      ? string[]
      : T extends object
        ? { [K in keyof T]: Collated<T[K]> }
        : unknown;

export interface DataLoaderOptions<T, B> {
  /** Samples per batch (default 1). */
  batchSize?: number;
  /** Visit the samples in a new random order every epoch (default false). */
  shuffle?: boolean;
  /** Leave out the last batch when it would be smaller than batchSize (default false). */
  dropLast?: boolean;
  /** Turns a list of samples into a batch (default: defaultCollate, which stacks tensors and numbers). */
  collateFn?: (samples: T[]) => B;
  /** The generator the shuffle draws from (PyTorch's `generator`); default kiln's global one, set by manualSeed. */
  generator?: RandomGenerator;
  /** Shorthand for `generator: new Generator(seed)`: a shuffle that is the same on every run, whatever else draws random numbers. */
  seed?: number;
}

const OPTIONS = ['batchSize', 'shuffle', 'dropLast', 'collateFn', 'generator', 'seed'];

const isThenable = (v: unknown): v is PromiseLike<unknown> =>
  typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';

/**
 * Batches of a dataset (PyTorch's `torch.utils.data.DataLoader` on one process): iterate it with `for … of`,
 * or with `for await … of` when the dataset's getItem or the collateFn returns Promises (each batch's samples
 * are then read concurrently). Every iteration is one epoch; a shuffling loader draws a new order for each.
 */
export class DataLoader<T = unknown, B = Collated<T>> implements Iterable<B>, AsyncIterable<B> {
  readonly dataset: DatasetLike<T>;
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly dropLast: boolean;
  readonly collateFn: (samples: T[]) => B;
  readonly generator: RandomGenerator | undefined;

  constructor(dataset: DatasetLike<T>, options: DataLoaderOptions<T, B> = {}) {
    const op = 'DataLoader';
    datasetLength(op, dataset);
    const o = checkOptions(op, options, OPTIONS);
    this.dataset = dataset;
    this.batchSize = checkNumber(op, 'batchSize', o.batchSize ?? 1, { min: 1, integer: true });
    this.shuffle = checkBoolean(op, 'shuffle', o.shuffle ?? false);
    this.dropLast = checkBoolean(op, 'dropLast', o.dropLast ?? false);
    if (o.collateFn !== undefined) checkFunction(op, 'collateFn', o.collateFn);
    this.collateFn = (o.collateFn as ((samples: T[]) => B) | undefined) ?? ((samples: T[]) => defaultCollate(samples) as B);
    if (o.generator !== undefined && o.seed !== undefined) throw new ValueError(`${op}: give a generator or a seed, not both`);
    if (o.generator !== undefined && !(o.generator instanceof RandomGenerator)) {
      throw new ValueError(`${op}: generator must be a kiln Generator, got ${describe(o.generator)}`);
    }
    this.generator =
      o.seed !== undefined ? new RandomGenerator(checkNumber(op, 'seed', o.seed, { integer: true })) : (o.generator as RandomGenerator);
    if ((this.generator || o.seed !== undefined) && !this.shuffle) {
      throw new ValueError(`${op}: a generator or seed only orders a shuffle; pass shuffle: true too`);
    }
  }

  /** Batches per epoch: ⌈n / batchSize⌉, or ⌊n / batchSize⌋ with dropLast. */
  get length(): number {
    const n = datasetLength('DataLoader', this.dataset);
    return this.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }

  /** The sample indices of each batch of one epoch (a new order each call when shuffling). */
  private batchIndices(): number[][] {
    const n = datasetLength('DataLoader', this.dataset);
    const order = Array.from({ length: n }, (_, i) => i);
    if (this.shuffle) {
      const g = this.generator ?? defaultGenerator;
      for (let i = n - 1; i > 0; i--) {
        const j = g.below(i + 1);
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
    }
    const batches: number[][] = [];
    for (let start = 0; start < n; start += this.batchSize) {
      const batch = order.slice(start, start + this.batchSize);
      if (batch.length < this.batchSize && this.dropLast) break;
      batches.push(batch);
    }
    return batches;
  }

  *[Symbol.iterator](): Iterator<B> {
    for (const indices of this.batchIndices()) {
      const samples = indices.map((i) => {
        const s = itemOf(this.dataset, i);
        if (isThenable(s)) throw new ValueError(`DataLoader: dataset.getItem(${i}) returned a Promise; iterate with for await … of`);
        return s;
      });
      const batch = this.collateFn(samples);
      if (isThenable(batch)) throw new ValueError('DataLoader: collateFn returned a Promise; iterate with for await … of');
      yield batch;
    }
  }

  async *[Symbol.asyncIterator](): AsyncIterator<B> {
    for (const indices of this.batchIndices()) {
      const samples = await Promise.all(indices.map((i) => itemOf(this.dataset, i)));
      yield await this.collateFn(samples);
    }
  }
}
