import { reduceKernel } from '../reduce.js';
import { generatedStep } from './generated.js';
import type { StepBuilder } from './step.js';

/** A reduction with the element-wise producers fused into its loop: one gpu.js kernel (reduce.ts generates it). */
export const reduceStep: StepBuilder<'reduce'> = (ctx, root, group) =>
  generatedStep(ctx, `reduce ${root.op}`, root.id, reduceKernel(ctx.codegen, group));
