import { KilnError, SerializationError } from '../errors.js';
import { OPS } from '../runtime/op.js';
import { Tensor } from '../runtime/tensor.js';
import { allocate, isDType, type DType } from '../runtime/dtype.js';
import { numel } from '../runtime/shape.js';
import { BUILTINS } from './builtins.js';
import { checkDepth } from './sealed-file.js';
import { allowedTensorMethods, isMethodName, isUnsafeMember } from './safe-targets.js';
import type { Graph } from './graph.js';
import { Node, OPCODES, isPlainObject, targetName, type Argument, type FunctionTarget, type Kwargs, type Opcode } from './node.js';

/**
 * Graph serialisation, format `kiln.graph` version 1: `{ format, version, nodes: [{ name, op, target, args,
 * kwargs, meta? }] }`. A call_function target is stored by op name and looked up in the op registry (or the
 * builtins) on load, so a saved graph never holds code. Arguments are JSON with tagged values:
 * `{ node: name }` a node, `{ dict: {…} }` a plain object, `{ float: 'nan' | 'inf' | '-inf' | '-0' }`,
 * `{ undefined: true }`; arrays, strings, finite numbers, booleans and null are themselves. Reading checks every
 * field and target (see checkedTarget) and decodes arguments without recursion.
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

/** Graph arguments nest a few levels (a list of shapes, a dict of lists); deeper input is refused, not recursed into. */
const MAX_ARG_DEPTH = 32;

/**
 * Decode one tagged argument iteratively (an explicit stack, so no input can overflow the call stack):
 * each container is created empty, then its children are decoded and filled in.
 */
