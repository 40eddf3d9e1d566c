import { SerializationError, KilnError } from '../errors.js';
import type { Tree } from '../aot/pytree.js';
import { Graph } from '../graph/graph.js';
import { GraphModule } from '../graph/graph-module.js';
import { isPlainObject, Node, targetName } from '../graph/node.js';
// cond and map_impl, the graph builtins a saved program with control flow names
import '../control-flow/index.js';
import { readSealed, writeSealed } from '../graph/sealed-file.js';
import { tensorFromJSON, tensorToJSON } from '../graph/serialize.js';
import { Module } from '../runtime/nn/module.js';
import { Parameter } from '../runtime/nn/parameter.js';
import type { Tensor } from '../runtime/tensor.js';
import { ExportedProgram, type ProgramParts, type RangeConstraint } from './exported-program.js';
import { inStateDict, type InputSpec, type OutputSpec } from './signature.js';
import { parseInputChecks } from './input-checks.js';

/**
 * Saved exported programs, format `kiln.exported_program` (documented in docs/export-format.md). One sealed
 * JSON file (graph/sealed-file.ts: a SHA-256 of the contents, so a corrupt file is refused) holding the graph
 * (`kiln.graph`, op names only, never code), the signature, the state and constants as tensors, the range
 * constraints, the input and output trees, the input checks and the module tree. Loading checks every field
 * before building anything, and any problem is a SerializationError naming the field.
 */
export const EXPORT_FORMAT = 'kiln.exported_program';
export const EXPORT_VERSION = 1;

const READER = 'export.load';

export function save(ep: ExportedProgram, path: string): void {
  if (!(ep instanceof ExportedProgram)) throw new SerializationError(`export.save: expected an ExportedProgram, got ${typeof ep}`);
  const p = ep.parts;
  writeSealed(path, {
    format: EXPORT_FORMAT,
    version: EXPORT_VERSION,
    graph: p.graphModule.graph.toJSON(),
    subgraphs: subgraphsToJSON(p.graphModule),
    inputSpecs: p.graphSignature.inputSpecs,
    outputSpecs: p.graphSignature.outputSpecs,
    stateDict: Object.entries(p.stateDict).map(([k, t]) => ({ key: k, parameter: t instanceof Parameter, tensor: tensorToJSON(t) })),
    constants: Object.entries(p.constants).map(([k, t]) => ({ key: k, tensor: tensorToJSON(t) })),
    // JSON has no Infinity: an unbounded end is null
    rangeConstraints: [...p.rangeConstraints].map(([s, r]) => ({ symbol: s, lower: finiteOrNull(r.lower), upper: finiteOrNull(r.upper) })),
    inTree: p.inTree,
    outTree: p.outTree,
    inputChecks: p.inputChecks,
    forwardNames: p.forwardNames,
    modules: p.modules,
  });
}

export function load(path: string): ExportedProgram {
  if (typeof path !== 'string') throw new SerializationError(`export.load: expected a file path, got ${typeof path}`);
  const json = readSealed(path, { reader: READER, format: EXPORT_FORMAT, version: EXPORT_VERSION });
  try {
    return new ExportedProgram(partsFromJSON(json));
  } catch (e) {
    if (e instanceof SerializationError) throw new SerializationError(`${READER}: ${path}: ${e.message}`);
    if (e instanceof KilnError) throw new SerializationError(`${READER}: ${path} does not hold a consistent program: ${e.message}`);
    throw e;
  }
}

function finiteOrNull(v: number): number | null {
  return Number.isFinite(v) ? v : null;
}

