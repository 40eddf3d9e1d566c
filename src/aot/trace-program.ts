import { GraphModule } from '../graph/graph-module.js';
import type { Argument, FunctionTarget, Node } from '../graph/node.js';
import { gradients, isGradEnabled, withGradMode } from '../runtime/autograd.js';
import { setTraceDispatch } from '../runtime/dispatch.js';
import { Module } from '../runtime/nn/module.js';
import { multiOutputViewOf } from '../runtime/op.js';
import type { ViewStep } from '../runtime/ops/view.js';
import type { SymExpr } from '../jit/shape-fit.js';
import { rngState, setRngState } from '../runtime/random.js';
import { sameShape } from '../runtime/shape.js';
import { Tensor } from '../runtime/tensor.js';
import type { Decompositions } from './decompositions.js';
import { eliminateCommonSubexpressions } from './cse.js';
import { FxTracer } from './fx-tracer.js';
import { copy_ } from './graph-copy.js';
import { AotError } from './errors.js';
import { onesLike } from '../runtime/ops/creation.js';
import { flattenTensors, unflattenTensors, type Tree } from './pytree.js';

/**
 * Trace one call of a program into a functional graph: the forward only (`joint: false`, for inference and
 * makeFx), or one joint forward+backward graph (`joint: true`) whose backward is recorded by running the
 * tape's gradient rules with the tracer active. The program runs on copies of its inputs, and the random
 * generator is put back afterwards, so tracing has no effect the caller can see.
 */

/** Where each user output comes from when the compiled program runs. */
export type OutputSource =
  | { kind: 'graph'; index: number } // graph output `index` (after the mutated inputs)
  | { kind: 'input'; input: number } // the input itself, returned as is
  | ({ kind: 'inputView'; input: number } & RebuiltView) // a view of an input, rebuilt outside the graph
  | ({ kind: 'baseView'; index: number } & RebuiltView); // a view of graph output `index` (an intermediate base)

/** How a view output is rebuilt outside the graph. */
export interface RebuiltView {
  readonly chain: readonly ViewStep[];
  readonly detach: boolean;
  /** Made by unbind or split: it keeps their ban on in-place writes that need a gradient. */
  readonly multiOutput?: { readonly fn: string; readonly index: number };
  /** Dynamic shapes: the chain's integers (by walk order) that follow the input sizes (output-views.ts). */
  readonly sizes?: readonly (readonly [index: number, expr: SymExpr])[];
}

export interface InputMutation {
  readonly input: number;
  /** Data writes come back as a graph output and are copied into the caller's tensor. */
  readonly data: boolean;
  /** A changed shape or strides: the in-place metadata ops (`t_`, `unsqueeze_`, …) to replay on the caller's tensor. */
  readonly layout?: readonly (readonly [method: string, args: readonly unknown[]])[];
}

export interface TracedProgram {
  /** The joint graph, or the forward graph. Its output is one flat array (see `numFwdOutputs`). */
  readonly gm: GraphModule;
  /** Graph outputs of the forward: new values of data-mutated inputs, user outputs, intermediate bases. */
  readonly numFwdOutputs: number;
  readonly numMutated: number;
  readonly mutations: readonly InputMutation[];
  readonly outputs: readonly OutputSource[];
  readonly outStructure: Tree;
  /** Forward outputs (by index) that get a tangent in the joint graph. */
  readonly tangentsFor: readonly number[];
  /** Which primals get a gradient. */
  readonly gradFor: readonly boolean[];
  /** Whether any output, or any new value of a mutated input, requires grad. */
  readonly requiresGrad: boolean;
}

