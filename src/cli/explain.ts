import { codeFrameColumns } from '@babel/code-frame';
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { KilnError } from '../errors.js';
import { findTsconfig, loadTypeEvidence } from '../analysis/load-types.js';
import { transformSource } from '../register/transform-file.js';
import type { PlanReport } from '../rewrite/transform.js';

/**
 * `kiln explain <file.ts> [--export Name]`: what the plugin does to a file, without running it — each
 * rewritten function's graph segments and breaks, every break with its reason and a code frame.
 */
export function explainFile(file: string, only?: string, json = false, options: { types?: boolean } = {}): string {
  if (!existsSync(file)) throw new KilnError(`kiln explain: '${file}' does not exist`);
  const source = readFileSync(file, 'utf8');
  // Type-aware by default where the file belongs to a TypeScript project (`--no-types` turns it off).
  const types = (options.types ?? findTsconfig(file) !== undefined) ? loadTypeEvidence([file], file) : undefined;
  const { report } = transformSource(source, resolve(file), { sourceMaps: false, ...(types ? { pluginOptions: { types } } : {}) });
  let plans = report?.plans ?? [];
  if (only !== undefined) {
    plans = plans.filter((p) => p.name === only || p.name.startsWith(`${only}.`));
    if (plans.length === 0) {
      const known = (report?.plans ?? []).map((p) => p.name.split('.')[0]).filter((n, i, a) => a.indexOf(n) === i);
      throw new KilnError(
        `kiln explain: ${file} has no rewritten class or function named '${only}' (found: ${known.join(', ') || 'none'})`,
      );
    }
  }
  if (json) return JSON.stringify({ file, plans, skipped: report?.skipped ?? [] }, null, 2);
  const frame = (loc: string) => {
    const [line, column] = loc.split(':').map(Number);
    return codeFrameColumns(source, { start: { line: line!, column: column! } }, { linesAbove: 1, linesBelow: 1 })
      .split('\n')
      .map((l) => `        ${l}`);
  };
  const lines = [`${file}: ${plans.length} function${plans.length === 1 ? '' : 's'} rewritten by kiln/plugin`];
  for (const p of plans) lines.push('', ...describePlan(p, frame));
  for (const s of report?.skipped ?? []) lines.push('', `  ${s.name} (line ${s.line}) left for run-time capture: ${s.reason}`);
  lines.push(
    '',
    'Guards are taken when a graph is captured: input shapes, dtypes and requiresGrad, grad mode, module structure,',
    'hooks and `training`, and every plain attribute the graph reads. explain(model)(...inputs) lists them.',
  );
  return lines.join('\n');
}

function describePlan(p: PlanReport, frame: (loc: string) => string[]): string[] {
  const graphs = p.segments.filter((s) => s.kind === 'graph').length;
  const breaks = p.segments.length - graphs + (p.unsupported ? 1 : 0);
  const out = [
    `  ${p.name} (line ${p.line}): ${graphs} graph segment${graphs === 1 ? '' : 's'}, ${breaks} break${breaks === 1 ? '' : 's'}`,
  ];
  if (p.unsupported) {
    out.push(`    runs eagerly: ${p.unsupported.reason}`, ...frame(p.unsupported.loc));
    return out;
  }
  const width = Math.max(...p.segments.map((s) => s.loc.length));
  for (const s of p.segments) {
    const where = s.loc.padEnd(width);
    if (s.kind === 'graph') out.push(`    graph  ${where}  ${s.statements} statement${s.statements === 1 ? '' : 's'} captured`);
    else if (s.kind === 'branch')
      out.push(`    if     ${where}  ${s.reason}; the condition runs eagerly, the branch it picks is captured`, ...frame(s.loc));
    else out.push(`    break  ${where}  ${s.reason}`, ...frame(s.loc));
  }
  return out;
}
