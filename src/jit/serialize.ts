import { SerializationError } from '../errors.js';
import type { GraphModule } from '../graph/graph-module.js';
import { isIdentifier } from '../graph/naming.js';
import { graphModuleFromJSON, graphModuleToJSON, type LoadOptions } from '../graph/save.js';
import { readSealed, writeSealed } from '../graph/sealed-file.js';
import { isPlainObject } from '../runtime/plain-object.js';
import { isShapeSpec, type ShapeSpec } from './shape-fit.js';
import { isStructure, type Structure } from './structure.js';
import { TracedModule, asTracedFunction, type TracedFunction, type TracedMethod } from './trace.js';

/**
 * Saved traced programs: format `kiln.jit` v1 — each method's GraphModule (format `kiln.graph_module`, weights
 * included) with its input and output structure, and a SHA-256 of all of it (graph/sealed-file.ts, as fx files
 * have), so a corrupted file is refused instead of loading a different model. Loading checks everything, method
 * names and graph arity included, before building anything; each graph is checked as fx.load checks one.
 */
export const JIT_FORMAT = 'kiln.jit';
export const JIT_VERSION = 1;

export function saveTraced(traced: TracedModule, path: string): void {
  const methods = Object.fromEntries(
    [...traced.methods].map(([name, m]) => [
      name,
      {
        module: graphModuleToJSON(m.gm),
        inputs: m.inputs,
        outputs: m.outputs,
        ...(m.shapes ? { shapes: m.shapes } : {}),
        ...(m.inputWrites ? { inputWrites: m.inputWrites } : {}),
        ...(m.stateWrites ? { stateWrites: m.stateWrites } : {}),
      },
    ]),
  );
  const payload = {
    format: JIT_FORMAT,
    version: JIT_VERSION,
    ...(traced.fromFunction !== undefined ? { function: traced.fromFunction } : {}),
    methods,
  };
  writeSealed(path, payload);
}

// Installed here rather than in trace.ts, which this module imports.
TracedModule.prototype.save = function (this: TracedModule, path: string) {
  saveTraced(this, path);
};

/** What a TracedModule instance holds besides its weights (see its constructor). */
const INSTANCE_FIELDS = new Set(['methods', 'fromFunction', 'retracers', 'verifiedShapes', 'training']);

/** Read a traced program: a TracedModule, or a traced function when a function was traced. */
export function loadTraced(path: string, options: LoadOptions = {}): TracedModule | TracedFunction {
  const payload = readSealed(path, { reader: 'jit.load', format: JIT_FORMAT, version: JIT_VERSION });
  if (!isPlainObject(payload.methods) || Object.keys(payload.methods).length === 0) {
    throw new SerializationError(`jit.load: ${path} has no methods`);
  }
  if (payload.function !== undefined && typeof payload.function !== 'string') {
    throw new SerializationError(`jit.load: "function" in ${path} must be a string, got ${JSON.stringify(payload.function)}`);
  }
  const methods = new Map<string, TracedMethod>();
  for (const [name, m] of Object.entries(payload.methods)) {
    const where = `jit.load: method '${name}' in ${path}`;
    // Each method but forward becomes a property of the TracedModule: it must not replace one it has.
    if (!isIdentifier(name) || (name !== 'forward' && (name in TracedModule.prototype || INSTANCE_FIELDS.has(name)))) {
      throw new SerializationError(`${where}: '${name}' is not a method name a traced program can have`);
    }
    if (!isPlainObject(m)) throw new SerializationError(`${where} is malformed`);
    if (!isStructure(m.inputs)) throw new SerializationError(`${where}: "inputs" is not an input structure`);
    if (!isStructure(m.outputs)) throw new SerializationError(`${where}: "outputs" is not an output structure`);
    if (m.shapes !== undefined && !isShapeSpec(m.shapes)) throw new SerializationError(`${where}: "shapes" is malformed`);
    let gm: GraphModule;
    try {
      gm = graphModuleFromJSON(m.module, options);
    } catch (e) {
      if (e instanceof SerializationError) throw new SerializationError(`${where}: ${e.message}`);
      throw e;
    }
    const inputWrites = m.inputWrites ?? [];
    const stateWrites = m.stateWrites ?? [];
    const state = new Set([...gm.namedParameters(), ...gm.namedBuffers()].map(([p]) => p));
    if (!Array.isArray(inputWrites) || !inputWrites.every((i) => Number.isSafeInteger(i) && i >= 0 && i < leaves(m.inputs as Structure))) {
      throw new SerializationError(`${where}: "inputWrites" must list positions of its input tensors`);
    }
    if (!Array.isArray(stateWrites) || !stateWrites.every((p) => typeof p === 'string' && state.has(p))) {
      throw new SerializationError(`${where}: "stateWrites" must list paths of its parameters and buffers`);
    }
    checkArity(gm, m.inputs, m.outputs, where, inputWrites.length + stateWrites.length);
    methods.set(name, {
      gm,
      inputs: m.inputs,
      outputs: m.outputs,
      warnings: [],
      shapes: m.shapes as ShapeSpec | undefined,
      ...(inputWrites.length ? { inputWrites: inputWrites as number[] } : {}),
      ...(stateWrites.length ? { stateWrites: stateWrites as string[] } : {}),
    });
  }
  const forward = methods.get('forward') ?? [...methods.values()][0]!;
  for (const [name] of methods) {
    if (name !== 'forward' && forward.gm.namedChildren().some(([n]) => n === name)) {
      throw new SerializationError(`jit.load: method '${name}' in ${path} has the name of one of the program's modules`);
    }
  }
  const tm = new TracedModule(methods);
  if (payload.function === undefined) return tm;
  tm.fromFunction = payload.function;
  return asTracedFunction(tm, payload.function);
}

const leaves = (s: Structure): number => (s.kind === 'tensor' ? 1 : s.items.reduce((n, x) => n + leaves(x), 0));

/**
 * A method's graph takes one input per tensor of its input structure and returns a list of one per output
 * tensor, then one per input or weight it writes in place (`writes`).
 */
function checkArity(gm: GraphModule, inputs: Structure, outputs: Structure, where: string, writes: number): void {
  const params = gm.graph.nodes.filter((n) => n.op === 'placeholder').length;
  if (params !== leaves(inputs))
    throw new SerializationError(`${where}: its graph takes ${params} inputs, its input structure holds ${leaves(inputs)} tensors`);
  const out = gm.graph.nodes.find((n) => n.op === 'output')!.args[0];
  if (!Array.isArray(out) || out.length !== leaves(outputs) + writes) {
    throw new SerializationError(
      `${where}: its graph's output does not hold the ${leaves(outputs)} tensors its output structure names${writes ? ` and the ${writes} it writes back` : ''}`,
    );
  }
}
