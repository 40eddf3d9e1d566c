import { Tensor } from '../tensor.js';

/** A tensor that a Module registers as a learnable weight. It shares storage with the tensor it wraps. */
export class Parameter extends Tensor {
  constructor(data: Tensor, requiresGrad = true) {
    super(data._storage, data.shape, data.strides, data.offset, data.dtype);
    if (requiresGrad) this.requiresGrad_(true);
  }

  override toString(): string {
    return `Parameter containing:\n${super.toString()}`;
  }
}
