import { SerializationError } from '../errors.js';
import { OPS } from '../runtime/op.js';
import { Tensor } from '../runtime/tensor.js';
import { allocate, isDType, type DType } from '../runtime/dtype.js';
import { numel } from '../runtime/shape.js';
import { BUILTINS } from './builtins.js';
import type { Graph } from './graph.js';
import { Node, OPCODES, isPlainObject, targetName, type Argument, type FunctionTarget, type Kwargs, type Opcode } from './node.js';

/**
 * Graph serialisation, format `kiln.graph` version 1: `{ format, version, nodes: [{ name, op, target, args,
 * kwargs, meta? }] }`. A call_function target is stored by op name and looked up in the op registry (or the
 * builtins) on load, so a saved graph never holds code. Arguments are JSON with tagged values:
 * `{ node: name }` a node, `{ dict: {…} }` a plain object, `{ float: 'nan' | 'inf' | '-inf' | '-0' }`,
 * `{ undefined: true }`; arrays, strings, finite numbers, booleans and null are themselves.
 */

export const GRAPH_FORMAT = 'kiln.graph';
export const GRAPH_VERSION = 1;

export interface NodeJSON {
  name: string;
  op: Opcode;
  target: string;
  args: unknown[];
  kwargs: Record<string, unknown>;
  meta?: { tensorMeta?: unknown };
}

export interface GraphJSON {
  format: typeof GRAPH_FORMAT;
  version: number;
  nodes: NodeJSON[];
}

function encodeArg(a: Argument): unknown {
  if (a instanceof Node) return { node: a.name };
  if (Array.isArray(a)) return a.map(encodeArg);
  if (isPlainObject(a)) return { dict: Object.fromEntries(Object.entries(a).map(([k, v]) => [k, encodeArg(v as Argument)])) };
  if (a === undefined) return { undefined: true };
  if (typeof a === 'number' && (!Number.isFinite(a) || Object.is(a, -0))) {
    return { float: Number.isNaN(a) ? 'nan' : Object.is(a, -0) ? '-0' : a > 0 ? 'inf' : '-inf' };
  }
  return a;
}

const FLOATS: Record<string, number> = { nan: NaN, inf: Infinity, '-inf': -Infinity, '-0': -0 };

function decodeArg(j: unknown, nodes: Map<string, Node>, where: string): Argument {
  if (j === null || typeof j === 'string' || typeof j === 'boolean' || typeof j === 'number') return j;
  if (Array.isArray(j)) return j.map((x, i) => decodeArg(x, nodes, `${where}[${i}]`));
  if (isPlainObject(j)) {
    const keys = Object.keys(j);
    if (keys.length === 1 && typeof j.node === 'string') {
      const n = nodes.get(j.node);
      if (!n) throw new SerializationError(`${where}: refers to node '${j.node}', which is not defined before it`);
      return n;
    }
    if (keys.length === 1 && isPlainObject(j.dict)) {
      return Object.fromEntries(Object.entries(j.dict).map(([k, v]) => [k, decodeArg(v, nodes, `${where}.${k}`)]));
    }
    if (keys.length === 1 && typeof j.float === 'string' && j.float in FLOATS) return FLOATS[j.float]!;
    if (keys.length === 1 && j.undefined === true) return undefined;
  }
  throw new SerializationError(`${where}: unrecognised value ${JSON.stringify(j)?.slice(0, 80)}`);
}

export function graphToJSON(graph: Graph): GraphJSON {
  const nodes = graph.nodes.map((n): NodeJSON => {
    let target: string;
    if (n.op === 'call_function') {
      target = targetName(n.target);
      if (resolveFunction(target) !== n.target) {
        throw new SerializationError(
          `cannot serialise node '${n.name}': its target '${target}' is not an op from the registry or an fx builtin`,
        );
      }
    } else target = n.target as string;
    const out: NodeJSON = {
      name: n.name,
      op: n.op as Opcode,
      target,
      args: n.args.map(encodeArg),
      kwargs: encodeArg(n.kwargs) as { dict: Record<string, unknown> },
    };
    if (n.meta.tensorMeta !== undefined) out.meta = { tensorMeta: n.meta.tensorMeta };
    return out;
  });
  return { format: GRAPH_FORMAT, version: GRAPH_VERSION, nodes };
}

