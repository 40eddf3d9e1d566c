import { GraphLintError, KilnError } from '../errors.js';
import { Namespace, snakeCase } from './naming.js';
import {
  Node,
  formatArg,
  formatArgs,
  mapArg,
  targetName,
  type Argument,
  type FunctionTarget,
  type Kwargs,
  type Opcode,
  type Target,
} from './node.js';
import { graphFromJSON, graphToJSON, type GraphJSON } from './serialize.js';

/** The module a graph belongs to, as far as the graph needs it (lint and DCE look targets up). */
export interface OwningModule {
  /** The member at a dotted path; throws when there is none. */
  resolveTarget(path: string): unknown;
}

/**
 * An ordered list of nodes (torch.fx's Graph): placeholders, then the computation, then one output.
 * New nodes go at the insertion point (the end unless `insertBefore`/`insertAfter` moved it).
 */
export class Graph {
  /** The sentinel that closes the node ring: `root.next` is the first node, `root.prev` the last. */
  readonly root: Node;
  owningModule: OwningModule | undefined;
  private readonly namespace = new Namespace();
  private insertPoint: Node;
  private count = 0;

  constructor() {
    this.root = new Node(this, '', 'root', '', [], {});
    this.insertPoint = this.root;
  }

  /** The nodes in order (a snapshot: safe to erase or insert while iterating it). */
  get nodes(): Node[] {
    const out: Node[] = [];
    for (let n = this.root.next; n !== this.root; n = n.next) out.push(n);
    return out;
  }

  get length(): number {
    return this.count;
  }

  [Symbol.iterator](): Iterator<Node> {
    return this.nodes[Symbol.iterator]();
  }

  /** The output node, if the graph has one. */
  get outputNode(): Node | undefined {
    for (let n = this.root.prev; n !== this.root; n = n.prev) if (n.op === 'output') return n;
    return undefined;
  }

  findNodes({ op, target }: { op: Opcode; target?: Target }): Node[] {
    return this.nodes.filter((n) => n.op === op && (target === undefined || n.target === target));
  }

  /** Add a node at the insertion point. Its name derives from `name` or the target and is made unique. */
  createNode(op: Opcode, target: Target, args: readonly Argument[] = [], kwargs: Kwargs = {}, name?: string): Node {
    if (op === 'call_function' && typeof target !== 'function') {
      throw new KilnError(`createNode: a call_function target must be a function, got ${typeof target}`);
    }
    if (op !== 'call_function' && typeof target !== 'string') {
      throw new KilnError(`createNode: a ${op} target must be a string, got ${typeof target}`);
    }
    const unique = this.namespace.create(name ?? (op === 'output' ? 'output' : snakeCase(targetName(target))));
    const node = new Node(this, unique, op, target, args, kwargs);
    this._linkBefore(node, this.insertPoint);
    return node;
  }

  /** Give `node` a new unique name derived from `candidate` (a runtime trace names values after the user's variables). */
  renameNode(node: Node, candidate: string): void {
    if (node.graph !== this) throw new KilnError(`renameNode: node '${node.name}' belongs to another graph`);
    node.name = this.namespace.create(candidate);
  }

  /** A forward parameter; `defaultValue` is used when the caller leaves it out. */
  placeholder(name: string, defaultValue?: Argument): Node {
    return this.createNode('placeholder', name, defaultValue === undefined ? [] : [defaultValue], {}, name);
  }

  getAttr(path: string): Node {
    return this.createNode('get_attr', path);
  }

  callFunction(fn: FunctionTarget, args: readonly Argument[] = [], kwargs: Kwargs = {}): Node {
    return this.createNode('call_function', fn, args, kwargs);
  }

  callMethod(method: string, args: readonly Argument[] = [], kwargs: Kwargs = {}): Node {
    return this.createNode('call_method', method, args, kwargs);
  }

  callModule(path: string, args: readonly Argument[] = [], kwargs: Kwargs = {}): Node {
    return this.createNode('call_module', path, args, kwargs);
  }

  output(result: Argument): Node {
    return this.createNode('output', 'output', [result], {}, 'output');
  }

  /** Remove `node`; it must have no users left (replace them first). */
  eraseNode(node: Node): void {
    if (node.graph !== this) throw new KilnError(`eraseNode: node '${node.name}' belongs to another graph`);
    if (node.erased) throw new KilnError(`eraseNode: node '${node.name}' was already erased`);
    if (node.users.size > 0) {
      const users = [...node.users.keys()].map((u) => u.name).join(', ');
      throw new KilnError(`eraseNode: node '${node.name}' still has ${node.users.size} user(s) (${users}); replace its uses first`);
    }
    if (this.insertPoint === node) this.insertPoint = node.next;
    this._unlink(node);
    node.args = [];
    node.kwargs = {};
    node.erased = true;
  }

  /** Run `fn` with new nodes going just before `node` (before the first node when `node` is undefined). */
  insertBefore<T>(node: Node | undefined, fn: () => T): T {
    const saved = this.insertPoint;
    this.insertPoint = node ?? this.root.next;
    try {
      return fn();
    } finally {
      this.insertPoint = saved;
    }
  }

  /** Run `fn` with new nodes going just after `node`, in creation order (at the end when `node` is undefined). */
  insertAfter<T>(node: Node | undefined, fn: () => T): T {
    return this.insertBefore(node ? node.next : this.root, fn);
  }

