import { sym_add, sym_floordiv, sym_mul, sym_size, sym_sub } from '../graph/builtins.js';
import { Graph } from '../graph/graph.js';
import { Node, targetName, type Argument, type FunctionTarget, type Opcode } from '../graph/node.js';
import { isPlainObject } from '../runtime/plain-object.js';
import { fmt, sameShape } from '../runtime/shape.js';

/**
 * Symbolic shapes for runtime traces. JavaScript numbers cannot carry a trace (no operator overloading), so
 * `x.shape[1] * 2` reaches an op as a plain 8. When the same program is traced at other input shapes, the
 * numbers that changed are fitted as small integer functions of the input dims (`d`, `d + c`, `c·d`, `d // c`,
 * products of dims, `numel`), and the graph is rebuilt with `sym_size`/`sym_mul`/… nodes computing them.
 * Dims that never varied stay specialised, and guards record the fits a later shape could tell apart.
 */

/** An input dim: the `dim`th dim of the `input`th flattened input tensor. */
export type Dim = readonly [input: number, dim: number];

/** `floor(mul · Π dims / div) + add`. */
export interface SymExpr {
  readonly dims: readonly Dim[];
  readonly mul: number;
  readonly div: number;
  readonly add: number;
}

/** One trace of the program: the input shapes, and the integers its graph holds in walk order. */
export interface ShapeSample {
  readonly shapes: readonly (readonly number[])[];
  readonly leaves: readonly number[];
}

/** What a runtime trace needs to check (and a saved one to keep) about the shapes it was made at. */
export interface ShapeSpec {
  /** Where user code read a traced tensor's shape (file:line), for messages; empty: the graph is shape-agnostic. */
  readonly reads: readonly string[];
  /** One of the reads decides a branch: only the traced shapes are known to take the traced path. */
  readonly branches?: boolean;
  readonly samples: readonly ShapeSample[];
  /** Leaf index → the expression that computes it (only leaves that changed across samples). */
  readonly exprs: readonly (readonly [number, SymExpr])[];
  /** Pairs of fits that agreed on every sample; a shape on which they differ needs another trace. */
  readonly guards: readonly (readonly [SymExpr, SymExpr])[];
  /**
   * The fits could not be confirmed at independently moved sizes (that trace failed or did other ops), so
   * nothing but the traced shapes is known to run: a later shape needs another trace.
   */
  readonly unconfirmed?: boolean;
}

/**
 * The input sizes of the trace that must confirm a fit. The other samples move every size by one, or spread
 * them by 2·rank + 3, so any two dims stay in an affine relation across all of them, and a size that is no
 * function of the inputs (`ceil(n / 2)` rows) can fit as another dim's `d - 1` on every sample and be wrong
 * everywhere else. Here each distinct size that `move` selects gets its own move, not proportional to the
 * others': sizes equal in the example stay equal, their order is kept (`a ≤ b` still holds for a valid call)
 * and every size stays ≥ 2.
 */
export function independentSizes(
  shapes: readonly (readonly number[])[],
  move: (size: number, dim: number, input: number) => boolean,
  /** Other samples' shapes: a moved size that repeats one of theirs at its place tells nothing new, so all moves grow. */
  seen: readonly (readonly (readonly number[])[])[] = [],
  /** 1: another such sample, with the ratios pushed the other way. */
  variant: 0 | 1 = 0,
): number[][] {
  const moves = (v: number, d: number, i: number) => v >= 2 && move(v, d, i);
  const distinct = [...new Set(shapes.flatMap((s, i) => s.filter((v, d) => moves(v, d, i))))].sort((a, b) => a - b);
  const at = (extra: number): number[][] => {
    // The ratios between dims change, which moves by one and spreads (both linear in the sizes) never do:
    // variant 0 lifts the smallest size past the largest and closes the gaps to 1 (2 where they were 1; ratios
    // near 1, differences unlike the other samples'),
    // variant 1 moves the smallest by 2 and triples the gaps. Gaps stay positive: the order is kept.
    const to = new Map<number, number>();
    const largest = distinct[distinct.length - 1] ?? 0;
    let prev = 0;
    distinct.forEach((v, k) => {
      const gap = v - (distinct[k - 1] ?? 0);
      const first = variant ? v + 2 : v + largest + 3;
      const next = (k === 0 ? first : prev + (variant ? 3 * gap : gap === 1 ? 2 : 1)) + (k === 0 ? extra : 0);
      to.set(v, next);
      prev = next;
    });
    return shapes.map((s, i) => s.map((v, d) => (moves(v, d, i) ? to.get(v)! : v)));
  };
  const repeats = (out: number[][]) =>
    out.some((s, i) => s.some((v, d) => moves(shapes[i]![d]!, d, i) && seen.some((x) => x[i]?.[d] === v)));
  let extra = 0;
  while (repeats(at(extra)) && extra < 16) extra++;
  return at(extra);
}

