import { KilnError } from '../errors.js';
import { setTraceDispatch } from '../runtime/dispatch.js';
import type { Module } from '../runtime/nn/module.js';
import { lookupAttr } from './attrs.js';
import { firstGradModeNode, restoringGradMode } from './grad-mode.js';
import { Graph } from './graph.js';
import { GraphModule } from './graph-module.js';
import { Node, mapArg, type Argument, type FunctionTarget, type Kwargs, type Target } from './node.js';
import { isUnsafeMember } from './safe-targets.js';
import { annotateGraphError } from './source-lines.js';
import { Tracer, proxyNode } from './tracer.js';

type Args = unknown[];
type KwargsValues = Record<string, unknown>;

function call(fn: (...a: unknown[]) => unknown, self: unknown, args: Args, kwargs: KwargsValues): unknown {
  return Object.keys(kwargs).length > 0 ? fn.apply(self, [...args, kwargs]) : fn.apply(self, args);
}

/**
 * Runs a GraphModule node by node (torch.fx's Interpreter). Override one of the per-opcode methods to
 * change how that kind of node runs; values no later node reads are dropped as soon as possible.
 */
export class Interpreter {
  readonly graph: Graph;
  env = new Map<Node, unknown>();
  private args: Args = [];
  private argIndex = 0;
  private readonly freeAfter = new Map<Node, Node[]>();
  /** Whether the graph switches grad mode (then a run puts the caller's mode back however it ends). */
  private readonly switchesGradMode: boolean;

  constructor(
    readonly module: GraphModule,
    readonly garbageCollectValues = true,
  ) {
    if (!(module instanceof GraphModule)) throw new KilnError('Interpreter: expected a GraphModule (use fx.symbolicTrace first)');
    this.graph = module.graph;
    this.switchesGradMode = firstGradModeNode(this.graph) !== undefined;
    // For each node, the values whose last reader it is.
    const seen = new Set<Node>();
    for (const n of [...this.graph.nodes].reverse()) {
      for (const input of n.allInputNodes()) {
        if (seen.has(input)) continue;
        seen.add(input);
        const list = this.freeAfter.get(n) ?? [];
        list.push(input);
        this.freeAfter.set(n, list);
      }
    }
  }

  /** Run the graph on `args` (one per placeholder) and return what the output node returns. */
  run(...args: Args): unknown {
    return this.switchesGradMode ? restoringGradMode(() => this.runNodes(args)) : this.runNodes(args);
  }

  private runNodes(args: Args): unknown {
    this.env = new Map();
    this.args = args;
    this.argIndex = 0;
    for (const n of this.graph.nodes) {
      let value: unknown;
      try {
        value = this.runNode(n);
      } catch (e) {
        if (e instanceof KilnError && !e.message.includes('\n  while executing ')) e.message += `\n  while executing ${n.format()}`;
        annotateGraphError(e, n);
        throw e;
      }
      this.env.set(n, value);
      if (this.garbageCollectValues) for (const dead of this.freeAfter.get(n) ?? []) this.env.delete(dead);
      if (n.op === 'output') return value;
    }
    throw new KilnError('Interpreter: the graph has no output node');
  }

  /** Run one node: fetch its inputs from the environment, then dispatch on its opcode. */
  runNode(n: Node): unknown {
    const args = this.fetchArgs(n.args) as Args;
    const kwargs = this.fetchArgs(n.kwargs) as KwargsValues;
    switch (n.op) {
      case 'placeholder':
        return this.placeholder(n.target, args, kwargs);
      case 'get_attr':
        return this.getAttr(n.target, args, kwargs);
      case 'call_function':
        return this.callFunction(n.target, args, kwargs);
      case 'call_method':
        return this.callMethod(n.target, args, kwargs);
      case 'call_module':
        return this.callModule(n.target, args, kwargs);
      case 'output':
        return this.output(n.target, args, kwargs);
      case 'root':
        throw new KilnError('Interpreter: the root sentinel is not a node to run');
      default:
        return n.op satisfies never;
    }
  }

  placeholder(target: Target, args: Args, _kwargs: KwargsValues): unknown {
    if (this.argIndex < this.args.length) return this.args[this.argIndex++];
    this.argIndex++;
    if (args.length > 0) return args[0];
    throw new KilnError(
      `${this.module.className}: missing argument '${String(target)}' (expected ${this.graph.findNodes({ op: 'placeholder' }).length})`,
    );
  }

