import { KilnError } from '../errors.js';
import { parseDTypeFlag, parseSeedFlag, type InputDType } from './flags.js';

/**
 * `kiln explain`'s arguments. Without `--input` it reports what kiln/plugin does to the file (no code runs);
 * with `--input` it loads the file, builds the export and runs `explain` once on random inputs.
 */
export const EXPLAIN_USAGE =
  'kiln explain <file.ts> [--export Name] [--input 2x4[,3x4] [--eval] [--dtype float32|int32] [--args JSON] [--seed 0]] [--json] [--no-types]';

export const EXPLAIN_HELP = `usage: ${EXPLAIN_USAGE}

Without --input: what kiln/plugin does to <file.ts>, without running it: each rewritten function's graph
segments and breaks, each break with its reason and a code frame, and the classes and functions it left
for run-time capture with the reason.

With --export Name --input 2x4[,3x4]: loads the file through kiln/register, builds the exported class (or
takes the exported function), runs explain() once on seeded random inputs of those shapes and prints the
graphs with their code, op count, kernel plans, each break with its code frame, and the guards of each
captured segment.

options:
  --export Name         the exported class or function (with --input: required)
  --input 2x4[,3x4]     one shape per forward argument (repeat the flag, or separate shapes with commas)
  --eval                run the module in eval mode under noGrad (default: training mode, grad on, as
                        a freshly built nn.Module)
  --dtype float32|int32 the inputs' dtype: standard normal (float32) or 0..9 (int32); default float32
  --args JSON           the constructor's arguments as a JSON array (or one JSON value), e.g. '[4, 8]'
  --seed N              the seed of the weights and inputs; default 0
  --json                print the report as JSON instead of text
  -h, --help            this text`;

export interface ExplainArgs {
  readonly file: string;
  readonly name?: string;
  readonly shapes?: number[][];
  readonly eval: boolean;
  readonly dtype: InputDType;
  readonly ctorArgs: unknown[];
  readonly seed: number;
  readonly json: boolean;
  /** Let the project's type checker decide tensors and modules (default: where a tsconfig.json is found). */
  readonly types?: boolean;
}

/** The command line itself is wrong (exit 2, with the usage line); a bad flag value is a plain KilnError (exit 1). */
export class ExplainUsageError extends KilnError {}

const usage = (why: string) => new ExplainUsageError(`kiln explain: ${why}\nusage: ${EXPLAIN_USAGE}`);

function parseShapes(spec: string): number[][] {
  const shapes = spec.split(',').map((s) => s.split('x').map(Number));
  if (shapes.some((s) => s.length === 0 || s.some((d) => !Number.isSafeInteger(d) || d < 0))) {
    throw new KilnError(`kiln explain: --input takes shapes like 2x4 or 2x4,3x4 (one per forward argument), got '${spec}'`);
  }
  return shapes;
}

export function parseExplainArgs(argv: readonly string[]): ExplainArgs {
  const [file, ...rest] = argv;
  if (!file || file.startsWith('-')) throw usage('no model file given');
  let name: string | undefined;
  let shapes: number[][] | undefined;
  let dtype: InputDType | undefined;
  let ctorArgs: unknown[] | undefined;
  let seed: number | undefined;
  let evalMode = false;
  let json = false;
  let types: boolean | undefined;
  const wrap = <T>(f: () => T): T => {
    try {
      return f();
    } catch (e) {
      if (e instanceof KilnError && !e.message.startsWith('kiln explain')) throw new KilnError(`kiln explain: ${e.message}`);
      throw e;
    }
  };
  for (let i = 0; i < rest.length; i++) {
    const flag = rest[i]!;
    const value = () => {
      const v = rest[++i];
      if (v === undefined || /^--?[a-z]/.test(v)) throw usage(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--export':
        name = value();
        break;
      case '--input':
        shapes = [...(shapes ?? []), ...parseShapes(value())];
        break;
      case '--dtype':
        dtype = wrap(() => parseDTypeFlag(value()));
        break;
      case '--seed':
        seed = wrap(() => parseSeedFlag(value()));
        break;
      case '--args': {
        const text = value();
        let parsed: unknown;
        try {
          parsed = JSON.parse(text);
        } catch {
          throw new KilnError(
            `kiln explain: --args takes the constructor's arguments as JSON, e.g. '[4, 8]' or '{"hidden": 8}', got '${text}'`,
          );
        }
        ctorArgs = Array.isArray(parsed) ? parsed : [parsed];
        break;
      }
      case '--eval':
        evalMode = true;
        break;
      case '--json':
        json = true;
        break;
      case '--types':
      case '--no-types':
        types = flag === '--types';
        break;
      default:
        throw usage(`unknown option '${flag}'`);
    }
  }
  if (shapes !== undefined && name === undefined) throw usage('--input needs --export Name (what to run)');
  const runOnly = [
    ['--eval', evalMode],
    ['--dtype', dtype !== undefined],
    ['--args', ctorArgs !== undefined],
    ['--seed', seed !== undefined],
  ] as const;
  const given = runOnly.filter(([, on]) => on).map(([f]) => f);
  if (shapes === undefined && given.length) throw usage(`${given.join(', ')} only apply to a run: add --input shapes`);
  return {
    file,
    ...(types !== undefined && { types }),
    ...(name !== undefined && { name }),
    ...(shapes !== undefined && { shapes }),
    eval: evalMode,
    dtype: dtype ?? 'float32',
    ctorArgs: ctorArgs ?? [],
    seed: seed ?? 0,
    json,
  };
}
