import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as src from '../src/export/index.js';
import type { ExportOptions, ExportedProgram } from '../src/export/index.js';
import type { nn } from '../src/index.js';

/**
 * PyTorch re-runs its export tests on a serialised and on a retraced program (test/export/test_serialize.py,
 * test_retraceability.py). `routes` gives the same three here: the program as exported, the program saved and
 * loaded again, and `ep.module()` exported again (with the same options). `routesOf(api)` makes the same for
 * another copy of kiln/export (the built package, which models rewritten by the plugin use).
 */
type Api = Pick<typeof src, 'exportProgram' | 'save' | 'load'>;

export function routesOf(api: Api) {
  const roundTrip = (ep: ExportedProgram): ExportedProgram => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-export-'));
    try {
      const path = join(dir, 'program.kiln');
      api.save(ep, path);
      return api.load(path);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  const routes = (make: nn.Module | (() => nn.Module), args: readonly unknown[], options?: ExportOptions): [string, ExportedProgram][] => {
    // a factory gives each route its own module: programs share their module's state, as PyTorch's do
    const fresh = () => (typeof make === 'function' ? make() : make);
    return [
      ['exported', api.exportProgram(fresh(), args, options)],
      ['saved and loaded', roundTrip(api.exportProgram(fresh(), args, options))],
      ['re-exported', api.exportProgram(api.exportProgram(fresh(), args, options).module(), args, options)],
    ];
  };
  return { routes, roundTrip };
}

export const { routes, roundTrip } = routesOf(src);

/** The graph's op-call targets in order (`add`, `matmul`, …). */
export function opNames(ep: ExportedProgram): string[] {
  return ep.graphModule.graph.nodes
    .filter((n) => n.op === 'call_function')
    .map((n) => (n.target as { opName?: string; name: string }).opName ?? (n.target as { name: string }).name);
}
