import type { Decompositions } from '../aot/decompositions.js';
import { unflattenTensors, type Tree } from '../aot/pytree.js';
import type { GraphModule } from '../graph/graph-module.js';
import { noGrad } from '../runtime/autograd.js';
import { Module } from '../runtime/nn/module.js';
import { Parameter } from '../runtime/nn/parameter.js';
import type { Tensor } from '../runtime/tensor.js';
import { ExportError } from './errors.js';
import { flattenLike } from './input-tree.js';
import { inStateDict, type GraphSignature, type InputSpec } from './signature.js';
import { runInputChecks, type InputChecks } from './input-checks.js';

/**
 * An exported program (PyTorch's `ExportedProgram`): a functional graph of op-table calls whose placeholders
 * are the lifted parameters, buffers and constants and the user's tensors, its signature, its state, and what
 * a call must look like. `run` and `module()` flatten the arguments, check them, run the graph, write back
 * buffer and input mutations, and rebuild the output structure.
 */

export interface RangeConstraint {
  readonly lower: number;
  readonly upper: number;
}

export interface ProgramParts {
  readonly graphModule: GraphModule;
  readonly graphSignature: GraphSignature;
  /** Parameters and persistent buffers by state-dict key. */
  readonly stateDict: Record<string, Tensor>;
  /** Lifted constants and non-persistent buffers by target. */
  readonly constants: Record<string, Tensor>;
  readonly rangeConstraints: Map<string, RangeConstraint>;
  /** The structure of the user's arguments (constants baked in) and of the outputs. */
  readonly inTree: Tree;
  readonly outTree: Tree;
  /** What each user tensor must be at run time. */
  readonly inputChecks: InputChecks;
  /** The forward's parameter names (the re-exported module's `forward` takes them). */
  readonly forwardNames: readonly string[];
  /** The example arguments it was exported with (kept in memory, as PyTorch's `example_inputs`; not saved). */
  readonly examples?: readonly unknown[];
  /** The Dim names of the dynamic dims' symbols (`s0` → `batch`; kept in memory, not saved): toOnnx's dim_params. */
  readonly dimNames?: ReadonlyMap<string, string>;
  /** Every submodule's path and class name, so `module()` and `unflatten` rebuild the tree. */
  readonly modules: readonly { readonly path: string; readonly className: string }[];
}

export class ExportedProgram {
  readonly graphModule: GraphModule;
  readonly graphSignature: GraphSignature;
  readonly stateDict: Record<string, Tensor>;
  readonly constants: Record<string, Tensor>;
  readonly rangeConstraints: Map<string, RangeConstraint>;
  /** @internal */ readonly parts: ProgramParts;

  constructor(parts: ProgramParts) {
    this.parts = parts;
    this.graphModule = parts.graphModule;
    this.graphSignature = parts.graphSignature;
    this.stateDict = parts.stateDict;
    this.constants = parts.constants;
    this.rangeConstraints = parts.rangeConstraints;
  }

  /** Run the program on `args` with its own state; buffer updates go to `stateDict`/`constants`. */
  run(...args: unknown[]): unknown {
    return runProgram(this.parts, args, (spec) => stateOf(this.parts, spec));
  }

  /** The program as an `nn.Module` holding the state under the original paths (shared with this program). */
  module(): Module {
    return buildModule(this.parts);
  }

  /**
   * The program traced again with its ops decomposed into primitive ops (PyTorch's `run_decompositions`):
   * `nativeLayerNorm` and `nativeBatchNorm` become means, products and sums, a global `adaptiveAvgPool2d` a mean
   * (composite ops such as `linear` are traced into `t` + `matmul` + `add` by every export). `decompositions`
   * extends or overrides that table.
   */
  runDecompositions(decompositions?: Decompositions): ExportedProgram {
    return retrace(this, decompositions);
  }

  toString(): string {
    return this.graphModule.code;
  }
}

/** exportProgram's re-export of a program (set by export-program.ts, which imports this module). */
let retrace: (ep: ExportedProgram, decompositions?: Decompositions) => ExportedProgram = () => {
  throw new ExportError('runDecompositions: kiln/export is not loaded');
};

/** @internal */
export function setRetrace(fn: typeof retrace): void {
  retrace = fn;
}

/** The tensor a state placeholder takes, from the program's own state. */
function stateOf(parts: ProgramParts, spec: InputSpec): Tensor {
  const t = (inStateDict(spec) ? parts.stateDict : parts.constants)[spec.target!];
  if (!t) throw new ExportError(`exported program: no tensor for ${spec.kind.toLowerCase()} '${spec.target}' (placeholder ${spec.name})`);
  return t;
}

