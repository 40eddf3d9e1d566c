import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { SerializationError } from '../errors.js';
import { graphModuleFromJSON, graphModuleToJSON, type LoadOptions } from '../graph/save.js';
import { isPlainObject } from '../runtime/plain-object.js';
import { isShapeSpec, type ShapeSpec } from './shape-fit.js';
import { isStructure } from './structure.js';
import { TracedModule, asTracedFunction, type TracedFunction, type TracedMethod } from './trace.js';

/**
 * Saved traced programs: format `kiln.jit` v1 — each method's GraphModule (format `kiln.graph_module`, weights
 * included) with its input and output structure, and a SHA-256 of all of it, so a corrupted file is refused
 * instead of loading a different model. Loading checks everything before building anything.
 */
export const JIT_FORMAT = 'kiln.jit';
export const JIT_VERSION = 1;

const digest = (payload: unknown) => createHash('sha256').update(JSON.stringify(payload)).digest('hex');

export function saveTraced(traced: TracedModule, path: string): void {
  const methods = Object.fromEntries(
    [...traced.methods].map(([name, m]) => [
      name,
      { module: graphModuleToJSON(m.gm), inputs: m.inputs, outputs: m.outputs, ...(m.shapes ? { shapes: m.shapes } : {}) },
    ]),
  );
  const payload = {
    format: JIT_FORMAT,
    version: JIT_VERSION,
    ...(traced.fromFunction !== undefined ? { function: traced.fromFunction } : {}),
    methods,
  };
  writeFileSync(path, JSON.stringify({ ...payload, sha256: digest(payload) }));
}

// Installed here rather than in trace.ts, which this module imports.
TracedModule.prototype.save = function (this: TracedModule, path: string) {
  saveTraced(this, path);
};

/** Read a traced program: a TracedModule, or a traced function when a function was traced. */
export function loadTraced(path: string, options: LoadOptions = {}): TracedModule | TracedFunction {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new SerializationError(`jit.load: cannot read ${path}: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SerializationError(`jit.load: ${path} is not a kiln.jit file (not valid JSON: ${(e as Error).message})`);
  }
  if (!isPlainObject(json)) throw new SerializationError(`jit.load: ${path} is not a kiln.jit file`);
  const { sha256, ...payload } = json as Record<string, unknown>;
  if (payload.format !== JIT_FORMAT)
    throw new SerializationError(`jit.load: ${path} has format ${JSON.stringify(payload.format)}, expected '${JIT_FORMAT}'`);
  if (payload.version !== JIT_VERSION)
    throw new SerializationError(`jit.load: ${path} is version ${JSON.stringify(payload.version)}; this kiln reads version ${JIT_VERSION}`);
  if (sha256 !== digest(payload)) throw new SerializationError(`jit.load: ${path} is corrupt (its SHA-256 does not match its contents)`);
  if (!isPlainObject(payload.methods) || Object.keys(payload.methods as object).length === 0) {
    throw new SerializationError(`jit.load: ${path} has no methods`);
  }
  const methods = new Map<string, TracedMethod>();
  for (const [name, m] of Object.entries(payload.methods as Record<string, Record<string, unknown>>)) {
    if (!isPlainObject(m) || !isStructure(m.inputs) || !isStructure(m.outputs) || (m.shapes !== undefined && !isShapeSpec(m.shapes)))
      throw new SerializationError(`jit.load: method '${name}' in ${path} is malformed`);
    const shapes = m.shapes as ShapeSpec | undefined;
    methods.set(name, { gm: graphModuleFromJSON(m.module, options), inputs: m.inputs, outputs: m.outputs, warnings: [], shapes });
  }
  const tm = new TracedModule(methods);
  if (typeof payload.function !== 'string') return tm;
  tm.fromFunction = payload.function;
  return asTracedFunction(tm, payload.function);
}
