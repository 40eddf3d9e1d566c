import { KilnError, ValueError } from '../errors.js';
import { Module } from '../runtime/nn/module.js';
import type { Tensor } from '../runtime/tensor.js';
import { copyAttr, lookupAttr } from './attrs.js';
import { generateForward, literal } from './codegen.js';
import type { Graph } from './graph.js';
import { loadGraphModule, saveGraphModule, type LoadOptions } from './save.js';

function hide(obj: object, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, writable: true, configurable: true, enumerable: false });
}

/**
 * `forward` behind an argument count check with the same parameter list (re-tracing reads it): JavaScript
 * would run a call with a missing argument on `undefined` and drop an extra one. FX raises a TypeError.
 */
function checkedArity(className: string, graph: Graph, forward: (...args: unknown[]) => unknown): (...args: unknown[]) => unknown {
  const placeholders = graph.nodes.filter((n) => n.op === 'placeholder');
  const params = placeholders.map((n) => (n.args.length > 0 ? `${n.name} = ${literal(n.args[0])}` : n.name));
  const required = placeholders.reduce((r, n, i) => (n.args.length === 0 ? i + 1 : r), 0);
  const check = (count: number) => {
    if (count >= required && count <= params.length) return;
    const want = required === params.length ? `${required}` : `${required} to ${params.length}`;
    throw new ValueError(`${className}.forward(${params.join(', ')}) takes ${want} argument(s), got ${count}`);
  };
  // Names no placeholder takes (a graph input may well be called `inner` or `check`).
  const make = new Function(
    '__kiln_forward',
    '__kiln_check',
    `"use strict";\nreturn function forward(${params.join(', ')}) {\n  __kiln_check(arguments.length);\n  return __kiln_forward.apply(this, arguments);\n};`,
  ) as (inner: unknown, check: unknown) => (...args: unknown[]) => unknown;
  return make(forward, check);
}

/**
 * An nn.Module whose `forward` is JavaScript generated from `graph` (torch.fx's GraphModule). The
 * submodules, parameters, buffers and constants the graph names are copied from `root` (shared, not
 * cloned) under the same paths, so state-dict keys stay the same.
 */
export class GraphModule extends Module {
  declare readonly className: string;
  declare private _graph: Graph;
  declare private _code: string;
  declare private _forward: (...args: unknown[]) => unknown;

  /**
   * @param root a module to copy targets from, or a record of path → module/tensor
   * @param constants @internal tensors created during tracing (`_tensor_constant0`), looked up before `root`
   */
  constructor(
    root: Module | Readonly<Record<string, unknown>>,
    graph: Graph,
    className = 'GraphModule',
    constants?: ReadonlyMap<string, Tensor | Module>,
  ) {
    super();
    hide(this, 'className', className);
    if (root instanceof Module) this.training = root.training;
    const copied = new Set<string>();
    for (const n of graph.nodes) {
      if (n.op !== 'call_module' && n.op !== 'get_attr') continue;
      const path = n.target as string;
      if (copied.has(path)) continue; // a module called twice is copied once
      copied.add(path);
      if (constants?.has(path)) copyAttr(this, this, path, constants.get(path));
      else if (root instanceof Module) copyAttr(root, this, path);
      else if (path in root) copyAttr(this, this, path, root[path]);
      else throw new KilnError(`GraphModule: node '${n.name}' refers to '${path}', which the given attribute record does not have`);
    }
    this.graph = graph;
  }

  get graph(): Graph {
    return this._graph;
  }

  /** Setting a new graph adopts it and regenerates `forward`. */
  set graph(g: Graph) {
    hide(this, '_graph', g);
    g.owningModule = this;
    this.recompile();
  }

  /** The generated source of `forward`. */
  get code(): string {
    return this._code;
  }

  /** Regenerate `forward` from the graph; call after editing the graph in place. Returns the new code. */
  recompile(): string {
    const { code, forward } = generateForward(this._graph);
    hide(this, '_code', code);
    hide(this, '_forward', forward);
    // The generated function is this instance's forward, so its parameter names are visible (re-tracing a GraphModule).
    hide(this, 'forward', checkedArity(this.className, this._graph, forward));
    return code;
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  override forward(...args: any[]): any {
    return Reflect.apply(this._forward, this, args);
  }

  /** The member at a dotted path (submodule, parameter, buffer or constant); throws if there is none. */
  resolveTarget(path: string): unknown {
    return lookupAttr(this, path);
  }

  /** Write graph and weights to `path` (format `kiln.graph_module`, see save.ts). */
  save(path: string): void {
    saveGraphModule(this, path);
  }

  /** Read a GraphModule written by `save`; custom module classes it names go in `options.modules`. */
  static load(path: string, options?: LoadOptions): GraphModule {
    return loadGraphModule(path, options);
  }

  /** The generated class as readable source, nested GraphModules included. Printed unless `print` is false. */
  printReadable(print = true): string {
    const text = this.readable('');
    if (print) console.log(text);
    return text;
  }

  private readable(indent: string): string {
    const inner = indent + '  ';
    const lines = [`${indent}class ${this.className} extends GraphModule {`];
    for (const [name, child] of this.namedChildren()) {
      if (child instanceof GraphModule) lines.push(`${inner}// ${name}:`, child.readable(inner), '');
    }
    lines.push(...this._code.split('\n').map((l) => inner + l), `${indent}}`);
    return lines.join('\n');
  }
}