/** One call: flatten and check `args`, run the graph, apply mutations, rebuild the outputs. */
export function runProgram(parts: ProgramParts, args: readonly unknown[], state: (spec: InputSpec) => Tensor): unknown {
  const { tensors: user, leaves } = flattenLike(parts.inTree, args);
  runInputChecks(parts.inputChecks, leaves);
  const specs = parts.graphSignature.inputSpecs;
  let u = 0;
  const inputs = specs.map((s) => (s.kind === 'USER_INPUT' ? user[u++]! : state(s)));
  const outs = parts.graphModule.forward(...inputs) as Tensor[];
  const userIndex = new Map(specs.filter((s) => s.kind === 'USER_INPUT').map((s, i) => [s.name, i]));
  const results: Tensor[] = [];
  parts.graphSignature.outputSpecs.forEach((spec, i) => {
    const value = outs[i]!;
    if (spec.kind === 'USER_OUTPUT') results.push(value);
    else if (spec.kind === 'BUFFER_MUTATION') {
      const buffer = state(specs.find((s) => s.kind === 'BUFFER' && s.target === spec.target)!);
      noGrad(() => buffer.copy_(value));
    } else noGrad(() => user[userIndex.get(spec.target!)!]!.copy_(value));
  });
  return unflattenTensors(parts.outTree, results);
}

/** A module tree with the program's state at the original paths and class names; the root's forward runs the program. */
export function buildModule(parts: ProgramParts): Module {
  const root = new ExportedModule(parts);
  const nodes = new Map<string, Module>([['', root]]);
  const moduleAt = (path: string): Module => {
    let m = nodes.get(path);
    if (m) return m;
    const dot = path.lastIndexOf('.');
    const parent = moduleAt(dot < 0 ? '' : path.slice(0, dot));
    const className = parts.modules.find((e) => e.path === path)?.className ?? 'Module';
    m = namedSubmodule(className);
    (parent as unknown as Record<string, unknown>)[dot < 0 ? path : path.slice(dot + 1)] = m;
    nodes.set(path, m);
    return m;
  };
  for (const { path } of parts.modules) if (path) moduleAt(path);
  const place = (target: string): [Module, string] => {
    const dot = target.lastIndexOf('.');
    return [moduleAt(dot < 0 ? '' : target.slice(0, dot)), dot < 0 ? target : target.slice(dot + 1)];
  };
  for (const spec of parts.graphSignature.inputSpecs) {
    if (spec.kind === 'USER_INPUT') continue;
    const [owner, name] = place(spec.target!);
    const value = stateOf(parts, spec);
    if (spec.kind === 'PARAMETER')
      (owner as unknown as Record<string, unknown>)[name] = value instanceof Parameter ? value : new Parameter(value);
    else if (spec.kind === 'BUFFER') owner.registerBuffer(name, value, spec.persistent !== false);
    // a plain attribute, as it was on the exported module: a re-export finds it there and keeps its name
    else (owner as unknown as Record<string, unknown>)[name] = value;
  }
  return root;
}

/** The root of `ep.module()`: its forward takes the exported forward's parameters and runs the program. */
export class ExportedModule extends Module {
  declare private readonly parts: ProgramParts;

  constructor(parts: ProgramParts) {
    super();
    Object.defineProperty(this, 'parts', { value: parts, enumerable: false });
    // named like the exported forward's parameters, so a re-export names its placeholders alike
    const run = (args: unknown[]) => runProgram(parts, args, (spec) => this.stateTensor(spec));
    const params = parts.forwardNames.join(', ');
    const forward = new Function('run', `"use strict";\nreturn function forward(${params}) {\n  return run([...arguments]);\n};`) as (
      run: unknown,
    ) => (...args: unknown[]) => unknown;
    Object.defineProperty(this, 'forward', { value: forward(run), writable: true, enumerable: false, configurable: true });
  }

  private stateTensor(spec: InputSpec): Tensor {
    const target = spec.target!;
    const dot = target.lastIndexOf('.');
    const owner = dot < 0 ? (this as Module) : this.getSubmodule(target.slice(0, dot));
    const t = (owner as unknown as Record<string, Tensor | undefined>)[dot < 0 ? target : target.slice(dot + 1)];
    if (!t) throw new ExportError(`exported module: '${target}' (${spec.kind.toLowerCase()}) was removed from the module`);
    return t;
  }
}

/** A plain module whose class name is the original's (what `unflatten` shows when printed). */
function namedSubmodule(className: string): Module {
  const cls = { [className]: class extends Module {} }[className]!;
  return new cls();
}
