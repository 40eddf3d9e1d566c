import { refuseBannedMutations } from '../aot/export.js';
import { checkDecompositions, kernelDecompositions, type Decompositions } from '../aot/decompositions.js';
import { flattenTensors, unflattenTensors } from '../aot/pytree.js';
import { traceProgram } from '../aot/trace-program.js';
import { ValueError } from '../errors.js';
import { lookupAttr } from '../graph/attrs.js';
import { GraphModule } from '../graph/graph-module.js';
import type { Node } from '../graph/node.js';
import { Module } from '../runtime/nn/module.js';
import type { DType } from '../runtime/dtype.js';
import { ones } from '../runtime/ops/creation.js';
import type { Tensor } from '../runtime/tensor.js';
import { eagerly } from '../compile/plan.js';
import { ExportError } from './errors.js';
import { ExportedModule, ExportedProgram, setRetrace } from './exported-program.js';
import { forwardParamNames } from './forward-names.js';
import { treeLeaves } from './input-tree.js';
import { bindInputDims, declaredDims } from './dim.js';
import { checkConstraints } from './constraints.js';
import { dimEntries } from './dynamic-shapes.js';
import { generaliseExport } from './generalise.js';
import { dynamicShapesOf } from './respec.js';
import { buildInputChecks, type InputSpec } from './input-checks.js';
import { guardToString, ShapeEnv } from './symbolic/shape-env.js';
import { propagateGraph, SymbolicShapes, withSymbolicShapes } from './symbolic-trace.js';
import { solve, type Solution } from './symbolic/solve.js';

import { liftGraph, userInputNames, type StateEntry } from './lift.js';
import type { OutputSpec } from './signature.js';

/**
 * exportProgram (PyTorch's `torch.export.export`): one call of `module` traced at the op table's dispatch level
 * into a functional graph (no in-place nodes, no submodule calls), its state lifted to placeholders, and
 * everything needed to run it again: signature, state, constants and the checks its inputs must pass.
 */

export interface ExportOptions {
  /** Mirrors `args`; see API §6. */
  dynamicShapes?: unknown;
  /**
   * `true`: sizes must be read through the plugin's recording (code kiln/plugin rewrote); a dynamic size read
   * anywhere else is an error with its file:line and a code frame. `false` (the default, as in PyTorch 2.7+):
   * such code runs as it is and the program is checked by tracing again at other sizes.
   */
  strict?: boolean;
  /** @internal runDecompositions: the table to trace with. */
  decompositions?: Decompositions;
}