export function evalExpr(e: SymExpr, shapes: readonly (readonly number[])[]): number {
  let p = 1;
  for (const [i, d] of e.dims) p *= shapes[i]![d]!;
  return Math.floor((e.mul * p) / e.div) + e.add;
}

/** A list of input shapes for messages: `[[2, 3], [4]]`. */
export function formatShapes(shapes: readonly (readonly number[])[]): string {
  return `[${shapes.map(fmt).join(', ')}]`;
}

export function formatExpr(e: SymExpr): string {
  let s = e.dims.map(([i, d]) => `s${i}_${d}`).join('·') || '1';
  if (e.mul !== 1) s = `${e.mul}·${s}`;
  if (e.div !== 1) s = `${s} // ${e.div}`;
  if (e.add !== 0) s = `${s} ${e.add > 0 ? '+' : '-'} ${Math.abs(e.add)}`;
  return s;
}

/** The integers of a graph's arguments, in node order (what changes when a trace sees other shapes). */
export function graphLeaves(graph: Graph): number[] {
  const out: number[] = [];
  const walk = (a: unknown): void => {
    if (typeof a === 'number' && Number.isInteger(a)) out.push(a);
    else if (Array.isArray(a)) a.forEach(walk);
    else if (isPlainObject(a)) Object.values(a).forEach(walk);
  };
  for (const n of graph.nodes) {
    walk(n.args);
    walk(n.kwargs);
  }
  return out;
}

/** The graph printed with its integers blanked: equal skeletons mean the traces did the same ops. */
export function graphSkeleton(graph: Graph, constantShapes: (path: string) => string = () => ''): string {
  const blank = (a: unknown): unknown => {
    if (typeof a === 'number' && Number.isInteger(a)) return '#';
    if (a instanceof Node) return `%${a.name}`;
    if (Array.isArray(a)) return a.map(blank);
    if (isPlainObject(a)) return Object.fromEntries(Object.entries(a).map(([k, v]) => [k, blank(v)]));
    return a;
  };
  return graph.nodes
    .map((n) => {
      const target = targetName(n.target);
      const extra = n.op === 'get_attr' ? constantShapes(n.target as string) : '';
      return `${n.name} ${n.op} ${target}${extra} ${JSON.stringify(blank(n.args))} ${JSON.stringify(blank(n.kwargs))}`;
    })
    .join('\n');
}

/** Every single input dim, then products of dims, as candidate bases of a fit (in order of preference). */
function bases(shapes: readonly (readonly number[])[]): Dim[][] {
  const singles: Dim[][] = [];
  shapes.forEach((s, i) => s.forEach((_, d) => singles.push([[i, d]])));
  const numels: Dim[][] = shapes.filter((s) => s.length > 1).map((s) => s.map((_, d) => [shapes.indexOf(s), d] as Dim));
  const pairs: Dim[][] = [];
  for (let a = 0; a < singles.length; a++) for (let b = a + 1; b < singles.length; b++) pairs.push([singles[a]![0]!, singles[b]![0]!]);
  return [...singles, ...numels, ...pairs];
}

