import { KilnError } from '../errors.js';
import type { Schema } from '../runtime/op.js';
import { isPlainObject } from '../runtime/plain-object.js';
import type { Graph } from './graph.js';
import { propertyKey } from './naming.js';
import { normalizeArguments, type NormalizedArguments } from './normalize.js';

/** The six things a node can do (torch.fx's opcodes). */
export const OPCODES = ['placeholder', 'get_attr', 'call_function', 'call_method', 'call_module', 'output'] as const;
export type Opcode = (typeof OPCODES)[number];

/** A callable `call_function` target: an op from `ops` (it has `opName` and `schema`), a builtin or any function. */
export type FunctionTarget = ((...args: never[]) => unknown) & { readonly opName?: string; readonly schema?: Schema };

/** call_function: the function; call_method: the method name; call_module/get_attr: a dotted path; placeholder: the parameter name. */
export type Target = string | FunctionTarget;

/** What a node's args may hold: other nodes and plain JSON-like values, nested in arrays and plain objects. */
export type Argument = Node | number | string | boolean | null | undefined | readonly Argument[] | { readonly [key: string]: Argument };
export type Kwargs = Readonly<Record<string, Argument>>;

export { isPlainObject };

/** Rebuild `a` with every node replaced by `fn(node)`. */
export function mapArg<T>(a: Argument, fn: (n: Node) => T): unknown {
  if (a instanceof Node) return fn(a);
  if (Array.isArray(a)) return a.map((x: Argument) => mapArg(x, fn));
  if (isPlainObject(a)) return Object.fromEntries(Object.entries(a).map(([k, v]) => [k, mapArg(v as Argument, fn)]));
  return a;
}

/** Every node inside `a`, in order. */
export function nodesIn(a: Argument, out: Node[] = []): Node[] {
  if (a instanceof Node) out.push(a);
  else if (Array.isArray(a)) for (const x of a as Argument[]) nodesIn(x, out);
  else if (isPlainObject(a)) for (const v of Object.values(a)) nodesIn(v as Argument, out);
  return out;
}

/** Check that `a` can live in a graph (and be printed, generated and serialised): no tensors, class instances or functions. */
export function checkArgument(a: unknown, where: string): asserts a is Argument {
  if (a instanceof Node || a === null || a === undefined) return;
  switch (typeof a) {
    case 'number':
    case 'string':
    case 'boolean':
      return;
    case 'object':
      if (Array.isArray(a)) {
        a.forEach((x, i) => checkArgument(x, `${where}[${i}]`));
        return;
      }
      if (isPlainObject(a)) {
        for (const [k, v] of Object.entries(a)) checkArgument(v, `${where}.${k}`);
        return;
      }
      throw new KilnError(`${where}: a ${a.constructor?.name ?? 'object'} cannot be stored in a graph argument`);
    default:
      throw new KilnError(`${where}: a ${typeof a} cannot be stored in a graph argument`);
  }
}

/** The display name of a target: an op's name, a function's name, or the path/method string itself. */
export function targetName(t: Target): string {
  return typeof t === 'string' ? t : (t.opName ?? t.name) || 'anonymous';
}

/** One operation in a Graph. Nodes form a doubly linked list owned by the graph; `users` are kept in sync with args. */
export class Node {
  readonly users = new Map<Node, null>();
  /** Free-form facts passes attach: `tensorMeta`, `stackTrace`, … */
  meta: Record<string, unknown> = {};
  /** Set when the node is removed from its graph; a removed node must not be used again. */
  erased = false;
  /** Filled by `passes.getSizeOfAllNodes`. */
  sizeBytes?: { outputSize: number; totalSize: number };
  /** @internal list links, maintained by Graph */
  _prev: Node;
  /** @internal */
  _next: Node;
  private _args: readonly Argument[] = [];
  private _kwargs: Kwargs = {};
  private readonly inputs = new Map<Node, null>();

  /** @internal use the Graph's methods to create nodes */
  constructor(
    readonly graph: Graph,
    public name: string,
    readonly op: Opcode | 'root',
    public target: Target,
    args: readonly Argument[],
    kwargs: Kwargs,
  ) {
    this._prev = this;
    this._next = this;
    this.setInputs(args, kwargs);
  }

  get args(): readonly Argument[] {
    return this._args;
  }
  set args(a: readonly Argument[]) {
    this.setInputs(a, this._kwargs);
  }
  get kwargs(): Kwargs {
    return this._kwargs;
  }
  set kwargs(k: Kwargs) {
    this.setInputs(this._args, k);
  }

  /** The next and previous node in the graph (the graph's root sentinel at either end). */
  get next(): Node {
    return this._next;
  }
  get prev(): Node {
    return this._prev;
  }

