import { expression, statement } from '@babel/template';
import * as t from '@babel/types';
import type { FunctionPath } from '../../analysis/classify.js';

/**
 * What ties a plan to its function: the body a rewritten function gets (`return _kiln.run(this, plan,
 * [x, y])`), the `attach` calls that let compile and explain find the plan, and the plan's `eager` and
 * `bind` functions made from the function's own parameters and body.
 */

/** Name of the argument array the dispatcher passes when parameters need binding (rest/patterns). */
export const RUN_ARGS = 'args';

const dispatchBody = statement(`{
  return %%runtime%%.run(%%self%%, %%plan%%, %%args%%);
}`);

const attachStatement = statement(`%%runtime%%.attach(%%target%%, %%plan%%);`);

const attachExpression = expression(`%%runtime%%.attach(%%target%%, %%plan%%)`);

const bindFunction = expression(`function (%%params%%) {
  return %%bound%%;
}`);

/**
 * The dispatcher: the call's `this` (none for an arrow) and its arguments, as the parameter slots when the
 * parameters are plain names, else as one array for the plan's `bind`.
 */
export function dispatcher(
  runtime: t.Identifier,
  plan: t.Identifier,
  fn: FunctionPath,
  paramSlots: readonly string[] | undefined,
): t.BlockStatement {
  return dispatchBody({
    runtime: t.cloneNode(runtime),
    self: fn.isArrowFunctionExpression() ? t.identifier('undefined') : t.thisExpression(),
    plan: t.cloneNode(plan),
    args: paramSlots ? t.arrayExpression(paramSlots.map((s) => t.identifier(s))) : t.identifier(RUN_ARGS),
  }) as t.BlockStatement;
}

/** Replace a function's body with the dispatcher; rest/pattern parameters become one `...args`. */
export function replaceBody(fn: FunctionPath, dispatch: t.BlockStatement): void {
  const usesArgs = (dispatch.body[0] as t.ReturnStatement).argument;
  const passesArray = t.isCallExpression(usesArgs) && t.isIdentifier(usesArgs.arguments[2], { name: RUN_ARGS });
  if (passesArray) fn.node.params = [t.restElement(t.identifier(RUN_ARGS))];
  fn.get('body').replaceWith(dispatch);
}

/** `_kiln.attach(target, plan);` */
export function attach(runtime: t.Identifier, target: t.Expression, plan: t.Identifier): t.Statement {
  return attachStatement({ runtime: t.cloneNode(runtime), target, plan: t.cloneNode(plan) });
}

/** `_kiln.attach(fn, plan)`, for a function written inline in `compile(…)`. */
export function attachInline(runtime: t.Identifier, fn: t.Expression, plan: t.Identifier): t.Expression {
  return attachExpression({ runtime: t.cloneNode(runtime), target: fn, plan: t.cloneNode(plan) });
}

/** The plan's `eager`: the function as written, named after the method (super calls already made explicit). */
export function eagerFunction(fn: FunctionPath, name: string | undefined): t.FunctionExpression {
  return t.functionExpression(t.identifier(name ?? 'eager'), params(fn), t.cloneNode(fn.node.body as t.BlockStatement));
}

/** The plan's `bind`: the function's parameters, returning the names they bind as the parameter slots. */
export function bindFunctionFor(fn: FunctionPath, paramSlots: readonly string[]): t.FunctionExpression {
  return bindFunction({
    params: params(fn),
    bound: t.arrayExpression(paramSlots.map((s) => t.identifier(s))),
  }) as t.FunctionExpression;
}

/** The parameters, cloned (TypeScript parameter properties only occur in constructors, never rewritten). */
function params(fn: FunctionPath): t.FunctionParameter[] {
  return fn.node.params.map((p) => t.cloneNode(p as t.FunctionParameter));
}
