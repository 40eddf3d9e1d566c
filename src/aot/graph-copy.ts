import { withGradMode } from '../runtime/autograd.js';
import type { Tensor } from '../runtime/tensor.js';

/**
 * PyTorch's `aten.copy_` as the one in-place node a kiln/aot graph may hold: the write of a new value into a
 * graph input, kept in the graph (keepInferenceInputMutations) instead of returned for the runtime to copy
 * back. Its name ends in `_`, so dead-code elimination keeps it although nothing reads its result.
 */
export function copy_(dst: Tensor, src: Tensor): Tensor {
  withGradMode(false, () => dst._writeFrom(src));
  return dst;
}
