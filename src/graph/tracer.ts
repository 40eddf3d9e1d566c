import { inspect } from 'node:util';
import { functionParams } from '../analysis/signature.js';
import { KilnError, TraceError } from '../errors.js';
import { setTraceDispatch, type TraceDispatch } from '../runtime/dispatch.js';
import * as nn from '../runtime/nn/index.js';
import { Module } from '../runtime/nn/module.js';
import { Tensor } from '../runtime/tensor.js';
import { getattr, getitem } from './builtins.js';
import { Graph } from './graph.js';
import { GraphModule } from './graph-module.js';
import { Node, isPlainObject, type Argument, type FunctionTarget, type Kwargs, type Opcode, type Target } from './node.js';
import { userStackFrame } from './source-lines.js';

/**
 * Symbolic tracing (torch.fx's Tracer): run `forward` once on Proxy values that record every op into a
 * Graph instead of computing. Tensor methods become call_method nodes, `ops`/`F` calls call_function
 * (through the op table's dispatch hook), leaf submodules call_module, parameter and buffer reads get_attr,
 * and tensors made inside forward `_tensor_constantN` get_attr constants.
 */

/** Layers kiln ships: traced as one call_module each. Containers are traced through. */
const STANDARD_LAYERS: ReadonlySet<unknown> = new Set(
  Object.values(nn).filter(
    (v) =>
      typeof v === 'function' &&
      v.prototype instanceof Module &&
      ![nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict].includes(v as never),
  ),
);

/** Methods that read a tensor's values, which a symbolic trace does not have. */
const VALUE_READERS = new Set(['item', 'toArray', 'data', 'backward', 'toString']);

/** Methods whose result is a (values, indices) pair when given a dim, so the proxy can be destructured. */
const PAIR_METHODS = new Set(['max', 'min']);

const PROXIES = new WeakMap<object, { node: Node; tracer: Tracer }>();

/** The node a tracing proxy stands for, or undefined for anything else. */
export function proxyNode(x: unknown): Node | undefined {
  return x !== null && typeof x === 'object' ? PROXIES.get(x)?.node : undefined;
}

export interface ConcreteArgs {
  readonly [param: string]: unknown;
}

/** A stack frame in kiln's own code (or Node's), as opposed to the user's. */
export const KILN_FRAME = /[\\/](src|dist[\\/]src)[\\/](graph|runtime|analysis|compile|jit)[\\/]|node:internal/;

/** Where in user code tracing is, for error messages: the first stack frame outside kiln's graph and runtime. */
export function userFrame(): string {
  const frames = (new Error().stack ?? '').split('\n').slice(1);
  const f = frames.find((l) => !KILN_FRAME.test(l));
  return f ? `\n    ${f.trim()}` : '';
}

const FIXES =
  'Fix it by passing the value in concreteArgs, by making the module that does this a leaf ' +
  '(override Tracer.isLeafModule), or by compiling with the kiln plugin, which breaks the graph here and runs this part eagerly.';

export class Tracer implements TraceDispatch {
  readonly symbolic = true;
  graph = new Graph();
  root: Module = new Module();
  /** Tensors created inside forward, by the get_attr path they were given (`_tensor_constant0`). */
  readonly constants = new Map<string, Tensor>();
  private modulePaths = new Map<Module, string>();
  private tensorPaths = new Map<Tensor, string>();
  private attrNodes = new Map<string, Node>();
  private constantNames = new Map<Tensor, string>();
  private pairNodes = new WeakSet<Node>();
  /**
   * When set, reads of plain attributes (numbers, strings, booleans, null, config objects, functions) of
   * traced-through modules are recorded here by path (`scale`, `block.eps`), so a compiler can guard on them;
   * assigning to such an attribute during the trace is then a TraceError instead of a silent side effect.
   */
  attributeReads: Map<string, unknown> | null = null;
  /** Set while `trace` runs the user's code: call nodes then record the user's stack frame. */
  private recordingFrames = false;

  /** Whether `m` is recorded as one call_module instead of traced through. Default: kiln's standard layers. */
  isLeafModule(m: Module, _path: string): boolean {
    return STANDARD_LAYERS.has(m.constructor);
  }

