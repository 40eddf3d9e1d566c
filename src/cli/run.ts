import { existsSync } from 'node:fs';
import { KilnError } from '../errors.js';
import { formatShapes, parseDTypeFlag, parseSeedFlag, parseShapesFlag, type InputDType } from './flags.js';
import { asCliErrors, randomInputs } from './random-inputs.js';

type Kiln = typeof import('../index.js');
type KilnExport = typeof import('../export/index.js');
type Tensor = InstanceType<Kiln['Tensor']>;

/**
 * `kiln run <file.kiln> --input 8x4`: load a program `kiln export` (or kiln/export's `save`) wrote, run it on
 * seeded random inputs of those shapes and print each output's shape and a summary. The program checks its
 * inputs: sizes outside its range constraints fail with its message and exit 1.
 */

export const RUN_USAGE = 'kiln run <file.kiln> --input 8x4[,8x3] [--dtype float32|int32] [--seed 0]';

export const RUN_HELP = `usage: ${RUN_USAGE}

Loads an exported program (written by kiln export or kiln/export's save), runs it once on seeded random
inputs of the --input shapes, one per forward argument (float32: standard normal; int32: 0..9), and prints
each output's shape, dtype, min, max, mean and first values. Inputs the program does not accept (a size
outside its range constraints, a wrong static size or dtype) exit 1 with the program's message; a file that
is not a whole, valid program exits 1 with the SerializationError.`;

export interface RunArgs {
  readonly file: string;
  readonly shapes: readonly (readonly number[])[];
  readonly dtype: InputDType;
  readonly seed: number;
}

/** Parse `run`'s arguments; a usage error is a KilnError whose message ends with the usage line. */
export function parseRunArgs(argv: readonly string[]): RunArgs {
  const [file, ...rest] = argv;
  const usage = (why: string) => new KilnError(`kiln run: ${why}\nusage: ${RUN_USAGE}`);
  if (!file || file.startsWith('-')) throw usage('no program file given');
  const shapes: number[][] = [];
  let dtype: InputDType = 'float32';
  let seed = 0;
  try {
    for (let i = 0; i < rest.length; i += 2) {
      const flag = rest[i]!;
      const value = rest[i + 1];
      if (value === undefined) throw new KilnError(`${flag} needs a value`);
      if (flag === '--input') shapes.push(...parseShapesFlag(value));
      else if (flag === '--dtype') dtype = parseDTypeFlag(value);
      else if (flag === '--seed') seed = parseSeedFlag(value);
      else throw new KilnError(`unknown option '${flag}'`);
    }
    if (shapes.length === 0) throw new KilnError('give the --input shapes, one per forward argument');
  } catch (e) {
    if (e instanceof KilnError) throw usage(e.message);
    throw e;
  }
  return { file, shapes, dtype, seed };
}

/** Load and run; returns the report. */
export async function runFile(args: RunArgs): Promise<string> {
  const { file, shapes, dtype, seed } = args;
  if (!existsSync(file)) throw new KilnError(`kiln run: '${file}' does not exist`);
  // the package's copies, as the saved program's tensors and ops must be one kiln
  const kiln = (await import('kiln')) as Kiln;
  const kexport = (await import('kiln/export')) as KilnExport;
  const ep = asCliErrors(kiln, () => kexport.load(file));
  const inputs = randomInputs(kiln, shapes, dtype, seed);
  const result = asCliErrors(kiln, () => kiln.noGrad(() => ep.run(...inputs)));
  const rows = outputs(kiln, result, 'output').map(([path, v]) => [path, ...(v instanceof kiln.Tensor ? summary(v) : [String(v)])]);
  const widths = [0, 1, 2].map((c) => Math.max(...rows.map((r) => (r.length > c + 1 ? r[c]!.length : 0))));
  return [
    `${file} on inputs ${formatShapes(shapes)} ${dtype}, seed ${seed}:`,
    ...rows.map((r) => `  ${r.map((v, c) => (c < r.length - 1 ? v.padEnd(widths[c]!) : v)).join('  ')}`),
  ].join('\n');
}

/** The output tree's leaves with their paths: `output`, `output[1]`, `output.logits`. */
function outputs(kiln: Kiln, value: unknown, path: string): [string, unknown][] {
  if (value instanceof kiln.Tensor || value === null || typeof value !== 'object') return [[path, value]];
  if (Array.isArray(value)) return value.flatMap((v, i) => outputs(kiln, v, `${path}[${i}]`));
  return Object.entries(value).flatMap(([k, v]) => outputs(kiln, v, `${path}.${k}`));
}

const FIRST = 5;

/** Shape and dtype, then min/max/mean and the first values. */
function summary(t: Tensor): string[] {
  const values = Array.from(t.data(), Number);
  const head = `[${t.shape.join(', ')}]`;
  if (values.length === 0) return [head, t.dtype, 'empty'];
  let min = Infinity;
  let max = -Infinity;
  let sum = 0;
  for (const v of values) {
    min = Math.min(min, v);
    max = Math.max(max, v);
    sum += v;
  }
  const first = values.slice(0, FIRST).map(num).join(', ') + (values.length > FIRST ? ', …' : '');
  return [head, t.dtype, `min ${num(min)}  max ${num(max)}  mean ${num(sum / values.length)}  [${first}]`];
}

function num(v: number): string {
  return Number.isInteger(v) ? String(v) : v.toPrecision(4);
}
