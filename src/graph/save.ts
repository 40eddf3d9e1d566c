import { KilnError, SerializationError } from '../errors.js';
import * as nn from '../runtime/nn/index.js';
import { Module } from '../runtime/nn/module.js';
import { Parameter } from '../runtime/nn/parameter.js';
import { Tensor } from '../runtime/tensor.js';
import { Graph } from './graph.js';
import { GraphModule } from './graph-module.js';
import { lookupAttr } from './attrs.js';
import { isPlainObject } from './node.js';
import { isUnsafeMember } from './safe-targets.js';
import { checkDepth, readSealed, writeSealed } from './sealed-file.js';
import { tensorFromJSON, tensorToJSON, type GraphJSON, type TensorJSON } from './serialize.js';

/**
 * GraphModule files, format `kiln.graph_module` version 1: `{ format, version, className, graph, root }`.
 * `graph` is a `kiln.graph` (see serialize.ts); `root` is the module tree the graph refers to, each module
 * `{ type, training, members: [[name, member], …] }` in attribute order, where a member is
 * `{ module }`, `{ parameter, requiresGrad }`, `{ buffer, persistent }`, `{ tensor }` or `{ value }` (JSON).
 * Tensors are `{ dtype, shape, data }` with little-endian base64 data. Loading regenerates `forward` from the
 * graph; no code is stored. Module types are looked up by class name among kiln's layers and `options.modules`.
 * A file adds `sha256`, the digest of the rest (sealed-file.ts). A file is data, never code: every field is
 * type-checked, the graph may name only ops, Tensor's op methods, data attributes and members of the root
 * (serialize.ts), and any failure is a SerializationError naming the field, thrown before anything is returned.
 */

export const GRAPH_MODULE_FORMAT = 'kiln.graph_module';
export const GRAPH_MODULE_VERSION = 1;

type MemberJSON =
  | { module: ModuleJSON }
  | { parameter: TensorJSON; requiresGrad: boolean }
  | { buffer: TensorJSON; persistent: boolean }
  | { tensor: TensorJSON }
  | { value: unknown };

interface ModuleJSON {
  type: string;
  training: boolean;
  members: [string, MemberJSON][];
}

export interface GraphModuleJSON {
  format: typeof GRAPH_MODULE_FORMAT;
  version: number;
  className: string;
  graph: GraphJSON;
  root: ModuleJSON;
}

export interface LoadOptions {
  /** Module classes beyond kiln's own that the file may name (custom leaf modules), by class name. */
  readonly modules?: Readonly<Record<string, new (...args: never[]) => Module>>;
}

function isJSONValue(v: unknown): boolean {
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return true;
  if (typeof v === 'number') return Number.isFinite(v);
  if (Array.isArray(v)) return v.every(isJSONValue);
  return isPlainObject(v) && Object.values(v).every(isJSONValue);
}

function moduleToJSON(m: Module, path: string): ModuleJSON {
  const persistent = new Set(Object.keys(m.stateDict()));
  const buffers = new Set(m.namedBuffers('', false).map(([n]) => n));
  const members: [string, MemberJSON][] = [];
  for (const [name, v] of Object.entries(m)) {
    const where = path ? `${path}.${name}` : name;
    if (v instanceof Module) members.push([name, { module: moduleToJSON(v, where) }]);
    else if (v instanceof Parameter) members.push([name, { parameter: tensorToJSON(v), requiresGrad: v.requiresGrad }]);
    else if (v instanceof Tensor && buffers.has(name)) members.push([name, { buffer: tensorToJSON(v), persistent: persistent.has(name) }]);
    else if (v instanceof Tensor) members.push([name, { tensor: tensorToJSON(v) }]);
    else if (v === undefined) continue;
    else if (isJSONValue(v)) members.push([name, { value: v }]);
    else {
      throw new SerializationError(
        `cannot save ${m.constructor.name} at '${path || '<root>'}': attribute '${name}' holds ${describe(v)}, which has no saved form`,
      );
    }
  }
  return { type: m instanceof GraphModule ? 'GraphModule' : m.constructor.name, training: m.training, members };
}

function describe(v: unknown): string {
  return typeof v === 'object' && v !== null ? `a ${v.constructor?.name ?? 'object'}` : `a ${typeof v}`;
}

export function graphModuleToJSON(gm: GraphModule): GraphModuleJSON {
  return {
    format: GRAPH_MODULE_FORMAT,
    version: GRAPH_MODULE_VERSION,
    className: gm.className,
    graph: gm.graph.toJSON(),
    root: moduleToJSON(gm, ''),
  };
}

const KNOWN: Readonly<Record<string, unknown>> = { ...nn, Module };

/** Names of a member a file may set: no path separators, nothing the module already has (`forward`, `call`, `__proto__`, …). */
function checkMemberName(m: Module, name: string, seen: Set<string>, where: string): void {
  if (name === '' || name.includes('.') || isUnsafeMember(name) || name in m || seen.has(name)) {
    throw new SerializationError(
      `${where || '<root>'}: member name ${JSON.stringify(name)} is not allowed (${seen.has(name) ? 'given twice' : name in m ? `${m.constructor.name} already has '${name}'` : 'not an attribute name'})`,
    );
  }
  seen.add(name);
}

function flag(mj: Record<string, unknown>, field: string, at: string): boolean {
  if (typeof mj[field] !== 'boolean')
    throw new SerializationError(`${at}: "${field}" must be true or false, got ${JSON.stringify(mj[field]) ?? 'nothing'}`);
  return mj[field];
}

