import { inspect } from 'node:util';
import { functionParams } from '../analysis/signature.js';
import { KilnError, TraceError } from '../errors.js';
import { setTraceDispatch, type TraceDispatch } from '../runtime/dispatch.js';
import * as nn from '../runtime/nn/index.js';
import { Module } from '../runtime/nn/module.js';
import { standIn } from '../runtime/nn/traced-attributes.js';
import { Tensor } from '../runtime/tensor.js';
import { lookupAttr } from './attrs.js';
import { getattr, getitem } from './builtins.js';
import { GradModeRegions } from './grad-mode.js';
import { Graph } from './graph.js';
import { GraphModule } from './graph-module.js';
import { Node, isPlainObject, type Argument, type FunctionTarget, type Kwargs, type Opcode, type Target } from './node.js';
import { isKilnFrame, userStackFrame } from './source-lines.js';
import { StateWrites, userSetters } from './state-writes.js';
import { TensorTree } from './tensor-tree.js';

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

/** A plain attribute of a traced module read during the trace (`self.block.scale`): who holds it and its value then. */
export interface AttributeRead {
  readonly owner: Module;
  readonly name: string;
  readonly value: unknown;
}

export interface ConcreteArgs {
  readonly [param: string]: unknown;
}

/** Where in user code tracing is, for error messages: the first stack frame outside kiln's graph and runtime. */
export function userFrame(): string {
  const frames = (new Error().stack ?? '').split('\n').slice(1);
  const f = frames.find((l) => !isKilnFrame(l));
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
  attributeReads: Map<string, AttributeRead> | null = null;
  /**
   * When set (with `attributeReads`), assignments to traced-through modules' attributes are recorded here
   * (see state-writes.ts) instead of being a TraceError.
   */
  stateWrites: StateWrites | null = null;
  /**
   * Modules met during the trace that are not in the root's tree (reached through a closure, a plain array or
   * object, or an argument), by the path they were given in the graph (`layers_0`). A compiler guards them
   * like the root's own submodules.
   */
  readonly foreignModules = new Map<string, Module>();
  /** Whether such modules are adopted (compile's tracer) or refused, as torch.fx refuses them (symbolicTrace). */
  adoptForeignModules = false;
  private undoPatches: (() => void)[] = [];
  /** `noGrad`/`withGradMode` regions the traced code is inside, recorded as `_set_grad_enabled` nodes. */
  private readonly gradRegions = new GradModeRegions(() => this.graph);
  /** Set while `trace` runs the user's code: call nodes then record the user's stack frame. */
  private recordingFrames = false;

  /** Whether `m` is recorded as one call_module instead of traced through. Default: kiln's standard layers. */
  isLeafModule(m: Module, _path: string): boolean {
    return STANDARD_LAYERS.has(m.constructor);
  }

  /**
   * Trace `root.forward` (or the function `root`) into a Graph. `concreteArgs` fixes parameters to values.
   * `method` traces that function instead of `forward`, with `this` = `root` (a plugin segment or helper).
   * `output` picks the graph's output from what the function returned (a plugin segment's values without
   * the plan's protocol around them). `around` runs the call (a module's hooks around its forward).
   */
  trace(
    root: Module | ((...args: never[]) => unknown),
    concreteArgs: ConcreteArgs = {},
    method?: (...args: never[]) => unknown,
    output: (result: unknown) => unknown = (r) => r,
    around: (call: (args: unknown[]) => unknown, args: unknown[]) => unknown = (call, args) => call(args),
  ): Graph {
    const fn = (method ?? (root instanceof Module ? root.forward : root)) as (...args: unknown[]) => unknown;
    this.root = root instanceof Module ? root : new Module();
    this.graph = new Graph();
    this.constants.clear();
    this.attrNodes.clear();
    this.constantNames.clear();
    this.modulePaths = new Map();
    this.tensorPaths = new Map();
    this.foreignModules.clear();
    this.undoPatches = [];
    this.indexTree(this.root, '');
    const args = this.placeholders(fn, concreteArgs);
    const restore = this.patchModules();
    const prev = setTraceDispatch(this);
    this.recordingFrames = true;
    try {
      const result = output(around((a) => fn.apply(root instanceof Module ? root : undefined, a), args));
      this.createNode('output', 'output', [this.createArg(result, 'the return value')]);
    } finally {
      this.recordingFrames = false;
      setTraceDispatch(prev);
      restore();
    }
    return this.graph;
  }

  /** Give `m`'s module tree, parameters, buffers and plain tensor attributes their paths under `prefix`. */
  private indexTree(m: Module, prefix: string): void {
    const under = (p: string) => (prefix && p ? `${prefix}.${p}` : prefix || p);
    const modules = m.namedModules().map(([p, sub]) => [sub, under(p)] as const);
    for (const [sub, p] of modules) if (!this.modulePaths.has(sub)) this.modulePaths.set(sub, p);
    for (const [p, t] of [...m.namedParameters(), ...m.namedBuffers()]) {
      if (!this.tensorPaths.has(t)) this.tensorPaths.set(t, under(p));
    }
    // Plain tensor attributes (`this.c = rand([4])`) are read by path too, as FX does for a module's __dict__.
    for (const [sub, path] of modules) {
      for (const [name, v] of Object.entries(sub)) {
        if (v instanceof Tensor && !this.tensorPaths.has(v)) this.tensorPaths.set(v, path ? `${path}.${name}` : name);
      }
    }
  }

  /**
   * Take a module that is not in the traced tree (a layer held in a closure, a plain array or an argument)
   * into the graph under a new top-level path derived from `hint` (`layers[0]` → `layers_0`), and install
   * the same tracing stand-ins on it as on the tree's modules. Returns its path; adopting twice is a no-op.
   */
  /** Whether `t` is a parameter, buffer or tensor attribute of a traced module (read by path, as get_attr). */
  isModuleTensor(t: unknown): boolean {
    return t instanceof Tensor && this.tensorPaths.has(t);
  }

  /**
   * A property of a traced value that is known without running it (`ndim` of an input whose rank is
   * guarded), as `{ value }`, or undefined to record the read. None by default: FX records every read.
   */
  protected staticRead(_node: Node, _prop: string): { value: unknown } | undefined {
    return undefined;
  }

  /** Whether `m` already has a path in this trace (in the root's tree, or adopted). */
  isKnownModule(m: Module): boolean {
    return this.modulePaths.has(m);
  }

  adopt(m: Module, hint: string): string {
    const known = this.modulePaths.get(m);
    if (known !== undefined) return known;
    const base = hint.replace(/[^A-Za-z0-9_$]+/g, '_').replace(/^_+|_+$/g, '') || 'module';
    let path = /^[0-9]/.test(base) ? `_${base}` : base;
    const taken = (p: string) => this.foreignModules.has(p) || (this.root as unknown as Record<string, unknown>)[p] !== undefined;
    for (let i = 1; taken(path); i++) path = `${base}_${i}`;
    this.foreignModules.set(path, m);
    const before = new Set(this.modulePaths.keys());
    this.indexTree(m, path);
    for (const [sub, p] of this.modulePaths) if (!before.has(sub)) this.patchModule(sub, p);
    return path;
  }

  /**
   * The real tensor or module a get_attr or call_module target names, as it was before the trace put its
   * stand-ins in (reading the module now would give a proxy, or record a call), or undefined.
   */
  memberAt(path: string): Tensor | Module | undefined {
    const constant = this.constants.get(path);
    if (constant !== undefined) return constant;
    for (const [t, p] of this.tensorPaths) if (p === path) return t;
    for (const [m, p] of this.modulePaths) if (p === path) return m;
    return undefined;
  }

  /**
   * What a GraphModule built from this trace copies its call_module and get_attr targets from: the root, or
   * when foreign modules were adopted, a record of every target path (the user's module is never changed).
   */
  targetRoot(): Module | Record<string, unknown> {
    if (this.foreignModules.size === 0) return this.root;
    const record: Record<string, unknown> = {};
    for (const n of this.graph.nodes) {
      if ((n.op !== 'call_module' && n.op !== 'get_attr') || this.constants.has(n.target as string)) continue;
      const path = n.target as string;
      const dot = path.indexOf('.');
      const head = dot < 0 ? path : path.slice(0, dot);
      const foreign = this.foreignModules.get(head);
      record[path] = foreign ? lookupAttr(foreign, dot < 0 ? '' : path.slice(dot + 1)) : lookupAttr(this.root, path);
    }
    return record;
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
        // A list or object of tensors: one placeholder per tensor, the structure around them as given.
        if (v instanceof TensorTree) return v.build((leaf) => this.proxy(this.createNode('placeholder', leaf, [], {}, leaf)));
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
    for (const [m, path] of this.modulePaths) this.patchModule(m, path);
    // A layer called in forward but missing from the module tree (a closure, a plain array, an argument) is
    // adopted under a path of its own, so a call_module can name it.
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the patched method's own `this` is the module
    const tracer = this;
    const origCall = Module.prototype.call;
    this.patch(Module.prototype, 'call', {
      writable: true,
      value: function (this: Module, ...args: unknown[]) {
        if (!tracer.modulePaths.has(this)) {
          if (!tracer.adoptForeignModules && tracer.isLeafModule(this, '')) {
            throw new TraceError(
              `symbolic tracing: ${this.constructor.name} is called in forward but is not a submodule of the traced module; assign it to an attribute in the constructor${userFrame()}`,
            );
          }
          if (tracer.adoptForeignModules)
            tracer.adopt(
              this,
              this.constructor.name.replace(/^./, (c) => c.toLowerCase()),
            );
          if (Object.prototype.hasOwnProperty.call(this, 'call')) return this.call(...(args as never[])); // now a recorded leaf
        }
        return (origCall as (...a: unknown[]) => unknown).apply(this, args);
      },
    });
    return () => {
      this.undoPatches.reverse().forEach((f) => f());
      this.undoPatches = [];
    };
  }

  /**
   * A traced module's plain attribute read (when `attributeReads` is set): recorded by path with its owner,
   * and handed to the traced code as is. A compiler may override this to record finer reads.
   */
  protected readAttribute(owner: Module, name: string, path: string, value: unknown, reads: Map<string, AttributeRead>): unknown {
    if (!reads.has(path)) reads.set(path, { owner, name, value });
    return value;
  }

  /** Replace `obj[key]` for the duration of the trace. */
  private patch(obj: object, key: string, desc: PropertyDescriptor): void {
    const orig = Object.getOwnPropertyDescriptor(obj, key);
    Object.defineProperty(obj, key, { ...desc, configurable: true, enumerable: orig?.enumerable ?? false });
    this.undoPatches.push(() => (orig ? Object.defineProperty(obj, key, orig) : delete (obj as Record<string, unknown>)[key]));
  }

  /**
   * The tracing stand-ins of one module at `path`: a leaf's `call` and `forward` record call_module; another
   * module's parameters and buffers read as get_attr proxies, and its plain attributes are recorded when read.
   */
  private patchModule(m: Module, path: string): void {
    const patch = this.patch.bind(this);
    if (path !== '' && this.isLeafModule(m, path)) {
      const forward = m.forward.bind(m) as (...a: unknown[]) => unknown;
      patch(m, 'forward', { value: (...args: unknown[]) => this.callModuleForward(m, forward, args), writable: true });
      patch(m, 'call', { value: (...args: unknown[]) => this.callModule(m, forward, args), writable: true });
      return;
    }
    // Listed before the attribute getters go in, so listing them is not recorded as a read.
    const tensors = [...m.namedParameters('', false), ...m.namedBuffers('', false)];
    const bufferNames = new Set(m.namedBuffers('', false).map(([n]) => n));
    // With `stateWrites` set, assignments are recorded (and read back) instead of refused.
    const writes = this.stateWrites;
    writes?.watch(m, path);
    const written = (name: string) => writes?.lookup(m, name);
    const tensorNames = new Set(tensors.map(([n]) => n));
    for (const [name, d] of writes ? userSetters(m) : []) {
      const full = path ? `${path}.${name}` : name;
      patch(m, name, {
        get: d.get && (() => d.get!.call(m)),
        set: () => {
          throw new TraceError(
            `symbolic tracing: forward assigns to '${full}', which runs a setter of ${m.constructor.name}; a graph cannot hold what it does${userFrame()}`,
          );
        },
      });
    }
    if (this.attributeReads) {
      const reads = this.attributeReads;
      for (const [name, v] of Object.entries(m)) {
        if (v instanceof Module || (v instanceof Tensor && (!writes || tensorNames.has(name)))) continue;
        const full = path ? `${path}.${name}` : name;
        this.undoPatches.push(standIn(m, name, v));
        patch(m, name, {
          get: () => {
            const w = written(name);
            if (w) return w.value;
            writes?.noteRead(m, name);
            return v instanceof Tensor ? v : this.readAttribute(m, name, full, v, reads);
          },
          set: (value: unknown) => {
            if (writes) return writes.record(m, name, full, value);
            throw new TraceError(`symbolic tracing: forward assigns to attribute '${full}'; a captured graph cannot hold that side effect`);
          },
        });
      }
    }
    for (const [name, t] of tensors) {
      const desc = Object.getOwnPropertyDescriptor(m, name);
      if (!desc || !('value' in desc) || desc.value !== t) continue; // held elsewhere (keyed containers)
      const full = path ? `${path}.${name}` : name;
      this.undoPatches.push(standIn(m, name, t));
      patch(m, name, {
        get: () => {
          const w = written(name);
          if (w) return w.value;
          writes?.noteRead(m, name);
          return this.proxy(this.attrNode(full));
        },
        set: (value: unknown) => {
          // A buffer may be replaced (`this.buffer = this.buffer.to(x)`); a parameter only by a Parameter, never in a graph.
          if (writes && bufferNames.has(name)) return writes.record(m, name, full, value);
          throw new TraceError(
            `symbolic tracing: forward assigns to '${full}'; replacing a parameter or buffer while tracing is not supported`,
          );
        },
      });
    }
  }

  /** A submodule call during tracing: one call_module node for a leaf, otherwise trace through `forward`. */
  callModule(m: Module, forward: (...args: unknown[]) => unknown, args: readonly unknown[]): unknown {
    const path = this.modulePaths.get(m) ?? '';
    if (this.isLeafModule(m, path)) return this.createProxy('call_module', path, args);
    return forward(...args);
  }

  /** A direct `m.forward(…)` call during tracing (eagerly it runs no hooks); by default the same as a call. */
  callModuleForward(m: Module, forward: (...args: unknown[]) => unknown, args: readonly unknown[]): unknown {
    return this.callModule(m, forward, args);
  }

  createNode(op: Opcode, target: Target, args: readonly Argument[] = [], kwargs: Kwargs = {}, name?: string): Node {
    this.gradRegions.flush();
    const node = this.graph.createNode(op, target, args, kwargs, name);
    // The user's line of each op traced from their code, for errors at run time (FX's meta['stack_trace']).
    if (this.recordingFrames && (op === 'call_function' || op === 'call_method' || op === 'call_module')) {
      const frame = userStackFrame();
      if (frame) node.meta.stackTrace = frame;
    }
    return node;
  }

  // TraceDispatch: code entered a grad-mode region.
  gradModeRegion(enabled: boolean): () => void {
    return this.gradRegions.enter(enabled);
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
    const known = (prop: string) => this.staticRead(node, prop);
    const pairNodes = this.pairNodes;
    const fail = (what: string) => {
      throw new TraceError(
        `symbolic tracing: ${what} needs the value of ${describeTraced(node)}, but a trace records operations without running them. ${FIXES}${userFrame()}`,
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
        const fixed = known(prop);
        if (fixed) return fixed.value;
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

/**
 * A traced value as the user wrote it, for messages: `h.shape[0]`, `x.shape`, `h.ndim` for shape reads (the
 * node's own name is `getitem`/`getattr`), else "traced tensor 'name'".
 */
function describeTraced(node: Node): string {
  const source = (n: Node): string | undefined => {
    const [of, key] = n.args as unknown[];
    if (n.op === 'placeholder') return n.name;
    if (n.op === 'call_function' && (n.target === getattr || n.target === getitem) && of instanceof Node) {
      const base = source(of) ?? of.name;
      return n.target === getattr ? `${base}.${String(key)}` : `${base}[${String(key)}]`;
    }
    return undefined;
  };
  const shapeRead = node.op === 'call_function' && (node.target === getattr || node.target === getitem) ? source(node) : undefined;
  return shapeRead ? `'${shapeRead}'` : `traced tensor '${node.name}'`;
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