/** Every fit of `values` (one per sample): `d + c`, `c·d`, `d // c` and `m·d + c` over every base. */
function fitsOf(samples: readonly ShapeSample[], values: readonly number[]): { e: SymExpr; cost: number; constants: number }[] {
  const out: { e: SymExpr; cost: number; constants: number }[] = [];
  const [v0] = values as [number];
  const fixed = ([i, d]: Dim) => samples.every((s) => s.shapes[i]![d] === samples[0]!.shapes[i]![d]);
  for (const dims of bases(samples[0]!.shapes)) {
    const ps = samples.map((s) => evalExpr({ dims, mul: 1, div: 1, add: 0 }, s.shapes));
    if (ps.every((p) => p === ps[0])) continue; // a base that never varied explains nothing that did
    const [p0] = ps as [number];
    const tries: [SymExpr, number][] = [[{ dims, mul: 1, div: 1, add: v0 - p0 }, v0 === p0 ? 0 : 1]];
    if (p0 !== 0 && v0 % p0 === 0 && v0 / p0 !== 1) tries.push([{ dims, mul: v0 / p0, div: 1, add: 0 }, 1]);
    // A product with a size that never varied, divided, fits ratios no program computes (d·10 // 18 for
    // ceil(d / 2) at d = 9, 10, 12, 21).
    const scaled = dims.length > 1 && dims.some(fixed);
    if (v0 > 0 && p0 >= v0 * 2 && !scaled) tries.push([{ dims, mul: 1, div: Math.floor(p0 / v0), add: 0 }, 1]);
    const j = ps.findIndex((p) => p !== p0);
    const m = (values[j]! - v0) / (ps[j]! - p0);
    // Two samples fit any line, so without a third one only small slopes are believable.
    const believable = new Set(ps).size > 2 || Math.abs(m) <= 8;
    if (Number.isInteger(m) && m !== 0 && m !== 1 && believable) tries.push([{ dims, mul: m, div: 1, add: v0 - m * p0 }, 2]);
    for (const [e, constants] of tries) {
      if (samples.every((s, k) => evalExpr(e, s.shapes) === values[k])) out.push({ e, constants, cost: constants + dims.length - 1 });
    }
  }
  const size = (e: SymExpr) => Math.abs(e.mul) + e.div + Math.abs(e.add); // smaller constants are likelier
  return out.sort((a, b) => a.cost - b.cost || a.constants - b.constants || size(a.e) - size(b.e));
}

/**
 * Whether a fit divides: a floor division is a step function, and agrees with other step functions
 * (`ceil(n / 2)` with `m // 3` where m ≈ 1.5·n) on more samples than a line does, so it needs one more
 * independent sample to be believed.
 */
export function divides(exprs: readonly (readonly [number, SymExpr])[]): boolean {
  return exprs.some(([, e]) => e.div !== 1);
}

export type FitResult = { ok: true; exprs: [number, SymExpr][]; guards: [SymExpr, SymExpr][] } | { ok: false; why: string };

/**
 * Explain every leaf that changed across `samples` by its cheapest fit (fewest constants and dims, then the
 * smallest constants). Two
 * samples cannot always tell fits apart (`2·d - 1` and `d·e - 7` may agree on both), so every fit nearly as
 * cheap becomes a guard: a shape on which they disagree needs another trace.
 */
export function fitSamples(samples: readonly ShapeSample[]): FitResult {
  const exprs: [number, SymExpr][] = [];
  const guards: [SymExpr, SymExpr][] = [];
  const n = samples[0]!.leaves.length;
  for (let leaf = 0; leaf < n; leaf++) {
    const values = samples.map((s) => s.leaves[leaf]!);
    if (values.every((v) => v === values[0])) continue;
    const fits = fitsOf(samples, values);
    if (!fits.length) {
      const at = samples.map((s, k) => `${values[k]} at ${formatShapes(s.shapes)}`);
      return { ok: false, why: `a number in the graph changed (${at.join('; ')}) and is no simple function of the input shapes` };
    }
    const best = fits[0]!;
    exprs.push([leaf, best.e]);
    for (const alt of fits.slice(1)) if (alt.cost <= best.cost + 1) guards.push([best.e, alt.e]);
  }
  return { ok: true, exprs, guards };
}

