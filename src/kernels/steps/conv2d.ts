import type { Window2d } from '../../runtime/cpu/conv.js';
import { isContiguousLayout } from '../../runtime/cpu/strided.js';
import { Storage, Tensor } from '../../runtime/tensor.js';
import { convOutputLayout, im2rowKernel } from '../conv.js';
import { im2rowByColumns, im2rowChannelsLast, isChannelsLast, toChannelsLast } from '../conv-host.js';
import { gemm, isPacked } from '../matmul.js';
import { convWeightSource } from './conv-weights.js';
import { kernelFor } from './generated.js';
import type { StepBuilder } from './step.js';

/**
 * conv2d gathers and multiplies its rows a few images at a time, so that each round's rows (written by the
 * im2row loop, then read by the GEMM) stay within this many floats, 2 MiB, the L2 of one core here; a single
 * image's rows may exceed it. Measured on the bench CNN in one run, interleaved, median of 25 (two runs):
 * whole batch at once 20.0 / 20.1 ms, 2^18 floats 19.7 / 19.5, 2^19 18.7 / 19.2, 2^20 19.3 / 19.6,
 * 2^21 19.6 / 19.5; the im2row buffer shrinks from 19 MB to 1.2 MB for the CNN's last conv.
 */
const ROWS_CHUNK = 1 << 19;

/**
 * conv2d: im2row, then a GEMM against the weight read as Bᵀ, with the bias, a folded inference batch norm
 * and relu in its epilogue, a few images at a time (ROWS_CHUNK). The JS loops write the rows straight into
 * wasm memory the GEMM reads in place; how they gather depends on the input's layout:
 * - channels-last (a conv2d result, NHWC read as NCHW): block copies of kw·C floats (conv-host.ts), against
 *   the weight permuted to [O, kh, kw, C]; a 1×1 window at stride 1 multiplies the input itself;
 * - contiguous NCHW: with 8 channels or more, copied to channels-last first, else a column-order loop;
 * - anything read through views: the generated gpu.js kernel, which folds the view into its index map (48 ms
 *   on [16, 32, 32, 32] 3×3, where the eager runtime's JS loop took 15: gpu.js pays index arithmetic per
 *   element and copies 19 MB out of its memory).
 * Measured on the bench CNN in one run (median of 21, this 2-core machine, quiet): the old steps, NCHW
 * im2row loop + GEMM, then an element-wise batch norm + relu kernel, took per conv 2.1 + 0.6 + 1.9,
 * 10.7 + 3.9 + 3.7 and 21.3 + 7.7 + 3.6 ms; gathering channels-last with the batch norm folded, 1.5 + 0.5,
 * 2.4 + 3.3 and 3.5 + 6.4 ms (the whole CNN 60.8 → 21.1 ms, then ~1 ms less in rounds of ROWS_CHUNK).
 */
