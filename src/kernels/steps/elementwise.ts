import { elementwiseKernel } from '../elementwise.js';
import { generatedStep } from './generated.js';
import type { StepBuilder } from './step.js';

/** An element-wise group: one fused gpu.js kernel over the root's elements (elementwise.ts generates it). */
export const elementwiseStep: StepBuilder<'ew'> = (ctx, root, group) =>
  generatedStep(ctx, 'elementwise', root.id, elementwiseKernel(ctx.codegen, group));