  /**
   * Trace `root.forward` (or the function `root`) into a Graph. `concreteArgs` fixes parameters to values.
   * `method` traces that function instead of `forward`, with `this` = `root` (a plugin segment or helper).
   */
  trace(root: Module | ((...args: never[]) => unknown), concreteArgs: ConcreteArgs = {}, method?: (...args: never[]) => unknown): Graph {
    const fn = (method ?? (root instanceof Module ? root.forward : root)) as (...args: unknown[]) => unknown;
    this.root = root instanceof Module ? root : new Module();
    this.graph = new Graph();
    this.constants.clear();
    this.attrNodes.clear();
    this.constantNames.clear();
    this.modulePaths = new Map(this.root.namedModules().map(([p, m]) => [m, p]));
    this.tensorPaths = new Map();
    for (const [p, t] of [...this.root.namedParameters(), ...this.root.namedBuffers()]) {
      if (!this.tensorPaths.has(t)) this.tensorPaths.set(t, p);
    }
    // Plain tensor attributes (`this.c = rand([4])`) are read by path too, as FX does for a module's __dict__.
    for (const [m, path] of this.modulePaths) {
      for (const [name, v] of Object.entries(m)) {
        if (v instanceof Tensor && !this.tensorPaths.has(v)) this.tensorPaths.set(v, path ? `${path}.${name}` : name);
      }
    }
    const args = this.placeholders(fn, concreteArgs);
    const restore = this.patchModules();
    const prev = setTraceDispatch(this);
    this.recordingFrames = true;
    try {
      const result = fn.apply(root instanceof Module ? root : undefined, args);
      this.createNode('output', 'output', [this.createArg(result, 'the return value')]);
    } finally {
      this.recordingFrames = false;
      setTraceDispatch(prev);
      restore();
    }
    return this.graph;
  }

  private placeholders(fn: (...a: never[]) => unknown, concreteArgs: ConcreteArgs): unknown[] {
    const params = functionParams(fn);
    const names = params.map((p) => p.name);
    for (const k of Object.keys(concreteArgs)) {
      if (!names.includes(k)) throw new TraceError(`concreteArgs names '${k}', but forward's parameters are (${names.join(', ')})`);
    }
    return params.map((p) => {
      if (p.name in concreteArgs) {
        const v = concreteArgs[p.name];
        this.createNode('placeholder', p.name, isLiteral(v) ? [v as Argument] : [], {}, p.name);
        return v;
      }
      if (p.unsupported) {
        const what = p.unsupported === 'rest' ? `a rest parameter (...${p.name})` : `a destructuring pattern (parameter ${p.name})`;
        throw new TraceError(
          `symbolic tracing cannot trace ${what}: give forward one named parameter per input, or fix it with concreteArgs`,
        );
      }
      return this.proxy(this.createNode('placeholder', p.name, p.default !== undefined ? [p.default as Argument] : [], {}, p.name));
    });
  }

  /**
   * Install tracing stand-ins on the module tree for the duration of a trace: leaf modules' `call` and
   * `forward` record call_module; other modules' parameters and buffers read as get_attr proxies.
   * Returns the function that puts everything back.
   */
  private patchModules(): () => void {
    const undo: (() => void)[] = [];
    const patch = (obj: object, key: string, desc: PropertyDescriptor) => {
      const orig = Object.getOwnPropertyDescriptor(obj, key);
      Object.defineProperty(obj, key, { ...desc, configurable: true, enumerable: orig?.enumerable ?? false });
      undo.push(() => (orig ? Object.defineProperty(obj, key, orig) : delete (obj as Record<string, unknown>)[key]));
    };
    for (const [m, path] of this.modulePaths) {
      if (path !== '' && this.isLeafModule(m, path)) {
        const forward = m.forward.bind(m) as (...a: unknown[]) => unknown;
        const record = { value: (...args: unknown[]) => this.callModule(m, forward, args), writable: true };
        patch(m, 'forward', record);
        patch(m, 'call', record);
        continue;
      }
      // Listed before the attribute getters go in, so listing them is not recorded as a read.
      const tensors = [...m.namedParameters('', false), ...m.namedBuffers('', false)];
      if (this.attributeReads) {
        const reads = this.attributeReads;
        for (const [name, v] of Object.entries(m)) {
          if (v instanceof Module || v instanceof Tensor) continue;
          const full = path ? `${path}.${name}` : name;
          patch(m, name, {
            get: () => {
              if (!reads.has(full)) reads.set(full, v);
              return v;
            },
            set: () => {
              throw new TraceError(
                `symbolic tracing: forward assigns to attribute '${full}'; a captured graph cannot hold that side effect`,
              );
            },
          });
        }
      }
      for (const [name, t] of tensors) {
        const desc = Object.getOwnPropertyDescriptor(m, name);
        if (!desc || !('value' in desc) || desc.value !== t) continue; // held elsewhere (keyed containers)
        const full = path ? `${path}.${name}` : name;
        patch(m, name, {
          get: () => this.proxy(this.attrNode(full)),
          set: () => {
            throw new TraceError(
              `symbolic tracing: forward assigns to '${full}'; replacing a parameter or buffer while tracing is not supported`,
            );
          },
        });
      }
    }
    // A layer called in forward but missing from the module tree cannot be named by a call_module.
    const inTree = (m: Module) => this.modulePaths.has(m);
    const isLeaf = (m: Module) => this.isLeafModule(m, '');
    const origCall = Module.prototype.call;
    patch(Module.prototype, 'call', {
      writable: true,
      value: function (this: Module, ...args: unknown[]) {
        if (!inTree(this) && isLeaf(this)) {
          throw new TraceError(
            `symbolic tracing: ${this.constructor.name} is called in forward but is not a submodule of the traced module; assign it to an attribute in the constructor${userFrame()}`,
          );
        }
        return (origCall as (...a: unknown[]) => unknown).apply(this, args);
      },
    });
    return () => undo.reverse().forEach((f) => f());
  }

