import { ValueError } from '../errors.js';
import { isGradEnabled } from '../runtime/autograd.js';
import { Module } from '../runtime/nn/module.js';
import { CompiledProgram, type CompilerSet } from './compiled-program.js';
import { nextGraphId, type Compiler } from './context.js';
import { checkDecompositions, type Decompositions } from './decompositions.js';
import { AotError } from './errors.js';
import { defaultPartition, type PartitionFn } from './partition.js';
import { flattenTensors, unflattenTensors, type Tree } from './pytree.js';
import { generaliseShapes, shapeProblem, shapeSpecOf } from './symbolic.js';
import { viewLeaves, viewSkeleton, withSymbolicViews } from './output-views.js';
import { graphLeaves } from '../jit/shape-fit.js';
import type { GraphModule } from '../graph/graph-module.js';
import { overlaps, traceProgram, type TracedProgram } from './trace-program.js';
import { sameShape } from '../runtime/shape.js';
import { asStrided } from '../runtime/ops/view.js';
import { Tensor } from '../runtime/tensor.js';

/**
 * aotFunction, aotModule and aotModuleSimplified (PyTorch's aot_function / aot_module /
 * aot_module_simplified): trace the program once per kind of call (input shapes, dtypes, which inputs
 * require grad, which are the same tensor, grad mode), as one joint forward+backward graph when gradients
 * are wanted and as an inference graph otherwise, and run the compiled graphs from then on.
 */

export interface AotOptions {
  fwCompiler: Compiler;
  bwCompiler?: Compiler;
  inferenceCompiler?: Compiler;
  partitionFn?: PartitionFn;
  decompositions?: Decompositions;
  /** Trace with symbolic sizes: one graph serves every size that takes the same path. */
  dynamic?: boolean;
  /** Keep in-place writes to inputs in inference graphs as `copy_` nodes (instead of returning new values). */
  keepInferenceInputMutations?: boolean;
}

interface Resolved {
  readonly compilers: CompilerSet;
  readonly decompositions?: Decompositions;
  readonly dynamic: boolean;
  readonly keepInferenceInputMutations: boolean;
}

function resolve(options: AotOptions | undefined, what: string): Resolved {
  if (!options || typeof options !== 'object')
    throw new ValueError(`${what}: expected an options object with fwCompiler, got ${typeof options}`);
  const { fwCompiler, bwCompiler = fwCompiler, inferenceCompiler = fwCompiler, partitionFn = defaultPartition } = options;
  for (const [name, f] of [
    ['fwCompiler', fwCompiler],
    ['bwCompiler', bwCompiler],
    ['inferenceCompiler', inferenceCompiler],
    ['partitionFn', partitionFn],
  ] as const) {
    if (typeof f !== 'function') throw new ValueError(`${what}: ${name} must be a function, got ${typeof f}`);
  }
  return {
    compilers: { fwCompiler, bwCompiler, inferenceCompiler, partitionFn },
    decompositions: checkDecompositions(options.decompositions, what),
    dynamic: options.dynamic === true,
    keepInferenceInputMutations: options.keepInferenceInputMutations === true,
  };
}

/** What a compiled program assumed about its flat inputs: duplicates and which required grad. */
interface Assumptions {
  readonly dupOf: readonly number[];
  readonly requiresGrad: readonly boolean[];
  readonly shapes: readonly (readonly number[])[];
}

function assumptionsOf(primals: readonly Tensor[]): Assumptions {
  return {
    dupOf: primals.map((p) => primals.indexOf(p)),
    requiresGrad: primals.map((p) => p.requiresGrad),
    shapes: primals.map((p) => [...p.shape]),
  };
}

/**
 * The cache key of a call: everything a traced program may have specialised on (sizes aside when dynamic):
 * dtypes, ranks or shapes, requiresGrad, which inputs are the same tensor or share elements, and the
 * constants of the argument tree, typed (NaN, ±Infinity and -0 stay apart).
 */
function callKey(tree: Tree, primals: readonly Tensor[], joint: boolean, dynamic: boolean, extra: string): string {
  const a = assumptionsOf(primals);
  const tensors = primals.map((p, i) => {
    const alias = primals.findIndex((q, j) => j < i && q !== p && overlaps(p, q));
    const shape = dynamic ? `r${p.ndim}` : `[${p.shape.join(',')}]`;
    return `${p.dtype}${shape}${a.requiresGrad[i] ? 'g' : ''}${a.dupOf[i] !== i ? `=${a.dupOf[i]}` : ''}${alias >= 0 ? `~${alias}` : ''}`;
  });
  return `${joint ? 'joint' : 'inference'}|${extra}|${treeKey(tree)}|${tensors.join(';')}`;
}

