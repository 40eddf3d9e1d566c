import { readFileSync } from 'node:fs';
import { SerializationError } from '../errors.js';
import { MAX_NUMEL, fmt } from '../runtime/shape.js';
import type { Tensor } from '../runtime/tensor.js';

/** What the loaders return and the savers take: tensors by PyTorch key (`fc.weight`, `bn.running_mean`). */
export type StateDict = Record<string, Tensor>;

/**
 * Add `key` to a state dict being read from a file. A key read from a file is data: `__proto__` would set the
 * object's prototype rather than add an entry, and a repeated key would silently drop a tensor, so both are refused.
 */
export function putEntry(out: StateDict, key: string, value: Tensor, where: string): void {
  if (key === '__proto__') throw new SerializationError(`${where}: the key '__proto__' is not allowed in a state dict`);
  if (Object.hasOwn(out, key)) throw new SerializationError(`${where}: the key '${key}' appears twice`);
  out[key] = value;
}

/** The shape read for tensor `key`: non-negative integer dims whose product kiln can hold. */
export function checkShape(shape: unknown, key: string, where: string): number[] {
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new SerializationError(`${where}: tensor '${key}' has shape ${JSON.stringify(shape)}, not a list of non-negative integers`);
  }
  const n = shape.reduce((a: number, d: number) => a * d, 1);
  if (n > MAX_NUMEL) {
    throw new SerializationError(
      `${where}: tensor '${key}' has shape ${fmt(shape)}: ${n} elements, more than the ${MAX_NUMEL} a kiln tensor holds`,
    );
  }
  return shape as number[];
}

/** A checkpoint file's bytes; a file that cannot be read is a SerializationError naming the loader and path (`where`). */
export function readCheckpoint(path: string, where: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new SerializationError(`${where}: cannot read: ${(e as Error).message}`);
  }
}