export interface TraceProgramOptions {
  readonly joint: boolean;
  readonly decompositions?: Decompositions;
  readonly what: string;
  /** Placeholder names: `primals` (`primals_1`…) or `arg` (`arg0_1`…). */
  readonly naming: 'primals' | 'arg';
  readonly className?: string;
  /**
   * Export of a training graph: the backward is seeded with ones for the scalar output at this index instead
   * of taking tangents, and no other output may require grad.
   */
  readonly lossIndex?: number;
  /** Export: every user output is a graph output, views and inputs included (nothing is rebuilt outside). */
  readonly plainViews?: boolean;
  /** Inference graphs: write mutated inputs in the graph with `copy_` nodes instead of returning their new values. */
  readonly keepInputMutations?: boolean;
  /** An inference graph for a call with gradients on whose outputs need none: views of inputs come out detached. */
  readonly detachViewOutputs?: boolean;
  /** makeFx: the graph returns the program's own output structure, every output a node; no mutation bookkeeping. */
  readonly plainOutputs?: boolean;
  /** Why inputs that share memory were not rebuilt from a synthetic base: the error when one is written in place. */
  readonly aliasedMutationText?: string;
  /** Export: told the tracer and the traced copies of the primals once the placeholders exist, before the program runs. */
  readonly onTracer?: (tracer: FxTracer, copies: readonly Tensor[]) => void;
}

/**
 * `run(primalCopies)` calls the user's program on the traced copies of the primals (the flat input tensors)
 * and returns its result. `module`, when given, has its parameters and buffers among the primals: their
 * values are restored afterwards, so that in-place updates (running statistics) made while tracing vanish.
 */
export function traceProgram(
  primals: readonly Tensor[],
  run: (copies: Tensor[]) => unknown,
  opts: TraceProgramOptions,
  module?: Module,
): TracedProgram {
  const tracer = new FxTracer(opts.decompositions, opts.what, opts.joint || (opts.what !== 'makeFx' && isGradEnabled()));
  const rng = rngState();
  const restoreState = module ? snapshotState(module) : () => {};
  const leaves = copyPrimals(primals, opts.joint, new Set(module ? [...module.parameters(), ...module.buffers()] : []));
  leaves.forEach((c, i) => tracer.placeholder(opts.naming === 'primals' ? `primals_${i + 1}` : `arg${i}_1`, c));
  opts.onTracer?.(tracer, leaves);
  const prev = setTraceDispatch(tracer);
  let program: TracedProgram;
  try {
    // A caller's non-leaf input may be written in place (eagerly allowed): the program gets a recorded clone
    // of the leaf, so the write has a tape to rebase and the gradient still reaches the placeholder.
    // A duplicated input (f(x, x)) gets one clone: the program must see the same tensor twice.
    const clones = new Map<Tensor, Tensor>();
    const working = leaves.map((l, i) => {
      if (!(opts.joint && l.requiresGrad && primals[i]!.gradFn !== null && l !== primals[i])) return l;
      if (!clones.has(l)) clones.set(l, l.clone());
      return clones.get(l)!;
    });
    // The copies are contiguous whatever the caller's layout: metadata mutations are measured against this.
    const layouts = working.map((w) => ({ shape: [...w.shape], strides: [...w.strides], offset: w.offset }));
    const result = opts.joint ? run(working) : withGradMode(false, () => run(working));
    program = finish(tracer, primals, leaves, working, result, opts, layouts);
  } finally {
    setTraceDispatch(prev);
    setRngState(rng);
    restoreState();
  }
  return program;
}

/**
 * A module's own tensors are traced as themselves (their identity is what `parameters()` returns, and their
 * values are restored afterwards); user inputs are copied, so the caller's tensors are never written.
 */
function copyPrimals(primals: readonly Tensor[], joint: boolean, asIs: ReadonlySet<Tensor>): Tensor[] {
  const seen = new Map<Tensor, Tensor>();
  return primals.map((p) => {
    let c = seen.get(p);
    if (asIs.has(p)) return p;
    if (!c) {
      c = withGradMode(false, () => p.detach().clone());
      if (joint && p.requiresGrad) c.requiresGrad_(true);
      seen.set(p, c);
    }
    return c;
  });
}

