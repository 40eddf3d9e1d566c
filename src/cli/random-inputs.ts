import { KilnError } from '../errors.js';
import type { InputDType } from './flags.js';

type Kiln = typeof import('../index.js');
type Tensor = InstanceType<Kiln['Tensor']>;

/**
 * Seeded random inputs for `kiln export` and `kiln run`, made with the package's own `kiln` (the one the
 * model and kiln/export use): float32 from a standard normal, int32 (indices, labels) from 0..9, as `kiln check`.
 */
export function randomInputs(kiln: Kiln, shapes: readonly (readonly number[])[], dtype: InputDType, seed: number): Tensor[] {
  kiln.manualSeed(seed);
  return drawInputs(kiln, shapes, dtype);
}

/** Inputs drawn from kiln's generator as it stands: int32 from 0..9 (indices, labels), float32 standard normal. */
export function drawInputs(kiln: Kiln, shapes: readonly (readonly number[])[], dtype: InputDType): Tensor[] {
  return shapes.map((s) =>
    dtype === 'int32'
      ? kiln
          .rand([...s])
          .mul(10)
          .to('int32')
      : kiln.randn([...s]),
  );
}

/**
 * Run `f`; a KilnError of the package's copy of kiln (a run from source loads two) becomes this copy's, so
 * the CLI prints it as bad input, without a stack.
 */
export function asCliErrors<T>(kiln: Kiln, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof kiln.KilnError && !(e instanceof KilnError)) throw new KilnError((e as Error).message);
    throw e;
  }
}
