import { SerializationError } from '../errors.js';
import { isPlainObject } from '../runtime/plain-object.js';
import type { Tensor } from '../runtime/tensor.js';
import { ExportError } from './errors.js';

/**
 * What `module()` and `run` check about each user tensor before running the graph (PyTorch's
 * `_check_input_constraints_for_graph`), with the input's path in PyTorch's texts.
 */

export interface UserInputCheck {
  readonly path: string;
  readonly dtype: string;
  /** Each dim: a static size, or the name of the symbol it is (its range is in `ranges`). */
  readonly shape: readonly (number | string)[];
}

export function checkUserInputs(checks: readonly UserInputCheck[], inputs: readonly Tensor[]): void {
  checks.forEach((c, i) => {
    const t = inputs[i]!;
    if (t.dtype !== c.dtype) throw new ExportError(`Expected input at ${c.path} to have dtype ${c.dtype}, but got ${t.dtype}`);
    if (t.shape.length !== c.shape.length) {
      throw new ExportError(
        `Unexpected number of dimensions in input at ${c.path}.shape (expected [${c.shape.join(', ')}], got [${t.shape.join(', ')}])`,
      );
    }
    c.shape.forEach((want, d) => {
      const got = t.shape[d]!;
      if (typeof want === 'number' && got !== want) {
        throw new ExportError(`Expected input at ${c.path}.shape[${d}] to be equal to ${want}, but got ${got}`);
      }
    });
  });
}

/** The checks of a saved program, each field type-checked (serialize.ts). */
export function parseInputChecks(v: unknown, where: string): UserInputCheck[] {
  if (!Array.isArray(v)) throw new SerializationError(`${where} must be an array`);
  return v.map((c, i) => {
    const at = `${where}[${i}]`;
    if (!isPlainObject(c)) throw new SerializationError(`${at} must be an object`);
    if (typeof c.path !== 'string' || typeof c.dtype !== 'string') throw new SerializationError(`${at}: path and dtype must be strings`);
    if (!Array.isArray(c.shape) || !c.shape.every((d) => (Number.isSafeInteger(d) && (d as number) >= 0) || typeof d === 'string')) {
      throw new SerializationError(`${at}.shape must list sizes (integers ≥ 0) or symbol names`);
    }
    return { path: c.path, dtype: c.dtype, shape: c.shape as (number | string)[] };
  });
}
