import { KilnError } from '../errors.js';
import { OPS } from '../runtime/op.js';
import { BUILTINS } from './builtins.js';
import { firstGradModeNode } from './grad-mode.js';
import type { Graph } from './graph.js';
import { isIdentifier, memberAccess, memberChain, propertyKey } from './naming.js';
import { Node, isPlainObject, targetName, type Argument, type FunctionTarget } from './node.js';
import { isUnsafeMember } from './safe-targets.js';
import { annotateGraphError } from './source-lines.js';

/**
 * JavaScript for a graph's `forward`, built only from the graph: names are identifiers the Namespace
 * vetted, strings and keys go through JSON.stringify, numbers through their literal forms, so nothing
 * a model author wrote can reach the generated source as code. Op targets are referenced as `ops.name`,
 * fx builtins as `fx.name`, and any other function as `globals[i]`.
 */

export interface GeneratedForward {
  /** The method's source, e.g. `forward(x) {\n  const relu = ops.relu(x);\n  return relu;\n}`. */
  readonly code: string;
  readonly forward: (...args: unknown[]) => unknown;
}

export function literal(a: unknown): string {
  if (a instanceof Node) return a.name;
  if (a === undefined) return 'undefined';
  if (a === null) return 'null';
  if (Array.isArray(a)) return `[${a.map(literal).join(', ')}]`;
  if (isPlainObject(a)) {
    const parts = Object.entries(a).map(([k, v]) => `${propertyKey(k)}: ${literal(v)}`);
    return parts.length ? `{ ${parts.join(', ')} }` : '{}';
  }
  switch (typeof a) {
    case 'number':
      return Object.is(a, -0) ? '-0' : Number.isNaN(a) ? 'NaN' : a === Infinity ? 'Infinity' : a === -Infinity ? '-Infinity' : String(a);
    case 'string':
      return JSON.stringify(a);
    case 'boolean':
      return String(a);
    default:
      throw new KilnError(`codegen: cannot write a ${typeof a} as a literal`);
  }
}

function callArgs(args: readonly Argument[], kwargs: Readonly<Record<string, Argument>>): string {
  const parts = args.map(literal);
  if (Object.keys(kwargs).length > 0) parts.push(literal(kwargs));
  return parts.join(', ');
}

/**
 * Refuse methods and path segments every object or function inherits (`constructor`, `call`, `__proto__`, …):
 * with them a graph could reach `Function` and run code, which no model needs.
 */
function checkMemberNames(n: Node): void {
  const names =
    n.op === 'call_method' ? [n.target as string] : n.op === 'get_attr' || n.op === 'call_module' ? (n.target as string).split('.') : [];
  const bad = names.find(isUnsafeMember);
  if (bad !== undefined) {
    throw new KilnError(
      `codegen: ${n.op} node '${n.name}' names '${bad}', which a graph may not use (it leads to JavaScript's Function, not to a tensor op)`,
    );
  }
}

