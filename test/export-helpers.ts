import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportProgram, load, save, type ExportOptions, type ExportedProgram } from '../src/export/index.js';
import type { nn } from '../src/index.js';

/**
 * PyTorch re-runs its export tests on a serialised and on a retraced program (test/export/test_serialize.py,
 * test_retraceability.py). `routes` gives the same three here: the program as exported, the program saved and
 * loaded again, and `ep.module()` exported again (with the same options).
 */
export function routes(
  make: nn.Module | (() => nn.Module),
  args: readonly unknown[],
  options?: ExportOptions,
): [string, ExportedProgram][] {
  // a factory gives each route its own module: programs share their module's state, as PyTorch's do
  const fresh = () => (typeof make === 'function' ? make() : make);
  return [
    ['exported', exportProgram(fresh(), args, options)],
    ['saved and loaded', roundTrip(exportProgram(fresh(), args, options))],
    ['re-exported', exportProgram(exportProgram(fresh(), args, options).module(), args, options)],
  ];
}

export function roundTrip(ep: ExportedProgram): ExportedProgram {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-export-'));
  try {
    const path = join(dir, 'program.kiln');
    save(ep, path);
    return load(path);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The graph's op-call targets in order (`add`, `matmul`, …). */
export function opNames(ep: ExportedProgram): string[] {
  return ep.graphModule.graph.nodes
    .filter((n) => n.op === 'call_function')
    .map((n) => (n.target as { opName?: string; name: string }).opName ?? (n.target as { name: string }).name);
}
