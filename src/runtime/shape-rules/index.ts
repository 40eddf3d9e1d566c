import { ShapeError, ValueError } from '../../errors.js';
import { OPS, type Schema } from '../op.js';
import type { SizeArith } from '../size-arith.js';
import { CONV_RULES } from './conv.js';
import { ELEMENTWISE_RULES } from './elementwise.js';
import { LINALG_RULES } from './linalg.js';
import { fmtSizes, meta, type OpMeta, type ShapeRule, type TensorMeta } from './meta.js';
import { broadcastsToSizes } from './sizes.js';
import { NN_RULES } from './nn.js';
import { OP_NAMES, type OpName } from './op-names.js';
import { POOL_RULES } from './pool.js';
import { REDUCE_RULES } from './reduce.js';
import { VIEW_RULES } from './view.js';

/**
 * One shape rule per op of the op table (issue 16): given the op's bound arguments with tensors replaced by
 * `{ shape, dtype }` (sizes plain or symbolic), the output's `{ shape, dtype }`, or an array of them for ops
 * with several outputs. Written against SizeArith, so under export every size comparison is a guard. The
 * eager ops call the same checks and size helpers with NUMBER_ARITH (src/runtime/shape-rules/sizes.ts and
 * the check functions of each family), so the two cannot drift.
 */

export type { OpMeta, ShapeRule, TensorMeta } from './meta.js';
export { OP_NAMES, type OpName } from './op-names.js';

/** viewScatter: the view chain's own rules, then src must broadcast to the view as copy_ requires; the output is input's. */
function viewScatter<S>(A: SizeArith<S>, [x, src, chain]: readonly unknown[]): OpMeta<S> {
  const t = x as TensorMeta<S>;
  let v = t;
  for (const [name, args, kwargs] of chain as readonly [string, readonly unknown[], Readonly<Record<string, unknown>>][]) {
    if (!isOpName(name)) throw new ValueError(`viewScatter: '${name}' is not an op (chain ${JSON.stringify(chain)})`);
    v = inferMeta(A, name, [v, ...args], kwargs) as TensorMeta<S>;
  }
  const s = src as TensorMeta<S>;
  if (!broadcastsToSizes(A, s.shape, v.shape)) {
    throw new ShapeError(`copy_: a tensor of shape ${fmtSizes(s.shape)} cannot be broadcast to ${fmtSizes(v.shape)}`);
  }
  return meta(t.shape, t.dtype);
}

/** Every op's rule; a missing op is a compile error (the mapped type over OpName). */
export const SHAPE_RULES: { readonly [P in OpName]: ShapeRule } = {
  ...ELEMENTWISE_RULES,
  ...REDUCE_RULES,
  ...VIEW_RULES,
  viewScatter,
  ...LINALG_RULES,
  ...CONV_RULES,
  ...POOL_RULES,
  ...NN_RULES,
};

export function isOpName(name: string): name is OpName {
  return Object.hasOwn(SHAPE_RULES, name);
}

/** The shape rule of the op named `name`; a ValueError for a name that is no op of the table. */
export function shapeRuleOf(name: string): ShapeRule {
  if (!isOpName(name)) throw new ValueError(`shape rules: '${name}' is not an op of the op table (expected one of ${OP_NAMES.join(', ')})`);
  return SHAPE_RULES[name];
}

/**
 * Bind a call's arguments as the op would (keyword arguments by name, defaults filled), without checking
 * their types: tensors may be metas or a tracer's proxies.
 */
export function bindForRule(schema: Schema, args: readonly unknown[], kwargs?: Readonly<Record<string, unknown>>): unknown[] {
  const { name, params } = schema;
  if (args.length > params.length)
    throw new ValueError(`${name}: takes at most ${params.length} arguments (${schema.text}), got ${args.length}`);
  const out = params.map((_p, i) => (i < args.length ? args[i] : undefined));
  for (const [k, v] of Object.entries(kwargs ?? {})) {
    const i = params.findIndex((p) => p.name === k);
    if (i < 0) throw new ValueError(`${name}: unexpected option '${k}' (expected one of ${params.map((p) => p.name).join(', ')})`);
    out[i] = v;
  }
  params.forEach((p, i) => {
    if (out[i] !== undefined) return;
    if (!p.hasDefault) throw new ValueError(`${name}: missing required argument '${p.name}' (${schema.text})`);
    out[i] = structuredClone(p.default);
  });
  return out;
}

/**
 * The output meta of calling op `name` with `args` and `kwargs` as a user would (a tracer's call), tensors
 * given as metas: binds the arguments by the op's schema, then runs its rule.
 */
export function inferMeta<S>(
  A: SizeArith<S>,
  name: string,
  args: readonly unknown[],
  kwargs?: Readonly<Record<string, unknown>>,
): OpMeta<S> {
  const rule = shapeRuleOf(name);
  const op = OPS.get(name);
  if (!op) throw new ValueError(`shape rules: op '${name}' is not in the op table (import kiln's ops first)`);
  return rule(A, bindForRule(op.schema, args, kwargs));
}
