import { ValueError } from '../errors.js';
import type { GraphModule } from '../graph/graph-module.js';
import type { Tensor } from '../runtime/tensor.js';
import { AotModule } from '../aot/aot-function.js';
import { kernelsBackend } from '../kernels/program.js';

/** A compiler for captured graphs: gets the GraphModule and example inputs, returns what to run instead. */
export type Backend = (gm: GraphModule, exampleInputs: Tensor[]) => (...args: Tensor[]) => unknown;

/** An object that can stand in for a backend function (e.g. `testing.CompileCounter`). */
export interface BackendObject {
  compileGraph: Backend;
}

export type BackendOption = 'kernels' | 'eager' | 'aot_eager' | Backend | BackendObject;

/** Run the GraphModule's generated forward on kiln's eager runtime. */
export const eagerBackend: Backend =
  (gm) =>
  (...args) =>
    gm.forward(...args);

/** 'aot_eager': AOT autograd's forward and backward graphs (or its inference graph), run on the eager runtime. */
export const aotEagerBackend: Backend = (gm) => {
  const m = new AotModule(gm, { fwCompiler: eagerBackend });
  return (...args) => m.forward(...args);
};

/** Count the nodes that do work (what `opCount` reports): call_function, call_method and call_module. */
export function countOps(gm: GraphModule): number {
  let n = 0;
  for (const node of gm.graph.nodes) if (node.op === 'call_function' || node.op === 'call_method' || node.op === 'call_module') n++;
  return n;
}

/** Whether `b` names the kernels backend: the default, the string, or the function itself. */
export function isKernelsBackend(b: BackendOption | undefined): boolean {
  return b === undefined || b === 'kernels' || b === kernelsBackend;
}

export function resolveBackend(b: BackendOption | undefined): Backend {
  if (isKernelsBackend(b)) return kernelsBackend;
  if (b === 'eager') return eagerBackend;
  if (b === 'aot_eager') return aotEagerBackend;
  if (typeof b === 'function') return b;
  if (typeof b === 'object' && b !== null && typeof b.compileGraph === 'function') return (gm, inputs) => b.compileGraph(gm, inputs);
  throw new ValueError(
    `compile: unknown backend ${JSON.stringify(b)} (expected 'kernels', 'eager', 'aot_eager', a function or a CompileCounter)`,
  );
}
