import { checkIndices, gatherKernel } from '../gather.js';
import { generatedStep } from './generated.js';
import type { StepBuilder } from './step.js';

/** An embedding lookup: a gpu.js kernel, after the eager embedding's index check (a kernel cannot throw). */
export const gatherStep: StepBuilder<'gather'> = (ctx, root) => {
  const step = generatedStep(ctx, 'embedding', root.id, gatherKernel(ctx.codegen, root));
  const rows = ctx.ir[root.table]!.shape[0]!;
  const lookup = step.run;
  return {
    ...step,
    run: (env, rt) => {
      checkIndices(rt.realise(env, root.index), rows);
      lookup(env, rt);
    },
  };
};
