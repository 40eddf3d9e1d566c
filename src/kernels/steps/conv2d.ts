import { window2d } from '../../runtime/cpu/conv.js';
import { isContiguousLayout } from '../../runtime/cpu/strided.js';
import { Storage, Tensor } from '../../runtime/tensor.js';
import { convOutputLayout, im2rowKernel } from '../conv.js';
import { isChannelsLast, toChannelsLast } from '../conv-host.js';
import { conv2dForward } from '../conv/conv-wasm.js';
import { winogradApplies, WinogradWeight } from '../conv/winograd.js';
import { getGemmThreads } from '../gemm/index.js';
import { PackedB as SimdPackedB } from '../gemm/packed-b.js';
import { gemm, isPacked, packB, simdGemmAvailable } from '../matmul.js';
import { convWeightSource } from './conv-weights.js';
import { kernelFor } from './generated.js';
import type { StepBuilder } from './step.js';

/**
 * conv2d as the indirect GEMM of kernels/conv (wasm SIMD, no im2row rows), with the bias, a folded inference
 * batch norm and relu in its store, whenever the input can be read channels-last:
 * - channels-last (a conv2d result, NHWC read as NCHW): read in place;
 * - contiguous NCHW (the network's input): copied to channels-last first (a JS loop; ~0.1 ms for [16, 3, 32, 32]);
 * - anything read through views: the generated gpu.js im2row kernel, which folds the view into its index map,
 *   and the GEMM against the weight read as Bᵀ.
 * Measured on the bench CNN's convolutions, [16, C, 32, 32] 3×3 pad 1, one thread, median of 15 on this busy
 * 2-core machine, ms for C→O = 3→16 / 16→32 / 32→32: the former channels-last im2row (block copies) + GEMM
 * 2.9 / 10.7 / 19.6, the indirect GEMM 0.8 / 5.7 / 10.8. The multiply-adds are the same: the saving is the
 * im2row pass (writing and reading 9× the input), the GEMM's packing of those rows, and its K split in two
 * blocks (K = 288 > KC).
 */
/**
 * A 3×3 stride-1 conv with at least this many input channels takes Winograd F(2×2, 3×3) when the GEMM runs on
 * one thread (its 16 products run on one thread; the direct kernel splits over the GEMM's threads). CPU time of
 * one call on the bench CNN's convs (one thread, median of 31, two runs): 16→32 direct 3.5 / 4.5 ms, Winograd
 * 3.4 / 3.7; 32→32 direct 10.5 / 7.0, Winograd 8.6 / 5.7.
 */
const WINOGRAD_MIN_CHANNELS = 16;

export const conv2dStep: StepBuilder<'conv2d'> = (ctx, root) => {
  const id = root.id;
  const [N, C, H, W] = ctx.ir[root.x]!.shape as [number, number, number, number];
  const wShape = ctx.ir[root.w]!.shape as [number, number, number, number];
  const [O, , kh, kw] = wShape;
  const [, , OH, OW] = root.shape as [number, number, number, number];
  const P = N * OH * OW;
  const Kc = C * kh * kw;
  const { stride, padding, dilation } = root.attrs;
  const geo = window2d([kh, kw], stride, padding, dilation, [H, W], [OH, OW]);
  const xMeta = ctx.ir[root.x]!.kind === 'view' || ctx.layoutOf(root.x).dtype !== 'float32' ? null : ctx.layoutOf(root.x);
  let gatherBy: 'channels-last, in place' | 'copied to channels-last' | 'gpu.js' = 'gpu.js';
  if (xMeta && isChannelsLast(xMeta)) gatherBy = 'channels-last, in place';
  else if (xMeta && isContiguousLayout(xMeta)) gatherBy = 'copied to channels-last';
  // the indirect GEMM is wasm SIMD: where the engine lacks it, every input takes the gpu.js path
  if (!simdGemmAvailable()) gatherBy = 'gpu.js';
  const direct = gatherBy !== 'gpu.js';
  const gen = direct ? null : im2rowKernel(ctx.codegen, root);
  const gather = gen ? kernelFor(ctx, gen) : null;
  const nhwcBuffer = gatherBy === 'copied to channels-last' ? ctx.reserveScratch('channels-last input', N * C * H * W) : null;
  const layout = convOutputLayout(root.shape);
  ctx.setLayout(id, { ...layout, dtype: 'float32', storageLength: P * O });
  const bn = root.bn;
  const kind = `conv2d${root.bias !== null ? '+bias' : ''}${bn ? '+bn' : ''}${root.relu ? '+relu' : ''}`;
  const bnIds = bn ? [bn.mean, bn.variance, bn.weight, bn.bias] : [];
  const reads = [root.x, root.w, root.bias, ...bnIds].filter((r): r is number => r !== null).map((r) => ctx.baseOf(r));
  const shape = { N, C, O, groups: 1, g: geo };
  const wino = direct && winogradApplies(shape) && C >= WINOGRAD_MIN_CHANNELS;
  const weights = convWeightSource(ctx, root, wShape, direct, wino);
  let how = direct ? `indirect GEMM (wasm SIMD) over the input, ${gatherBy}` : `im2row [${P}, ${Kc}] (gpu.js) · GEMM`;
  if (wino) how += '; Winograd F(2×2, 3×3) when the GEMM runs on one thread';
  return {
    kind,
    note: `${how} · weightᵀ${bn ? ' with the batch norm folded in' : ''}, NHWC result read as NCHW`,
    reads,
    defines: id,
    gemmOutput: true,
    run: (env, rt) => {
      const { b, bias, wino: winoWeight } = weights(env, rt);
      const out = rt.buffer(id) ?? new Float32Array(P * O);
      if (gather) {
        const opts = { bias: bias ?? undefined, activation: root.relu ? ('relu' as const) : ('none' as const), bTransposed: !isPacked(b) };
        gemm(gather(env.ir[gen!.args[0]!]!._storage.data) as Float32Array, b, P, Kc, O, { ...opts, out });
      } else {
        const x = env.ir[root.x]!;
        let data = x._storage.data as Float32Array;
        let offset = x.offset;
        if (nhwcBuffer !== null) {
          const nhwc = rt.scratch(nhwcBuffer, N * C * H * W);
          toChannelsLast(data, offset, N, C, H, W, nhwc);
          [data, offset] = [nhwc, 0];
        }
        // a weight that is a graph value comes folded but not packed: packed (or transformed) for this call only
        const useWino = wino && getGemmThreads() === 1;
        const w = useWino
          ? (winoWeight ?? new WinogradWeight(b as Float32Array, O, C))
          : ((isPacked(b) ? b : packB(b, Kc, O, { transposed: true })) as SimdPackedB);
        try {
          conv2dForward(data.subarray(offset, offset + N * H * W * C), w, bias, shape, out, root.relu);
        } finally {
          if (w !== b && w !== winoWeight) w.dispose();
        }
      }
      env.ir[id] = new Tensor(new Storage(out), root.shape, layout.strides, 0, 'float32');
    },
  };
};
