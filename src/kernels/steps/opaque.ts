import type { Node } from '../../graph/node.js';
import { fmt, sameShape } from '../../runtime/shape.js';
import { Tensor } from '../../runtime/tensor.js';
import { intoLayout } from '../relayout.js';
import { metaOf, sameLayout } from '../tensor-meta.js';
import { PlanMismatch, type Step, type StepContext } from './step.js';

/**
 * Eager steps: a graph node kiln did not lower (opaque) runs through the eager runtime inside the plan, as the
 * GraphModule's own forward would run it. Kernels after it were generated for the result the eager run gave
 * when the plan was made, so each call checks the node still returns that: a tensor of the same shape and dtype,
 * or the same number (shape, flag) where lowered nodes baked it in; otherwise the call finishes eagerly.
 */

/** The eager step computing opaque graph node `node`, whose IR value is `id`; `recorded` is its planning-time value. */
export function eagerStep(ctx: StepContext, node: Node, id: number, recorded: unknown): Step {
  const reads = node.allInputNodes().flatMap((n) => {
    const r = ctx.irOf(n);
    return r === undefined ? [] : [ctx.baseOf(r)];
  });
  if (recorded instanceof Tensor) ctx.setLayout(id, metaOf(recorded));
  const expected = recorded instanceof Tensor ? metaOf(recorded) : null;
  // a non-tensor result (a shape, a number from one) that lowered nodes took in as a constant
  const baked = !expected && [...node.users.keys()].some((u) => ctx.opaqueReason(u) === undefined && ctx.irOf(u) !== undefined);
  return {
    kind: 'eager',
    nodes: [node],
    shape: recorded instanceof Tensor ? recorded.shape : [],
    note: ctx.opaqueReason(node) ?? '',
    reads,
    defines: recorded instanceof Tensor ? id : -1,
    gemmOutput: false,
    run: (env, rt) => {
      const value = rt.evaluate(env, node);
      env.nodes.set(node, value);
      if (expected) {
        if (!(value instanceof Tensor) || value.dtype !== expected.dtype || !sameShape(value.shape, expected.shape)) {
          const got = value instanceof Tensor ? `${value.dtype}${fmt(value.shape)}` : typeof value;
          throw new PlanMismatch(`${node.name} returned ${got}, planned for ${expected.dtype}${fmt(expected.shape)}`);
        }
        // Same values, other strides (its inputs came from kernels laid out unlike the eager run's): kernels
        // reading it get it in the layout they were generated for; eager readers and the output take it as is.
        let t: Tensor | null = value;
        if (rt.isLayoutBound(id) && !sameLayout(value, expected)) t = intoLayout(value, expected);
        if (!t) throw new PlanMismatch(`${node.name} returned strides [${value.strides.join(', ')}] its readers cannot be given`);
        env.ir[id] = t;
      } else if (baked && !sameConstant(value, recorded)) {
        throw new PlanMismatch(`${node.name} returned ${describeConstant(value)}, planned for ${describeConstant(recorded)}`);
      }
    },
  };
}

/** Whether an eager step's non-tensor result equals the one lowered nodes baked in (numbers, shapes, flags). */
function sameConstant(a: unknown, b: unknown): boolean {
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((v, i) => sameConstant(v, b[i]));
  return Object.is(a, b);
}

function describeConstant(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(describeConstant).join(', ')}]`;
  if (typeof v === 'string') return JSON.stringify(v);
  if (v === null || typeof v !== 'object') return String(v);
  return `a ${v.constructor?.name ?? 'object'}`;
}
