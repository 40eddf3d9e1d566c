import type { Eager, Lowering } from '../runtime/lowering.js';
import type { Schema } from '../runtime/op.js';
import * as O from '../runtime/ops/index.js';
import { Tensor } from '../runtime/tensor.js';

/**
 * Tensor methods whose op is not the method of the same name (another name, another argument order, or no op
 * at all), as the op they call: `x.t()` is `transpose(x, 0, 1)`. Every other method is the op of its name.
 * Keyed by Tensor's own method names, so a renamed method fails to compile; a test checks each is a method.
 */

interface AliasOp {
  readonly opName: string;
  readonly lower: Lowering | Eager;
  readonly schema: Schema;
}

/** The op a method call runs, with its arguments by parameter name, or the receiver itself. */
export type MethodCall = { readonly op: AliasOp; readonly args: Readonly<Record<string, unknown>> } | { readonly identity: unknown };

/** Tensor's method names (Object's own, which every object literal has, left out). */
type MethodName = Exclude<
  { [K in keyof Tensor]: Tensor[K] extends (...args: never[]) => unknown ? K : never }[keyof Tensor],
  keyof object | 'toString' | 'valueOf' | 'toLocaleString'
>;

type Alias = (self: unknown, rest: readonly unknown[], out: unknown) => MethodCall | null;

const call = (op: AliasOp, args: Readonly<Record<string, unknown>>): MethodCall => ({ op, args });

export const METHOD_ALIASES: { readonly [M in MethodName]?: Alias } = {
  where: (self, [condition, other]) => call(O.where, { condition, input: self, other }),
  // with a dim they are the max/min ops (values and indices); without, the all-reduce
  max: (self, rest) => (rest.length === 0 ? call(O.amax, { input: self }) : null),
  min: (self, rest) => (rest.length === 0 ? call(O.amin, { input: self }) : null),
  to: (self, [dtype]) => call(O.toDType, { input: self, dtype }),
  float: (self) => call(O.toDType, { input: self, dtype: 'float32' }),
  int: (self) => call(O.toDType, { input: self, dtype: 'int32' }),
  bool: (self) => call(O.toDType, { input: self, dtype: 'bool' }),
  contiguous: (self) => call(O.clone, { input: self }),
  detach: (self) => ({ identity: self }),
  expandAs: (self, _rest, out) => (out instanceof Tensor ? call(O.expand, { input: self, shape: out.shape }) : null),
};

/** The alias of tensor method `name` for this call, or null when the method is the op of its name. */
export function methodAlias(name: string, self: unknown, rest: readonly unknown[], out: unknown): MethodCall | null {
  const alias = (METHOD_ALIASES as Readonly<Record<string, Alias | undefined>>)[name];
  return Object.hasOwn(METHOD_ALIASES, name) && alias ? alias(self, rest, out) : null;
}