function resolveFunction(name: string): FunctionTarget | undefined {
  return (OPS.get(name) as FunctionTarget | undefined) ?? BUILTINS.get(name);
}

/** Rebuild a graph into the empty `graph`; throws SerializationError on anything malformed. */
export function graphFromJSON(json: unknown, graph: Graph): Graph {
  if (!isPlainObject(json) || json.format !== GRAPH_FORMAT) {
    throw new SerializationError(`not a kiln graph: expected format '${GRAPH_FORMAT}'`);
  }
  if (json.version !== GRAPH_VERSION) {
    throw new SerializationError(`unsupported kiln graph version ${String(json.version)} (this kiln reads version ${GRAPH_VERSION})`);
  }
  if (!Array.isArray(json.nodes)) throw new SerializationError('kiln graph: "nodes" must be an array');
  const byName = new Map<string, Node>();
  json.nodes.forEach((nj: unknown, i) => {
    const where = `node ${i}`;
    if (!isPlainObject(nj) || typeof nj.name !== 'string' || typeof nj.target !== 'string' || !Array.isArray(nj.args)) {
      throw new SerializationError(`${where}: expected { name, op, target, args, kwargs }`);
    }
    const op = nj.op as Opcode;
    if (!OPCODES.includes(op)) throw new SerializationError(`${where} '${nj.name}': unknown opcode ${JSON.stringify(nj.op)}`);
    let target: string | FunctionTarget = nj.target;
    if (op === 'call_function') {
      const fn = resolveFunction(nj.target);
      if (!fn) throw new SerializationError(`${where} '${nj.name}': unknown op '${nj.target}'`);
      target = fn;
    }
    const args = decodeArg(nj.args, byName, `${nj.name}.args`) as Argument[];
    // A grad-mode switch takes a boolean (or the mode an earlier switch saved): 'false' as a string would read as on.
    if (target === BUILTINS.get('_set_grad_enabled') && !(args.length === 1 && (typeof args[0] === 'boolean' || args[0] instanceof Node))) {
      throw new SerializationError(`${where} '${nj.name}': _set_grad_enabled takes one boolean or node, got ${JSON.stringify(nj.args)}`);
    }
    const kwargs = decodeArg(nj.kwargs ?? { dict: {} }, byName, `${nj.name}.kwargs`);
    if (!isPlainObject(kwargs)) throw new SerializationError(`${where} '${nj.name}': kwargs must be an object`);
    const node = graph.createNode(op, target, args, kwargs as Kwargs, nj.name);
    if (node.name !== nj.name) throw new SerializationError(`${where}: duplicate or invalid node name '${nj.name}'`);
    if (isPlainObject(nj.meta) && nj.meta.tensorMeta !== undefined) node.meta.tensorMeta = nj.meta.tensorMeta;
    byName.set(node.name, node);
  });
  try {
    graph.lint();
  } catch (e) {
    throw new SerializationError(`kiln graph is malformed: ${(e as Error).message}`);
  }
  return graph;
}

export interface TensorJSON {
  dtype: DType;
  shape: number[];
  /** The elements in row-major order as little-endian bytes, base64 (bool: one byte each). */
  data: string;
}

export function tensorToJSON(t: Tensor): TensorJSON {
  const data = t.contiguous().data();
  return { dtype: t.dtype, shape: [...t.shape], data: Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64') };
}

export function tensorFromJSON(j: unknown, where: string): Tensor {
  if (!isPlainObject(j) || !isDType(j.dtype) || !Array.isArray(j.shape) || typeof j.data !== 'string') {
    throw new SerializationError(`${where}: expected a tensor { dtype, shape, data }`);
  }
  const shape = j.shape as number[];
  if (!shape.every((d) => Number.isInteger(d) && d >= 0)) throw new SerializationError(`${where}: bad shape ${JSON.stringify(shape)}`);
  const bytes = Buffer.from(j.data, 'base64');
  const out = allocate(j.dtype, numel(shape));
  if (bytes.byteLength !== out.byteLength) {
    throw new SerializationError(
      `${where}: ${j.dtype} ${JSON.stringify(shape)} needs ${out.byteLength} bytes, the file has ${bytes.byteLength}`,
    );
  }
  new Uint8Array(out.buffer).set(bytes);
  return Tensor.fromData(out, shape, j.dtype);
}
