import { loadExport } from './load-export.js';
import { drawInputs } from './random-inputs.js';
import { KilnError } from '../errors.js';

/**
 * `kiln check <file.ts> --export Name --input 8x4 [--input 8x4 …] [--dtype float32] [--seed 0]`: load the
 * file through kiln/register, build the exported module (or take the exported function), and run
 * `testing.differential` on seeded random inputs of those shapes: compiled on each backend, grad on and
 * off, train and eval, against eager. Prints the report; the caller exits non-zero on a mismatch.
 */
export interface CheckArgs {
  readonly file: string;
  readonly name: string;
  readonly shapes: readonly (readonly number[])[];
  readonly dtype: 'float32' | 'int32';
  readonly seed: number;
}

export const CHECK_USAGE = 'kiln check <file.ts> --export Name --input 8x4 [--input 8x4 ...] [--dtype float32|int32] [--seed 0]';

export const CHECK_HELP = `usage: ${CHECK_USAGE}

Loads <file.ts> through kiln/register (so kiln/plugin rewrites it), builds the exported class (or takes the
exported function) and runs testing.differential on seeded random inputs of the --input shapes: compiled on
each backend, grad on and off, train and eval, against eager. Prints every mismatch; exits 1 on any.

options:
  --export Name        the exported class or function (required)
  --input 8x4          one shape per forward argument: repeat the flag, or 8x4,8x3 (at least one)
  --dtype float32|int32  inputs from a standard normal (float32) or from 0..9 (int32); default float32
  --seed N             the seed of the weights and inputs; default 0
  -h, --help           this text`;

/** Parse `check`'s arguments; a usage error is a KilnError whose message starts with `usage:`. */
export function parseCheckArgs(argv: readonly string[]): CheckArgs {
  const [file, ...rest] = argv;
  const usage = (why: string) => new KilnError(`kiln check: ${why}\nusage: ${CHECK_USAGE}`);
  if (!file || file.startsWith('--')) throw usage('no model file given');
  let name: string | undefined;
  const shapes: number[][] = [];
  let dtype: CheckArgs['dtype'] = 'float32';
  let seed = 0;
  for (let i = 0; i < rest.length; i += 2) {
    const flag = rest[i]!;
    const value = rest[i + 1];
    if (value === undefined) throw usage(`${flag} needs a value`);
    switch (flag) {
      case '--export':
        name = value;
        break;
      case '--input':
        for (const spec of value.split(',')) {
          const shape = spec.split('x').map(Number);
          if (spec === '' || shape.some((d) => !Number.isInteger(d) || d < 0)) {
            throw usage(`--input takes a shape like 8x4 (repeat it, one per forward argument), got '${value}'`);
          }
          shapes.push(shape);
        }
        break;
      case '--dtype':
        if (value !== 'float32' && value !== 'int32') throw usage(`--dtype must be float32 or int32, got '${value}'`);
        dtype = value;
        break;
      case '--seed':
        seed = Number(value);
        if (!Number.isSafeInteger(seed)) throw usage(`--seed must be an integer, got '${value}'`);
        break;
      default:
        throw usage(`unknown option '${flag}'`);
    }
  }
  if (name === undefined) throw usage('--export Name is required');
  if (shapes.length === 0) throw usage('give at least one --input shape');
  return { file, name, shapes, dtype, seed };
}

/** Run the check; returns the report's text and whether everything matched. */
export async function checkFile(args: CheckArgs): Promise<{ text: string; ok: boolean }> {
  const { file, name, shapes, dtype, seed } = args;
  const { kiln, target, isModule } = await loadExport('kiln check', file, name, seed);
  const inputs = drawInputs(kiln, shapes, dtype);
  let report;
  try {
    report = kiln.testing.differential(target as never, inputs, { seed, modes: isModule ? ['train', 'eval'] : undefined });
  } catch (e) {
    // The package's KilnError (the model's own kiln) is a bad-input error for the CLI too: printed without a stack.
    if (e instanceof kiln.KilnError && !(e instanceof KilnError)) throw new KilnError((e as Error).message);
    throw e;
  }
  const title = `${name} on inputs ${shapes.map((s) => `[${s.join(', ')}]`).join(', ')} ${dtype}, seed ${seed}:`;
  return { text: `${title}\n${String(report)}`, ok: report.ok };
}
