import type { GraphModule } from '../graph/graph-module.js';
import type { Tensor } from '../runtime/tensor.js';
import { describe } from '../runtime/validate.js';
import { LOG, log } from '../logging.js';
import { AotError } from './errors.js';

/**
 * Graph ids and the compiler-call context (PyTorch's AOT_COUNTER and `torch._guards.compile_context`): each
 * program AOT autograd traces gets the next number; its graphs are `N_forward`, `N_backward` or `N_inference`,
 * and `compilationContext()` tells a compiler which one it is compiling.
 */

/** A compiler: gets a graph and example inputs, returns what to run instead. */
export type Compiler = (gm: GraphModule, exampleInputs: Tensor[]) => (...args: Tensor[]) => unknown;

let counter = 0;
const active: string[] = [];

export function nextGraphId(): number {
  return counter++;
}

/** Start numbering graphs from 0 again (with `resetCompileCaches`). */
export function resetGraphIds(): void {
  counter = 0;
}

/** Inside a compiler: the id and kind of the graph being compiled, e.g. `['0_forward']`; outside, `[]`. */
export function compilationContext(): string[] {
  return [...active];
}

/**
 * Run `compiler` on `gm` as graph `id`. A compiler that throws, or returns something other than a function,
 * gives an AotError naming the graph; nothing is cached by the caller, so the next call compiles again.
 */
export function runCompiler(
  compiler: Compiler,
  gm: GraphModule,
  inputs: Tensor[],
  id: string,
  what: string,
): (...args: Tensor[]) => unknown {
  if (LOG.aot) log('aot', `${what}: graph ${id}\n${gm.code}`);
  active.push(id);
  let compiled: unknown;
  try {
    compiled = compiler(gm, inputs);
  } catch (e) {
    const err = new AotError(`${what}: the compiler failed on graph ${id}: ${(e as Error)?.message ?? String(e)}`);
    (err as { cause?: unknown }).cause = e;
    throw err;
  } finally {
    active.pop();
  }
  if (typeof compiled !== 'function') {
    throw new AotError(
      `${what}: the compiler for graph ${id} returned ${describe(compiled)}; a compiler must return a function that runs the graph`,
    );
  }
  return compiled as (...args: Tensor[]) => unknown;
}
