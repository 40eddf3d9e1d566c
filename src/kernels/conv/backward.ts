/**
 * The convolution and pooling backward ops (runtime/ops/conv.ts `convolutionBackward`, runtime/ops/pool.ts
 * `maxPool2dWithIndicesBackward`, `avgPool2dBackward`) on the wasm kernels, for contiguous NCHW operands as
 * those ops take them: each copies its operands to channels-last, runs the kernels of conv-wasm.ts and copies
 * the input gradient back to NCHW. These are what a lowering of those ops calls (a kernel step per op, or the
 * ops' eager kernels where the engine has wasm SIMD); the results equal the eager ops' up to float rounding
 * (test/kernels-conv-wasm.test.ts checks them against the ops).
 */

import { fromChannelsLast, toChannelsLast } from '../conv-host.js';
import {
  avgPool2dBackward,
  conv2dBiasGrad,
  conv2dInputGrad,
  conv2dWeightGrad,
  maxPool2dBackward,
  type ConvShape,
  type PoolShape,
} from './conv-wasm.js';

function channelsLast(x: Float32Array, N: number, C: number, H: number, W: number): Float32Array {
  const out = new Float32Array(N * C * H * W);
  toChannelsLast(x, 0, N, C, H, W, out);
  return out;
}

function nchw(x: Float32Array, N: number, C: number, H: number, W: number): Float32Array {
  const out = new Float32Array(N * C * H * W);
  fromChannelsLast(x, 0, N, C, H, W, out);
  return out;
}

/**
 * convolutionBackward for a 2-d, not transposed convolution: [gradInput [N, C, H, W], gradWeight [O, C/groups,
 * kh, kw], gradBias [O]] from gradOutput [N, O, OH, OW], input [N, C, H, W] and weight, each computed only where
 * `mask` asks (null elsewhere), all dense NCHW.
 */
export function convolutionBackwardWasm(
  gradOutput: Float32Array,
  input: Float32Array,
  weight: Float32Array,
  shape: ConvShape,
  mask: readonly [boolean, boolean, boolean],
): [Float32Array | null, Float32Array | null, Float32Array | null] {
  const { N, C, O, g } = shape;
  const go = channelsLast(gradOutput, N, O, g.OH, g.OW);
  const gi = mask[0] ? nchw(conv2dInputGrad(go, weight, shape, new Float32Array(N * g.H * g.W * C)), N, C, g.H, g.W) : null;
  const gw = mask[1] ? conv2dWeightGrad(channelsLast(input, N, C, g.H, g.W), go, shape) : null;
  const gb = mask[2] ? conv2dBiasGrad(go, N * g.OH * g.OW, O) : null;
  return [gi, gw, gb];
}

/**
 * maxPool2dWithIndicesBackward: gradInput [N, C, H, W] from gradOutput [N, C, OH, OW] and the pooled input. Each
 * window's gradient goes to the tap eager's maxPool2dWithIndices picks (the first maximum, the last NaN), found
 * again from the input, so the op's `indices` are not read: a lowering may use this only where they come from
 * maxPool2dWithIndices over this input (always so in a joint graph).
 */
export function maxPool2dBackwardWasm(gradOutput: Float32Array, input: Float32Array, shape: PoolShape): Float32Array {
  const { N, C, g } = shape;
  const gx = maxPool2dBackward(
    channelsLast(input, N, C, g.H, g.W),
    channelsLast(gradOutput, N, C, g.OH, g.OW),
    shape,
    new Float32Array(N * C * g.H * g.W),
  );
  return nchw(gx, N, C, g.H, g.W);
}

/** avgPool2dBackward: gradInput [N, C, H, W] from gradOutput [N, C, OH, OW] (dilation 1). */
export function avgPool2dBackwardWasm(
  gradOutput: Float32Array,
  shape: PoolShape,
  countIncludePad: boolean,
  divisorOverride: number | null,
): Float32Array {
  const { N, C, g } = shape;
  const gx = avgPool2dBackward(
    channelsLast(gradOutput, N, C, g.OH, g.OW),
    shape,
    new Float32Array(N * C * g.H * g.W),
    countIncludePad,
    divisorOverride,
  );
  return nchw(gx, N, C, g.H, g.W);
}
