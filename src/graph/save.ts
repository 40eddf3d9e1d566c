import { readFileSync, writeFileSync } from 'node:fs';
import { KilnError, SerializationError } from '../errors.js';
import * as nn from '../runtime/nn/index.js';
import { Module } from '../runtime/nn/module.js';
import { Parameter } from '../runtime/nn/parameter.js';
import { Tensor } from '../runtime/tensor.js';
import { Graph } from './graph.js';
import { GraphModule } from './graph-module.js';
import { isPlainObject } from './node.js';
import { tensorFromJSON, tensorToJSON, type GraphJSON, type TensorJSON } from './serialize.js';

/**
 * GraphModule files, format `kiln.graph_module` version 1: `{ format, version, className, graph, root }`.
 * `graph` is a `kiln.graph` (see serialize.ts); `root` is the module tree the graph refers to, each module
 * `{ type, training, members: [[name, member], …] }` in attribute order, where a member is
 * `{ module }`, `{ parameter, requiresGrad }`, `{ buffer, persistent }`, `{ tensor }` or `{ value }` (JSON).
 * Tensors are `{ dtype, shape, data }` with little-endian base64 data. Loading regenerates `forward` from the
 * graph; no code is stored. Module types are looked up by class name among kiln's layers and `options.modules`.
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

function moduleFromJSON(j: unknown, where: string, options: LoadOptions): Module {
  if (!isPlainObject(j) || typeof j.type !== 'string' || !Array.isArray(j.members)) {
    throw new SerializationError(`${where}: expected a module { type, training, members }`);
  }
  const cls = j.type === 'GraphModule' ? Module : (options.modules?.[j.type] ?? KNOWN[j.type]);
  if (typeof cls !== 'function' || !(cls === Module || cls.prototype instanceof Module)) {
    throw new SerializationError(`${where}: unknown module type '${j.type}'; pass it to load() as { modules: { ${j.type} } }`);
  }
  // Run only Module's constructor: the members below restore the layer's own state.
  const m = Reflect.construct(Module, [], cls as new () => Module) as Module;
  const target = m as unknown as Record<string, unknown>;
  for (const entry of j.members as unknown[]) {
    if (!Array.isArray(entry) || typeof entry[0] !== 'string' || !isPlainObject(entry[1])) {
      throw new SerializationError(`${where}: malformed member ${JSON.stringify(entry)?.slice(0, 60)}`);
    }
    const [name, mj] = entry as [string, Record<string, unknown>];
    const at = where ? `${where}.${name}` : name;
    if ('module' in mj) target[name] = moduleFromJSON(mj.module, at, options);
    else if ('parameter' in mj) target[name] = new Parameter(tensorFromJSON(mj.parameter, at), mj.requiresGrad !== false);
    else if ('buffer' in mj) m.registerBuffer(name, tensorFromJSON(mj.buffer, at), mj.persistent !== false);
    else if ('tensor' in mj) target[name] = tensorFromJSON(mj.tensor, at);
    else if ('value' in mj) target[name] = mj.value;
    else throw new SerializationError(`${at}: unknown member kind ${Object.keys(mj).join(', ')}`);
  }
  m.training = j.training !== false;
  return m;
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
  const graph = Graph.fromJSON(json.graph);
  const root = moduleFromJSON(json.root, '', options);
  const className = typeof json.className === 'string' ? json.className : 'GraphModule';
  try {
    return new GraphModule(root, graph, className);
  } catch (e) {
    if (e instanceof KilnError) throw new SerializationError(`kiln GraphModule file does not fit its graph: ${e.message}`);
    throw e;
  }
}

export function saveGraphModule(gm: GraphModule, path: string): void {
  writeFileSync(path, JSON.stringify(graphModuleToJSON(gm)));
}

export function loadGraphModule(path: string, options: LoadOptions = {}): GraphModule {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    if (e instanceof SyntaxError) throw new SerializationError(`${path}: not a kiln GraphModule file (invalid JSON: ${e.message})`);
    throw e;
  }
  return graphModuleFromJSON(json, options);
}
