import { functionParams } from '../analysis/signature.js';
import { Module } from '../runtime/nn/module.js';
import { OPS } from '../runtime/op.js';
import { lookupAttr } from './attrs.js';
import type { Node } from './node.js';

export interface NormalizedArguments {
  readonly args: readonly unknown[];
  /** Every parameter by name, defaults filled in for those the call left out. */
  readonly kwargs: Readonly<Record<string, unknown>>;
}

export interface SchemaParam {
  readonly name: string;
  readonly hasDefault: boolean;
  readonly default: unknown;
}

/**
 * Bind positional and keyword arguments to an op's parameters by name, filling defaults; undefined when
 * they do not fit (too many, an unknown keyword, a required parameter missing).
 */
export function bindToSchema(
  params: readonly SchemaParam[],
  args: readonly unknown[],
  kwargs: Readonly<Record<string, unknown>>,
): Record<string, unknown> | undefined {
  if (args.length > params.length) return undefined;
  if (Object.keys(kwargs).some((k) => !params.some((p) => p.name === k))) return undefined;
  const out: Record<string, unknown> = {};
  for (const [i, p] of params.entries()) {
    if (i < args.length) out[p.name] = args[i];
    else if (p.name in kwargs) out[p.name] = kwargs[p.name];
    else if (p.hasDefault) out[p.name] = structuredClone(p.default);
    else return undefined;
  }
  return out;
}

interface Resolvable {
  resolveTarget(path: string): unknown;
}

/**
 * Bind a node's arguments to parameter names (FX's `normalized_arguments` with only kwargs): by the op
 * schema for call_function and for call_method on a tensor op, by `forward`'s source signature for
 * call_module (which needs the root module). Undefined when the target's parameters are unknown.
 */
export function normalizeArguments(node: Node, root?: unknown): NormalizedArguments | undefined {
  const bindSchema = (op: { schema?: { params: readonly SchemaParam[] } }) => {
    const kwargs = op.schema ? bindToSchema(op.schema.params, node.args, node.kwargs) : undefined;
    return kwargs ? { args: [], kwargs } : undefined;
  };
  switch (node.op) {
    case 'call_function':
      return typeof node.target === 'function' ? bindSchema(node.target) : undefined;
    case 'call_method': {
      const op = OPS.get(node.target as string);
      return op ? bindSchema(op) : undefined;
    }
    case 'call_module': {
      const path = node.target as string;
      const owner = (root ?? node.graph.owningModule) as Resolvable | Module | undefined;
      if (!owner) return undefined;
      const mod = (owner instanceof Module ? lookupAttr(owner, path) : owner.resolveTarget(path)) as {
        forward: (...a: never[]) => unknown;
      };
      const params = functionParams(mod.forward);
      if (params.some((p) => p.unsupported) || node.args.length > params.length) return undefined;
      const kwargs: Record<string, unknown> = {};
      for (const [i, p] of params.entries()) {
        if (i < node.args.length) kwargs[p.name] = node.args[i];
        else if (p.hasDefault && 'default' in p) kwargs[p.name] = p.default;
      }
      return { args: [], kwargs };
    }
    default:
      return undefined;
  }
}