export function treeKey(tree: Tree): string {
  return JSON.stringify(tree, (_k, v: unknown) =>
    typeof v === 'number' && (!Number.isFinite(v) || Object.is(v, -0)) ? `number:${Object.is(v, -0) ? '-0' : String(v)}` : v,
  );
}

/**
 * What a module's forward may read besides tensors: every module's `training` flag and its own plain
 * number, string, boolean and null attributes (a BatchNorm's momentum, a Dropout's p), which the graph bakes in.
 */
function moduleKey(module: Module): string {
  return module
    .modules()
    .map((m) => {
      const plain = Object.entries(m).filter(([, v]) => v === null || (typeof v !== 'object' && typeof v !== 'function'));
      return `${m.training ? 1 : 0}${JSON.stringify(plain, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v))}`;
    })
    .join('|');
}

/**
 * Synthetic bases (PyTorch's): inputs that share memory with another input are traced as views, made by
 * `asStrided`, of one base covering their storage, so a write through one is seen through the others, and
 * the base's new value is copied back once. Without gradients the base is the whole storage as a 1-D tensor.
 * With gradients it is, as in PyTorch, the aliases' common differentiable base (`x` for `x[0]` and `x.view(-1)`):
 * its gradient reaches the caller's graph through asStrided's gradient. Returns the primals to trace (the
 * others, then the bases), a key part for the layout baked into the graph, how to rebuild the program's inputs
 * from the traced ones, and what to do to the caller's aliased inputs after each run.
 */
interface SyntheticBases {
  readonly primals: Tensor[];
  readonly key: string;
  readonly expand: (copies: Tensor[]) => Tensor[];
  /** The layouts (shape, strides) that the program's in-place metadata ops gave the rebuilt inputs, by input. */
  readonly layoutsOf: (inputs: readonly Tensor[]) => AliasedLayouts;
  /** After a run: the caller's aliased inputs take the new layouts the program gave them. */
  readonly after: (layouts: AliasedLayouts) => void;
}

type AliasedLayouts = readonly ({ readonly shape: readonly number[]; readonly strides: readonly number[] } | undefined)[];

/**
 * PyTorch's text (merge_view_inputs) for aliased inputs that require grad but are not all views of one
 * differentiable base (or that base itself), when one of them is written in place.
 */
const NON_DIFFERENTIABLE_VIEWS = 'aot_autograd() does not yet handle non-differentiable view input mutations.';

/** The group's common differentiable base, if every member is that base or a view of it that requires grad. */
function differentiableBase(group: readonly Tensor[]): Tensor | undefined {
  const base = group.find((p) => p._base === null) ?? group[0]!._base!;
  const ok = group.every((p) => p.requiresGrad && (p === base || (p._base === base && p._viewReplay !== null)));
  // The graph rebuilds the views by absolute storage offsets from a contiguous copy of the base.
  return ok && base.offset === 0 && base.isContiguous() ? base : undefined;
}

function syntheticBases(primals: readonly Tensor[]): SyntheticBases | string | undefined {
  const aliased = primals.map((p, i) => primals.some((q, j) => j !== i && q !== p && overlaps(p, q)));
  if (!aliased.some(Boolean)) return undefined;
  const grad = isGradEnabled() && primals.some((p, i) => aliased[i] && p.requiresGrad);
  const storages = [...new Set(primals.filter((_, i) => aliased[i]).map((p) => p._storage))];
  const bases: Tensor[] = [];
  for (const st of storages) {
    const group = primals.filter((p, i) => aliased[i] && p._storage === st);
    if (!grad) bases.push(new Tensor(st, [st.data.length], [1], 0, group[0]!.dtype));
    else {
      const base = differentiableBase(group);
      if (!base) return NON_DIFFERENTIABLE_VIEWS;
      bases.push(base);
    }
  }
  const direct = primals.filter((_, i) => !aliased[i]);
  const slot = primals.map((p, i) => (aliased[i] ? direct.length + storages.indexOf(p._storage) : direct.indexOf(p)));
  const key = primals
    .map((p, i) => (aliased[i] ? `${slot[i]}:${p.shape.join(',')}/${p.strides.join(',')}@${p.offset}` : ''))
    .concat(bases.map((b) => `#${b.shape.join(',')}${grad ? 'g' : ''}`))
    .join(';');
  const expand = (copies: Tensor[]) =>
    primals.map((p, i) => (aliased[i] ? asStrided(copies[slot[i]!]!, p.shape, p.strides, p.offset) : copies[slot[i]!]!));
  const layoutsOf = (inputs: readonly Tensor[]): AliasedLayouts =>
    inputs.map((v, i) => {
      const p = primals[i]!;
      const changed = aliased[i] && (!sameShape(v.shape, p.shape) || !sameShape(v.strides, p.strides));
      return changed ? { shape: [...v.shape], strides: [...v.strides] } : undefined;
    });
  // The caller's views of a base whose new value was copied in read through its new history by themselves
  // (a view's gradFn is regenerated after its base is written); their layouts are replayed here.
  const after = (layouts: AliasedLayouts) => {
    primals.forEach((p, i) => {
      const layout = layouts[i];
      if (aliased[i] && layout) restride(p, layout.shape, layout.strides);
    });
  };
  return { primals: [...direct, ...bases], key: `synthetic ${key}`, expand, layoutsOf, after };
}

