import type { Op, OptionsOf } from '../op.js';
import type * as table from './index.js';
import type { OpParamNames } from './param-names.js';

type AnyFn = (...args: never[]) => unknown;

/** The op `O`, exported as `K`, with its options object typed exactly from its parameter names. */
export type TypedOp<O, K extends string> =
  O extends Op<infer F extends AnyFn> ? (K extends keyof OpParamNames ? Op<F, OptionsOf<F, OpParamNames[K]>> : O) : O;

/** The op table with exact option types: what `ops` and `F` hand out (the same functions, typed tighter). */
export type TypedTable = { readonly [K in keyof typeof table]: TypedOp<(typeof table)[K], K> };