export function exportProgram(module: Module, args: readonly unknown[], options: ExportOptions = {}): ExportedProgram {
  if (!(module instanceof Module)) throw new ValueError(`exportProgram: expected an nn.Module, got ${describe(module)}`);
  if (!Array.isArray(args)) throw new ValueError(`exportProgram: args must be an array of the forward's arguments, got ${describe(args)}`);
  if (options.strict !== undefined && typeof options.strict !== 'boolean')
    throw new ValueError(`exportProgram: strict must be a boolean, got ${describe(options.strict)}`);
  const target = (module as { origMod?: Module }).origMod ?? module; // an OptimizedModule exports its original
  const decompositions = checkDecompositions(options.decompositions, 'exportProgram');

  const { tensors, tree } = flattenTensors([...args], '*args');
  const state = stateEntries(target);
  const primals = [...state.map((s) => s.tensor), ...tensors];
  const forward = target instanceof ExportedModule ? target.forward : (Object.getPrototypeOf(target).forward ?? target.forward);
  const { names, rest } = forwardParamNames(forward);
  const argName = (i: number) => names[i] ?? `${rest ?? 'args'}[${i - names.length}]`;

  // One trace: the dynamic dims bound to symbols (static dims checked against the example), sizes followed op by
  // op, the plugin's helpers answered symbolically. Retraces at other sizes bind and record the same way, in an
  // env of their own, so they take the same path through code that compares or checks sizes.
  const traceWith = (inputs: readonly Tensor[]) => {
    const env = new ShapeEnv();
    const user = inputs.slice(state.length);
    const flatSizes = bindInputDims(env, dimEntries(unflattenTensors(tree, user) as unknown[], options.dynamicShapes, argName));
    let at = 0;
    const sizes = user.map((t) => flatSizes.slice(at, (at += t.shape.length)));
    const shapes = new SymbolicShapes(env, options.strict === true);
    const program = withSymbolicShapes(shapes, () =>
      // a class the plugin rewrote runs its plan's plain code (shape reads through the recording helpers)
      eagerly(() =>
        traceProgram(
          inputs,
          (copies) =>
            (target.call as (...a: unknown[]) => unknown).apply(target, unflattenTensors(tree, copies.slice(state.length)) as unknown[]),
          {
            joint: false,
            naming: 'arg',
            what: 'exportProgram',
            plainViews: true,
            decompositions,
            onTracer: (tracer, copies) =>
              shapes.attach(
                tracer,
                copies.slice(state.length).map((c, i) => [c, sizes[i]!] as const),
              ),
          },
          target,
        ),
      ),
    );
    return { env, shapes, sizes, program };
  };
  const { env, shapes, sizes, program } = traceWith(primals);
  refuseBannedMutations(program, primals, 'export');
  const inputSizes = [...state.map((s) => [...s.tensor.shape]), ...sizes];
  const traced = generaliseExport({
    gm: program.gm,
    primals,
    fixed: state.length,
    sizes,
    env,
    solution: solve(env),
    retrace: (inputs) => traceWith(inputs).program.gm,
  });
  // the ops' own guards (broadcasting, matmul, views), over a graph whose sizes now follow the inputs
  propagateGraph(traced, shapes, inputSizes);
  const constraints = checkConstraints(env);
  setAssertedRanges(traced, constraints.solution);

  const lifted = liftGraph(traced, target, state, userInputNames(tree, names, rest), (attr) => lookupAttr(program.gm, attr) as Tensor);
  const outputSpecs = outputSpecsOf(program.mutations, state, lifted.inputSpecs, lifted.graph.outputNode!.args[0] as (Node | null)[]);
  const gm = new GraphModule(lifted.subgraphs, lifted.graph, 'GraphModule');

  const stateDict: Record<string, Tensor> = {};
  const constants: Record<string, Tensor> = { ...lifted.constants };
  for (const s of state) {
    if (s.kind === 'BUFFER' && !s.persistent) constants[s.target] = s.tensor;
    else stateDict[s.target] = s.tensor;
  }
  let k = 0;
  const leaves = treeLeaves(tree).map((l): InputSpec =>
    l.kind === 'tensor'
      ? { kind: 'tensor', path: l.path, shape: sizes[k]!, dtype: tensors[k++]!.dtype }
      : { kind: 'value', path: l.path, value: l.value as number | string | boolean | null },
  );
  const { checks, unchecked } = buildInputChecks(env, constraints, leaves);
  // a guard neither the input checks nor an assertion node enforces would make the program wrong where it fails
  const unenforced = unchecked.filter((g) => g.kind !== 'assertion');
  if (unenforced.length > 0) {
    throw new ExportError(
      `exportProgram: the program depends on ${unenforced.map((g) => guardToString(g)).join(', ')}, which involves data-dependent values ` +
        'no check states; add check(...) on those values so the exported program asserts it',
    );
  }
  return new ExportedProgram({
    graphModule: gm,
    graphSignature: { inputSpecs: lifted.inputSpecs, outputSpecs },
    stateDict,
    constants,
    rangeConstraints: new Map([...constraints.rangeConstraints]),
    inTree: tree,
    outTree: program.outStructure,
    inputChecks: checks,
    examples: [...args],
    dimNames: new Map([...declaredDims(env)].map(([name, { symbol }]) => [symbol, name])),
    forwardNames: [
      ...names,
      ...(rest !== undefined ? Array.from({ length: Math.max(0, args.length - names.length) }, (_, i) => `${rest}_${i}`) : []),
    ],
    modules: target.namedModules().map(([path, m]) => ({ path, className: m.constructor.name })),
  });
}

