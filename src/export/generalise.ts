import { resizedCopy } from '../aot/symbolic.js';
import { GraphModule } from '../graph/graph-module.js';
import { fitSamples, formatExpr, graphLeaves, graphSkeleton, symbolicGraph, type ShapeSample, type SymExpr } from '../jit/shape-fit.js';
import type { Tensor } from '../runtime/tensor.js';
import { ExportError } from './errors.js';
import { add, floorDiv, int, mul, sym, type Expr } from './symbolic/expr.js';
import { checkConstraints } from './constraints.js';
import { ConstraintViolationError } from '../errors.js';
import type { ShapeEnv, Size, SymSize } from './symbolic/shape-env.js';
import { resolve, satisfiesAll, type Solution } from './symbolic/solve.js';

/**
 * The integers of an exported graph made to follow its dynamic dims. Op kernels ran at the example sizes, so
 * `x.view([b * n])` recorded `12`; the program is traced again at other values of the dynamic symbols (each
 * allowed by every guard, each symbol moved by its own amount so no accidental relation between dims holds),
 * and every integer that moved is fitted as arithmetic on input sizes (kiln/jit's fitting, src/jit/shape-fit.ts)
 * and checked against the symbolic sizes the trace knew. A trace that takes another path, or an integer no
 * fit explains, is an ExportError naming the sizes: code that read a dynamic size where kiln/plugin did not
 * record it (a branch on `x.shape[0]` in code the plugin never saw) must not give a program that is wrong at
 * other sizes.
 */

export interface GeneraliseInput {
  /** The traced graph (placeholders: `fixed` state tensors, then the user's tensors). */
  readonly gm: GraphModule;
  /** Every primal: state tensors first, then the user's. */
  readonly primals: readonly Tensor[];
  readonly fixed: number;
  /** Each user tensor's symbolic sizes. */
  readonly sizes: readonly (readonly Size[])[];
  readonly env: ShapeEnv;
  readonly solution: Solution;
  /** Trace the program again on these primals. */
  readonly retrace: (primals: Tensor[]) => GraphModule;
}

/** Offsets for the samples: distinct, not proportional to each other, so sizes of different symbols move apart. */
const OFFSETS = [
  [1, 2, 4, 7, 11, 16, 22, 29],
  [3, 8, 5, 13, 6, 19, 9, 25],
  [6, 1, 10, 3, 15, 4, 21, 2],
];

/**
 * Besides the moved samples, each range's ends (its smallest size from 2, and its largest, or a size well above the
 * example when unbounded): a branch on a size in code the plugin never saw is most often a threshold, and a
 * threshold between the example and an end changes the path there. This narrows the risk; only the plugin's
 * records (or `strict: true`) rule it out.
 */
const ENDS = ['low', 'high'] as const;

