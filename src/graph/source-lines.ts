import { join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KilnError } from '../errors.js';
import type { Node } from './node.js';

/**
 * Errors thrown inside a captured graph name the user's source line of the node that failed, as torch.fx
 * records `stack_trace` in `node.meta`: the tracer stores the first user frame of each call node in
 * `node.meta.stackTrace`, and the graph's runners (generated forward, Interpreter, kernel plans) add it,
 * with the node's name, to the KilnError that escapes, once, at the innermost graph.
 */

/**
 * kiln's own source folders (this package's `src/`, its built `dist/src/` and `plugin/`, wherever it is
 * installed), so a user's own `src/runtime/…` is still the user's. Node's internals are never the user's either.
 */
const packageRoot = fileURLToPath(import.meta.url).replace(/[\\/](dist[\\/])?src[\\/]graph[\\/]source-lines\.[jt]s$/, '');
const KILN_DIRS = ['src', 'dist', 'plugin'].map((d) => join(packageRoot, d) + sep);
const isKilnFrame = (line: string) => line.includes('node:internal') || KILN_DIRS.some((d) => line.includes(d));

/** The first stack frame outside kiln, trimmed (`at Model.forward (model.ts:12:5)`), or undefined. */
export function userStackFrame(): string | undefined {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 40; // kiln's own frames (dispatch, nn containers) come first; the user's is below them
  const stack = new Error().stack ?? '';
  Error.stackTraceLimit = limit;
  const frame = stack
    .split('\n')
    .slice(2)
    .find((l) => l.trimStart().startsWith('at ') && !isKilnFrame(l));
  return frame?.trim();
}

const annotated = new WeakSet<object>();

/**
 * Add `(in graph node 'name')` and the node's user frame to a KilnError escaping a graph (message and
 * stack both), keeping its class. Errors already annotated by an inner graph are left as they are.
 * Returns `e`, so callers can `throw annotateGraphError(e, node)`.
 */
export function annotateGraphError(e: unknown, node: Node | undefined): unknown {
  if (!(e instanceof KilnError) || node === undefined || annotated.has(e)) return e;
  annotated.add(e);
  const before = e.message;
  const stack = e.stack; // formatted now, with the message as it was
  const frame = node.meta.stackTrace;
  // After the first line, so a message that goes on (a code frame, the node being executed) keeps its tail below.
  const cut = before.indexOf('\n') < 0 ? before.length : before.indexOf('\n');
  const where = ` (in graph node '${node.name}')${typeof frame === 'string' ? `\n    ${frame}` : ''}`;
  e.message = before.slice(0, cut) + where + before.slice(cut);
  const at = typeof stack === 'string' ? stack.indexOf(before) : -1;
  if (at >= 0) e.stack = stack!.slice(0, at) + e.message + stack!.slice(at + before.length);
  return e;
}