  /** A submodule call during tracing: one call_module node for a leaf, otherwise trace through `forward`. */
  callModule(m: Module, forward: (...args: unknown[]) => unknown, args: readonly unknown[]): unknown {
    const path = this.modulePaths.get(m) ?? '';
    if (this.isLeafModule(m, path)) return this.createProxy('call_module', path, args);
    return forward(...args);
  }

  createNode(op: Opcode, target: Target, args: readonly Argument[] = [], kwargs: Kwargs = {}, name?: string): Node {
    const node = this.graph.createNode(op, target, args, kwargs, name);
    // The user's line of each op traced from their code, for errors at run time (FX's meta['stack_trace']).
    if (this.recordingFrames && (op === 'call_function' || op === 'call_method' || op === 'call_module')) {
      const frame = userStackFrame();
      if (frame) node.meta.stackTrace = frame;
    }
    return node;
  }

  /** Record a node whose inputs may be proxies, tensors or plain values, and return its proxy. */
  createProxy(op: Opcode, target: Target, args: readonly unknown[], kwargs: Readonly<Record<string, unknown>> = {}, name?: string): Tensor {
    const a = args.map((x, i) => this.createArg(x, `argument ${i}`));
    const k = this.createArg(kwargs, 'options') as Kwargs;
    return this.proxy(this.createNode(op, target, a, k, name));
  }

  /** Turn a value met during tracing into a graph argument. */
  createArg(a: unknown, where: string): Argument {
    const info = a !== null && typeof a === 'object' ? PROXIES.get(a) : undefined;
    if (info) {
      if (info.tracer !== this) throw new TraceError(`symbolic tracing: ${where} is a proxy from another trace`);
      return info.node;
    }
    if (a instanceof Node) return a;
    if (a instanceof Tensor) return this.tensorNode(a);
    if (Array.isArray(a)) return a.map((x, i) => this.createArg(x, `${where}[${i}]`));
    if (isPlainObject(a)) return Object.fromEntries(Object.entries(a).map(([k, v]) => [k, this.createArg(v, `${where}.${k}`)]));
    if (a === null || a === undefined || typeof a === 'number' || typeof a === 'string' || typeof a === 'boolean') return a;
    const what = a instanceof Module ? `a module (${a.constructor.name})` : `a ${typeof a === 'object' ? a.constructor?.name : typeof a}`;
    throw new TraceError(`symbolic tracing: ${where} is ${what}, which cannot be recorded in a graph${userFrame()}`);
  }

  /** A real tensor in traced code: a get_attr of the parameter/buffer it is, or a new `_tensor_constantN`. */
  private tensorNode(t: Tensor): Node {
    const path = this.tensorPaths.get(t);
    if (path !== undefined) return this.attrNode(path);
    let name = this.constantNames.get(t);
    if (name === undefined) {
      name = `_tensor_constant${this.constantNames.size}`;
      this.constantNames.set(t, name);
      this.constants.set(name, t);
    }
    return this.attrNode(name);
  }