function partsFromJSON(j: Record<string, unknown>): ProgramParts {
  const graph = Graph.fromJSON(j.graph);
  const inputSpecs = list(j.inputSpecs, 'inputSpecs').map((s, i) => inputSpec(s, `inputSpecs[${i}]`));
  const outputSpecs = list(j.outputSpecs, 'outputSpecs').map((s, i) => outputSpec(s, `outputSpecs[${i}]`));
  const stateDict: Record<string, Tensor> = {};
  list(j.stateDict, 'stateDict').forEach((e, i) => {
    const where = `stateDict[${i}]`;
    const entry = object(e, where);
    const key = dottedPath(entry.key, `${where}.key`);
    if (typeof entry.parameter !== 'boolean') throw new SerializationError(`${where}.parameter must be a boolean`);
    const t = tensorFromJSON(entry.tensor, `${where}.tensor`);
    stateDict[key] = entry.parameter ? new Parameter(t) : t;
  });
  const constants: Record<string, Tensor> = {};
  list(j.constants, 'constants').forEach((e, i) => {
    const entry = object(e, `constants[${i}]`);
    constants[dottedPath(entry.key, `constants[${i}].key`)] = tensorFromJSON(entry.tensor, `constants[${i}].tensor`);
  });
  const rangeConstraints = new Map<string, RangeConstraint>();
  list(j.rangeConstraints, 'rangeConstraints').forEach((e, i) => {
    const where = `rangeConstraints[${i}]`;
    const r = object(e, where);
    const bound = (v: unknown, inf: number, field: string) => {
      if (v === null) return inf;
      if (!Number.isSafeInteger(v)) throw new SerializationError(`${where}.${field} must be an integer or null, got ${JSON.stringify(v)}`);
      return v as number;
    };
    rangeConstraints.set(string(r.symbol, `${where}.symbol`), {
      lower: bound(r.lower, -Infinity, 'lower'),
      upper: bound(r.upper, Infinity, 'upper'),
    });
  });
  const inTree = tree(j.inTree, 'inTree');
  const outTree = tree(j.outTree, 'outTree');
  const forwardNames = list(j.forwardNames, 'forwardNames').map((n, i) => identifier(n, `forwardNames[${i}]`));
  const modules = list(j.modules, 'modules').map((e, i) => {
    const m = object(e, `modules[${i}]`);
    return { path: dottedPath(m.path, `modules[${i}].path`, true), className: identifier(m.className, `modules[${i}].className`) };
  });
  checkConsistent(graph, inputSpecs, outputSpecs, stateDict, constants, inTree, outTree);
  // files written before control flow have no subgraphs
  const subgraphs = subgraphsFromJSON(j.subgraphs ?? [], 'subgraphs', graph, 0);
  return {
    graphModule: new GraphModule(subgraphs, graph, 'GraphModule'),
    graphSignature: { inputSpecs, outputSpecs },
    stateDict,
    constants,
    rangeConstraints,
    inTree,
    outTree,
    inputChecks: parseInputChecks(j.inputChecks, 'inputChecks'),
    forwardNames,
    modules,
  };
}

/**
 * Control flow's subgraphs (`true_graph_0`, `body_graph_0`, …): each `{ name, graph, subgraphs }`, the graph a
 * `kiln.graph` like the main one, nested subgraphs inside. Only data: the `cond`/`map_impl` nodes that call them
 * are builtins looked up by name.
 */
interface SubgraphJSON {
  name: string;
  graph: unknown;
  subgraphs: SubgraphJSON[];
}

function subgraphsToJSON(gm: GraphModule): SubgraphJSON[] {
  const out: SubgraphJSON[] = [];
  for (const n of gm.graph.nodes) {
    if (n.op !== 'get_attr' || out.some((s) => s.name === n.target)) continue;
    const sub = gm.resolveTarget(n.target as string);
    if (!(sub instanceof GraphModule)) throw new SerializationError(`export.save: get_attr '${String(n.target)}' is not a subgraph`);
    out.push({ name: n.target as string, graph: sub.graph.toJSON(), subgraphs: subgraphsToJSON(sub) });
  }
  return out;
}

/** Control flow nests a few levels; deeper input is refused, not recursed into. */
const MAX_SUBGRAPH_DEPTH = 16;
/** Names a subgraph may not take: members every GraphModule has. */
const GRAPH_MODULE_MEMBERS = ['className', '_graph', '_code', '_forward'];

/**
 * The subgraphs `graph` reads, checked: each name an identifier that is no member of a module, each graph valid,
 * every get_attr of `graph` names one of them, and every `cond`/`map_impl` node calls them with operands that
 * match their placeholders.
 */
function subgraphsFromJSON(v: unknown, where: string, graph: Graph, depth: number): Record<string, GraphModule> {
  if (depth > MAX_SUBGRAPH_DEPTH) throw new SerializationError(`${where}: subgraphs nest more than ${MAX_SUBGRAPH_DEPTH} levels deep`);
  const bare = new Module();
  const subgraphs: Record<string, GraphModule> = {};
  list(v, where).forEach((e, i) => {
    const at = `${where}[${i}]`;
    const entry = object(e, at);
    const name = identifier(entry.name, `${at}.name`);
    if (name in bare || GRAPH_MODULE_MEMBERS.includes(name) || name in GraphModule.prototype)
      throw new SerializationError(`${at}.name '${name}' is a member of every module, not a subgraph name`);
    if (Object.hasOwn(subgraphs, name)) throw new SerializationError(`${at}.name '${name}' is given twice`);
    const g = Graph.fromJSON(entry.graph);
    const nested = subgraphsFromJSON(entry.subgraphs, `${at}.subgraphs`, g, depth + 1);
    subgraphs[name] = new GraphModule(nested, g, 'GraphModule');
  });
  for (const n of graph.nodes) {
    if (n.op === 'get_attr' && !Object.hasOwn(subgraphs, n.target as string))
      throw new SerializationError(`node '${n.name}' reads '${String(n.target)}', which is not one of the file's subgraphs`);
    if (n.op !== 'call_function') continue;
    const target = targetName(n.target);
    if (target === 'cond') checkControlFlowCall(n, [1, 2], 3, subgraphs);
    else if (target === 'map_impl') checkControlFlowCall(n, [0], -1, subgraphs);
  }
  return subgraphs;
}

