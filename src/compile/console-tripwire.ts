import { TraceError } from '../errors.js';
import { userFrame } from '../graph/tracer.js';

/** The console methods a trace trips on (each writes somewhere: a graph would drop the write). */
const METHODS = ['log', 'info', 'warn', 'error', 'debug', 'trace', 'dir', 'dirxml', 'table', 'count', 'countReset'] as const;

/**
 * Run `trace` with every console method throwing a TraceError where it is called. Code whose only breaks
 * are console calls (source-check.ts `onlyConsoleBreaks`) can then be traced whole: a console call that
 * runs stops the trace at its own line (a graph break, or fullgraph's error), one behind an untaken branch
 * (`if (this.debug) console.log(h)`, the branch guarded) costs nothing: a break only where it runs.
 */
export function trippingConsole<T>(trace: () => T): T {
  const saved = METHODS.map((m) => [m, console[m]] as const);
  for (const m of METHODS) {
    console[m] = () => {
      throw new TraceError(`console.${m}() is a side effect: it runs eagerly, every call${userFrame()}`);
    };
  }
  try {
    return trace();
  } finally {
    for (const [m, f] of saved) (console as unknown as Record<string, unknown>)[m] = f;
  }
}