  getAttr(target: Target, _args: Args, _kwargs: KwargsValues): unknown {
    return this.fetchAttr(target as string);
  }

  callFunction(target: Target, args: Args, kwargs: KwargsValues): unknown {
    return call(target as FunctionTarget as (...a: unknown[]) => unknown, undefined, args, kwargs);
  }

  callMethod(target: Target, args: Args, kwargs: KwargsValues): unknown {
    const [self, ...rest] = args;
    if (isUnsafeMember(target)) {
      throw new KilnError(
        `call_method: '${String(target)}' may not be called from a graph (it leads to JavaScript's Function, not to a tensor op)`,
      );
    }
    const fn = (self as Record<string, unknown> | null | undefined)?.[target as string];
    if (typeof fn !== 'function') throw new KilnError(`call_method: ${describe(self)} has no method '${String(target)}'`);
    return call(fn as (...a: unknown[]) => unknown, self, rest, kwargs);
  }

  callModule(target: Target, args: Args, kwargs: KwargsValues): unknown {
    const m = this.fetchAttr(target as string) as Module;
    if (typeof (m as Partial<Module> | null)?.call !== 'function' || typeof m !== 'object') {
      throw new KilnError(`call_module: '${String(target)}' is ${describe(m)}, not a module`);
    }
    return call(m.call as (...a: unknown[]) => unknown, m, args, kwargs);
  }

  output(_target: Target, args: Args, _kwargs: KwargsValues): unknown {
    return args[0];
  }

  /** The member of the module at a dotted path. */
  fetchAttr(path: string): unknown {
    return lookupAttr(this.module, path);
  }

  /** Replace every node inside `a` by its value from the environment. */
  fetchArgs(a: Argument | Kwargs): unknown[] | KwargsValues {
    return mapArg(a as Argument, (n) => {
      if (!this.env.has(n)) throw new KilnError(`Interpreter: node '${n.name}' is used before it has a value`);
      return this.env.get(n);
    }) as unknown[];
  }
}

function describe(x: unknown): string {
  return x === null || x === undefined ? String(x) : `a ${(x as object).constructor?.name ?? typeof x}`;
}

/**
 * An Interpreter that builds a new graph instead of computing (torch.fx's Transformer): each node is
 * re-recorded through Proxies, so overriding `callFunction` etc. rewrites the graph. `transform()` returns
 * the new GraphModule; node metadata carries over to the nodes that replace them one for one.
 */
export class Transformer extends Interpreter {
  readonly tracer: Tracer;
  readonly newGraph: Graph;

  constructor(module: GraphModule) {
    super(module, false);
    this.tracer = new (class extends Tracer {
      override isLeafModule(): boolean {
        return true; // a call_module stays a call_module
      }
    })();
    this.tracer.root = module;
    this.newGraph = this.tracer.graph;
  }

  override runNode(n: Node): unknown {
    const out = super.runNode(n);
    const created = proxyNode(out);
    if (created && created.graph === this.newGraph && Object.keys(created.meta).length === 0) created.meta = { ...n.meta };
    return out;
  }

  override placeholder(target: Target, args: Args, _kwargs: KwargsValues): unknown {
    return this.tracer.proxy(this.newGraph.placeholder(target as string, args[0] as Argument));
  }

  override getAttr(target: Target, _args: Args, _kwargs: KwargsValues): unknown {
    return this.tracer.proxy(this.newGraph.getAttr(target as string));
  }

  override callFunction(target: Target, args: Args, kwargs: KwargsValues): unknown {
    return this.tracer.createProxy('call_function', target, args, kwargs);
  }

  override callMethod(target: Target, args: Args, kwargs: KwargsValues): unknown {
    return this.tracer.createProxy('call_method', target, args, kwargs);
  }

  override callModule(target: Target, args: Args, kwargs: KwargsValues): unknown {
    return this.tracer.createProxy('call_module', target, args, kwargs);
  }

  /** Re-record every node and return the new GraphModule (sharing the original's submodules and weights). */
  transform(): GraphModule {
    const prev = setTraceDispatch(this.tracer);
    try {
      const result = this.run();
      this.newGraph.output(this.tracer.createArg(result, 'the output'));
    } finally {
      setTraceDispatch(prev);
    }
    return new GraphModule(this.module, this.newGraph, this.module.className, this.tracer.constants);
  }
}