  /** FX's spelling of `insertBefore`. */
  insertingBefore<T>(node: Node | undefined, fn: () => T): T {
    return this.insertBefore(node, fn);
  }

  /** FX's spelling of `insertAfter`. */
  insertingAfter<T>(node: Node | undefined, fn: () => T): T {
    return this.insertAfter(node, fn);
  }

  /** A copy of `node` (from any graph) at the insertion point, its inputs mapped through `argTransform`. */
  nodeCopy(node: Node, argTransform: (n: Node) => Argument): Node {
    const args = mapArg(node.args as Argument, argTransform) as Argument[];
    const kwargs = mapArg(node.kwargs, argTransform) as Kwargs;
    const copy = this.createNode(node.op as Opcode, node.target, args, kwargs, node.name);
    copy.meta = { ...node.meta };
    return copy;
  }

  /** Copy every node of `src` except its output into this graph; `valMap` maps old nodes to new. Returns the output's value. */
  graphCopy(src: Graph, valMap: Map<Node, Node>): Argument | undefined {
    for (const n of src.nodes) {
      if (n.op === 'output') return mapArg(n.args[0], (x) => valMap.get(x)!) as Argument;
      valMap.set(
        n,
        this.nodeCopy(n, (x) => valMap.get(x)!),
      );
    }
    return undefined;
  }

  /** Remove nodes whose results nobody reads, keeping impure ones (in-place ops, `_assert`). True if any went. */
  eliminateDeadCode(): boolean {
    let changed = false;
    for (let n = this.root.prev; n !== this.root;) {
      const prev = n.prev;
      if (n.users.size === 0 && !n.isImpure()) {
        this.eraseNode(n);
        changed = true;
      }
      n = prev;
    }
    return changed;
  }

  /** Check the graph is well formed; throws GraphLintError naming the first problem. */
  lint(): void {
    const fail = (n: Node, what: string) => {
      throw new GraphLintError(`graph lint: node '${n.name}' (${n.op}): ${what}`);
    };
    const defined = new Set<Node>();
    const names = new Set<string>();
    const all = new Set(this.nodes);
    let outputs = 0;
    for (const n of all) {
      if (n.graph !== this) fail(n, 'belongs to another graph');
      if (n.erased) fail(n, 'was erased but is still in the node list');
      if (names.has(n.name)) fail(n, `duplicate name '${n.name}'`);
      names.add(n.name);
      for (const input of n.allInputNodes()) {
        if (input.erased) fail(n, `uses '${input.name}', which was erased`);
        if (input.graph !== this) fail(n, `uses '${input.name}' from another graph`);
        if (!defined.has(input)) fail(n, `uses '${input.name}' before it is defined`);
        if (!input.users.has(n)) fail(n, `reads '${input.name}' but is missing from its users`);
      }
      for (const user of n.users.keys()) {
        if (!all.has(user) || !user.allInputNodes().includes(n)) fail(n, `has a dangling user '${user.name}'`);
      }
      this.lintTarget(n, fail);
      if (n.op === 'output') outputs++;
      else if (outputs > 0) fail(n, 'comes after the output node');
      defined.add(n);
    }
    if (outputs !== 1) throw new GraphLintError(`graph lint: expected exactly one output node, found ${outputs}`);
  }

  private lintTarget(n: Node, fail: (n: Node, what: string) => never): void {
    if (n.op === 'call_function' && typeof n.target !== 'function') fail(n, 'target is not a function');
    if (n.op !== 'call_function' && typeof n.target !== 'string') fail(n, 'target is not a string');
    if ((n.op === 'call_module' || n.op === 'get_attr') && this.owningModule) {
      try {
        this.owningModule.resolveTarget(n.target as string);
      } catch {
        fail(n, `target '${String(n.target)}' does not exist on the owning module`);
      }
    }
  }

  /** FX's listing: one `%name : [#users=N] = op[target=…](args = …, kwargs = …)` line per node. */
  toString(): string {
    const params = this.nodes.filter((n) => n.op === 'placeholder').map((n) => n.name);
    return [`graph(${params.join(', ')}):`, ...this.nodes.map((n) => `    ${n.format()}`)].join('\n');
  }

  /** A table of every node: opcode, name, target, args, kwargs. Printed unless `print` is false; returned either way. */
  printTabular(print = true): string {
    const rows = this.nodes.map((n) => [n.op, n.name, targetName(n.target), formatArgs(n.args, ''), formatArg(n.kwargs, '')]);
    const table = tabulate(['opcode', 'name', 'target', 'args', 'kwargs'], rows);
    if (print) console.log(table);
    return table;
  }

  toJSON(): GraphJSON {
    return graphToJSON(this);
  }

  static fromJSON(json: unknown): Graph {
    return graphFromJSON(json, new Graph());
  }

  /** @internal */
  _linkBefore(node: Node, before: Node): void {
    node._prev = before._prev;
    node._next = before;
    before._prev._next = node;
    before._prev = node;
    this.count++;
  }

  /** @internal */
  _unlink(node: Node): void {
    node._prev._next = node._next;
    node._next._prev = node._prev;
    node._prev = node;
    node._next = node;
    this.count--;
  }
}

/** A plain-text table: header, a rule of dashes per column, then the rows, columns two spaces apart. */
export function tabulate(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}