/** A copy of `base` in which each fitted leaf is computed from the inputs by shape-arithmetic nodes. */
export function symbolicGraph(base: Graph, exprs: readonly (readonly [number, SymExpr])[], inputs: readonly Node[]): Graph {
  const byLeaf = new Map(exprs.map(([i, e]) => [i, e]));
  const g = new Graph();
  const env = new Map<Node, Node>();
  const made = new Map<string, Node>();
  const fn = (f: unknown) => f as FunctionTarget;
  const build = (e: SymExpr): Node => {
    const key = JSON.stringify(e);
    let node = made.get(key);
    if (node) return node;
    const size = ([i, d]: Dim): Node => {
      const k = `size ${i} ${d}`;
      let s = made.get(k);
      if (!s) made.set(k, (s = g.callFunction(fn(sym_size), [env.get(inputs[i]!)!, d])));
      return s;
    };
    let acc: Node | number = e.dims.map(size).reduce((a, b) => g.callFunction(fn(sym_mul), [a, b]));
    if (e.mul !== 1) acc = g.callFunction(fn(sym_mul), [acc, e.mul]);
    if (e.div !== 1) acc = g.callFunction(fn(sym_floordiv), [acc, e.div]);
    if (e.add !== 0) acc = g.callFunction(fn(e.add > 0 ? sym_add : sym_sub), [acc, Math.abs(e.add)]);
    made.set(key, (node = acc as Node));
    return node;
  };
  let leaf = 0;
  const rewrite = (a: unknown): unknown => {
    if (typeof a === 'number' && Number.isInteger(a)) {
      const e = byLeaf.get(leaf++);
      return e ? build(e) : a;
    }
    if (a instanceof Node) return env.get(a);
    if (Array.isArray(a)) return a.map(rewrite);
    if (isPlainObject(a)) return Object.fromEntries(Object.entries(a).map(([k, v]) => [k, rewrite(v)]));
    return a;
  };
  for (const n of base.nodes) {
    const copy = g.createNode(
      n.op as Opcode,
      n.target,
      rewrite(n.args) as Argument[],
      rewrite(n.kwargs) as Record<string, Argument>,
      n.name,
    );
    copy.meta = { ...n.meta };
    env.set(n, copy);
  }
  return g;
}

/**
 * Why `shapes` cannot run on the graph this spec describes, or undefined when they can: a dim that never
 * varied across the traces changed, two fits that agreed so far now disagree, or the sizes leave what every
 * trace saw (below the least traced size, or two sizes ordered otherwise), where a size that is no function
 * of the inputs could still have passed for one.
 */