export const conv2dStep: StepBuilder<'conv2d'> = (ctx, root) => {
  const id = root.id;
  const [N, C, H, W] = ctx.ir[root.x]!.shape as [number, number, number, number];
  const wShape = ctx.ir[root.w]!.shape as [number, number, number, number];
  const [O, , kh, kw] = wShape;
  const [, , OH, OW] = root.shape as [number, number, number, number];
  const P = N * OH * OW;
  const Kc = C * kh * kw;
  const { stride, padding, dilation } = root.attrs;
  const geo: Window2d = {
    kh,
    kw,
    sh: stride[0],
    sw: stride[1],
    ph: padding[0],
    pw: padding[1],
    dh: dilation[0],
    dw: dilation[1],
    H,
    W,
    OH,
    OW,
  };
  const xMeta = ctx.ir[root.x]!.kind === 'view' || ctx.layoutOf(root.x).dtype !== 'float32' ? null : ctx.layoutOf(root.x);
  let gatherBy: 'channels-last copies' | 'to channels-last, copies' | 'column loop' | 'gpu.js' = 'gpu.js';
  if (xMeta && isChannelsLast(xMeta)) gatherBy = 'channels-last copies';
  else if (xMeta && isContiguousLayout(xMeta)) gatherBy = C >= 8 ? 'to channels-last, copies' : 'column loop';
  const transpose = gatherBy === 'to channels-last, copies';
  const channelsLast = gatherBy === 'channels-last copies' || transpose;
  // a 1×1 window over a channels-last input: the input already is the rows
  const inPlace = channelsLast && kh === 1 && kw === 1 && stride[0] === 1 && stride[1] === 1 && padding[0] === 0 && padding[1] === 0;
  const gen = gatherBy === 'gpu.js' ? im2rowKernel(ctx.codegen, root) : null;
  const gather = gen ? kernelFor(ctx, gen) : null;
  // images per im2row + GEMM round: their rows fill at most ROWS_CHUNK floats (or one image)
  const images = Math.min(N, Math.max(1, Math.floor(ROWS_CHUNK / (OH * OW * Kc))));
  // every conv2d step of a plan shares these two buffers, sized for the largest
  const rowsBuffer = gatherBy !== 'gpu.js' && !inPlace ? ctx.reserveScratch('im2row rows', images * OH * OW * Kc) : null;
  const nhwcBuffer = transpose ? ctx.reserveScratch('channels-last input', N * C * H * W) : null;
  const layout = convOutputLayout(root.shape);
  ctx.setLayout(id, { ...layout, dtype: 'float32', storageLength: P * O });
  const bn = root.bn;
  const kind = `conv2d${root.bias !== null ? '+bias' : ''}${bn ? '+bn' : ''}${root.relu ? '+relu' : ''}`;
  const bnIds = bn ? [bn.mean, bn.variance, bn.weight, bn.bias] : [];
  const reads = [root.x, root.w, root.bias, ...bnIds].filter((r): r is number => r !== null).map((r) => ctx.baseOf(r));
  const weights = convWeightSource(ctx, root, wShape, channelsLast);
  const rounds = gatherBy === 'gpu.js' || images === N ? '' : `, ${images} image${images === 1 ? '' : 's'} a round`;
  const rowsNote = inPlace ? 'the input itself' : `im2row [${P}, ${Kc}] (${gatherBy}${rounds})`;
  return {
    kind,
    note: `${rowsNote} · weightᵀ${bn ? ' with the batch norm folded in' : ''}, NHWC result read as NCHW`,
    reads,
    defines: id,
    gemmOutput: true,
    run: (env, rt) => {
      const { b, bias } = weights(env, rt);
      const out = rt.buffer(id) ?? new Float32Array(P * O);
      const opts = { bias: bias ?? undefined, activation: root.relu ? ('relu' as const) : ('none' as const), bTransposed: !isPacked(b) };
      if (gather) gemm(gather(env.ir[gen!.args[0]!]!._storage.data) as Float32Array, b, P, Kc, O, { ...opts, out });
      else {
        const x = env.ir[root.x]!;
        let data = x._storage.data as Float32Array;
        let offset = x.offset;
        let sN = x.strides[0]!;
        if (nhwcBuffer !== null) {
          const nhwc = rt.scratch(nhwcBuffer, N * C * H * W);
          toChannelsLast(data, offset, N, C, H, W, nhwc);
          [data, offset, sN] = [nhwc, 0, C * H * W];
        }
        if (inPlace) gemm(data.subarray(offset, offset + P * Kc), b, P, Kc, O, { ...opts, out });
        else {
          const per = OH * OW;
          for (let n0 = 0; n0 < N; n0 += images) {
            const nc = Math.min(images, N - n0);
            const rows = rt.scratch(rowsBuffer!, nc * per * Kc);
            if (channelsLast) im2rowChannelsLast(data, offset + n0 * sN, sN, nc, C, geo, rows);
            else im2rowByColumns(data, offset + n0 * C * H * W, nc, C, geo, rows);
            gemm(rows, b, nc * per, Kc, O, { ...opts, out: out.subarray(n0 * per * O, (n0 + nc) * per * O) });
          }
        }
      }
      env.ir[id] = new Tensor(new Storage(out), root.shape, layout.strides, 0, 'float32');
    },
  };
};