/**
 * `p` takes the layout the program's in-place metadata ops (t_, unsqueeze_, …) gave its rebuilt copy, as
 * PyTorch's runtime does with `as_strided_`: its history continues through that view's gradient.
 */
function restride(p: Tensor, shape: readonly number[], strides: readonly number[]): void {
  const v = asStrided(p, shape, strides, p.offset);
  p._setLayout(v);
  if (v.gradFn) p.gradFn = v.gradFn;
  if (p._base) p._viewReplay = v._viewReplay;
  p._storage.version++;
}

/** Errors thrown while tracing or compiling a program (not while running one): a caller may run eagerly instead. */
const compileFailures = new WeakSet<object>();

/** Whether `e` was thrown while AOT autograd traced or compiled a program, rather than while one ran. */
export function isCompileFailure(e: unknown): boolean {
  return typeof e === 'object' && e !== null && compileFailures.has(e);
}

/**
 * A compiled program with the input shapes it was traced at (a dynamic one runs at others too), and for one
 * traced through synthetic bases, the layouts its metadata ops gave the aliased inputs.
 */
type Traced = CompiledProgram & { readonly tracedShapes: readonly (readonly number[])[]; readonly aliasedLayouts?: AliasedLayouts };

/**
 * The shared engine: `run(copies, args)` calls the program on traced copies of the flat tensors. `module`
 * has its parameters and buffers first among the primals (their values are restored after tracing).
 */
class AotRunner {
  private readonly cache = new Map<string, Traced[]>();

  constructor(
    private readonly call: (primals: Tensor[], tree: Tree) => unknown,
    private readonly opts: Resolved,
    private readonly what: string,
    private readonly module?: Module,
  ) {}

  /** Every compiled program, in the order they were made. */
  get programs(): CompiledProgram[] {
    return [...this.cache.values()].flat();
  }

  run(primals: Tensor[], tree: Tree, extraKey = ''): unknown {
    // Under dynamic shapes the asStrided views would bake the traced sizes in: aliased inputs are not rebuilt.
    const synthetic = this.opts.dynamic ? undefined : syntheticBases(primals);
    if (typeof synthetic === 'object') return this.runOn(synthetic.primals, tree, `${extraKey}|${synthetic.key}`, synthetic);
    return this.runOn(primals, tree, extraKey, undefined, synthetic);
  }

  /** `aliasedMutationText`: why inputs that share memory are traced as they are (the error if one is written). */
  private runOn(primals: Tensor[], tree: Tree, extraKey: string, expand?: SyntheticBases, aliasedMutationText?: string): unknown {
    const joint = isGradEnabled() && primals.some((p) => p.requiresGrad);
    const key = callKey(tree, primals, joint, this.opts.dynamic, extraKey);
    let entries = this.cache.get(key);
    let entry = entries?.find(
      (e) =>
        !this.opts.dynamic ||
        !shapeProblem(
          e.program.gm,
          e.tracedShapes,
          primals.map((p) => p.shape),
        ),
    );
    if (!entry) {
      try {
        entry = this.compile(primals, tree, joint, expand, aliasedMutationText);
      } catch (e) {
        if (typeof e === 'object' && e !== null) compileFailures.add(e);
        throw e;
      }
      if (!entries) this.cache.set(key, (entries = []));
      entries.push(entry);
    }
    const out = entry.run(primals);
    expand?.after(entry.aliasedLayouts ?? []);
    return out;
  }