export function generateForward(graph: Graph): GeneratedForward {
  const params: string[] = [];
  const body: string[] = [];
  const globals: FunctionTarget[] = [];
  const fnRef = (fn: FunctionTarget): string => {
    const name = targetName(fn);
    if (OPS.get(name) === fn) return `ops.${name}`;
    if (BUILTINS.get(name) === fn) return `fx.${name}`;
    let i = globals.indexOf(fn);
    if (i < 0) i = globals.push(fn) - 1;
    return `globals[${i}]`;
  };
  let returned = false;
  // From the first grad-mode switch on, the body runs in try/finally: a throw inside a region still leaves
  // grad mode as the caller had it (that switch's value).
  const gradSwitch = firstGradModeNode(graph);
  let tryFrom = -1;
  for (const n of graph.nodes) {
    if (!isIdentifier(n.name)) throw new KilnError(`codegen: node name ${JSON.stringify(n.name)} is not a valid JavaScript identifier`);
    checkMemberNames(n);
    switch (n.op) {
      case 'placeholder':
        params.push(n.args.length > 0 ? `${n.name} = ${literal(n.args[0])}` : n.name);
        break;
      case 'get_attr':
        body.push(`const ${n.name} = ${memberChain('this', n.target as string)};`);
        break;
      case 'call_function':
        body.push(`const ${n.name} = ${fnRef(n.target as FunctionTarget)}(${callArgs(n.args, n.kwargs)});`);
        if (n === gradSwitch) tryFrom = body.length;
        break;
      case 'call_method': {
        const [self, ...rest] = n.args;
        if (self === undefined) throw new KilnError(`codegen: call_method node '${n.name}' has no receiver (args[0])`);
        const recv = self instanceof Node ? self.name : `(${literal(self)})`;
        body.push(`const ${n.name} = ${recv}${memberAccess(n.target as string)}(${callArgs(rest, n.kwargs)});`);
        break;
      }
      case 'call_module':
        body.push(`const ${n.name} = ${memberChain('this', n.target as string)}.call(${callArgs(n.args, n.kwargs)});`);
        break;
      case 'output':
        body.push(`return ${literal(n.args[0])};`);
        returned = true;
        break;
      case 'root':
        break;
      default:
        n.op satisfies never;
    }
  }
  if (!returned) throw new KilnError('codegen: the graph has no output node');
  // `body` holds one line per node; the grad-mode try/finally goes around them for both the shown and the run code.
  const withGradRestore = (lines: readonly string[]): string[] => {
    if (!gradSwitch || tryFrom < 0) return [...lines];
    const inner = lines.slice(tryFrom).map((l) => `  ${l}`);
    const restore = `  ${fnRef(gradSwitch.target as FunctionTarget)}(${gradSwitch.name});`;
    return [...lines.slice(0, tryFrom), 'try {', ...inner, '} finally {', restore, '}'];
  };
  const code = `forward(${params.join(', ')}) {\n${withGradRestore(body)
    .map((l) => `  ${l}`)
    .join('\n')}\n}`;
  const ops = Object.fromEntries(OPS);
  const fx = Object.fromEntries(BUILTINS);
  const { source, handler, failed } = withFailingNode(graph, params, body, withGradRestore);
  const make = new Function('ops', 'fx', 'globals', handler, `"use strict";\nreturn function ${source};`) as (
    o: unknown,
    f: unknown,
    g: unknown,
    h: unknown,
  ) => (...args: unknown[]) => unknown;
  return { code, forward: make(ops, fx, globals, failed) };
}

/**
 * The forward that runs: `code`'s body inside one try/catch, each call node preceded by `at = i`, so an
 * error that escapes names the node that threw (and its user source line) without a try per node.
 * The counter and handler get names no node or parameter has.
 */
function withFailingNode(graph: Graph, params: readonly string[], body: readonly string[], wrap: (lines: readonly string[]) => string[]) {
  const taken = new Set([...graph.nodes.map((n) => n.name), ...params.map((p) => p.split(' ')[0]!)]);
  const fresh = (base: string) => {
    let name = base;
    while (taken.has(name)) name += '$';
    return name;
  };
  const at = fresh('$at');
  const handler = fresh('$failed');
  const calls: Node[] = [];
  const lines: string[] = [];
  let line = 0;
  for (const n of graph.nodes) {
    if (n.op === 'placeholder' || n.op === 'root') continue;
    const text = body[line++]!;
    if (n.op === 'call_function' || n.op === 'call_method' || n.op === 'call_module') lines.push(`${at} = ${calls.push(n) - 1}; ${text}`);
    else lines.push(text);
  }
  const source =
    `forward(${params.join(', ')}) {\n  let ${at} = -1;\n  try {\n${wrap(lines)
      .map((l) => `    ${l}`)
      .join('\n')}\n  } ` + `catch (e) {\n    throw ${handler}(e, ${at});\n  }\n}`;
  return { source, handler, failed: (e: unknown, i: number) => annotateGraphError(e, calls[i]) };
}
