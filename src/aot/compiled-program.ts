import type { GraphModule } from '../graph/graph-module.js';
import { MultiOutputGradNode, OutputEdge, isGradEnabled, ownedGradients, withGradMode } from '../runtime/autograd.js';
import { OPS, markMultiOutputViews } from '../runtime/op.js';
import { Tensor } from '../runtime/tensor.js';
import { describe } from '../runtime/validate.js';
import { runCompiler, type Compiler } from './context.js';
import { AotError } from './errors.js';
import { partitionInfo, savedBytes, type PartitionFn } from './partition.js';
import { chainAt } from './output-views.js';
import { unflattenTensors } from './pytree.js';
import type { RebuiltView, TracedProgram } from './trace-program.js';

/**
 * One compiled program and how to run it (PyTorch's runtime wrappers around `CompiledFunction`): the forward
 * (or inference) graph runs compiled; mutated inputs get their new values; outputs that are views are rebuilt
 * outside the graph; and for training, one tape node runs the backward graph (compiled at the first
 * `backward()`) with the tensors the forward saved.
 */

export interface CompilerSet {
  readonly fwCompiler: Compiler;
  readonly bwCompiler: Compiler;
  readonly inferenceCompiler: Compiler;
  readonly partitionFn: PartitionFn;
}

export class CompiledProgram {
  private forward!: (...args: Tensor[]) => unknown;
  private bwGm?: GraphModule;
  private backward?: (...args: Tensor[]) => unknown;
  private numSaved = 0;
  private savedCount = 0;
  private bytesSaved = 0;

  private constructor(
    readonly id: number,
    readonly program: TracedProgram,
    readonly joint: boolean,
    private readonly compilers: CompilerSet,
    private readonly what: string,
  ) {}

  /** Partition (for a joint program) and compile the forward or inference graph now. */
  static compile(
    id: number,
    program: TracedProgram,
    joint: boolean,
    compilers: CompilerSet,
    primals: Tensor[],
    what: string,
  ): CompiledProgram {
    const c = new CompiledProgram(id, program, joint, compilers, what);
    if (!joint) {
      c.forward = runCompiler(compilers.inferenceCompiler, program.gm, primals, `${id}_inference`, what);
      return c;
    }
    const parts = compilers.partitionFn(program.gm, { numFwdOutputs: program.numFwdOutputs });
    if (!Array.isArray(parts) || parts.length !== 2) {
      throw new AotError(
        `${what}: the partition function returned ${describe(parts)} for graph ${id}; expected [forward, backward] GraphModules`,
      );
    }
    const [fw, bw] = parts;
    const info = partitionInfo(fw, bw);
    c.numSaved = info.numSavedTensors + info.numSavedSizes;
    c.savedCount = info.numSavedTensors;
    c.bytesSaved = savedBytes(fw, bw);
    c.bwGm = bw;
    c.forward = runCompiler(compilers.fwCompiler, fw, primals, `${id}_forward`, what);
    return c;
  }

  /** The compiled forward (or inference) and backward callables and what the forward saves, for pprint. */
  describe(): { forward: unknown; backward: unknown; backwardGraph?: GraphModule; savedTensors: number; savedBytes: number } {
    return {
      forward: this.forward,
      backward: this.backward,
      backwardGraph: this.bwGm,
      savedTensors: this.savedCount,
      savedBytes: this.bytesSaved,
    };
  }

  run(primals: Tensor[]): unknown {
    const { program } = this;
    // Like an autograd Function's forward: the graph records no tape (the backward graph is the tape).
    const raw = withGradMode(false, () => this.forward(...primals));
    const expected = program.numFwdOutputs + this.numSaved;
    if (!Array.isArray(raw) || raw.length !== expected || !raw.every((t) => t instanceof Tensor || typeof t === 'number')) {
      throw new AotError(
        `${this.what}: the compiled graph ${this.id}_${this.joint ? 'forward' : 'inference'} returned ${describe(raw)}; ` +
          `expected an array of ${expected} tensors (the graph's outputs)`,
      );
    }
    // Fresh tensor objects: a compiled graph may hand back its inputs, and the tape is attached to these.
    const fwd = (raw.slice(0, program.numFwdOutputs) as Tensor[]).map((t) => t.detach());
    const graphOuts = fwd.slice(program.numMutated);
    if (this.joint && isGradEnabled() && program.tangentsFor.length > 0)
      this.attachBackward(primals, fwd, raw.slice(program.numFwdOutputs) as Tensor[]);
    this.copyBackMutations(primals, fwd);
    const outs = program.outputs.map((src) => {
      switch (src.kind) {
        case 'graph':
          return graphOuts[src.index]!;
        case 'input':
          return primals[src.input]!;
        case 'inputView':
          return replay(primals[src.input]!, src, primals);
        case 'baseView':
          return replay(graphOuts[src.index]!, src, primals);
        default:
          return src satisfies never;
      }
    });
    return unflattenTensors(program.outStructure, outs);
  }

