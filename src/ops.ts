import { add_, contiguous, copy_, detach, fill_, max, min, mul_, zero_ } from './runtime/functions.js';
import { OPS } from './runtime/op.js';
import * as table from './runtime/ops/index.js';
import type { Op as OpType, Param as ParamType, Schema as SchemaType } from './runtime/op.js';
import type { TypedTable } from './runtime/ops/typed.js';

type Table = typeof table;

/** Ops that are parts of a public one: `max`/`min` dispatch to amax/maxDim and amin/minDim; `dropout` draws dropoutMask's mask. */
const PARTS = ['amax', 'amin', 'maxDim', 'minDim', 'dropoutMask'] as const;

/** The names under which the op modules export an op (a `defineOp` result, not a factory or a helper). */
type OpExports = { [K in keyof Table]: Table[K] extends { readonly opName: string; readonly callWith: unknown } ? K : never }[keyof Table];

/** Every op in the table, by its exported name, with its exact options type. */
export type TableOps = Omit<Pick<TypedTable, OpExports>, (typeof PARTS)[number]>;

function isOp(v: unknown): boolean {
  return typeof v === 'function' && OPS.get((v as { opName?: string }).opName ?? '') === v;
}

const tableOps = Object.fromEntries(
  Object.entries(table).filter(([name, v]) => isOp(v) && !(PARTS as readonly string[]).includes(name)),
) as unknown as TableOps;

/**
 * `ops`: every tensor op as a function taking the tensor first (`ops.add(a, b)` is `a.add(b)`), taken from the
 * op table, plus the function forms of the methods that are not ops on their own and the registry itself.
 */
export const ops = Object.freeze({
  ...tableOps,
  max,
  min,
  add_,
  mul_,
  zero_,
  fill_,
  copy_,
  contiguous,
  detach,
  registry: OPS,
});

/** The registry's types, reachable as `ops.Op`, `ops.Schema` and `ops.Param` as when `ops` was a module. */
// eslint-disable-next-line @typescript-eslint/no-namespace
export declare namespace ops {
  export type Op<F extends (...args: never[]) => unknown> = OpType<F>;
  export type Schema = SchemaType;
  export type Param = ParamType;
}
