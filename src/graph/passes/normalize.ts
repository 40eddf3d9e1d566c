import { OPS } from '../../runtime/op.js';
import type { GraphModule } from '../graph-module.js';
import { Transformer } from '../interpreter.js';
import type { FunctionTarget, Target } from '../node.js';
import { bindToSchema, type SchemaParam } from '../normalize.js';

/**
 * torch.fx.experimental.normalize for kiln graphs. NormalizeArgs rewrites every op call into keyword-only
 * form by the op's schema (`ops.add({ input, other, alpha: 1 })`), defaults filled in; NormalizeOperators
 * turns the method spelling of an op (`x.add(y)`) into the function spelling (`ops.add(x, y)`), so each op
 * has one spelling. Both keep each node's `meta`; calls they cannot bind stay as they were.
 */
type Schematic = { schema?: { params: readonly SchemaParam[] } };

export class NormalizeArgs extends Transformer {
  constructor(gm: GraphModule) {
    super(gm);
  }

  override callFunction(target: Target, args: unknown[], kwargs: Record<string, unknown>): unknown {
    const params = (target as Schematic).schema?.params;
    const bound = params ? bindToSchema(params, args, kwargs) : undefined;
    return bound ? super.callFunction(target, [], bound) : super.callFunction(target, args, kwargs);
  }
}

export class NormalizeOperators extends Transformer {
  constructor(gm: GraphModule) {
    super(gm);
  }

  override callMethod(target: Target, args: unknown[], kwargs: Record<string, unknown>): unknown {
    const op = typeof target === 'string' ? OPS.get(target) : undefined;
    return op ? super.callFunction(op as unknown as FunctionTarget, args, kwargs) : super.callMethod(target, args, kwargs);
  }
}