/** The module's parameters, then its buffers, by state-dict key (PyTorch's placeholder order). */
function stateEntries(module: Module): StateEntry[] {
  const persistent = new Set(Object.keys(module.stateDict()));
  return [
    ...module.namedParameters().map(([target, tensor]): StateEntry => ({ kind: 'PARAMETER', target, tensor, persistent: true })),
    ...module
      .namedBuffers()
      .map(([target, tensor]): StateEntry => ({ kind: 'BUFFER', target, tensor, persistent: persistent.has(target) })),
  ];
}

/** Mutated buffers and user inputs come first among the graph's outputs (traceProgram's order), then the user's. */
function outputSpecsOf(
  mutations: readonly { input: number; data: boolean }[],
  state: readonly StateEntry[],
  inputSpecs: readonly { kind: string; name: string }[],
  outs: readonly (Node | null)[],
): OutputSpec[] {
  const userPlaceholders = inputSpecs.filter((s) => s.kind === 'USER_INPUT').map((s) => s.name);
  const specs: OutputSpec[] = [];
  mutations
    .filter((m) => m.data)
    .forEach((m, k) => {
      const name = outs[k]!.name;
      if (m.input >= state.length) {
        specs.push({ kind: 'USER_INPUT_MUTATION', name, target: userPlaceholders[m.input - state.length]! });
        return;
      }
      const s = state[m.input]!;
      if (s.kind === 'PARAMETER')
        throw new ExportError(`exportProgram: forward writes the parameter '${s.target}' in place; export supports buffer updates only`);
      specs.push({ kind: 'BUFFER_MUTATION', name, target: s.target });
    });
  for (const out of outs.slice(specs.length)) specs.push({ kind: 'USER_OUTPUT', name: out?.name ?? 'None' });
  return specs;
}

function describe(x: unknown): string {
  if (x === null) return 'null';
  if (Array.isArray(x)) return 'an array';
  return typeof x === 'object' ? (x.constructor?.name ?? 'object') : typeof x;
}

/**
 * The example arguments to trace again with: the ones it was exported with, or for a loaded program inputs rebuilt
 * from its placeholders (the sizes and dtypes it was traced at) filled with ones.
 */
function exampleArgs(ep: ExportedProgram): unknown[] {
  if (ep.parts.examples) return [...ep.parts.examples];
  const userNames = new Set(ep.graphSignature.inputSpecs.filter((s) => s.kind === 'USER_INPUT').map((s) => s.name));
  const user = ep.graphModule.graph.nodes.filter((n) => n.op === 'placeholder' && userNames.has(n.name));
  const tensors = user.map((n) => {
    const meta = n.meta.tensorMeta as { shape: number[]; dtype: DType };
    return ones(meta.shape, { dtype: meta.dtype });
  });
  return unflattenTensors(ep.parts.inTree, tensors) as unknown[];
}

setRetrace((ep, decompositions) => {
  // the broadest table kiln has (layer and batch norm, adaptive pooling into primitive ops), as PyTorch's core ATen one
  const table = new Map<unknown, unknown>(kernelDecompositions);
  if (decompositions) for (const [k, v] of decompositions instanceof Map ? decompositions : Object.entries(decompositions)) table.set(k, v);
  return exportProgram(ep.module(), exampleArgs(ep), { decompositions: table as Decompositions, dynamicShapes: dynamicShapesOf(ep.parts) });
});

/** `check`'s range assertions get the range the solver gave their data-dependent value (all checks on it together). */
function setAssertedRanges(gm: GraphModule, solution: Solution): void {
  for (const n of gm.graph.nodes) {
    const symbol = n.meta.rangeOf as string | undefined;
    if (symbol === undefined) continue;
    const r = solution.ranges.get(symbol);
    if (!r) continue;
    n.args = [n.args[0]!, Number.isFinite(r.lower) ? r.lower : null, Number.isFinite(r.upper) ? r.upper : null];
  }
  gm.recompile();
}
