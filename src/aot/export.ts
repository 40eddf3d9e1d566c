import { ValueError } from '../errors.js';
import type { GraphModule } from '../graph/graph-module.js';
import type { Node } from '../graph/node.js';
import { Module } from '../runtime/nn/module.js';
import type { Tensor } from '../runtime/tensor.js';
import { checkDecompositions, type Decompositions } from './decompositions.js';
import { AotError } from './errors.js';
import { flattenTensors, unflattenTensors } from './pytree.js';
import { traceProgram, type TracedProgram } from './trace-program.js';

/**
 * Export of AOT graphs (PyTorch's aot_export_module / aot_export_joint_simple): the traced graph itself, for
 * another runtime to run, with a signature that says which inputs are parameters and buffers and which outputs
 * are new buffer values, user outputs and gradients. Patterns the caller would have to replay by hand are
 * refused with PyTorch's texts: metadata mutation of an input, mutated duplicated or aliased inputs, and in a
 * training export any output other than the loss that requires grad.
 */

export interface GraphSignature {
  readonly parameters: readonly string[];
  readonly buffers: readonly string[];
  readonly userInputs: readonly string[];
  readonly userOutputs: readonly string[];
  readonly inputsToParameters: Readonly<Record<string, string>>;
  readonly inputsToBuffers: Readonly<Record<string, string>>;
  /** Output name → the buffer it is the new value of. */
  readonly buffersToMutate: Readonly<Record<string, string>>;
  /** Output name → the user input (placeholder) it is the new value of. */
  readonly userInputsToMutate: Readonly<Record<string, string>>;
  readonly backwardSignature: {
    readonly gradientsToParameters: Readonly<Record<string, string>>;
    readonly gradientsToUserInputs: Readonly<Record<string, string>>;
    readonly lossOutput: string;
  } | null;
}

export interface AotExportModuleOptions {
  /** Export the joint graph: the forward, then the gradients of the loss (`outputLossIndex`). */
  trainable?: boolean;
  outputLossIndex?: number;
  decompositions?: Decompositions;
}

export function refuseBannedMutations(program: TracedProgram, primals: readonly Tensor[], what: string): void {
  for (const m of program.mutations) {
    if (m.layout) {
      throw new AotError(
        `Found an input that received a metadata mutation, through e.g. a call to \`.t_()\` or \`.unsqueeze_()\` (input ${m.input}). This is currently banned in the ${what} workflow.`,
      );
    }
  }
  for (const m of program.mutations) {
    if (primals.indexOf(primals[m.input]!) !== primals.lastIndexOf(primals[m.input]!)) {
      throw new AotError(
        `Encountered duplicated inputs that are mutated in the graph you are trying to export (input ${m.input}). This functionality is currently not supported by ${what}.`,
      );
    }
  }
}

const outputNodes = (gm: GraphModule): (Node | null)[] => gm.graph.outputNode!.args[0] as (Node | null)[];