export function generaliseExport(input: GeneraliseInput): GraphModule {
  const { env, solution, sizes } = input;
  const dims = sizes.map((s) => s.map((d) => resolve(solution, env.toExpr(d))));
  const free = [...new Set(dims.flat().flatMap((e) => [...e.freeSymbols()]))];
  if (free.length === 0) return input.gm; // every size static: the graph's integers are right as they are
  const hints = new Map(free.map((s) => [s, env.symbol(s).hint!]));
  const shapesAt = (values: ReadonlyMap<string, number>) => [
    ...input.primals.slice(0, input.fixed).map((t) => [...t.shape]),
    ...dims.map((s) => s.map((e) => e.evaluate(values))),
  ];
  const samples: ShapeSample[] = [{ shapes: shapesAt(hints), leaves: graphLeaves(input.gm.graph) }];
  const skeleton = graphSkeleton(input.gm.graph);
  const subgraphs = subgraphCode(input.gm);
  for (const offsets of [...OFFSETS, ...ENDS]) {
    const values = typeof offsets === 'string' ? endValues(free, hints, offsets, input) : sampleValues(free, hints, offsets, input);
    if (!values) continue;
    const shapes = shapesAt(values);
    const outcome = traceAt(input, shapes);
    if (typeof outcome === 'string' || graphSkeleton(outcome.graph) !== skeleton) {
      // a relation between two dims the ops need (y's dim = x's + 1) explains a failure best
      const relation = findRelation(input, free, hints, shapesAt, skeleton);
      if (relation) throw relation;
      if (typeof outcome === 'string') {
        throw new ExportError(
          `exportProgram: the program fails at other sizes its dynamic dims allow (${describeSizes(input, values)}): ${outcome}. ` +
            'Narrow the Dims, relate them (dy = dx.add(1)), or make the dims static',
        );
      }
      throw new ExportError(
        `exportProgram: the program runs other ops at ${describeSizes(input, values)} than at the example sizes: code reads a dynamic size ` +
          'and branches on it where kiln/plugin did not record the branch as a guard, so the exported program would be wrong at some sizes. ' +
          'Build that code with kiln/plugin (its branches on sizes become guards and constraint errors), or give the dim a static size',
      );
    }
    if (subgraphCode(outcome) !== subgraphs) {
      throw new ExportError(
        `exportProgram: a cond or map body changes with the dynamic dims (at ${describeSizes(input, values)}); ` +
          'sizes inside control-flow subgraphs cannot follow the inputs yet, so make the dims they use static',
      );
    }
    samples.push({ shapes, leaves: graphLeaves(outcome.graph) });
  }
  if (samples.length < 3) {
    throw new ExportError(
      `exportProgram: the guards of the dynamic dims leave too few sizes to check the program at (${free.map((s) => env.debugName(s)).join(', ')}); make them static`,
    );
  }
  const fit = fitSamples(samples);
  if (!fit.ok)
    throw new ExportError(`exportProgram: ${fit.why}; the exported program would be wrong at other sizes. Make the dims involved static`);
  // A fit must mean the same symbolic size as every fit that agreed with it on the samples.
  const symbolic = (e: SymExpr): Expr => toSymbolic(e, input, dims);
  for (const [a, b] of fit.guards) {
    if (!symbolic(a).equals(symbolic(b))) {
      throw new ExportError(
        `exportProgram: a number in the graph fits both ${formatExpr(a)} and ${formatExpr(b)} on every size tried, which differ elsewhere; make the dims involved static`,
      );
    }
  }
  const placeholders = input.gm.graph.nodes.filter((n) => n.op === 'placeholder');
  return new GraphModule(input.gm, symbolicGraph(input.gm.graph, fit.exprs, placeholders), input.gm.className);
}

/** The program traced at `shapes` (state tensors as they are), or why it failed there. */
function traceAt(input: GeneraliseInput, shapes: readonly number[][]): GraphModule | string {
  const primals = input.primals.map((t, i) => (i < input.fixed ? t : resizedCopy(t, shapes[i]!)));
  try {
    return input.retrace(primals);
  } catch (e) {
    return (e as Error).message;
  }
}

/**
 * When moving the dims independently breaks the program, the first relation `b = k·a + c` (k = 1 or 2, c from
 * the example) under which it runs the same ops at two other sizes, recorded as a guard so the constraint
 * check reports it with PyTorch's "must always be related" text and the fix `dy = dx.add(1)`.
 */
function findRelation(
  input: GeneraliseInput,
  free: readonly string[],
  hints: ReadonlyMap<string, number>,
  shapesAt: (values: ReadonlyMap<string, number>) => number[][],
  skeleton: string,
): Error | undefined {
  const { env } = input;
  for (const a of free) {
    for (const b of free) {
      if (a === b) continue;
      for (const k of [1, 2]) {
        const c = hints.get(b)! - k * hints.get(a)!;
        const runs = [1, 3].every((delta) => {
          const values = new Map(hints);
          values.set(a, hints.get(a)! + delta);
          values.set(b, k * (hints.get(a)! + delta) + c);
          const outcome = traceAt(input, shapesAt(values));
          return typeof outcome !== 'string' && graphSkeleton(outcome.graph) === skeleton;
        });
        if (!runs) continue;
        const sa = env.size(sym(a));
        env.compare('eq', env.size(sym(b)), env.add(env.mul(env.lit(k), sa), env.lit(c)), 'the ops of the program');
        const violation = violationOf(env);
        if (violation) return violation;
      }
    }
  }
  // a dim the program cannot move at all (a Linear's input width): PyTorch's "specialized to be a constant"
  for (const a of free) {
    const fixedElsewhere = [1, 3].every((delta) => {
      const values = new Map(hints);
      values.set(a, hints.get(a)! + delta);
      return typeof traceAt(input, shapesAt(values)) === 'string';
    });
    if (!fixedElsewhere) continue;
    env.specialize(env.size(sym(a)) as SymSize, 'the ops of the program');
    const violation = violationOf(env);
    if (violation) return violation;
  }
  return undefined;
}