/**
 * `cond(pred, true_graph, false_graph, operands)` and `map_impl(body_graph, xs, args)`: the subgraph arguments must
 * be get_attr nodes of subgraphs (never another member: the node calls them), taking as many inputs as it passes.
 */
function checkControlFlowCall(n: Node, graphArgs: readonly number[], operandsArg: number, subgraphs: Record<string, GraphModule>): void {
  const where = `node '${n.name}' (${targetName(n.target)})`;
  if (n.args.length !== (operandsArg < 0 ? 3 : 4)) throw new SerializationError(`${where} has ${n.args.length} arguments`);
  const lists = operandsArg < 0 ? [n.args[1], n.args[2]] : [n.args[operandsArg]];
  if (!lists.every(Array.isArray)) throw new SerializationError(`${where}: its operands must be lists`);
  const count = (lists as unknown[][]).reduce((k, l) => k + l.length, 0);
  for (const i of graphArgs) {
    const a = n.args[i];
    if (!(a instanceof Node) || a.op !== 'get_attr' || !Object.hasOwn(subgraphs, a.target as string))
      throw new SerializationError(`${where}: argument ${i} must be a get_attr of one of the file's subgraphs`);
    const sub = subgraphs[a.target as string]!;
    const placeholders = sub.graph.nodes.filter((p) => p.op === 'placeholder').length;
    if (placeholders !== count)
      throw new SerializationError(`${where}: subgraph '${String(a.target)}' takes ${placeholders} inputs but is given ${count}`);
  }
}

/** The signature must name the graph's placeholders in order, and every state placeholder must have its tensor. */
function checkConsistent(
  graph: Graph,
  inputs: readonly InputSpec[],
  outputs: readonly OutputSpec[],
  stateDict: Record<string, Tensor>,
  constants: Record<string, Tensor>,
  inTree: Tree,
  outTree: Tree,
): void {
  const placeholders = graph.nodes.filter((n) => n.op === 'placeholder').map((n) => n.name);
  if (placeholders.length !== inputs.length || placeholders.some((n, i) => n !== inputs[i]!.name)) {
    throw new SerializationError(
      `inputSpecs name [${inputs.map((s) => s.name).join(', ')}] but the graph's placeholders are [${placeholders.join(', ')}]`,
    );
  }
  const outs = graph.outputNode?.args[0];
  if (!Array.isArray(outs) || outs.length !== outputs.length) {
    throw new SerializationError(
      `outputSpecs has ${outputs.length} entries but the graph returns ${Array.isArray(outs) ? outs.length : 'no list'}`,
    );
  }
  const userInputs = inputs.filter((s) => s.kind === 'USER_INPUT');
  const tensorsInTree = countTensors(inTree);
  if (tensorsInTree !== userInputs.length)
    throw new SerializationError(`inTree holds ${tensorsInTree} tensors but the graph takes ${userInputs.length} user inputs`);
  const userOutputs = outputs.filter((o) => o.kind === 'USER_OUTPUT').length;
  if (userOutputs !== countTensors(outTree))
    throw new SerializationError(`outputSpecs name ${userOutputs} user outputs but outTree holds ${countTensors(outTree)} tensors`);
  const buffers = new Set(inputs.filter((s) => s.kind === 'BUFFER').map((s) => s.target));
  const userNames = new Set(userInputs.map((s) => s.name));
  outputs.forEach((o, i) => {
    if (o.kind === 'BUFFER_MUTATION' && !buffers.has(o.target))
      throw new SerializationError(`outputSpecs[${i}] updates '${o.target}', which is no buffer of the program`);
    if (o.kind === 'USER_INPUT_MUTATION' && !userNames.has(o.target!))
      throw new SerializationError(`outputSpecs[${i}] writes back to '${o.target}', which is no user input of the program`);
  });
  // each state tensor must be what its placeholder was traced with: a wrong one would broadcast silently
  const placeholderNodes = new Map(graph.nodes.filter((n) => n.op === 'placeholder').map((n) => [n.name, n]));
  for (const s of inputs) {
    if (s.kind === 'USER_INPUT') continue;
    const t = (inStateDict(s) ? stateDict : constants)[s.target!];
    if (!t) throw new SerializationError(`input ${s.name} (${s.kind}) needs '${s.target}', which the file does not hold`);
    const meta = placeholderNodes.get(s.name)?.meta.tensorMeta as { shape?: number[]; dtype?: string } | undefined;
    if (meta?.shape && (meta.shape.length !== t.shape.length || meta.shape.some((d, k) => d !== t.shape[k]) || meta.dtype !== t.dtype)) {
      throw new SerializationError(
        `'${s.target}' is a ${t.dtype} [${t.shape.join(', ')}] tensor but the graph was traced with ${meta.dtype} [${meta.shape.join(', ')}]`,
      );
    }
  }
}

