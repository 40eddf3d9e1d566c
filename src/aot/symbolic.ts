import { GraphModule } from '../graph/graph-module.js';
import {
  divides,
  fitSamples,
  graphLeaves,
  graphSkeleton,
  independentSizes,
  shapeMismatch,
  symbolicGraph,
  type ShapeSpec,
} from '../jit/shape-fit.js';
import { withGradMode } from '../runtime/autograd.js';
import { tensor } from '../runtime/ops/creation.js';
import { indexSelect } from '../runtime/ops/view.js';
import type { Tensor } from '../runtime/tensor.js';

/**
 * Symbolic shapes for AOT graphs, reusing kiln/jit's machinery: JavaScript numbers cannot carry a trace, so
 * the program is traced again at other sizes and the integers of the graph that followed the inputs become
 * `sym_size` arithmetic (sizes 0 and 1 stay specialised, as in PyTorch). The spec kept with the graph says
 * which sizes it runs at; `shapeProblem` checks a call against it.
 */

const SPECS = new WeakMap<GraphModule, ShapeSpec>();

/** The shape spec of a graph made by `generaliseShapes`, if the generalisation held. */
export function shapeSpecOf(gm: GraphModule): ShapeSpec | undefined {
  return SPECS.get(gm);
}

/** Why `shapes` cannot run on `gm`, or undefined when they can (a static graph needs the traced shapes). */
export function shapeProblem(
  gm: GraphModule,
  traced: readonly (readonly number[])[],
  shapes: readonly (readonly number[])[],
): string | undefined {
  const spec = SPECS.get(gm) ?? { reads: [], samples: [{ shapes: traced, leaves: [] }], exprs: [], guards: [] };
  return shapeMismatch(spec, shapes);
}

/**
 * `gm` traced at `inputs`, generalised with a second trace at sizes moved by one (every size ≥ 2, the same
 * new size for equal sizes, so matching dims still match), checked by a third at spread sizes and confirmed
 * by a fourth at sizes moved independently of each other. When that fails or records another program,
 * only the leading dims move; when that fails too the graph stays static (and `shapeProblem` holds it to
 * the traced shapes). `branches`: the program decided control flow on a shape, so only traced shapes run.
 */
