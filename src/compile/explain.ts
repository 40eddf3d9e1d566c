import { KilnError } from '../errors.js';
import type { GraphModule } from '../graph/graph-module.js';
import { Module } from '../runtime/nn/module.js';
import { countOps, eagerBackend } from './backends.js';
import { CompiledCallable, type BreakReason } from './compiled-callable.js';
import { OptimizedModule } from './compile.js';

export interface ExplainOutput {
  graphCount: number;
  graphBreakCount: number;
  breakReasons: BreakReason[];
  opCount: number;
  guards: string[];
  graphs: GraphModule[];
}

/**
 * `explain(modelOrFn)(...args)`: capture once, on fresh caches, and report what was captured — graphs, their
 * op count, the guards, and every graph break with its reason and source location.
 */
export function explain(model: Module | ((...args: never[]) => unknown)): (...args: unknown[]) => ExplainOutput {
  if (!(model instanceof Module) && typeof model !== 'function') throw new KilnError('explain: expected an nn.Module or a function');
  return (...args) => {
    const target = model instanceof OptimizedModule ? model.origMod : model;
    const graphs: GraphModule[] = [];
    const self = target instanceof Module ? target : undefined;
    const fn = (self ? self.forward : target) as (...a: unknown[]) => unknown;
    const callable = new CompiledCallable(fn, self, {
      backend: (gm, inputs) => {
        graphs.push(gm);
        return eagerBackend(gm, inputs);
      },
      fullgraph: false,
      dynamic: undefined,
      cacheSizeLimit: 1,
      errorOnRecompile: false,
    });
    const entry = callable.capture(args);
    const breakReasons = entry.breakReason ? [entry.breakReason] : [];
    return {
      graphCount: graphs.length,
      graphBreakCount: breakReasons.length,
      breakReasons,
      opCount: graphs.reduce((n, g) => n + countOps(g), 0),
      guards: entry.guards.map((g) => g.text),
      graphs,
    };
  };
}

/** The report as text for people: counts, each graph's code, each break with its location, then the guards. */
export function formatExplain(r: ExplainOutput): string {
  const lines = [`graphs: ${r.graphCount}   graph breaks: ${r.graphBreakCount}   ops: ${r.opCount}   guards: ${r.guards.length}`];
  r.graphs.forEach((g, i) => lines.push(`graph ${i + 1}:`, ...g.code.split('\n').map((l) => `  ${l}`)));
  for (const b of r.breakReasons) lines.push(`break at ${b.loc}:`, `  ${b.reason}`);
  lines.push('guards:', ...r.guards.map((g) => `  ${g}`));
  return lines.join('\n');
}