/** Every free symbol at the low or high end of its range (from 2; an unbounded end: 8 times the example plus 64). */
function endValues(
  free: readonly string[],
  hints: ReadonlyMap<string, number>,
  end: (typeof ENDS)[number],
  { env, solution }: GeneraliseInput,
): Map<string, number> | undefined {
  const values = new Map<string, number>();
  for (const s of free) {
    const range = solution.ranges.get(s) ?? env.symbol(s).range;
    const div = solution.divisibility.get(s);
    const hint = hints.get(s)!;
    let v = end === 'low' ? Math.max(range.lower, 2) : Number.isFinite(range.upper) ? range.upper : hint * 8 + 64;
    // keep a divisibility the guards need (s = m·k + c): the nearest such value inside the range
    if (div)
      v =
        end === 'low'
          ? v + ((((div.offset - v) % div.modulus) + div.modulus) % div.modulus)
          : v - ((((v - div.offset) % div.modulus) + div.modulus) % div.modulus);
    values.set(s, v);
  }
  return allowed(values, free, hints, env, solution) ? values : undefined;
}

/** The constraint violation the env's guards now give, if any (to throw with its suggested fixes). */
function violationOf(env: ShapeEnv): ConstraintViolationError | undefined {
  try {
    checkConstraints(env);
    return undefined;
  } catch (e) {
    if (e instanceof ConstraintViolationError) return e;
    throw e;
  }
}

/** A sample worth tracing: some symbol moved, and every guard (the replaced symbols evaluated too) still holds. */
function allowed(
  values: ReadonlyMap<string, number>,
  free: readonly string[],
  hints: ReadonlyMap<string, number>,
  env: ShapeEnv,
  solution: Solution,
): boolean {
  if (!free.some((s) => values.get(s) !== hints.get(s))) return false;
  const all = new Map(values);
  for (const [s, e] of solution.replacements) all.set(s, e.evaluate(values));
  return satisfiesAll(
    env.guards.filter((g) => g.kind !== 'assertion'),
    all,
  );
}

/** Values for the free symbols, each its hint moved by its own offset within its range, satisfying every guard. */
function sampleValues(
  free: readonly string[],
  hints: ReadonlyMap<string, number>,
  offsets: readonly number[],
  { env, solution }: GeneraliseInput,
): Map<string, number> | undefined {
  for (const direction of [1, -1]) {
    const values = new Map<string, number>();
    free.forEach((s, i) => {
      const range = solution.ranges.get(s) ?? env.symbol(s).range;
      const div = solution.divisibility.get(s);
      let v = hints.get(s)! + direction * offsets[i % offsets.length]! * (div?.modulus ?? 1);
      v = Math.min(Math.max(v, Math.max(range.lower, 2)), range.upper);
      values.set(s, v);
    });
    if (allowed(values, free, hints, env, solution)) return values;
  }
  return undefined;
}

/** A fit over input dims as an expression over the env's symbols. */
function toSymbolic(e: SymExpr, input: GeneraliseInput, dims: readonly (readonly Expr[])[]): Expr {
  let p: Expr = int(1);
  for (const [i, d] of e.dims) {
    const size = i < input.fixed ? int(input.primals[i]!.shape[d]!) : dims[i - input.fixed]![d]!;
    p = mul(p, size);
  }
  return add(floorDiv(mul(p, int(e.mul)), e.div), int(e.add));
}

function describeSizes(input: GeneraliseInput, values: ReadonlyMap<string, number>): string {
  return [...values].map(([s, v]) => `${input.env.debugName(s)} = ${v}`).join(', ');
}

/** The code of the control-flow subgraphs `gm` reads (traced at the example's sizes, so it must not change). */
function subgraphCode(gm: GraphModule): string {
  return gm.graph.nodes
    .filter((n) => n.op === 'get_attr')
    .map((n) => gm.resolveTarget(n.target as string))
    .filter((m): m is GraphModule => m instanceof GraphModule)
    .map((m) => m.code)
    .join('\n');
}