function finish(
  tracer: FxTracer,
  primals: readonly Tensor[],
  leaves: readonly Tensor[],
  copies: readonly Tensor[],
  result: unknown,
  opts: TraceProgramOptions,
  layouts: readonly { shape: readonly number[]; strides: readonly number[]; offset: number }[],
): TracedProgram {
  const { tensors: outs, tree: outStructure } = flattenTensors(result, `${opts.what}: output`);
  const written = tracer.writtenConstant();
  if (written) {
    throw new AotError(
      `${opts.what}: the program writes in place a [${written.shape.join(', ')}] tensor it does not take as an argument; ` +
        'the compiled graph would not repeat that write. Pass the tensor as an argument (or register it as a buffer of the module)',
    );
  }
  const graph = tracer.graph;
  if (opts.plainOutputs) {
    // makeFx: an input the program wrote gets its new value through copy_ at the end, as PyTorch's make_fx does
    const placeholders = graph.nodes.filter((n) => n.op === 'placeholder');
    const outputNode = graph.nodes.at(-1);
    copies.forEach((c, i) => {
      if (copies.indexOf(c) !== i || !tracer.wasWritten(c)) return;
      const value = tracer.tensorNode(c);
      graph.insertAfter(outputNode, () => graph.callFunction(copy_ as unknown as FunctionTarget, [placeholders[i]!, value]));
    });
    graph.output(
      unflattenTensors(
        outStructure,
        outs.map((o) => tracer.tensorNode(o)),
      ) as Argument,
    );
    graph.eliminateDeadCode();
    graph.lint();
    const gm = new GraphModule(new Module(), graph, opts.className ?? 'GraphModule', tracer.constants);
    const none: never[] = [];
    return {
      gm,
      numFwdOutputs: outs.length,
      numMutated: 0,
      mutations: none,
      outputs: none,
      outStructure,
      tangentsFor: none,
      gradFor: none,
      requiresGrad: outs.some((o) => o.requiresGrad),
    };
  }
  const mutations: { -readonly [K in keyof InputMutation]: InputMutation[K] }[] = [];
  const keep = opts.keepInputMutations === true && !opts.joint;
  const placeholders = graph.nodes.filter((n) => n.op === 'placeholder');
  const graphOuts: Node[] = [];
  const outTensors: Tensor[] = [];
  copies.forEach((c, i) => {
    if (copies.indexOf(c) !== i) return; // a duplicated input: its first occurrence speaks for it
    const data = tracer.wasWritten(c);
    const was = layouts[i]!;
    const layoutChanged = !sameShape(c.shape, was.shape) || !sameShape(c.strides, was.strides) || c.offset !== was.offset;
    if (!data && !layoutChanged) return;
    mutations.push({
      input: i,
      data,
      layout: layoutChanged ? (tracer.metadataOps.get(c) ?? []) : undefined,
    });
    if (data && keep) {
      // The graph writes the caller's tensor itself (its placeholder is the caller's tensor at run time).
      graph.callFunction(copy_ as unknown as FunctionTarget, [placeholders[i]!, tracer.tensorNode(c)]);
      mutations.at(-1)!.data = false;
    } else if (data) {
      graphOuts.push(tracer.tensorNode(c));
      outTensors.push(c);
    }
  });
  const numMutated = graphOuts.length;
  for (const m of mutations) {
    if (!m.data) continue;
    const other = primals.findIndex((p, j) => j !== m.input && p !== primals[m.input] && overlaps(p, primals[m.input]!));
    if (other >= 0) {
      const which = `inputs ${Math.min(m.input, other)} and ${Math.max(m.input, other)} share memory and input ${m.input} is written in place`;
      if (opts.aliasedMutationText) throw new AotError(`${opts.aliasedMutationText} (${which})`);
      throw new AotError(
        `Encountered aliased inputs that are mutated in the graph: ${which}. ` +
          `${opts.what} cannot compile this yet; pass separate tensors (e.g. clone one of them)`,
      );
    }
  }
  const bases = new Map<Tensor, number>();
  const outputs: OutputSource[] = outs.map((o) => {
    if (opts.plainViews) {
      graphOuts.push(tracer.tensorNode(o));
      outTensors.push(o);
      return { kind: 'graph', index: graphOuts.length - 1 - numMutated };
    }
    const input = copies.indexOf(o);
    if (input >= 0) return { kind: 'input', input };
    const view = tracer.viewOf(o);
    if (view && view.chain.length > 0) {
      const viewed = copies.indexOf(view.base);
      // A view that does not require grad (`out[0].detach()`) is rebuilt detached: it aliases the base all the same.
      const detach = opts.joint ? !o.requiresGrad : opts.detachViewOutputs === true;
      const multiOutput = multiOutputViewOf(o);
      if (viewed >= 0) return { kind: 'inputView', input: viewed, chain: view.chain, detach, multiOutput };
      let index = bases.get(view.base);
      if (index === undefined) {
        index = graphOuts.length - numMutated;
        bases.set(view.base, index);
        graphOuts.push(tracer.tensorNode(view.base));
        outTensors.push(view.base);
      }
      return { kind: 'baseView', index, chain: view.chain, detach, multiOutput };
    }
    graphOuts.push(tracer.tensorNode(o));
    outTensors.push(o);
    return { kind: 'graph', index: graphOuts.length - 1 - numMutated };
  });
  const numFwdOutputs = graphOuts.length;
  let tangentsFor: number[] = [];
  let gradFor: boolean[] = copies.map(() => false);
  const gradNodes: Argument[] = [];
  if (opts.joint && isGradEnabled()) {
    tangentsFor = outTensors.flatMap((t, i) => (t.requiresGrad && t.dtype === 'float32' ? [i] : []));
    const loss = opts.lossIndex === undefined ? undefined : lossOutput(outs, outputs, opts.lossIndex);
    const firstUse = leaves.map((c, i) => leaves.indexOf(c) === i);
    // Whether the input required grad when passed: one written in place by a value that does (x.add_(y)) gets none.
    gradFor = leaves.map((c, i) => firstUse[i]! && c.isLeaf && primals[i]!.requiresGrad);
    const lastPlaceholder = graph.nodes.filter((n) => n.op === 'placeholder').at(-1);
    let at = lastPlaceholder;
    if (loss !== undefined) tangentsFor = [numMutated + loss];
    const tangents = tangentsFor.map((k, j) => {
      if (loss !== undefined) return withGradMode(false, () => onesLike(outTensors[k]!)); // recorded: the seed is part of the graph
      const t = withGradMode(false, () => outTensors[k]!.detach().clone().fill_(1));
      at = graph.insertAfter(at, () => tracer.placeholder(`tangents_${j + 1}`, t));
      return t;
    });
    const seeded = tangentsFor.map((k) => outTensors[k]!);
    if (loss !== undefined) tangentsFor = []; // no tangent inputs: the seed is in the graph
    const wanted = leaves.filter((_c, i) => gradFor[i]);
    tracer.inBackward = true;
    const watched = [...copies, ...(loss === undefined ? tangents : [])];
    const before = watched.map((x) => ({ writes: tracer.writeCount(x), shape: [...x.shape], strides: [...x.strides] }));
    const grads = tangents.length && wanted.length ? gradients(seeded, tangents, wanted) : [];
    let w = 0;
    gradFor.forEach((g) => {
      const grad = g ? grads[w++] : null;
      gradNodes.push(grad ? tracer.tensorNode(grad) : null);
    });
    checkBackwardMutations(tracer, watched, before, copies.length, (i, value) => {
      // A saved input written by a custom backward: the backward graph writes the caller's tensor too (PyTorch's copy_).
      if (copies.indexOf(copies[i]!) === i) graph.callFunction(copy_ as unknown as FunctionTarget, [placeholders[i]!, value]);
    });
  }
  graph.output([...graphOuts, ...gradNodes]);
  eliminateCommonSubexpressions(graph);
  graph.eliminateDeadCode();
  graph.lint();
  const gm = new GraphModule(new Module(), graph, opts.className ?? 'GraphModule', tracer.constants);
  const requiresGrad = outs.some((o) => o.requiresGrad) || outTensors.some((o) => o.requiresGrad);
  return { gm, numFwdOutputs, numMutated, mutations, outputs, outStructure, tangentsFor, gradFor, requiresGrad };
}

