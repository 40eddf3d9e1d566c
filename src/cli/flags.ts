import { KilnError } from '../errors.js';

/**
 * The flags `kiln export` and `kiln run` share: `--input 8x4[,8x3]` (repeatable; one shape per forward
 * argument), `--dtype float32|int32` and `--seed N`. Each parser throws a KilnError naming the flag.
 */

export type InputDType = 'float32' | 'int32';

export function parseShapesFlag(value: string): number[][] {
  return value.split(',').map((spec) => {
    const shape = spec.split('x').map(Number);
    if (spec === '' || shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
      throw new KilnError(`--input takes shapes like 8x4 or 8x4,8x3 (one per forward argument), got '${value}'`);
    }
    return shape;
  });
}

export function parseDTypeFlag(value: string): InputDType {
  if (value !== 'float32' && value !== 'int32') throw new KilnError(`--dtype must be float32 or int32, got '${value}'`);
  return value;
}

export function parseSeedFlag(value: string): number {
  const seed = Number(value);
  if (value.trim() === '' || !Number.isSafeInteger(seed)) throw new KilnError(`--seed must be an integer, got '${value}'`);
  return seed;
}

/** `[8, 4], [8, 3]`. */
export function formatShapes(shapes: readonly (readonly number[])[]): string {
  return shapes.map((s) => `[${s.join(', ')}]`).join(', ');
}
