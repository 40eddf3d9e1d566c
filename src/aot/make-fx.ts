import { ValueError } from '../errors.js';
import type { GraphModule } from '../graph/graph-module.js';
import { checkDecompositions, type Decompositions } from './decompositions.js';
import { flattenTensors, unflattenTensors } from './pytree.js';
import { generaliseShapes } from './symbolic.js';
import { traceProgram } from './trace-program.js';

/**
 * makeFx (PyTorch's `make_fx`): trace a function at the op table's dispatch level into a GraphModule of
 * op-table `call_function` nodes. Layers, methods and composite ops are traced into; in-place writes are
 * functionalised; every node carries `meta.tensorMeta`. `tracingMode: 'symbolic'` traces the program again at
 * other input sizes and turns the sizes that followed the inputs into `sym_size` arithmetic, so the graph
 * runs at any size that takes the same path.
 */

export interface MakeFxOptions {
  decompositions?: Decompositions;
  tracingMode?: 'real' | 'symbolic';
}

export function makeFx(fn: (...args: never[]) => unknown, options: MakeFxOptions = {}): (...args: unknown[]) => GraphModule {
  if (typeof fn !== 'function') throw new ValueError(`makeFx: expected a function to trace, got ${typeof fn}`);
  const decompositions = checkDecompositions(options.decompositions, 'makeFx');
  const mode = options.tracingMode ?? 'real';
  if (mode !== 'real' && mode !== 'symbolic')
    throw new ValueError(`makeFx: tracingMode must be 'real' or 'symbolic', got ${JSON.stringify(mode)}`);
  return (...args: unknown[]) => {
    const { tensors, tree } = flattenTensors(args, 'makeFx: argument');
    const trace = (inputs: readonly (typeof tensors)[number][]) =>
      traceProgram(inputs, (copies) => (fn as (...a: unknown[]) => unknown)(...(unflattenTensors(tree, copies) as unknown[])), {
        joint: false,
        decompositions,
        what: 'makeFx',
        naming: 'arg',
        plainOutputs: true,
      }).gm;
    const gm = trace(tensors);
    return mode === 'symbolic' ? generaliseShapes(gm, tensors, trace) : gm;
  };
}
