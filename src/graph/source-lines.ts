import { findSourceMap } from 'node:module';
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
export const isKilnFrame = (line: string): boolean => line.includes('node:internal') || KILN_DIRS.some((d) => line.includes(d));

/**
 * The first stack frame outside kiln (`at Model.forward (model.ts:12:5)`), or undefined. Read from V8's call
 * sites rather than the formatted stack: formatting every frame makes V8 keep line tables for each function on
 * the stack (about 0.8 MiB for a small model), and only the user's frame needs a line. Positions go through the
 * file's source map when Node has one (kiln/register turns them on), as a formatted stack would.
 */
export function userStackFrame(): string | undefined {
  const limit = Error.stackTraceLimit;
  const prepare = Error.prepareStackTrace;
  Error.stackTraceLimit = 40; // kiln's own frames (dispatch, nn containers) come first; the user's is below them
  Error.prepareStackTrace = (_e, sites) => sites;
  let sites: NodeJS.CallSite[];
  try {
    sites = (new Error().stack as unknown as NodeJS.CallSite[] | undefined) ?? [];
  } finally {
    Error.stackTraceLimit = limit;
    Error.prepareStackTrace = prepare;
  }
  const site = sites.slice(1).find((c) => {
    const file = c.getFileName();
    return file !== undefined && file !== null && !file.startsWith('node:') && !isKilnFrame(file);
  });
  return site ? formatSite(site) : undefined;
}

/** `at Type.method (file:line:col)` as V8 writes a frame, with the position mapped through a source map if any. */
function formatSite(site: NodeJS.CallSite): string {
  let file = site.getFileName()!;
  let line = site.getLineNumber() ?? 0;
  let column = site.getColumnNumber() ?? 0;
  const map = sourceMapOf(file);
  const entry = map?.findEntry(line - 1, column - 1) as
    { originalSource?: string; originalLine?: number; originalColumn?: number } | undefined;
  if (entry?.originalSource !== undefined && entry.originalLine !== undefined) {
    file = entry.originalSource;
    line = entry.originalLine + 1;
    column = (entry.originalColumn ?? 0) + 1;
  }
  const fn = site.getFunctionName() ?? site.getMethodName();
  const type = site.isToplevel() ? null : site.getTypeName();
  const name = fn ? (type && !fn.startsWith(`${type}.`) ? `${type}.${fn}` : fn) : undefined;
  const where = `${file}:${line}:${column}`;
  return name ? `at ${name} (${where})` : `at ${where}`;
}

function sourceMapOf(file: string): { findEntry(line: number, column: number): object } | undefined {
  try {
    return findSourceMap(file) ?? undefined;
  } catch {
    return undefined;
  }
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