export function generaliseShapes(
  gm: GraphModule,
  inputs: readonly Tensor[],
  retrace: (inputs: Tensor[]) => GraphModule,
  branches = false,
  /** The first `fixed` inputs (a module's parameters and buffers) keep their sizes and are passed as they are. */
  fixed = 0,
  /**
   * Integers outside the graph that must follow the inputs too (the view ops that rebuild output views), fitted
   * with the graph's own as leaves after them, and their structure, which must not change across the traces.
   */
  extra?: { readonly leaves: (gm: GraphModule) => readonly number[]; readonly skeleton: (gm: GraphModule) => string },
): GraphModule {
  // control flow's subgraphs are traced at the example's sizes, and the skeleton below does not look into them
  if (gm.graph.nodes.some((n) => n.op === 'get_attr' && gm.resolveTarget(n.target as string) instanceof GraphModule)) return gm;
  const leavesOf = (g: GraphModule) => [...graphLeaves(g.graph), ...(extra?.leaves(g) ?? [])];
  const skeletonOf = (g: GraphModule) => `${graphSkeleton(g.graph)}\n${extra?.skeleton(g) ?? ''}`;
  const shapes = inputs.map((t) => [...t.shape]);
  const resized = (t: Tensor, shape: readonly number[], i: number) => (i < fixed ? t : resizedCopy(t, shape));
  // A size the fixed tensors have too (a feature size matching a weight) stays: moving it would break the call.
  const pinned = new Set(shapes.slice(0, fixed).flat());
  const free = (v: number, i: number) => i >= fixed && !pinned.has(v);
  for (const which of [(v: number, _d: number, i: number) => free(v, i), (v: number, d: number, i: number) => d === 0 && free(v, i)]) {
    const moved = moveSizes(shapes, which);
    if (JSON.stringify(moved) === JSON.stringify(shapes)) continue;
    let again: GraphModule;
    try {
      again = retrace(inputs.map((t, i) => resized(t, moved[i]!, i)));
    } catch {
      continue;
    }
    if (skeletonOf(gm) !== skeletonOf(again)) continue;
    const samples = [
      { shapes, leaves: leavesOf(gm) },
      { shapes: moved, leaves: leavesOf(again) },
    ];
    // Moving every size by one keeps their differences, so a size that is no simple function of the inputs
    // (`x[::2]` has ceil(n / 2) rows) can fit as another input's size on both traces and be wrong elsewhere:
    // a third trace with the sizes spread apart must agree with the fit (or the graph stays static).
    const spread = spreadSizes(shapes, which);
    let third: GraphModule | undefined;
    try {
      third = retrace(inputs.map((t, i) => resized(t, spread[i]!, i)));
    } catch {
      third = undefined; // not a valid call (sizes tied to each other): the two traces are all there is
    }
    if (third && skeletonOf(third) === skeletonOf(gm)) samples.push({ shapes: spread, leaves: leavesOf(third) });
    if (!fitSamples(samples).ok) continue;
    // The spread keeps every pair of dims in an affine relation too (both moves are linear in the sizes), so the
    // fits (and the numbers that stayed put: max(n, 5)) are only believed once they hold at sizes moved
    // independently of each other; when that trace fails or does other ops, or the fit fails there, the graph
    // stays static (traced again per size).
    const independent = independentSizes(shapes, which, [moved, spread]);
    let fourth: GraphModule;
    try {
      fourth = retrace(inputs.map((t, i) => resized(t, independent[i]!, i)));
    } catch {
      continue;
    }
    if (skeletonOf(fourth) !== skeletonOf(gm)) continue;
    samples.push({ shapes: independent, leaves: leavesOf(fourth) });
    let fit = fitSamples(samples);
    if (!fit.ok) continue;
    if (divides(fit.exprs)) {
      const other = independentSizes(shapes, which, [moved, spread, independent], 1);
      let fifth: GraphModule;
      try {
        fifth = retrace(inputs.map((t, i) => resized(t, other[i]!, i)));
      } catch {
        continue;
      }
      if (skeletonOf(fifth) !== skeletonOf(gm)) continue;
      samples.push({ shapes: other, leaves: leavesOf(fifth) });
      fit = fitSamples(samples);
      if (!fit.ok) continue;
    }
    const placeholders = gm.graph.nodes.filter((n) => n.op === 'placeholder');
    const out = new GraphModule(gm, symbolicGraph(gm.graph, fit.exprs, placeholders), gm.className);
    SPECS.set(out, { reads: [], branches, samples, exprs: fit.exprs, guards: fit.guards });
    return out;
  }
  return gm;
}

type Which = (size: number, dim: number, input: number) => boolean;

function moveSizes(shapes: readonly number[][], which: Which): number[][] {
  return shapes.map((s, i) => s.map((v, d) => (v >= 2 && which(v, d, i) ? v + 1 : v)));
}

/** Every size ≥ 2 moved by a different amount per distinct size (equal sizes stay equal): 2, 3, 4 → 5, 8, 11. */
function spreadSizes(shapes: readonly number[][], which: Which): number[][] {
  const distinct = [...new Set(shapes.flat().filter((v) => v >= 2))].sort((a, b) => a - b);
  return shapes.map((s, i) => s.map((v, d) => (v >= 2 && which(v, d, i) ? v + 2 * distinct.indexOf(v) + 3 : v)));
}

/**
 * A tensor of `shape` with values like `t`'s (its elements repeated), requiring grad as `t` does, and a non-leaf
 * when `t` is one (the program gets a recorded clone of such an input, so the traces must agree on it).
 */
export function resizedCopy(t: Tensor, shape: readonly number[]): Tensor {
  const copy = resizedLeaf(t, shape);
  return t.requiresGrad && !t.isLeaf ? withGradMode(true, () => copy.clone()) : copy;
}

function resizedLeaf(t: Tensor, shape: readonly number[]): Tensor {
  return withGradMode(false, () => {
    const flat = t.detach().reshape([-1]);
    const n = shape.reduce((a, b) => a * b, 1);
    const idx = Array.from({ length: n }, (_, i) => (flat.shape[0]! ? i % flat.shape[0]! : 0));
    const values = flat.shape[0]! ? indexSelect(flat, 0, idxTensor(idx)) : flat;
    const out = values
      .reshape([...shape])
      .contiguous()
      .clone();
    return t.requiresGrad ? out.requiresGrad_(true) : out;
  });
}

function idxTensor(idx: number[]): Tensor {
  return tensor(idx, { dtype: 'int32' });
}
