import { KilnError } from '../../errors.js';
import type { IRKind } from '../ir.js';
import type { Group } from '../partition.js';
import { conv2dStep } from './conv2d.js';
import { elementwiseStep } from './elementwise.js';
import { gatherStep } from './gather.js';
import { matmulStep } from './matmul.js';
import { pool2dStep } from './pool2d.js';
import { reduceStep } from './reduce.js';
import type { KernelStep, NotAStep, StepBuilder, StepContext } from './step.js';

export { eagerStep } from './opaque.js';
export {
  PlanMismatch,
  TooLarge,
  type Env,
  type ScratchHandle,
  type Step,
  type StepContext,
  type StepInfo,
  type StepRunContext,
} from './step.js';

type IRKindName = IRKind['kind'];

/**
 * The step builder of every IR kind a fusion group can be rooted at, and for the others why they never root
 * one. A new IR kind without an entry here does not compile.
 */
export const STEP_BUILDERS = {
  value: {
    notAStep:
      "values exist before the steps that read them: inputs and module tensors are passed in, opaque nodes' results come from eager steps",
  },
  view: { notAStep: 'views never compute: readers index the materialised tensor beneath them' },
  ew: elementwiseStep,
  reduce: reduceStep,
  matmul: matmulStep,
  conv2d: conv2dStep,
  pool2d: pool2dStep,
  gather: gatherStep,
} satisfies { readonly [K in IRKindName]: StepBuilder<K> | NotAStep };

/** The step computing `group`, planned by its root's kind's builder. */
export function buildKernelStep(ctx: StepContext, group: Group): KernelStep {
  const root = ctx.ir[group.root]!;
  const entry: StepBuilder<IRKindName> | NotAStep | undefined = Object.hasOwn(STEP_BUILDERS, root.kind)
    ? // each builder takes the nodes of its own kind, and root.kind picked this one
      (STEP_BUILDERS[root.kind] as StepBuilder<IRKindName> | NotAStep)
    : undefined;
  const name = root.origin ? `${root.origin.name} (IR #${root.id})` : `IR #${root.id}`;
  if (entry === undefined) {
    const known = Object.keys(STEP_BUILDERS).join(', ');
    throw new KilnError(`kernels: no step builder for IR kind ${JSON.stringify(root.kind)} of ${name} (known kinds: ${known})`);
  }
  if ('notAStep' in entry) throw new KilnError(`kernels: a ${root.kind} node (${name}) cannot root a kernel step: ${entry.notAStep}`);
  return entry(ctx, root, group);
}
