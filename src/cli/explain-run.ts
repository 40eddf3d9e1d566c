import { loadExport } from './load-export.js';
import type { ExplainArgs } from './explain-args.js';
import { formatShapes } from './flags.js';
import { asCliErrors, randomInputs } from './random-inputs.js';

/**
 * `kiln explain <file.ts> --export Name --input 2x4[,3x4] [--eval] [--dtype] [--args] [--json]`: load the
 * file through kiln/register (so the plugin rewrites it), build the exported module (with `--args` for its
 * constructor), run `explain` once on seeded random inputs of those shapes — in training mode with grad on
 * as a new module is, or with `--eval` in eval mode under noGrad — and print the report (graphs with their
 * code, op count, each break with its code frame, the guards of each segment), or it as JSON.
 */
export async function explainRun(args: ExplainArgs): Promise<string> {
  const { file, name, shapes = [], dtype, seed, ctorArgs } = args;
  const { kiln, target, isModule } = await loadExport('kiln explain', file, name!, seed, ctorArgs);
  if (isModule && args.eval) (target as InstanceType<typeof kiln.nn.Module>).eval();
  const inputs = randomInputs(kiln, shapes, dtype, seed);
  const run = () => kiln.explain(target as never)(...inputs);
  const report = asCliErrors(kiln, () => (args.eval ? kiln.noGrad(run) : run()));
  const mode = isModule ? (args.eval ? 'eval mode, noGrad' : 'training mode, grad on') : args.eval ? 'noGrad' : 'grad on';
  if (args.json) {
    const { graphs, ...rest } = report;
    return JSON.stringify({ export: name, inputs: shapes, dtype, seed, mode, ...rest, graphs: graphs.map((g) => g.code) }, null, 2);
  }
  // The defaults (float32, seed 0, training mode with grad on) go unsaid in the title.
  const extras = [...(dtype !== 'float32' ? [dtype] : []), ...(seed !== 0 ? [`seed ${seed}`] : []), ...(args.eval ? [mode] : [])];
  return [`${name} on inputs ${formatShapes(shapes)}${extras.length ? ` (${extras.join(', ')})` : ''}:`, kiln.formatExplain(report)].join(
    '\n',
  );
}