  /** `synthetic`: the program's inputs are rebuilt from the traced ones (views of synthetic bases). */
  compile(primals: Tensor[], tree: Tree, wantsJoint: boolean, synthetic?: SyntheticBases, aliasedMutationText?: string): Traced {
    let joint = wantsJoint;
    let detachViewOutputs = false;
    let aliasedLayouts: AliasedLayouts | undefined;
    const trace = (inputs: Tensor[]): TracedProgram =>
      traceProgram(
        inputs,
        (copies) => {
          if (!synthetic) return this.call(copies, tree);
          const inputs = synthetic.expand(copies);
          const result = this.call(inputs, tree);
          aliasedLayouts = synthetic.layoutsOf(inputs);
          return result;
        },
        {
          joint,
          decompositions: this.opts.decompositions,
          what: this.what,
          naming: 'primals',
          detachViewOutputs,
          keepInputMutations: this.opts.keepInferenceInputMutations,
          aliasedMutationText,
        },
        this.module,
      );
    let program = trace(primals);
    if (joint && !program.requiresGrad) {
      // No output requires grad (e.g. the function runs under noGrad): PyTorch compiles an inference graph then.
      joint = false;
      detachViewOutputs = true;
      program = trace(primals);
    }
    if (this.opts.dynamic) {
      // Views of inputs and intermediates are rebuilt outside the graph here too (so they alias as eagerly): the
      // integers of their view ops are fitted to the input sizes along with the graph's (output-views.ts).
      const fixed = this.module ? stateOf(this.module).length : 0;
      const outputsOf = new WeakMap<GraphModule, TracedProgram['outputs']>([[program.gm, program.outputs]]);
      const retrace = (inputs: Tensor[]) => {
        const again = trace(inputs);
        outputsOf.set(again.gm, again.outputs);
        return again.gm;
      };
      const views = {
        leaves: (g: GraphModule) => viewLeaves(outputsOf.get(g)!),
        skeleton: (g: GraphModule) => viewSkeleton(outputsOf.get(g)!),
      };
      const gm = generaliseShapes(program.gm, primals, retrace, false, fixed, views);
      const spec = shapeSpecOf(gm);
      const outputs = spec ? withSymbolicViews(program.outputs, spec.exprs, graphLeaves(program.gm.graph).length) : program.outputs;
      program = { ...program, gm, outputs };
    }
    const compiled = CompiledProgram.compile(nextGraphId(), program, joint, this.opts.compilers, primals, this.what);
    return Object.assign(compiled, { tracedShapes: primals.map((p) => [...p.shape]), aliasedLayouts });
  }

  /** For aotModuleSimplified: one program, checked against the assumptions it was compiled under. */
  checked(primals: Tensor[], tree: Tree, stateCount = 0): (primals: Tensor[]) => unknown {
    const joint = isGradEnabled() && primals.some((p) => p.requiresGrad);
    const entry = this.compile(primals, tree, joint);
    const assumed = assumptionsOf(primals);
    return (now) => {
      assumed.dupOf.forEach((j, i) => {
        if (j !== i && now[i] !== now[j]) {
          throw new AotError(
            `At compilation time, graph ${entry.id} was compiled under the assumption that input ${i} would be a duplicate of input ${j}, but at runtime this was not the case.  This indicates a guard bug in AOTAutograd or Dynamo, please file a bug to PyTorch.`,
          );
        }
      });
      assumed.requiresGrad.forEach((r, i) => {
        if (!r && now[i]!.requiresGrad && isGradEnabled()) {
          throw new AotError(
            `At compilation time, graph ${entry.id} was compiled under the assumption that input ${i} would not require grad, but at runtime this was not the case.  This indicates a guard bug in AOTAutograd or Dynamo, please file a bug to PyTorch.`,
          );
        }
      });
      now.forEach((t, i) => {
        const shape = assumed.shapes[i]!;
        if (t.dtype !== primals[i]!.dtype || (!this.opts.dynamic && !sameShape(t.shape, shape))) {
          throw new AotError(
            `aotModuleSimplified: ${i < stateCount ? `parameter or buffer ${i}` : `input ${i - stateCount}`} is ${t.dtype} [${t.shape.join(', ')}], but graph ${entry.id} was compiled for ${primals[i]!.dtype} [${shape.join(', ')}]; compile again for these inputs, or use aotModule, which recompiles`,
          );
        }
      });
      if (this.opts.dynamic) {
        const problem = shapeProblem(
          entry.program.gm,
          entry.tracedShapes,
          now.map((t) => t.shape),
        );
        if (problem) throw new AotError(`aotModuleSimplified: graph ${entry.id} cannot run these inputs: ${problem}`);
      }
      return entry.run(now);
    };
  }
}