  /** New values into the caller's mutated inputs; one that requires grad is written by `copy_`, which rebases its tape. */
  private copyBackMutations(primals: Tensor[], fwd: Tensor[]): void {
    let k = 0;
    for (const m of this.program.mutations) {
      const target = primals[m.input]!;
      // The same in-place metadata ops, run eagerly on the caller's tensor: its layout and tape as eager's.
      for (const [method, args] of m.layout ?? []) (target as unknown as Record<string, (...a: unknown[]) => unknown>)[method]!(...args);
      if (!m.data) continue;
      const value = fwd[k++]!;
      if (value.requiresGrad && isGradEnabled()) target.copy_(value);
      else withGradMode(false, () => target._writeFrom(value));
    }
  }

  /**
   * One tape node for the whole backward (PyTorch's CompiledFunctionBackward), its edges to the primals;
   * each differentiable output reaches it through an OutputEdge, so it runs once with every output's gradient.
   */
  private attachBackward(primals: Tensor[], fwd: Tensor[], saved: Tensor[]): void {
    const { program, id } = this;
    let savedAlive: Tensor[] | null = saved;
    const edges = primals.map((p, i) => (program.gradFor[i] ? (p.gradFn ?? (p.requiresGrad ? p._gradAccumulator() : null)) : null));
    const node = new MultiOutputGradNode('CompiledFunctionBackward', edges, program.tangentsFor.length, (slots) => {
      if (!savedAlive) {
        throw new AotError(
          `${this.what}: backward through graph ${id}_backward a second time: the tensors its forward saved were freed after the first backward (compute the outputs again)`,
        );
      }
      const tangents = program.tangentsFor.map((k, j) => slots[j] ?? zerosOf(fwd[k]!));
      const inputs = [...savedAlive, ...tangents];
      const grads = this.backwardFn(inputs)(...inputs);
      if (!Array.isArray(grads) || grads.length !== primals.length) {
        throw new AotError(
          `${this.what}: the compiled graph ${id}_backward returned ${describe(grads)}; expected an array of ${primals.length} gradients (null where none)`,
        );
      }
      savedAlive = null;
      // Results the graph computed afresh, each returned once, are held by nothing else: a leaf may keep them.
      const given = new Set(inputs.map((t) => t._storage));
      const storages = grads.flatMap((g) => (g instanceof Tensor ? [g._storage] : []));
      for (const g of grads) {
        const alone = g instanceof Tensor && storages.indexOf(g._storage) === storages.lastIndexOf(g._storage);
        if (alone && !given.has(g._storage) && g._base === null) ownedGradients.add(g);
      }
      return grads.map((g) => (g instanceof Tensor ? g : null));
    });
    program.tangentsFor.forEach((k, j) => {
      fwd[k]!.gradFn = new OutputEdge(node, j);
    });
  }

  /** The backward graph compiled at its first use, with that call's saved tensors and tangents as examples. */
  private backwardFn(inputs: Tensor[]): (...args: Tensor[]) => unknown {
    if (!this.backward) {
      this.backward = runCompiler(this.compilers.bwCompiler, this.bwGm!, inputs, `${this.id}_backward`, this.what);
    }
    return this.backward;
  }
}

function zerosOf(t: Tensor): Tensor {
  return Tensor.fromData(new Float32Array(t.numel()), t.shape, 'float32');
}

/**
 * Rebuild a view outside the graph: the same view ops, run eagerly on the real base (so it aliases it), with
 * their size arguments at this call's input sizes under dynamic shapes.
 */
function replay(base: Tensor, view: RebuiltView, primals: readonly Tensor[]): Tensor {
  const { detach, multiOutput } = view;
  const chain = chainAt(
    view,
    primals.map((p) => p.shape),
  );
  let v = base;
  for (const [name, args, kwargs] of chain) v = OPS.get(name)!.callWith([v, ...args], kwargs) as Tensor;
  if (detach && v.requiresGrad) v = v.detach();
  if (multiOutput) markMultiOutputViews([v], multiOutput.fn, multiOutput.index);
  return v;
}