/**
 * PyTorch's rules for mutations made by a backward (a custom Function's): a data write to a graph input is
 * replayed by the backward graph (`onInputWrite`); a metadata mutation of an input, or any write to an input of
 * the backward (a tangent), is refused.
 */
function checkBackwardMutations(
  tracer: FxTracer,
  watched: readonly Tensor[],
  before: readonly { writes: number; shape: readonly number[]; strides: readonly number[] }[],
  numPrimals: number,
  onInputWrite: (input: number, value: Node) => void,
): void {
  watched.forEach((x, i) => {
    const was = before[i]!;
    if (!sameShape(x.shape, was.shape) || !sameShape(x.strides, was.strides)) {
      throw new AotError(
        `Found a graph input that had its metadata mutated in the backward (${i < numPrimals ? `input ${i}` : `tangent ${i - numPrimals}`}: ` +
          `shape [${was.shape.join(', ')}] → [${x.shape.join(', ')}]). This is not supported`,
      );
    }
    if (tracer.writeCount(x) === was.writes) return;
    if (i >= numPrimals) {
      throw new AotError(
        `Found a graph input to the backward that was mutated during the backward pass (tangent ${i - numPrimals}, the gradient of an output, ` +
          `written in place by a gradient rule or custom backward). This is not supported; write to a clone of the gradient instead`,
      );
    }
    onInputWrite(i, tracer.tensorNode(x));
  });
}