/** AOT-compile a function: it keeps `fn`'s signature; tensors anywhere in its arguments are the graph's inputs. */
export function aotFunction<F extends (...args: never[]) => unknown>(fn: F, options: AotOptions): F {
  if (typeof fn !== 'function') throw new ValueError(`aotFunction: expected a function, got ${typeof fn}`);
  const opts = resolve(options, 'aotFunction');
  const call = fn as unknown as (...a: unknown[]) => unknown;
  const runner = new AotRunner((copies, tree) => call(...(unflattenTensors(tree, copies) as unknown[])), opts, 'aotFunction');
  const compiled = (...args: unknown[]) => {
    const { tensors, tree } = flattenTensors(args, 'aotFunction: argument');
    return runner.run(tensors, tree);
  };
  Object.defineProperty(compiled, 'name', { value: fn.name });
  return compiled as unknown as F;
}

/** The module's own tensors, entered as graph inputs ahead of the user's: parameters, then buffers. */
function stateOf(module: Module): Tensor[] {
  return [...module.parameters(), ...module.buffers()];
}

/** An `nn.Module` running `module`'s forward through AOT-compiled graphs, sharing its parameters and buffers. */
export class AotModule extends Module {
  declare readonly origModule: Module;
  declare private readonly runner: AotRunner;

  declare private readonly guarded: readonly Tensor[] | undefined;

  /**
   * `guardedState`: the module's parameters and buffers, fixed for this object's life because the caller
   * guards them and the module's attributes itself (compile's guards do): calls skip re-reading them.
   */
  constructor(module: Module, options: AotOptions, guardedState?: readonly Tensor[]) {
    super();
    if (!(module instanceof Module)) throw new ValueError(`aotModule: expected an nn.Module, got ${typeof module}`);
    const opts = resolve(options, 'aotModule');
    this.origModule = module; // a child: parameters() and stateDict() see the same tensors
    Object.defineProperty(this, 'guarded', { value: guardedState, enumerable: false });
    const nState = () => guardedState?.length ?? stateOf(module).length;
    const runner = new AotRunner(
      (copies, tree) => module.forward(...(unflattenTensors(tree, copies.slice(nState())) as unknown[])),
      opts,
      'aotModule',
      module,
    );
    Object.defineProperty(this, 'runner', { value: runner, enumerable: false });
  }

  /** The programs compiled so far (forward/backward or inference graphs), for explain and pprint. */
  compiledPrograms(): CompiledProgram[] {
    return this.runner.programs;
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  override forward(...args: any[]): any {
    const { tensors, tree } = flattenTensors(args, 'aotModule: argument');
    const mod = this.origModule;
    if (this.guarded) return this.runner.run([...this.guarded, ...tensors], tree);
    return this.runner.run([...stateOf(mod), ...tensors], tree, moduleKey(mod));
  }
}

export function aotModule(module: Module, options: AotOptions): AotModule {
  return new AotModule(module, options);
}

/**
 * Compile `module` once, for calls like `exampleInputs` (PyTorch's aot_module_simplified, which TorchDynamo
 * uses after guarding the call itself): the result takes the user inputs only, and checks at run time the
 * assumptions it was compiled under (duplicated inputs, inputs that did not require grad).
 */
export function aotModuleSimplified(
  module: Module,
  exampleInputs: readonly unknown[],
  options: AotOptions,
): (...args: unknown[]) => unknown {
  if (!(module instanceof Module)) throw new ValueError(`aotModuleSimplified: expected an nn.Module, got ${typeof module}`);
  if (!Array.isArray(exampleInputs)) throw new ValueError(`aotModuleSimplified: exampleInputs must be an array of the arguments`);
  const opts = resolve(options, 'aotModuleSimplified');
  const nState = stateOf(module).length;
  const runner = new AotRunner(
    (copies, tree) => module.forward(...(unflattenTensors(tree, copies.slice(nState)) as unknown[])),
    opts,
    'aotModuleSimplified',
    module,
  );
  const { tensors, tree } = flattenTensors(exampleInputs, 'aotModuleSimplified: argument');
  const run = runner.checked([...stateOf(module), ...tensors], tree, nState);
  return (...args: unknown[]) => {
    const { tensors: now, tree: nowTree } = flattenTensors(args, 'aotModuleSimplified: argument');
    if (JSON.stringify(nowTree) !== JSON.stringify(tree)) {
      throw new AotError(
        `aotModuleSimplified: called with arguments shaped ${JSON.stringify(nowTree)}, but compiled for ${JSON.stringify(tree)}`,
      );
    }
    return run([...stateOf(module), ...now]);
  };
}