/** Export `module`'s forward (or, `trainable`, its joint graph) with its parameters and buffers lifted to inputs. */
export function aotExportModule(
  module: Module,
  args: readonly unknown[],
  options: AotExportModuleOptions = {},
): { graphModule: GraphModule; signature: GraphSignature } {
  if (!(module instanceof Module)) throw new ValueError(`aotExportModule: expected an nn.Module, got ${typeof module}`);
  if (!Array.isArray(args)) throw new ValueError('aotExportModule: args must be an array of the arguments');
  const trainable = options.trainable === true;
  if (trainable && !Number.isInteger(options.outputLossIndex)) {
    throw new ValueError('aotExportModule: a trainable export needs outputLossIndex, the index of the scalar loss among the outputs');
  }
  const params = module.namedParameters();
  const buffers = module.namedBuffers();
  const state = [...params.map(([, p]) => p), ...buffers.map(([, b]) => b)];
  const { tensors, tree } = flattenTensors(args, 'aotExportModule: argument');
  const primals = [...state, ...tensors];
  const program = traceProgram(
    primals,
    (copies) => module.forward(...(unflattenTensors(tree, copies.slice(state.length)) as unknown[])),
    {
      joint: trainable,
      naming: 'arg',
      what: 'aotExportModule',
      decompositions: checkDecompositions(options.decompositions, 'aotExportModule'),
      lossIndex: trainable ? options.outputLossIndex : undefined,
      plainViews: true,
    },
    module,
  );
  refuseBannedMutations(program, primals, 'aot_export');
  const gm = program.gm;
  const placeholders = gm.graph.nodes.filter((n) => n.op === 'placeholder').map((n) => n.name);
  const outs = outputNodes(gm);
  // Gradients come after the forward outputs, one per primal: keep those that exist and say whose they are.
  const grads = outs.slice(program.numFwdOutputs);
  const kept = [...outs.slice(0, program.numFwdOutputs), ...grads.filter((g) => g !== null)];
  gm.graph.outputNode!.args = [kept];
  gm.recompile();
  const name = (n: Node | null) => n!.name;
  const inputsToParameters = Object.fromEntries(params.map(([p], i) => [placeholders[i]!, p]));
  const inputsToBuffers = Object.fromEntries(buffers.map(([b], i) => [placeholders[params.length + i]!, b]));
  const buffersToMutate: Record<string, string> = {};
  const userInputsToMutate: Record<string, string> = {};
  program.mutations.forEach((m, k) => {
    const out = name(outs[k]!);
    if (m.input < params.length) throw new AotError(`aotExportModule: the program writes parameter '${params[m.input]![0]}' in place`);
    if (m.input < state.length) buffersToMutate[out] = buffers[m.input - params.length]![0];
    else userInputsToMutate[out] = placeholders[m.input]!;
  });
  const userOutputs = outs.slice(program.numMutated, program.numFwdOutputs).map(name);
  let backwardSignature: GraphSignature['backwardSignature'] = null;
  if (trainable) {
    const gradientsToParameters: Record<string, string> = {};
    const gradientsToUserInputs: Record<string, string> = {};
    grads.forEach((g, i) => {
      if (!g) return;
      if (i < params.length) gradientsToParameters[g.name] = params[i]![0];
      else if (i >= state.length) gradientsToUserInputs[g.name] = placeholders[i]!;
    });
    backwardSignature = { gradientsToParameters, gradientsToUserInputs, lossOutput: userOutputs[options.outputLossIndex!]! };
  }
  return {
    graphModule: gm,
    signature: {
      parameters: params.map(([p]) => p),
      buffers: buffers.map(([b]) => b),
      userInputs: placeholders.slice(state.length),
      userOutputs,
      inputsToParameters,
      inputsToBuffers,
      buffersToMutate,
      userInputsToMutate,
      backwardSignature,
    },
  };
}

/**
 * The graph of `fn` on `args`: the forward (`trainable: false`), or the joint forward+backward graph with
 * placeholders `primals_N`, `tangents_N` and output `[forward outputs…, gradient of each primal…]`, ready for a
 * partitioner. Input mutations are refused: the graph alone could not replay them.
 */
export function aotExportJointSimple(
  fn: (...args: never[]) => unknown,
  args: readonly unknown[],
  options: { trainable?: boolean } = {},
): GraphModule {
  if (typeof fn !== 'function') throw new ValueError(`aotExportJointSimple: expected a function, got ${typeof fn}`);
  if (!Array.isArray(args)) throw new ValueError('aotExportJointSimple: args must be an array of the arguments');
  const { tensors, tree } = flattenTensors(args, 'aotExportJointSimple: argument');
  const call = fn as unknown as (...a: unknown[]) => unknown;
  const program = traceProgram(tensors, (copies) => call(...(unflattenTensors(tree, copies) as unknown[])), {
    joint: options.trainable === true,
    naming: 'primals',
    what: 'aotExportJointSimple',
    plainViews: true,
  });
  refuseBannedMutations(program, tensors, 'aot_export');
  if (program.mutations.length > 0) {
    throw new AotError(`aotExportJointSimple does not support input mutations (input ${program.mutations[0]!.input} is written in place)`);
  }
  return program.gm;
}