/**
 * Whether two tensors may share elements: the same storage and intersecting spans of it. Disjoint views of
 * one base (PyTorch's "false aliasing", `x[0:2]` and `x[2:4]`) are independent inputs.
 */
export function overlaps(a: Tensor, b: Tensor): boolean {
  if (a._storage !== b._storage) return false;
  if (a.numel() === 0 || b.numel() === 0) return false;
  const span = (t: Tensor): [number, number] => {
    let lo = t.offset;
    let hi = t.offset;
    t.shape.forEach((n, d) => {
      const step = (n - 1) * t.strides[d]!;
      if (step < 0) lo += step;
      else hi += step;
    });
    return [lo, hi];
  };
  const [alo, ahi] = span(a);
  const [blo, bhi] = span(b);
  return alo <= bhi && blo <= ahi;
}

/** The graph-output index of the user's loss output; every other output must not require grad (PyTorch's rule). */
function lossOutput(outs: readonly Tensor[], sources: readonly OutputSource[], lossIndex: number): number {
  const loss = outs[lossIndex];
  const src = sources[lossIndex];
  if (!loss || !src || src.kind !== 'graph') {
    throw new AotError(
      `aotExportModule: outputLossIndex ${lossIndex} does not name a tensor output computed by the graph (there are ${outs.length} outputs)`,
    );
  }
  if (loss.numel() !== 1 || !loss.requiresGrad) {
    throw new AotError(
      `aotExportModule: the loss (output ${lossIndex}) must be a scalar that requires grad, got shape [${loss.shape.join(', ')}]${loss.requiresGrad ? '' : ' that does not require grad'}`,
    );
  }
  outs.forEach((o, i) => {
    if (i !== lossIndex && o.requiresGrad) {
      throw new AotError(
        `Found an output of the forward that requires gradients, that was not the scalar loss. We require all outputs to the forward that are not the scalar loss to not require gradient, because we will only compute a backward graph against the scalar loss. You can fix this by calling .detach() on each of your forward outputs that is not the loss. You specified that output index ${lossIndex} is the loss, but we found that the output at index ${i} requires gradients.`,
      );
    }
  });
  return src.index;
}

/** Save the values of a module's parameters and buffers; the returned function writes them back. */
function snapshotState(module: Module): () => void {
  const saved = [...module.parameters(), ...module.buffers()].map((t) => [t, t.detach().clone(), t._storage.version] as const);
  return () =>
    withGradMode(false, () => {
      for (const [t, copy, version] of saved) {
        if (t._storage.version === version) continue;
        t.detach()._writeFrom(copy);
        t._storage.version = version;
      }
    });
}
