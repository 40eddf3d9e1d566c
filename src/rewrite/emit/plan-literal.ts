import { expression } from '@babel/template';
import * as t from '@babel/types';

/**
 * The `_kiln.plan({ … })` call the transform emits for one rewritten function: src/compile/plan.ts's
 * PlanSpec written as code. The templates are the emitted shape; an optional field that is absent is left
 * out of the literal.
 */
export interface PlanLiteral {
  /** The namespace the runtime is imported as (`_kiln`). */
  readonly runtime: t.Identifier;
  readonly name: string;
  readonly file: string;
  readonly slots: readonly string[];
  /** The function as written, for eager runs (absent when the function itself keeps its body). */
  readonly eager?: t.FunctionExpression;
  /** Maps the call's arguments to the parameter slots (parameters that are patterns or rest). */
  readonly bind?: t.FunctionExpression;
  readonly segments: readonly t.Expression[];
  /** Why the function runs eagerly, when the plugin could not cut it into segments. */
  readonly unsupported?: { readonly reason: string; readonly loc: string };
  /** The plugin's options, when any was given. */
  readonly options?: { readonly backend?: string; readonly cacheSizeLimit?: number };
}

const planCall = expression(`
  %%runtime%%.plan({
    name: %%name%%,
    file: %%file%%,
    slots: %%slots%%,
    eager: %%eager%%,
    bind: %%bind%%,
    segments: %%segments%%,
    unsupported: %%unsupported%%,
    options: %%options%%,
  })
`);

const unsupportedObject = expression(`{ reason: %%reason%%, loc: %%loc%% }`);

const optionsObject = expression(`{ backend: %%backend%%, cacheSizeLimit: %%cacheSizeLimit%% }`);

export function planLiteral(p: PlanLiteral): t.CallExpression {
  const { unsupported, options } = p;
  const call = planCall({
    runtime: t.cloneNode(p.runtime),
    name: t.stringLiteral(p.name),
    file: t.stringLiteral(p.file),
    slots: strings(p.slots),
    eager: optional(p.eager),
    bind: optional(p.bind),
    segments: t.arrayExpression([...p.segments]),
    unsupported: optional(
      unsupported && unsupportedObject({ reason: t.stringLiteral(unsupported.reason), loc: t.stringLiteral(unsupported.loc) }),
    ),
    options: optional(
      options &&
        leaveOutAbsent(
          optionsObject({
            backend: optional(options.backend === undefined ? undefined : t.stringLiteral(options.backend)),
            cacheSizeLimit: optional(options.cacheSizeLimit === undefined ? undefined : t.numericLiteral(options.cacheSizeLimit)),
          }),
        ),
    ),
  }) as t.CallExpression;
  leaveOutAbsent(call.arguments[0]!);
  return call;
}

/** `["a", "b"]`. */
export function strings(values: readonly string[]): t.ArrayExpression {
  return t.arrayExpression(values.map((s) => t.stringLiteral(s)));
}

/** `[0, 2]`. */
export function numbers(values: readonly number[]): t.ArrayExpression {
  return t.arrayExpression(values.map((i) => t.numericLiteral(i)));
}

/** Stands in for an optional field that is absent; `leaveOutAbsent` drops the property holding it. */
const ABSENT = '__kiln_absent__';

export function optional(value: t.Expression | undefined): t.Expression {
  return value ?? t.identifier(ABSENT);
}

/** An object literal without the properties whose value is an absent optional field. */
export function leaveOutAbsent<T extends t.Node>(object: T): T {
  if (t.isObjectExpression(object))
    object.properties = object.properties.filter((p) => !(t.isObjectProperty(p) && t.isIdentifier(p.value, { name: ABSENT })));
  return object;
}
