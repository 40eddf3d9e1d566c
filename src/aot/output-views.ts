import { evalExpr, type SymExpr } from '../jit/shape-fit.js';
import { isPlainObject } from '../runtime/plain-object.js';
import type { ViewStep } from '../runtime/ops/view.js';
import type { OutputSource, RebuiltView } from './trace-program.js';

/**
 * Output views under dynamic shapes. An output that is a view of an input (or of an intermediate base) is
 * rebuilt outside the graph by replaying its view ops, so it aliases that tensor as eagerly. Their integer
 * arguments (`narrow(0, 1, n - 1)`, `view([n, 2])`) were traced at one size: they are fitted to the input
 * sizes with the graph's own integers (generaliseShapes), and evaluated at each call's sizes.
 */

type Rebuilt = Extract<OutputSource, { kind: 'inputView' | 'baseView' }>;

const rebuilt = (outputs: readonly OutputSource[]): Rebuilt[] =>
  outputs.filter((o): o is Rebuilt => o.kind === 'inputView' || o.kind === 'baseView');

/** The integers of a view chain's arguments, in the order `mapIntegers` visits them. */
function integersOf(chain: readonly ViewStep[]): number[] {
  const out: number[] = [];
  mapIntegers(chain, (v) => {
    out.push(v);
    return v;
  });
  return out;
}

/** `chain` with each integer argument replaced by `f(value, index)`, in a fixed walk order. */
function mapIntegers(chain: readonly ViewStep[], f: (value: number, index: number) => number): ViewStep[] {
  let i = 0;
  const walk = (a: unknown): unknown => {
    if (typeof a === 'number' && Number.isInteger(a)) return f(a, i++);
    if (Array.isArray(a)) return a.map(walk);
    if (isPlainObject(a)) return Object.fromEntries(Object.entries(a).map(([k, v]) => [k, walk(v)]));
    return a;
  };
  return chain.map(([name, args, kwargs]) => [name, walk(args) as unknown[], walk(kwargs) as Record<string, unknown>] as const);
}

/** Every integer of the rebuilt views' chains, output by output: extra leaves for the shape fit. */
export function viewLeaves(outputs: readonly OutputSource[]): number[] {
  return rebuilt(outputs).flatMap((o) => integersOf(o.chain));
}

/** Which outputs are rebuilt from what by which view ops: must be the same at every traced size. */
export function viewSkeleton(outputs: readonly OutputSource[]): string {
  return JSON.stringify(
    outputs.map((o) =>
      o.kind === 'inputView' || o.kind === 'baseView'
        ? [o.kind, o.kind === 'inputView' ? o.input : o.index, o.detach, o.chain.map(([name]) => name)]
        : [o.kind],
    ),
  );
}

/**
 * The outputs with the fitted expressions of their chains' integers attached: `exprs` are the fit's
 * (leaf index → expression), whose leaves from `first` on are the chains' (`viewLeaves` order).
 */
export function withSymbolicViews(
  outputs: readonly OutputSource[],
  exprs: readonly (readonly [number, SymExpr])[],
  first: number,
): OutputSource[] {
  let at = first;
  return outputs.map((o) => {
    if (o.kind !== 'inputView' && o.kind !== 'baseView') return o;
    const n = integersOf(o.chain).length;
    const sizes = exprs.filter(([leaf]) => leaf >= at && leaf < at + n).map(([leaf, e]) => [leaf - at, e] as const);
    at += n;
    return sizes.length ? { ...o, sizes } : o;
  });
}

/** The view's chain with its fitted integers evaluated at the call's input shapes. */
export function chainAt(view: RebuiltView, shapes: readonly (readonly number[])[]): readonly ViewStep[] {
  if (!view.sizes) return view.chain;
  const byIndex = new Map(view.sizes);
  return mapIntegers(view.chain, (v, i) => {
    const e = byIndex.get(i);
    return e ? evalExpr(e, shapes) : v;
  });
}