export function shapeMismatch(spec: ShapeSpec, shapes: readonly (readonly number[])[]): string | undefined {
  const first = spec.samples[0]!.shapes;
  const traced = (s: ShapeSample) => s.shapes.length === shapes.length && s.shapes.every((x, i) => sameShape(x, shapes[i]!));
  if (spec.unconfirmed && !spec.samples.some(traced)) {
    return `the shape arithmetic fitted to the traces (${spec.exprs.map(([, e]) => formatExpr(e)).join(', ') || 'none'}) could not be confirmed at independently moved sizes, and input shapes ${formatShapes(shapes)} are none of those it was traced at (${spec.samples.map((s) => formatShapes(s.shapes)).join(', ')})`;
  }
  if (spec.branches && !spec.samples.some((s) => s.shapes.length === shapes.length && s.shapes.every((x, i) => sameShape(x, shapes[i]!)))) {
    return `the program compares shapes, and input shapes ${formatShapes(shapes)} are none of those it was traced at (${spec.samples.map((s) => formatShapes(s.shapes)).join(', ')})`;
  }
  for (let i = 0; i < first.length; i++) {
    const got = shapes[i]!;
    const traced = spec.samples.map((s) => s.shapes[i]!);
    if (got.length !== first[i]!.length) return `input ${i} has ${got.length} dims, but the trace was made with ${first[i]!.length}`;
    for (let d = 0; d < got.length; d++) {
      const seen = traced.map((s) => s[d]!);
      if (seen.every((v) => v === seen[0]) && got[d] !== seen[0]) {
        return `input ${i} dim ${d} is ${got[d]}, but the trace was specialised to ${seen[0]} (shape ${fmt(got)} vs ${fmt(first[i]!)})`;
      }
    }
  }
  for (const [a, b] of spec.guards) {
    if (evalExpr(a, shapes) !== evalExpr(b, shapes)) return `the trace cannot tell ${formatExpr(a)} from ${formatExpr(b)} on these shapes`;
  }
  if (spec.samples.length > 1) {
    // Every other sample moved the sizes up from the first, so what held there is only known upwards of it: a
    // number that stayed put or followed a size may be a threshold below it (max(n, 5) is n from [5, 2] on).
    for (let i = 0; i < first.length; i++) {
      for (let d = 0; d < first[i]!.length; d++) {
        const least = Math.min(...spec.samples.map((s) => s.shapes[i]![d]!));
        if (shapes[i]![d]! < least) return `input ${i} dim ${d} is ${shapes[i]![d]}, below the ${least} of every trace`;
      }
    }
  }
  if (spec.exprs.length && spec.samples.length > 1) {
    // Every sample kept the order of the sizes (equal sizes moved together, the rest kept their order), so a fit
    // is only known on that side of each comparison: n·n fitted as n·m at [2, 2], min(n, m) fitted as m at
    // [4, 3]. A call that orders two sizes otherwise needs another trace.
    const all: Dim[] = [];
    first.forEach((s, i) => s.forEach((_, d) => all.push([i, d])));
    const sign = (sh: readonly (readonly number[])[], a: Dim, b: Dim) => Math.sign(sh[a[0]]![a[1]]! - sh[b[0]]![b[1]]!);
    for (let x = 0; x < all.length; x++) {
      for (let y = x + 1; y < all.length; y++) {
        const [a, b] = [all[x]!, all[y]!];
        const was = sign(first, a, b);
        if (sign(shapes, a, b) === was || !spec.samples.every((s) => sign(s.shapes, a, b) === was)) continue;
        const [u, v] = [shapes[a[0]]![a[1]]!, shapes[b[0]]![b[1]]!];
        const how = was === 0 ? 'equal to' : was < 0 ? 'less than' : 'greater than';
        return `input ${a[0]} dim ${a[1]} (${u}) vs input ${b[0]} dim ${b[1]} (${v}): the first was ${how} the second in every trace, and the shape arithmetic fitted there is only known on that side`;
      }
    }
  }
  return undefined;
}

const isInt = (x: unknown): x is number => typeof x === 'number' && Number.isInteger(x);
const isIntArray = (x: unknown): boolean => Array.isArray(x) && x.every(isInt);

function isExpr(x: unknown): x is SymExpr {
  if (!isPlainObject(x)) return false;
  const e = x as Record<string, unknown>;
  const dims = e.dims;
  return (
    Array.isArray(dims) &&
    dims.every((d) => isIntArray(d) && (d as number[]).length === 2) &&
    isInt(e.mul) &&
    isInt(e.div) &&
    (e.div as number) > 0 &&
    isInt(e.add)
  );
}

/** Whether a loaded value is a well-formed ShapeSpec whose dims all exist in its samples' shapes. */
export function isShapeSpec(x: unknown): x is ShapeSpec {
  if (!isPlainObject(x)) return false;
  const s = x as Record<string, unknown>;
  if (!Array.isArray(s.reads) || !s.reads.every((r) => typeof r === 'string')) return false;
  if (s.branches !== undefined && typeof s.branches !== 'boolean') return false;
  if (s.unconfirmed !== undefined && typeof s.unconfirmed !== 'boolean') return false;
  if (!Array.isArray(s.samples) || s.samples.length === 0) return false;
  const ok = s.samples.every((sm) => isPlainObject(sm) && Array.isArray(sm.shapes) && sm.shapes.every(isIntArray) && isIntArray(sm.leaves));
  if (!ok) return false;
  const shapes = (s.samples[0] as ShapeSample).shapes;
  const inRange = (e: SymExpr) => e.dims.every(([i, d]) => i >= 0 && i < shapes.length && d >= 0 && d < shapes[i]!.length);
  const exprOk = (e: unknown) => isExpr(e) && inRange(e);
  return (
    Array.isArray(s.exprs) &&
    s.exprs.every((p) => Array.isArray(p) && p.length === 2 && isInt(p[0]) && exprOk(p[1])) &&
    Array.isArray(s.guards) &&
    s.guards.every((p) => Array.isArray(p) && p.length === 2 && exprOk(p[0]) && exprOk(p[1]))
  );
}
