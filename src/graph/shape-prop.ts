import type { DType } from '../runtime/dtype.js';
import { Tensor } from '../runtime/tensor.js';
import { Interpreter } from './interpreter.js';
import type { Node } from './node.js';

export interface TensorMeta {
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly requiresGrad: boolean;
}

/** A node's result described: one TensorMeta, or an array of them for results that are tuples of tensors. */
export type TensorMetaOf = TensorMeta | readonly (TensorMetaOf | undefined)[];

function metaOf(v: unknown): TensorMetaOf | undefined {
  if (v instanceof Tensor) return { shape: [...v.shape], dtype: v.dtype, requiresGrad: v.requiresGrad };
  if (Array.isArray(v)) {
    const metas = v.map(metaOf);
    return metas.some((m) => m !== undefined) ? metas : undefined;
  }
  return undefined;
}

/**
 * Runs the graph on example inputs and records each node's result as `node.meta.tensorMeta`
 * (`{ shape, dtype, requiresGrad }`, or an array of those for tuple results) — torch.fx's ShapeProp.
 */
export class ShapeProp extends Interpreter {
  override runNode(n: Node): unknown {
    const out = super.runNode(n);
    const meta = metaOf(out);
    if (meta !== undefined) n.meta.tensorMeta = meta;
    else delete n.meta.tensorMeta;
    n.meta.type = out instanceof Tensor ? 'Tensor' : Array.isArray(out) ? 'Array' : out === null ? 'null' : typeof out;
    return out;
  }

  /** Run on `args`, annotating every node; returns the graph's output. */
  propagate(...args: unknown[]): unknown {
    return this.run(...args);
  }
}
