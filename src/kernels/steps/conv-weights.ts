import type { Storage, Tensor } from '../../runtime/tensor.js';
import { convWeights } from '../conv-host.js';
import { WinogradWeight } from '../conv/winograd.js';
import { disposePacked, packB, type PackedB } from '../matmul.js';
import { denseData, packedWeight } from './operands.js';
import type { Env, IRNodeOf, StepContext, StepRunContext } from './step.js';

/**
 * A conv2d step's GEMM right-hand side and bias for one call, and with `winograd`, the weight transformed for
 * Winograd's F(2×2, 3×3) (conv/winograd.ts; null when the weight is a graph value: the step transforms `b`).
 */
export type ConvWeightSource = (
  env: Env,
  rt: StepRunContext,
) => { b: Float32Array | PackedB; bias: Float32Array | null; wino: WinogradWeight | null };

/**
 * The GEMM operand and bias of a conv2d step, per call. The weight as stored, with no batch norm and NCHW
 * rows, is packed once per weight version (packedWeight). Otherwise the weight is permuted for channels-last
 * rows and/or has the batch norm folded in (conv-host.ts): when every operand is a module tensor, the result
 * is packed and kept while every operand's storage and version stay the same (an optimizer step, a load or an
 * in-place write to a weight or a running statistic bumps its version); graph values are folded every call.
 * Folding costs O·C·kh·kw multiplies (9k for a 32→32 3×3 conv) and a pack; with `winograd` (channels-last
 * only), the folded weight is also transformed for the Winograd path and kept beside the packed one.
 */
export function convWeightSource(
  ctx: StepContext,
  root: IRNodeOf<'conv2d'>,
  wShape: readonly [number, number, number, number],
  channelsLast: boolean,
  winograd = false,
): ConvWeightSource {
  const [O, C, kh, kw] = wShape;
  const Kc = C * kh * kw;
  const bn = root.bn;
  const operandIds = [root.w, root.bias, ...(bn ? [bn.mean, bn.variance, bn.weight, bn.bias] : [])];
  const cacheable = operandIds.every((r) => r === null || ctx.isModuleTensor(r));
  if (!bn && !channelsLast) {
    return (env, rt) => {
      const w = rt.realise(env, root.w);
      return {
        b: cacheable ? packedWeight(w, Kc, O, true) : denseData(w),
        bias: root.bias !== null ? denseData(rt.realise(env, root.bias)) : null,
        wino: null,
      };
    };
  }
  let cached: { storages: Storage[]; versions: number[]; b: PackedB; bias: Float32Array | null; wino: WinogradWeight | null } | null = null;
  return (env, rt) => {
    const ts = operandIds.map((r) => (r === null ? null : rt.realise(env, r)));
    const present = ts.filter((t): t is Tensor => t !== null);
    if (cached && present.every((t, i) => t._storage === cached!.storages[i] && t._storage.version === cached!.versions[i])) {
      return cached;
    }
    const dense = (t: Tensor | null) => (t === null ? null : denseData(t));
    const [w, bias, mean, variance, gamma, beta] = ts.map(dense);
    const bnValues = bn ? { mean: mean!, variance: variance!, weight: gamma!, bias: beta!, eps: bn.eps } : null;
    const folded = convWeights(w!, bias!, bnValues, wShape, channelsLast);
    if (!cacheable) return { b: folded.weight, bias: folded.bias, wino: null };
    if (cached) {
      disposePacked(cached.b);
      cached.wino?.dispose();
    }
    cached = {
      // module tensors' storages are fixed for the plan's life (a replaced buffer plans again)
      storages: present.map((t) => t._storage),
      versions: present.map((t) => t._storage.version),
      b: packB(folded.weight, Kc, O, { transposed: true }),
      bias: folded.bias,
      wino: winograd ? new WinogradWeight(folded.weight, wShape[0], wShape[1]) : null,
    };
    return cached;
  };
}
