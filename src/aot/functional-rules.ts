import { noGrad } from '../runtime/autograd.js';
import { batchStatistics, nativeBatchNorm } from '../runtime/ops/nn.js';
import type { Tensor } from '../runtime/tensor.js';
import type { Decomposition } from './decompositions.js';

/**
 * Ops whose kernels write an argument in place (PyTorch marks them in their schema; kiln's schemas cannot):
 * the tracer runs these rules instead, which call the op without the in-place part and make the writes with
 * in-place tensor methods, which functionalisation turns into new values (PyTorch's
 * `_native_batch_norm_legit_functional`). Any other op found writing a traced argument is refused.
 */
export interface FunctionalRule {
  /** Whether this call writes an argument (e.g. batch norm in training mode with running statistics). */
  readonly applies: (...args: never[]) => boolean;
  readonly run: Decomposition;
}

export const FUNCTIONAL_RULES: ReadonlyMap<string, FunctionalRule> = new Map<string, FunctionalRule>([
  [
    'nativeBatchNorm',
    {
      applies: (_x: Tensor, _w: unknown, _b: unknown, runningMean: Tensor | null, runningVar: Tensor | null, training: boolean) =>
        training && runningMean !== null && runningVar !== null,
      run: (
        x: Tensor,
        weight: Tensor | null,
        bias: Tensor | null,
        runningMean: Tensor | null,
        runningVar: Tensor | null,
        _training: boolean,
        momentum: number,
        eps: number,
      ) => {
        const out = nativeBatchNorm(x, weight, bias, null, null, true, momentum, eps);
        // The running statistics as the op's kernel updates them: the batch mean, and the unbiased batch variance.
        noGrad(() => {
          const C = x.shape[1]!;
          const count = x.numel() / C;
          const [, variance] = batchStatistics(x);
          runningMean!.mul_(1 - momentum).add_(out[1], momentum);
          runningVar!.mul_(1 - momentum).add_(variance.reshape([C]).mul(count / (count - 1)), momentum);
        });
        return out;
      },
    },
  ],
]);