  private setInputs(args: readonly Argument[], kwargs: Kwargs): void {
    checkArgument(args, `${this.name}.args`);
    checkArgument(kwargs, `${this.name}.kwargs`);
    for (const n of this.inputs.keys()) n.users.delete(this);
    this.inputs.clear();
    this._args = args;
    this._kwargs = kwargs;
    for (const n of nodesIn(args as Argument)) this.inputs.set(n, null);
    for (const n of nodesIn(kwargs)) this.inputs.set(n, null);
    for (const n of this.inputs.keys()) n.users.set(this, null);
  }

  /** The distinct nodes this one reads, in argument order. */
  allInputNodes(): Node[] {
    return [...this.inputs.keys()];
  }

  updateArg(index: number, arg: Argument): void {
    const args = [...this._args];
    args[index] = arg;
    this.args = args;
  }

  updateKwarg(key: string, arg: Argument): void {
    this.kwargs = { ...this._kwargs, [key]: arg };
  }

  /** Make `replacement` stand in for this node in every user (those `filter` accepts); returns the users changed. */
  replaceAllUsesWith(replacement: Node, filter: (user: Node) => boolean = () => true): Node[] {
    const changed = [...this.users.keys()].filter(filter);
    for (const user of changed) user.replaceInputWith(this, replacement);
    return changed;
  }

  replaceInputWith(old: Node, replacement: Node): void {
    const swap = (n: Node) => (n === old ? replacement : n);
    this.setInputs(mapArg(this._args as Argument, swap) as Argument[], mapArg(this._kwargs, swap) as Kwargs);
  }

  /** Move `x` to just before this node. */
  prepend(x: Node): void {
    if (x === this) return;
    this.graph._unlink(x);
    this.graph._linkBefore(x, this);
  }

  /** Move `x` to just after this node. */
  append(x: Node): void {
    this._next.prepend(x);
  }

  /** Arguments bound to parameter names by the target's schema or signature, or undefined when unknown. */
  normalizedArguments(root?: unknown): NormalizedArguments | undefined {
    return normalizeArguments(this, root);
  }

  /** Nodes with side effects that dead-code elimination keeps although nothing reads them. */
  isImpure(): boolean {
    if (this.op === 'placeholder' || this.op === 'output') return true;
    if (this.op === 'call_method') return typeof this.target === 'string' && this.target.endsWith('_');
    if (this.op === 'call_function') return IMPURE_FUNCTIONS.has(targetName(this.target)) || targetName(this.target).endsWith('_');
    if (this.op === 'call_module') {
      try {
        const mod = this.graph.owningModule?.resolveTarget(this.target as string) as { _isImpure?: boolean } | undefined;
        return mod?._isImpure === true;
      } catch {
        return false;
      }
    }
    return false;
  }

  /** FX's one-line form: `%add : [#users=1] = call_function[target=add](args = (%a, %b), kwargs = {})`. */
  format(): string {
    const head = `%${this.name} : [#users=${this.users.size}] = `;
    switch (this.op) {
      case 'placeholder': {
        const dflt = this._args.length > 0 ? `[default=${formatArg(this._args[0])}]` : '';
        return `${head}placeholder[target=${targetName(this.target)}]${dflt}`;
      }
      case 'output':
        return `return ${formatArg(this._args[0], '')}`;
      case 'root':
        return '<root>';
      default:
        return `${head}${this.op}[target=${targetName(this.target)}](args = ${formatArgs(this._args)}, kwargs = ${formatArg(this._kwargs)})`;
    }
  }

  toString(): string {
    return this.name;
  }
}

/** Functions dead-code elimination must keep (their effect is the point). */
export const IMPURE_FUNCTIONS = new Set(['_assert', '_set_grad_enabled']);

/** A readable form of an argument for printing: nodes as `%name`, JS literals otherwise. */
export function formatArg(a: unknown, nodePrefix = '%'): string {
  if (a instanceof Node) return `${nodePrefix}${a.name}`;
  if (Array.isArray(a)) return `[${a.map((x) => formatArg(x, nodePrefix)).join(', ')}]`;
  if (isPlainObject(a)) {
    const parts = Object.entries(a).map(([k, v]) => `${propertyKey(k)}: ${formatArg(v, nodePrefix)}`);
    return parts.length ? `{${parts.join(', ')}}` : '{}';
  }
  if (typeof a === 'string') return JSON.stringify(a);
  if (Object.is(a, -0)) return '-0';
  return String(a);
}

export function formatArgs(args: readonly unknown[], nodePrefix = '%'): string {
  return `(${args.map((x) => formatArg(x, nodePrefix)).join(', ')})`;
}