function moduleFromJSON(j: unknown, where: string, options: LoadOptions): Module {
  const self = where || '<root>';
  if (!isPlainObject(j) || typeof j.type !== 'string' || !Array.isArray(j.members)) {
    throw new SerializationError(`${self}: expected a module { type, training, members }`);
  }
  const cls =
    j.type === 'GraphModule'
      ? Module
      : Object.hasOwn(options.modules ?? {}, j.type)
        ? options.modules![j.type]
        : Object.hasOwn(KNOWN, j.type)
          ? KNOWN[j.type]
          : undefined;
  if (typeof cls !== 'function' || !(cls === Module || cls.prototype instanceof Module)) {
    throw new SerializationError(`${self}: unknown module type '${j.type}'; pass it to load() as { modules: { ${j.type} } }`);
  }
  // Keyed containers (ModuleDict) keep members in a private map that the members below cannot restore.
  if (
    (cls.prototype as unknown as Record<string, unknown>).ownEntries !== (Module.prototype as unknown as Record<string, unknown>).ownEntries
  ) {
    throw new SerializationError(`${self}: module type '${j.type}' keeps its members in its own storage and cannot be loaded from members`);
  }
  const training = flag(j, 'training', self);
  // Run only Module's constructor: the members below restore the layer's own state.
  const m = Reflect.construct(Module, [], cls as new () => Module) as Module;
  const target = m as unknown as Record<string, unknown>;
  const seen = new Set<string>();
  for (const entry of j.members as unknown[]) {
    if (!Array.isArray(entry) || entry.length !== 2 || typeof entry[0] !== 'string' || !isPlainObject(entry[1])) {
      throw new SerializationError(`${self}: malformed member ${JSON.stringify(entry)?.slice(0, 60)}`);
    }
    const [name, mj] = entry as [string, Record<string, unknown>];
    const at = where ? `${where}.${name}` : name;
    checkMemberName(m, name, seen, where);
    const kinds = Object.keys(mj);
    const kind = kinds[0];
    const expected = kind === 'parameter' ? ['parameter', 'requiresGrad'] : kind === 'buffer' ? ['buffer', 'persistent'] : [kind];
    if (kind === undefined || kinds.some((k) => !expected.includes(k))) {
      throw new SerializationError(`${at}: unknown member kind { ${kinds.join(', ')} }`);
    }
    if (kind === 'module') target[name] = moduleFromJSON(mj.module, at, options);
    else if (kind === 'parameter') target[name] = new Parameter(tensorFromJSON(mj.parameter, at), flag(mj, 'requiresGrad', at));
    else if (kind === 'buffer') m.registerBuffer(name, tensorFromJSON(mj.buffer, at), flag(mj, 'persistent', at));
    else if (kind === 'tensor') target[name] = tensorFromJSON(mj.tensor, at);
    else if (kind === 'value') {
      if (!isJSONValue(mj.value) || mj.value === undefined) throw new SerializationError(`${at}: value must be JSON data`);
      target[name] = mj.value;
    } else throw new SerializationError(`${at}: unknown member kind { ${kinds.join(', ')} }`);
  }
  m.training = training;
  return m;
}

/** Every get_attr and call_module of the graph names a member of the loaded root, and call_module names a module. */
function checkTargets(graph: Graph, root: Module): void {
  for (const n of graph.nodes) {
    if (n.op !== 'get_attr' && n.op !== 'call_module') continue;
    let v: unknown;
    try {
      v = lookupAttr(root, n.target as string);
    } catch (e) {
      if (e instanceof KilnError)
        throw new SerializationError(`kiln GraphModule file does not fit its graph: node '${n.name}' (${n.op}): ${e.message}`);
      throw e;
    }
    if (n.op === 'call_module' && !(v instanceof Module)) {
      throw new SerializationError(`node '${n.name}' (call_module) calls '${String(n.target)}', which is ${describe(v)}, not a module`);
    }
  }
}

export function graphModuleFromJSON(json: unknown, options: LoadOptions = {}): GraphModule {
  if (!isPlainObject(json) || json.format !== GRAPH_MODULE_FORMAT) {
    throw new SerializationError(`not a kiln GraphModule: expected format '${GRAPH_MODULE_FORMAT}'`);
  }
  if (json.version !== GRAPH_MODULE_VERSION) {
    throw new SerializationError(
      `unsupported kiln GraphModule version ${String(json.version)} (this kiln reads version ${GRAPH_MODULE_VERSION})`,
    );
  }
  if (typeof json.className !== 'string')
    throw new SerializationError(`"className" must be a string, got ${JSON.stringify(json.className) ?? 'nothing'}`);
  checkDepth(json, 'kiln GraphModule');
  const graph = Graph.fromJSON(json.graph);
  const root = moduleFromJSON(json.root, '', options);
  checkTargets(graph, root);
  try {
    return new GraphModule(root, graph, json.className);
  } catch (e) {
    if (e instanceof KilnError) throw new SerializationError(`kiln GraphModule file does not fit its graph: ${e.message}`);
    throw e;
  }
}

/** Write `gm` as a `kiln.graph_module` file sealed with the SHA-256 of its contents (see sealed-file.ts). */
export function saveGraphModule(gm: GraphModule, path: string): void {
  writeSealed(path, graphModuleToJSON(gm));
}

/** Read a file `saveGraphModule` wrote; anything unreadable, corrupt or unsafe is a SerializationError naming the path. */
export function loadGraphModule(path: string, options: LoadOptions = {}): GraphModule {
  const payload = readSealed(path, { reader: 'fx.load', format: GRAPH_MODULE_FORMAT, version: GRAPH_MODULE_VERSION });
  try {
    return graphModuleFromJSON(payload, options);
  } catch (e) {
    if (e instanceof SerializationError) throw new SerializationError(`fx.load: ${path}: ${e.message}`);
    throw e;
  }
}
