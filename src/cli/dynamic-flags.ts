import { KilnError } from '../errors.js';

/**
 * `kiln export`'s `--dynamic [input.]dim:name[:min[:max]]` flags, turned into what `dynamicShapes` needs:
 * per input, which dims are which named Dim, and per name its range. `0:batch:1:64` marks dim 0 of every
 * input that has a dim 0 (the usual batch case); `1.0:n` only input 1's dim 0. Flags with the same name
 * share one Dim. Errors are KilnErrors whose message says which flag is wrong (the caller adds the usage).
 */

export interface DynamicFlag {
  /** The flag's value as given. */
  readonly spec: string;
  /** The input it applies to; undefined: every input that has `dim`. */
  readonly input?: number;
  readonly dim: number;
  readonly name: string;
  readonly min?: number;
  readonly max?: number;
}

export interface DimRange {
  readonly min?: number;
  readonly max?: number;
}

export interface DynamicDims {
  /** Per input: dim index → Dim name, or null for an input with no dynamic dim. */
  readonly perInput: (Record<number, string> | null)[];
  /** Per Dim name, its range (min and max left out where no flag gave them: Dim's defaults). */
  readonly ranges: Map<string, DimRange>;
}

const SPEC = /^(?:(\d+)\.)?(\d+):([A-Za-z_$][A-Za-z0-9_$]*)(?::(\d*)(?::(\d+|inf|Infinity|∞))?)?$/;

export function parseDynamicFlag(spec: string): DynamicFlag {
  const m = SPEC.exec(spec);
  if (!m) {
    throw new KilnError(`--dynamic takes [input.]dim:name[:min[:max]] (e.g. 0:batch:1:64, or 1.0:n for input 1's dim 0), got '${spec}'`);
  }
  const [, input, dim, name, min, max] = m;
  const flag: DynamicFlag = {
    spec,
    dim: Number(dim),
    name: name!,
    ...(input !== undefined && { input: Number(input) }),
    ...(min !== undefined && min !== '' && { min: Number(min) }),
    ...(max !== undefined && { max: /^\d+$/.test(max) ? Number(max) : Infinity }),
  };
  if (![flag.dim, flag.input ?? 0, flag.min ?? 0, flag.max === Infinity ? 0 : (flag.max ?? 0)].every(Number.isSafeInteger)) {
    throw new KilnError(`--dynamic ${spec}: a number is too large`);
  }
  if (!((flag.max ?? Infinity) > (flag.min ?? 0))) {
    throw new KilnError(`--dynamic ${spec}: max must be greater than min (a Dim's range cannot be a single value)`);
  }
  return flag;
}

/** Apply the flags to inputs of these shapes; a flag that names a missing input or dim, or ranges that disagree, throw. */
export function resolveDynamicFlags(flags: readonly DynamicFlag[], shapes: readonly (readonly number[])[]): DynamicDims {
  const perInput: (Record<number, string> | null)[] = shapes.map(() => null);
  const ranges = new Map<string, DimRange>();
  const given = new Map<string, string>(); // name → the flag that gave its range
  for (const flag of flags) {
    const { spec, input, dim, name } = flag;
    if (flag.min !== undefined || flag.max !== undefined) {
      const range = { ...(flag.min !== undefined && { min: flag.min }), ...(flag.max !== undefined && { max: flag.max }) };
      const prev = ranges.get(name);
      if (given.has(name) && (prev?.min !== range.min || prev?.max !== range.max)) {
        throw new KilnError(`--dynamic ${spec}: '${name}' already has the range of --dynamic ${given.get(name)}; give the range once`);
      }
      ranges.set(name, range);
      given.set(name, spec);
    } else if (!ranges.has(name)) ranges.set(name, {});
    if (input !== undefined && input >= shapes.length) {
      throw new KilnError(
        `--dynamic ${spec}: there is no input ${input} (${shapes.length} --input shape${shapes.length === 1 ? '' : 's'} given)`,
      );
    }
    const targets = input !== undefined ? [input] : shapes.flatMap((s, i) => (dim < s.length ? [i] : []));
    if (input !== undefined && dim >= shapes[input]!.length) {
      throw new KilnError(`--dynamic ${spec}: input ${input} has shape [${shapes[input]!.join(', ')}], which has no dim ${dim}`);
    }
    if (targets.length === 0) throw new KilnError(`--dynamic ${spec}: no input has a dim ${dim}`);
    for (const i of targets) {
      const dims = (perInput[i] ??= {});
      const prev = dims[dim];
      if (prev !== undefined && prev !== name) {
        throw new KilnError(`--dynamic ${spec}: dim ${dim} of input ${i} is already '${prev}'; a dim can only be one Dim`);
      }
      dims[dim] = name;
    }
  }
  return { perInput, ranges };
}

/** `[1, 64]`, `[0, inf]`: a range as the CLI prints it. */
export function formatRange(lower: number, upper: number): string {
  const end = (v: number) => (v === Infinity ? 'inf' : v === -Infinity ? '-inf' : String(v));
  return `[${end(lower)}, ${end(upper)}]`;
}

/**
 * The constraint error's Suggested fixes for the CLI's own Dims written as `--dynamic` flags: `batch =
 * Dim('batch', { min: 7, max: 64 })` becomes `--dynamic 0:batch:7:64`, `batch = 5` says to drop its flags.
 * Fixes the flags cannot express (relations between Dims) are left to the message itself.
 */
export function fixesAsFlags(message: string, flags: readonly DynamicFlag[]): string[] {
  const out: string[] = [];
  const at = message.indexOf('Suggested fixes:');
  if (at < 0) return out;
  for (const line of message.slice(at).split('\n').slice(1)) {
    const dim = /^ {2}([A-Za-z_$][\w$]*) = Dim\('\1'(?:, \{ (?:min: (\d+))?(?:, )?(?:max: (\d+))? \})?\)$/.exec(line);
    const fixed = /^ {2}([A-Za-z_$][\w$]*) = (\d+)$/.exec(line);
    const name = (dim ?? fixed)?.[1];
    const mine = flags.filter((f) => f.name === name);
    if (mine.length === 0) continue;
    if (fixed) {
      out.push(`drop ${mine.map((f) => `--dynamic ${f.spec}`).join(' ')} (the code needs ${name} to be ${fixed[2]})`);
      continue;
    }
    const [, , min, max] = dim!;
    const range = max !== undefined ? `:${min ?? ''}:${max}` : min !== undefined ? `:${min}` : '';
    out.push(mine.map((f) => `--dynamic ${f.input !== undefined ? `${f.input}.` : ''}${f.dim}:${name}${range}`).join(' '));
  }
  return out;
}