  private attrNode(path: string): Node {
    let n = this.attrNodes.get(path);
    if (!n) {
      n = this.createNode('get_attr', path);
      this.attrNodes.set(path, n);
    }
    return n;
  }

  // TraceDispatch: ops called with a proxy argument land here.
  isTraced(x: unknown): boolean {
    return x !== null && typeof x === 'object' && PROXIES.has(x);
  }

  callOp(op: (...args: never[]) => unknown, args: readonly unknown[], kwargs: Readonly<Record<string, unknown>> | undefined): unknown {
    return this.createProxy('call_function', op as FunctionTarget, args, kwargs ?? {});
  }

  /** The proxy for `node`: looks like a Tensor, records whatever is done with it. */
  proxy(node: Node): Tensor {
    const record = (op: Opcode, target: Target, args: unknown[]) => this.createProxy(op, target, args);
    const pairNodes = this.pairNodes;
    const fail = (what: string) => {
      throw new TraceError(
        `symbolic tracing: ${what} needs the value of traced tensor '${node.name}', but a trace records operations without running them. ${FIXES}${userFrame()}`,
      );
    };
    const handler: ProxyHandler<Tensor> = {
      get(_target, prop, receiver) {
        if (typeof prop === 'symbol') {
          if (prop === Symbol.toPrimitive) return () => fail('using it as a number, string or condition (if, ?:, <, +, `${}`)');
          if (prop === Symbol.iterator) {
            if (pairNodes.has(node))
              return () => [0, 1].map((i) => record('call_function', getitem as FunctionTarget, [receiver, i]))[Symbol.iterator]();
            return () => fail('iterating or destructuring it');
          }
          if (prop === inspect.custom) return () => `Proxy(${node.name})`;
          return undefined;
        }
        switch (prop) {
          case 'then':
            return undefined; // not a promise
          case 'node':
            return node;
          case 'constructor':
            return Tensor;
          case 'valueOf':
          case 'toJSON':
            return () => fail(`calling .${prop}()`);
        }
        if (VALUE_READERS.has(prop)) return () => fail(`.${prop}()`);
        if (/^(0|[1-9]\d*)$/.test(prop)) return record('call_function', getitem as FunctionTarget, [receiver, Number(prop)]);
        if (isMethod(prop)) {
          return (...args: unknown[]) => {
            const p = record('call_method', prop, [receiver, ...args]);
            if (PAIR_METHODS.has(prop) && args.length > 0 && args[0] !== undefined) pairNodes.add(proxyNode(p)!);
            return p;
          };
        }
        return record('call_function', getattr as FunctionTarget, [receiver, prop]);
      },
      set(_target, prop) {
        throw new TraceError(`symbolic tracing: assigning ${String(prop)} on traced tensor '${node.name}' is not supported${userFrame()}`);
      },
    };
    const p = new Proxy(Object.create(Tensor.prototype) as Tensor, handler);
    PROXIES.set(p, { node, tracer: this });
    return p;
  }
}

/** A Tensor method (not a getter such as `ndim`, which must not run on the prototype). */
function isMethod(prop: string): boolean {
  return typeof Object.getOwnPropertyDescriptor(Tensor.prototype, prop)?.value === 'function';
}

function isLiteral(v: unknown): boolean {
  if (v === null || typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean') return true;
  return Array.isArray(v) && v.every(isLiteral);
}

export interface SymbolicTraceOptions {
  /** Parameters fixed to a value: the trace specialises on them (their placeholders stay, unused). */
  readonly concreteArgs?: ConcreteArgs;
  /** A Tracer (subclass) to use, e.g. one with its own `isLeafModule`. */
  readonly tracer?: Tracer;
}

/** Trace a module or function into a GraphModule whose generated `forward` computes the same thing. */
export function symbolicTrace(root: Module | ((...args: never[]) => unknown), options: SymbolicTraceOptions = {}): GraphModule {
  if (!(root instanceof Module) && typeof root !== 'function') throw new KilnError('symbolicTrace: expected an nn.Module or a function');
  const tracer = options.tracer ?? new Tracer();
  const graph = tracer.trace(root, options.concreteArgs);
  const name = root instanceof Module ? root.constructor.name : root.name || 'GraphModule';
  return new GraphModule(tracer.root, graph, name, tracer.constants);
}