function decodeArg(j: unknown, nodes: Map<string, Node>, where: string): Argument {
  const root: { value?: Argument } = {};
  const stack: { j: unknown; where: string; depth: number; put: (v: Argument) => void }[] = [
    { j, where, depth: 0, put: (v) => (root.value = v) },
  ];
  while (stack.length > 0) {
    const { j, where, depth, put } = stack.pop()!;
    if (depth > MAX_ARG_DEPTH) throw new SerializationError(`${where}: arguments are nested more than ${MAX_ARG_DEPTH} levels deep`);
    if (j === null || typeof j === 'string' || typeof j === 'boolean') {
      put(j);
      continue;
    }
    if (typeof j === 'number') {
      if (!Number.isFinite(j)) throw new SerializationError(`${where}: ${j} is not a finite number`);
      put(j);
      continue;
    }
    if (Array.isArray(j)) {
      const out: Argument[] = new Array<Argument>(j.length);
      put(out);
      j.forEach((x, i) => stack.push({ j: x, where: `${where}[${i}]`, depth: depth + 1, put: (v) => (out[i] = v) }));
      continue;
    }
    if (isPlainObject(j) && Object.keys(j).length === 1) {
      if (typeof j.node === 'string') {
        const n = nodes.get(j.node);
        if (!n) throw new SerializationError(`${where}: refers to node '${j.node}', which is not defined before it`);
        put(n);
        continue;
      }
      if (isPlainObject(j.dict)) {
        const out: Record<string, Argument> = {};
        put(out);
        for (const [k, x] of Object.entries(j.dict)) {
          if (k === '__proto__') throw new SerializationError(`${where}: the key '__proto__' is not allowed in a graph argument`);
          stack.push({ j: x, where: `${where}.${k}`, depth: depth + 1, put: (v) => (out[k] = v) });
        }
        continue;
      }
      if (typeof j.float === 'string' && Object.hasOwn(FLOATS, j.float)) {
        put(FLOATS[j.float]!);
        continue;
      }
      if (j.undefined === true) {
        put(undefined);
        continue;
      }
    }
    throw new SerializationError(`${where}: unrecognised value ${JSON.stringify(j)?.slice(0, 80)}`);
  }
  return root.value;
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

/** Rebuild a graph into the empty `graph`; throws SerializationError, naming the node and field, on anything malformed. */
export function graphFromJSON(json: unknown, graph: Graph): Graph {
  if (!isPlainObject(json) || json.format !== GRAPH_FORMAT) {
    throw new SerializationError(`not a kiln graph: expected format '${GRAPH_FORMAT}'`);
  }
  if (json.version !== GRAPH_VERSION) {
    throw new SerializationError(`unsupported kiln graph version ${String(json.version)} (this kiln reads version ${GRAPH_VERSION})`);
  }
  if (!Array.isArray(json.nodes)) throw new SerializationError('kiln graph: "nodes" must be an array');
  checkDepth(json.nodes, 'kiln graph: "nodes"');
  const byName = new Map<string, Node>();
  let computed = false;
  json.nodes.forEach((nj: unknown, i) => {
    const where = `node ${i}`;
    if (!isPlainObject(nj)) throw new SerializationError(`${where}: expected { name, op, target, args, kwargs }`);
    for (const field of ['name', 'target'] as const) {
      if (typeof nj[field] !== 'string')
        throw new SerializationError(`${where}: "${field}" must be a string, got ${describeJSON(nj[field])}`);
    }
    const name = nj.name as string;
    const at = `${where} '${name}'`;
    if (!Array.isArray(nj.args)) throw new SerializationError(`${at}: "args" must be an array, got ${describeJSON(nj.args)}`);
    if (!isPlainObject(nj.kwargs)) throw new SerializationError(`${at}: "kwargs" must be { dict: {…} }, got ${describeJSON(nj.kwargs)}`);
    if (nj.meta !== undefined && !isPlainObject(nj.meta)) throw new SerializationError(`${at}: "meta" must be an object`);
    const op = nj.op as Opcode;
    if (!OPCODES.includes(op)) throw new SerializationError(`${at}: unknown opcode ${JSON.stringify(nj.op)}`);
    // FX's placeholders are the function's parameters: all of them come first.
    if (op === 'placeholder' && computed)
      throw new SerializationError(`${at}: a placeholder after computation (placeholders must come first)`);
    if (op !== 'placeholder') computed = true;
    const args = decodeArg(nj.args, byName, `${name}.args`) as Argument[];
    const kwargs = decodeArg(nj.kwargs, byName, `${name}.kwargs`);
    if (!isPlainObject(kwargs)) throw new SerializationError(`${at}: kwargs must be an object`);
    const target = checkedTarget(op, nj.target as string, args, at);
    // A grad-mode switch takes a boolean (or the mode an earlier switch saved): 'false' as a string would read as on.
    if (target === BUILTINS.get('_set_grad_enabled') && !(args.length === 1 && (typeof args[0] === 'boolean' || args[0] instanceof Node))) {
      throw new SerializationError(`${at}: _set_grad_enabled takes one boolean or node, got ${JSON.stringify(nj.args)}`);
    }
    let node: Node;
    try {
      node = graph.createNode(op, target, args, kwargs as Kwargs, name);
    } catch (e) {
      if (e instanceof KilnError) throw new SerializationError(`${at}: ${e.message}`);
      throw e;
    }
    if (node.name !== name) throw new SerializationError(`${where}: duplicate or invalid node name '${name}'`);
    if (isPlainObject(nj.meta) && nj.meta.tensorMeta !== undefined) {
      if (!isTensorMeta(nj.meta.tensorMeta))
        throw new SerializationError(`${at}: meta.tensorMeta must be { shape, dtype, requiresGrad } or a list of them`);
      node.meta.tensorMeta = nj.meta.tensorMeta;
    }
    byName.set(node.name, node);
  });
  try {
    graph.lint();
  } catch (e) {
    throw new SerializationError(`kiln graph is malformed: ${(e as Error).message}`);
  }
  return graph;
}

/**
 * A node's target as the graph holds it, checked so that a file can only name kiln's ops and builtins, Tensor's
 * op methods, data attributes and member paths: nothing that leads to JavaScript's `Function`.
 */
function checkedTarget(op: Opcode, target: string, args: readonly Argument[], at: string): string | FunctionTarget {
  switch (op) {
    case 'call_function': {
      const fn = resolveFunction(target);
      if (!fn) throw new SerializationError(`${at}: unknown op '${target}'`);
      if (fn === BUILTINS.get('getattr') || fn === BUILTINS.get('getitem')) checkDataRead(target, args, at);
      return fn;
    }
    case 'call_method':
      if (!allowedTensorMethods().has(target)) throw new SerializationError(`${at}: call_method target '${target}' is not a tensor method`);
      if (args.length === 0) throw new SerializationError(`${at}: call_method '${target}' has no receiver (args[0])`);
      return target;
    case 'get_attr':
    case 'call_module': {
      const bad = target.split('.').find((seg) => seg === '' || isUnsafeMember(seg));
      if (bad !== undefined) throw new SerializationError(`${at}: ${op} target '${target}' is not a member path`);
      return target;
    }
    case 'output':
      if (args.length !== 1) throw new SerializationError(`${at}: output takes exactly one argument, got ${args.length}`);
      return target;
    default:
      return target;
  }
}

/** getattr/getitem in a file read a data attribute or item named by a literal: never a method, constructor or prototype. */
function checkDataRead(fn: string, args: readonly Argument[], at: string): void {
  const key = args[1];
  if (args.length !== 2) throw new SerializationError(`${at}: ${fn} takes (object, name), got ${args.length} arguments`);
  if (
    fn === 'getattr'
      ? typeof key !== 'string' || isMethodName(key)
      : typeof key !== 'number' && (typeof key !== 'string' || isMethodName(key))
  ) {
    throw new SerializationError(`${at}: ${fn} of ${JSON.stringify(key) ?? String(key)} is not a data attribute`);
  }
}

function isTensorMeta(m: unknown): boolean {
  if (Array.isArray(m)) return m.every((x) => x === null || isTensorMeta(x));
  return (
    isPlainObject(m) &&
    Array.isArray(m.shape) &&
    m.shape.every((d) => Number.isSafeInteger(d) && d >= 0) &&
    isDType(m.dtype) &&
    typeof m.requiresGrad === 'boolean'
  );
}

function describeJSON(v: unknown): string {
  return v === undefined
    ? 'nothing'
    : Array.isArray(v)
      ? 'an array'
      : v === null
        ? 'null'
        : typeof v === 'object'
          ? 'an object'
          : `${typeof v} ${JSON.stringify(v)?.slice(0, 40)}`;
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

const BYTES: Record<DType, number> = { float32: 4, int32: 4, bool: 1 };
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Decode a saved tensor, checking sizes before allocating anything and the data's encoding byte for byte. */
export function tensorFromJSON(j: unknown, where: string): Tensor {
  if (!isPlainObject(j)) throw new SerializationError(`${where}: expected a tensor { dtype, shape, data }, got ${describeJSON(j)}`);
  if (!isDType(j.dtype)) throw new SerializationError(`${where}: dtype must be 'float32', 'int32' or 'bool', got ${describeJSON(j.dtype)}`);
  if (!Array.isArray(j.shape) || !j.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new SerializationError(`${where}: bad shape ${JSON.stringify(j.shape)?.slice(0, 80)} (expected non-negative integers)`);
  }
  if (typeof j.data !== 'string') throw new SerializationError(`${where}: data must be a base64 string, got ${describeJSON(j.data)}`);
  const shape = j.shape as number[];
  const dtype = j.dtype;
  const n = numel(shape);
  // Base64 holds 3 bytes per 4 characters: a shape the data cannot fill is refused before allocating for it.
  const byteLength = n * BYTES[dtype];
  if (!Number.isSafeInteger(byteLength) || Math.ceil(byteLength / 3) * 4 !== j.data.length) {
    throw new SerializationError(
      `${where}: ${dtype} ${JSON.stringify(shape)} needs ${byteLength} bytes, the file has ${Math.floor((j.data.length * 3) / 4) - (j.data.match(/=+$/)?.[0].length ?? 0)}`,
    );
  }
  const bytes = Buffer.from(j.data, 'base64');
  if (!BASE64.test(j.data) || bytes.byteLength !== byteLength || bytes.toString('base64') !== j.data) {
    throw new SerializationError(`${where}: data is not valid base64 for ${byteLength} bytes`);
  }
  const out = allocate(dtype, n);
  new Uint8Array(out.buffer).set(bytes);
  if (dtype === 'bool' && !(out as Uint8Array).every((b) => b <= 1))
    throw new SerializationError(`${where}: a bool tensor holds a byte other than 0 or 1`);
  return Tensor.fromData(out, shape, dtype);
}
