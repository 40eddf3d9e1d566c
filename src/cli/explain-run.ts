import { loadExport } from './load-export.js';
import { codeFrameAt } from '../compile/compiled-callable.js';
import { KilnError } from '../errors.js';
import type { ExplainArgs } from './explain-args.js';

/**
 * `kiln explain <file.ts> --export Name --input 2x4[,3x4]`: load the file through kiln/register (so the
 * plugin rewrites it), build the exported module, run `explain` once on random inputs of those shapes and
 * print the report (graphs with their code, op count, each break with its source, the guards).
 */
export function parseShapes(spec: string): number[][] {
  const shapes = spec.split(',').map((s) => s.split('x').map(Number));
  if (shapes.some((s) => s.length === 0 || s.some((d) => !Number.isInteger(d) || d < 0))) {
    throw new KilnError(`kiln explain: --input takes shapes like 2x4 or 2x4,3x4 (one per forward argument), got '${spec}'`);
  }
  return shapes;
}

export async function explainRun(args: ExplainArgs): Promise<string> {
  const { file, name, shapes } = args as Required<ExplainArgs>;
  const { kiln, target } = await loadExport('kiln explain', file, name);
  kiln.manualSeed(0);
  const report = kiln.explain(target as never)(...shapes.map((s) => kiln.randn(s)));
  const frames = report.breakReasons.map((b) => `source of the break at ${b.loc}:\n${codeFrameAt(b.loc).replace(/^/gm, '  ')}`);
  return [`${name} on inputs ${shapes.map((s) => `[${s.join(', ')}]`).join(', ')}:`, kiln.formatExplain(report), ...frames].join('\n');
}
