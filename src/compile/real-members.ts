import { TraceError } from '../errors.js';
import { userFrame } from '../graph/tracer.js';
import { Tensor } from '../runtime/tensor.js';
import type { Guard } from './guards.js';

/**
 * Parameters and buffers that `parameters()`, `buffers()` and friends handed to traced code as the real
 * tensors (see traced-attributes.ts). What the code reads from them (`requiresGrad`, `dtype`, `shape`) is
 * baked into the graph, so each such value is guarded, as TorchDynamo guards a module's parameters.
 */
export class RealMembers {
  readonly tensors = new Set<Tensor>();

  /** For listeningToReal: keep the tensors. */
  readonly seen = (v: unknown): void => {
    if (v instanceof Tensor) this.tensors.add(v);
  };

  guards(): Guard[] {
    return [...this.tensors].flatMap((t, i) => {
      const { dtype, requiresGrad } = t;
      const shape = [...t.shape];
      const name = `parameters/buffers[${i}] (${shape.length ? shape.join('x') : 'scalar'} ${dtype})`;
      return [
        { text: `${name}.requiresGrad == ${requiresGrad}`, check: () => t.requiresGrad === requiresGrad },
        { text: `${name}.dtype == ${dtype}`, check: () => t.dtype === dtype },
        {
          text: `${name}.shape == [${shape.join(', ')}]`,
          check: () => t.shape.length === shape.length && t.shape.every((d, k) => d === shape[k]),
        },
      ];
    });
  }
}

/** A module's own tensor's values read in traced code would be frozen into the graph: the code runs eagerly. */
export function refuseValueRead(what: string): never {
  throw new TraceError(`reads ${what} of a module's parameter or buffer, which a graph would freeze; it runs eagerly${userFrame()}`);
}
