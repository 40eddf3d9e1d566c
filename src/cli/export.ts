import { mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { KilnError } from '../errors.js';
import { fixesAsFlags, formatRange, parseDynamicFlag, resolveDynamicFlags, type DynamicFlag } from './dynamic-flags.js';
import { formatShapes, parseDTypeFlag, parseSeedFlag, parseShapesFlag, type InputDType } from './flags.js';
import { loadExport } from './load-export.js';
import { asCliErrors, randomInputs } from './random-inputs.js';

type Kiln = typeof import('../index.js');
type KilnExport = typeof import('../export/index.js');

/**
 * `kiln export <file.ts> --export Name --input 8x4 [--dynamic 0:batch:1:64] -o model.kiln`: load the file
 * through kiln/register, build the exported class in eval mode, export it with grad off on seeded random
 * inputs (kiln/export's `exportProgram`), save the program and print its signature, graph and range constraints.
 */

export const EXPORT_USAGE =
  'kiln export <file.ts> --export Name --input 8x4[,8x3] [--dynamic SPEC]... [--dtype float32|int32] [--seed 0] -o out.kiln';

export const EXPORT_HELP = `usage: ${EXPORT_USAGE}

Exports the nn.Module class Name from <file.ts> (loaded through kiln/register, so kiln/plugin records its
shape reads and branches) with kiln/export's exportProgram, saves the program to out.kiln and prints its
signature, its graph and the range constraints of its dynamic dims. The module is built with --seed and
exported as deployment runs it: in eval mode, with grad off. The example inputs are seeded random tensors of
the --input shapes, one per forward argument (float32: standard normal; int32: 0..9).

  --dynamic [input.]dim:name[:min[:max]]
      make a dim dynamic with Dim(name, { min, max }) (max may be inf; min defaults to 0, max to inf).
      0:batch:1:64 marks dim 0 of every input that has one; 1.0:n only input 1's dim 0. Repeat the flag
      for more dims; flags with the same name share one Dim. Without --dynamic every size is static.
      An example size must lie in its Dim's range and be at least 2.

A constraint violation (the code needs a narrower range, or a constant) prints kiln/export's message with
its suggested fixes, written as --dynamic flags where they can be, and exits 1. Run the saved program with
kiln run out.kiln --input 8x4.`;

export interface ExportArgs {
  readonly file: string;
  readonly name: string;
  readonly shapes: readonly (readonly number[])[];
  readonly dynamic: readonly DynamicFlag[];
  readonly dtype: InputDType;
  readonly seed: number;
  readonly out: string;
}

/** Parse `export`'s arguments; a usage error is a KilnError whose message ends with the usage line. */
export function parseExportArgs(argv: readonly string[]): ExportArgs {
  const [file, ...rest] = argv;
  const usage = (why: string) => new KilnError(`kiln export: ${why}\nusage: ${EXPORT_USAGE}`);
  if (!file || file.startsWith('-')) throw usage('no model file given');
  let name: string | undefined;
  let out: string | undefined;
  const shapes: number[][] = [];
  const dynamic: DynamicFlag[] = [];
  let dtype: InputDType = 'float32';
  let seed = 0;
  try {
    for (let i = 0; i < rest.length; i += 2) {
      const flag = rest[i]!;
      const value = rest[i + 1];
      if (value === undefined) throw new KilnError(`${flag} needs a value`);
      if (flag === '--export') name = value;
      else if (flag === '-o') out = value;
      else if (flag === '--input') shapes.push(...parseShapesFlag(value));
      else if (flag === '--dynamic') dynamic.push(parseDynamicFlag(value));
      else if (flag === '--dtype') dtype = parseDTypeFlag(value);
      else if (flag === '--seed') seed = parseSeedFlag(value);
      else throw new KilnError(`unknown option '${flag}'`);
    }
    if (name === undefined) throw new KilnError('--export Name is required');
    if (shapes.length === 0) throw new KilnError('give the --input shapes, one per forward argument');
    if (out === undefined) throw new KilnError('-o out.kiln is required');
    resolveDynamicFlags(dynamic, shapes);
  } catch (e) {
    if (e instanceof KilnError) throw usage(e.message);
    throw e;
  }
  return { file, name, shapes, dynamic, dtype, seed, out };
}

/** Export and save; returns the report. */
export async function exportFile(args: ExportArgs): Promise<string> {
  const { file, name, shapes, dynamic, dtype, seed, out } = args;
  const { kiln, target, isModule } = await loadExport('kiln export', file, name, seed);
  if (!isModule) throw new KilnError(`kiln export: '${name}' in ${file} is a function; kiln export exports an nn.Module class`);
  // the same package copy as the model's `kiln`, so exportProgram sees its Module and Tensor classes
  const kexport = (await import('kiln/export')) as KilnExport;
  const model = target as InstanceType<Kiln['nn']['Module']>;
  model.eval();
  const inputs = randomInputs(kiln, shapes, dtype, seed);
  const { perInput, ranges } = resolveDynamicFlags(dynamic, shapes);
  const dims = new Map([...ranges].map(([n, r]) => [n, asCliErrors(kiln, () => kexport.Dim(n, r))]));
  const dynamicShapes = dynamic.length
    ? perInput.map((p) => p && Object.fromEntries(Object.entries(p).map(([d, n]) => [d, dims.get(n)!])))
    : undefined;
  let ep: InstanceType<KilnExport['ExportedProgram']>;
  try {
    ep = asCliErrors(kiln, () => kiln.noGrad(() => kexport.exportProgram(model, inputs, { dynamicShapes })));
  } catch (e) {
    const fixes = e instanceof KilnError ? fixesAsFlags(e.message, dynamic) : [];
    if (fixes.length)
      throw new KilnError(
        `${e instanceof Error ? e.message : String(e)}\n\nas kiln export flags:\n${fixes.map((f) => `  ${f}`).join('\n')}`,
      );
    throw e;
  }
  mkdirSync(dirname(out), { recursive: true });
  asCliErrors(kiln, () => kexport.save(ep, out));

  const userNames = ep.graphSignature.inputSpecs.filter((s) => s.kind === 'USER_INPUT').map((s) => s.name);
  const dynamicLines = dynamic.length
    ? perInput.flatMap((p, i) =>
        Object.entries(p ?? {}).map(([d, n]) => `  ${userNames[i] ?? `*args[${i}]`}.shape[${d}] = ${String(dims.get(n))}`),
      )
    : ['  none: every size is static'];
  const constraints = [...ep.rangeConstraints].map(([s, r]) => `  ${s}: ${formatRange(r.lower, r.upper)}`);
  return [
    `${name} from ${file}, exported in eval mode with grad off on inputs ${formatShapes(shapes)} ${dtype}, seed ${seed}`,
    'dynamic dims:',
    ...dynamicLines,
    '',
    'signature:',
    ...signatureTable(ep.graphSignature),
    '',
    'graph:',
    ep.graphModule.code.replace(/\n$/, '').replace(/^/gm, '  '),
    '',
    'range constraints:',
    ...(constraints.length ? constraints : ['  none']),
    '',
    `wrote ${out} (${formatBytes(statSync(out).size)})`,
  ].join('\n');
}

type Signature = InstanceType<KilnExport['ExportedProgram']>['graphSignature'];

/** The input and output specs as an aligned table: direction, kind, placeholder or output name, target. */
function signatureTable(sig: Signature): string[] {
  const rows = [
    ['', 'kind', 'name', 'target'],
    ...sig.inputSpecs.map((s) => ['input', s.kind, s.name, (s.target ?? '') + (s.persistent === false ? ' (non-persistent)' : '')]),
    ...sig.outputSpecs.map((s) => ['output', s.kind, s.name, s.target ?? '']),
  ];
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => `  ${r.map((v, c) => v.padEnd(widths[c]!)).join('  ')}`.trimEnd());
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
