import { LOG } from '../logging.js';
import { fmt } from '../runtime/shape.js';
import type { Plan } from './plan.js';

/**
 * The fusion report: one line per step of a plan, which graph nodes it computes and how. Printed to stderr
 * when `KILN_LOG` lists `kernels` (or `all`; src/logging.ts), and what a compiled program's `pprint()` returns.
 */

export const LOG_KERNELS = LOG.kernels;

function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) =>
    r
      .map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!)))
      .join('  ')
      .trimEnd(),
  );
}

/** The plan as an aligned table: step, kind, output shape, graph nodes (and why a node stayed eager). */
export function formatPlan(plan: Plan, title: string): string {
  const kernels = plan.steps.filter((s) => s.kind !== 'eager').length;
  const eager = plan.steps.length - kernels;
  const rows = [['#', 'kind', 'output', 'nodes']];
  plan.steps.forEach((s, i) => {
    const names = s.nodes.map((n) => n.name).join(', ');
    rows.push([String(i + 1), s.kind, fmt(s.shape), s.note ? `${names} (${s.note})` : names]);
  });
  const head = `${title}: ${kernels} kernel${kernels === 1 ? '' : 's'}, ${eager} eager step${eager === 1 ? '' : 's'} on ${plan.mode}`;
  return [head, ...table(rows).map((l) => `  ${l}`)].join('\n');
}

export function logLine(text: string): void {
  if (LOG_KERNELS) process.stderr.write(`${text}\n`);
}