function countTensors(t: Tree): number {
  if (t.kind === 'tensor') return 1;
  if (t.kind === 'array' || t.kind === 'object') return t.items.reduce((n, x) => n + countTensors(x), 0);
  return 0;
}

const INPUT_KINDS = new Set(['PARAMETER', 'BUFFER', 'CONSTANT_TENSOR', 'USER_INPUT']);
const OUTPUT_KINDS = new Set(['USER_OUTPUT', 'BUFFER_MUTATION', 'USER_INPUT_MUTATION']);

function inputSpec(v: unknown, where: string): InputSpec {
  const s = object(v, where);
  if (!INPUT_KINDS.has(s.kind as string))
    throw new SerializationError(`${where}.kind must be one of ${[...INPUT_KINDS].join(', ')}, got ${JSON.stringify(s.kind)}`);
  const kind = s.kind as InputSpec['kind'];
  const name = identifier(s.name, `${where}.name`);
  if (kind === 'USER_INPUT') return { kind, name };
  const target = dottedPath(s.target, `${where}.target`);
  if (kind !== 'BUFFER') return { kind, name, target };
  if (typeof s.persistent !== 'boolean') throw new SerializationError(`${where}.persistent must be a boolean`);
  return { kind, name, target, persistent: s.persistent };
}

function outputSpec(v: unknown, where: string): OutputSpec {
  const s = object(v, where);
  if (!OUTPUT_KINDS.has(s.kind as string))
    throw new SerializationError(`${where}.kind must be one of ${[...OUTPUT_KINDS].join(', ')}, got ${JSON.stringify(s.kind)}`);
  const kind = s.kind as OutputSpec['kind'];
  const name = string(s.name, `${where}.name`);
  return kind === 'USER_OUTPUT' ? { kind, name } : { kind, name, target: dottedPath(s.target, `${where}.target`) };
}

function tree(v: unknown, where: string): Tree {
  const t = object(v, where);
  switch (t.kind) {
    case 'tensor':
      return { kind: 'tensor' };
    case 'const':
      if (!(t.value === null || t.value === undefined || ['number', 'string', 'boolean'].includes(typeof t.value)))
        throw new SerializationError(`${where}.value must be a number, string, boolean or null`);
      return { kind: 'const', value: t.value };
    case 'array':
      return { kind: 'array', items: list(t.items, `${where}.items`).map((x, i) => tree(x, `${where}.items[${i}]`)) };
    case 'object': {
      const keys = list(t.keys, `${where}.keys`).map((k, i) => string(k, `${where}.keys[${i}]`));
      const items = list(t.items, `${where}.items`).map((x, i) => tree(x, `${where}.items[${i}]`));
      if (keys.length !== items.length) throw new SerializationError(`${where}: ${keys.length} keys but ${items.length} items`);
      return { kind: 'object', keys, items };
    }
    default:
      throw new SerializationError(`${where}.kind must be tensor, const, array or object, got ${JSON.stringify(t.kind)}`);
  }
}

function list(v: unknown, where: string): unknown[] {
  if (!Array.isArray(v)) throw new SerializationError(`${where} must be an array`);
  return v;
}

function object(v: unknown, where: string): Record<string, unknown> {
  if (!isPlainObject(v)) throw new SerializationError(`${where} must be an object`);
  return v;
}

function string(v: unknown, where: string): string {
  if (typeof v !== 'string') throw new SerializationError(`${where} must be a string, got ${JSON.stringify(v) ?? 'nothing'}`);
  return v;
}

const UNSAFE_NAMES = new Set(['__proto__', 'constructor', 'prototype']);

/** A state-dict key or module path: dot-separated names, none of which reaches an object's prototype. */
function dottedPath(v: unknown, where: string, allowEmpty = false): string {
  const s = string(v, where);
  if (s === '' && allowEmpty) return s;
  if (!s.split('.').every((part) => /^[A-Za-z0-9_$]+$/.test(part) && !UNSAFE_NAMES.has(part)))
    throw new SerializationError(`${where} must be a dotted path of attribute names, got ${JSON.stringify(s)}`);
  return s;
}

function identifier(v: unknown, where: string): string {
  const s = string(v, where);
  if (!/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(s)) throw new SerializationError(`${where} must be an identifier, got ${JSON.stringify(s)}`);
  return s;
}
