import { KilnError } from '../errors.js';
import type { Node } from './node.js';

/**
 * Errors thrown inside a captured graph name the user's source line of the node that failed, as torch.fx
 * records `stack_trace` in `node.meta`: the tracer stores the first user frame of each call node in
 * `node.meta.stackTrace`, and the graph's runners (generated forward, Interpreter, kernel plans) add it,
 * with the node's name, to the KilnError that escapes, once, at the innermost graph.
 */

/** Frames of kiln's own code (or Node's), which are never the user's line. */
const KILN_OWN_FRAME = /[\\/](src|dist[\\/]src)[\\/](graph|runtime|analysis|compile|jit|kernels)[\\/]|node:internal/;

/** The first stack frame outside kiln, trimmed (`at Model.forward (model.ts:12:5)`), or undefined. */
export function userStackFrame(): string | undefined {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 40; // kiln's own frames (dispatch, nn containers) come first; the user's is below them
  const stack = new Error().stack ?? '';
  Error.stackTraceLimit = limit;
  const frame = stack
    .split('\n')
    .slice(2)
    .find((l) => l.trimStart().startsWith('at ') && !KILN_OWN_FRAME.test(l));
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
  e.message = `${before} (in graph node '${node.name}')${typeof frame === 'string' ? `\n    ${frame}` : ''}`;
  const at = typeof stack === 'string' ? stack.indexOf(before) : -1;
  if (at >= 0) e.stack = stack!.slice(0, at) + e.message + stack!.slice(at + before.length);
  return e;
}
