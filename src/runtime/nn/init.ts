import { ValueError } from '../../errors.js';
import { noGrad } from '../autograd.js';
import { normal as sampleNormal, uniform as sampleUniform } from '../random.js';
import { fmt } from '../shape.js';
import type { Tensor } from '../tensor.js';

/** In-place initialisers (PyTorch's `nn.init`), drawing from kiln's seeded generator. */

function fillWith(t: Tensor, sample: () => number): Tensor {
  const values = new Float32Array(t.numel());
  for (let i = 0; i < values.length; i++) values[i] = sample();
  const src = t.detach().clone();
  src._storage.data.set(values);
  noGrad(() => t.copy_(src));
  return t;
}

export function uniform_(t: Tensor, a = 0, b = 1): Tensor {
  return fillWith(t, () => a + (b - a) * sampleUniform());
}

export function normal_(t: Tensor, mean = 0, std = 1): Tensor {
  return fillWith(t, () => mean + std * sampleNormal());
}

export function constant_(t: Tensor, value: number): Tensor {
  noGrad(() => t.fill_(value));
  return t;
}

export function zeros_(t: Tensor): Tensor {
  return constant_(t, 0);
}

export function ones_(t: Tensor): Tensor {
  return constant_(t, 1);
}

/** fan_in and fan_out of a weight: dims 1 and 0, times the receptive field (PyTorch's rule). */
export function calculateFanInAndFanOut(t: Tensor): [number, number] {
  if (t.ndim < 2) throw new ValueError(`init: fan in and fan out need a tensor with at least 2 dims, got ${fmt(t.shape)}`);
  const field = t.shape.slice(2).reduce((a, b) => a * b, 1);
  return [t.shape[1]! * field, t.shape[0]! * field];
}

export function calculateGain(nonlinearity: 'linear' | 'sigmoid' | 'tanh' | 'relu' | 'leaky_relu', param?: number): number {
  switch (nonlinearity) {
    case 'linear':
    case 'sigmoid':
      return 1;
    case 'tanh':
      return 5 / 3;
    case 'relu':
      return Math.SQRT2;
    case 'leaky_relu': {
      const slope = param ?? 0.01;
      return Math.sqrt(2 / (1 + slope * slope));
    }
    default:
      return nonlinearity satisfies never;
  }
}

export function kaimingUniform_(
  t: Tensor,
  {
    a = 0,
    mode = 'fanIn',
    nonlinearity = 'leaky_relu',
  }: { a?: number; mode?: 'fanIn' | 'fanOut'; nonlinearity?: 'relu' | 'leaky_relu' } = {},
): Tensor {
  const [fanIn, fanOut] = calculateFanInAndFanOut(t);
  const std = calculateGain(nonlinearity, a) / Math.sqrt(mode === 'fanIn' ? fanIn : fanOut);
  const bound = Math.sqrt(3) * std;
  return uniform_(t, -bound, bound);
}

export function xavierUniform_(t: Tensor, gain = 1): Tensor {
  const [fanIn, fanOut] = calculateFanInAndFanOut(t);
  const bound = gain * Math.sqrt(6 / (fanIn + fanOut));
  return uniform_(t, -bound, bound);
}
