import { window2d } from '../../runtime/cpu/conv.js';
import { contiguousStrides } from '../../runtime/shape.js';
import { Tensor } from '../../runtime/tensor.js';
import { poolKernel } from '../conv.js';
import { isChannelsLast, maxPoolInto } from '../conv-host.js';
import { avgPool2d, maxPool2d } from '../conv/conv-wasm.js';
import { numelOf } from '../ir.js';
import { simdGemmAvailable } from '../matmul.js';
import { generatedStep } from './generated.js';
import type { IRNodeOf, KernelStep, StepBuilder, StepContext } from './step.js';

/**
 * Pooling: over a channels-last input (a conv2d result), the wasm SIMD kernels of kernels/conv; otherwise max
 * pooling as a JS loop over the input's strides and average pooling as a generated gpu.js kernel (conv.ts).
 */
export const pool2dStep: StepBuilder<'pool2d'> = (ctx, root) => {
  const x = ctx.ir[root.x]!;
  const meta = x.kind === 'view' ? null : ctx.layoutOf(root.x);
  if (meta && meta.dtype === 'float32' && meta.shape.length === 4 && isChannelsLast(meta) && simdGemmAvailable())
    return wasmPoolStep(ctx, root);
  return root.attrs.kind === 'max'
    ? maxPoolStep(ctx, root)
    : generatedStep(ctx, `${root.attrs.kind}Pool2d`, root.id, poolKernel(ctx.codegen, root));
};

/**
 * Pooling of a channels-last input in wasm SIMD, four channels a vector, written as the contiguous NCHW tensor
 * the next step (a flatten, usually) reads (into wasm scratch, then one copy out). On the bench CNN's
 * [16, 32, 32, 32] conv result, MaxPool2d(2): 0.86 ms of CPU when it wrote channels-last and a JS loop
 * transposed (median of 41, one thread); the former JS loop took 2.3 ms (wall, a quieter machine).
 */
function wasmPoolStep(ctx: StepContext, root: IRNodeOf<'pool2d'>): KernelStep {
  const id = root.id;
  const [N, C, H, W] = ctx.ir[root.x]!.shape as [number, number, number, number];
  const [, , OH, OW] = root.shape as [number, number, number, number];
  const { kind, kernel, stride, padding, dilation, countIncludePad, divisorOverride } = root.attrs;
  const g = window2d(kernel, stride, padding, dilation, [H, W], [OH, OW]);
  const numel = numelOf(root.shape);
  const nchw = ctx.reserveScratch('pooled', numel);
  ctx.setLayout(id, { shape: root.shape, strides: contiguousStrides(root.shape), offset: 0, dtype: 'float32', storageLength: numel });
  return {
    kind: `${kind}Pool2d`,
    note: 'wasm SIMD over the channels-last input, NCHW result',
    reads: [ctx.baseOf(root.x)],
    defines: id,
    gemmOutput: false,
    run: (env, rt) => {
      const xt = rt.realise(env, root.x);
      const src = (xt._storage.data as Float32Array).subarray(xt.offset, xt.offset + N * H * W * C);
      const pooled = rt.scratch(nchw, numel);
      if (kind === 'max') maxPool2d(src, { N, C, g }, pooled, true);
      else avgPool2d(src, { N, C, g }, pooled, countIncludePad, divisorOverride, true);
      env.ir[id] = Tensor.fromData(pooled.slice(), root.shape, 'float32');
    },
  };
}

/** Max pooling as a JS loop over the input read through its strides (conv-host.ts; 2.3 against 3.9 ms for gpu.js). */
function maxPoolStep(ctx: StepContext, root: IRNodeOf<'pool2d'>): KernelStep {
  const id = root.id;
  const OH = root.shape[root.shape.length - 2]!;
  const OW = root.shape[root.shape.length - 1]!;
  const numel = numelOf(root.shape);
  ctx.setLayout(id, { shape: root.shape, strides: contiguousStrides(root.shape), offset: 0, dtype: 'float32', storageLength: numel });
  return {
    kind: 'maxPool2d',
    note: 'JS loop',
    reads: [ctx.baseOf(root.x)],
    defines: id,
    gemmOutput: false,
    run: (env, rt) => {
      const x = rt.realise(env, root.x);
      const out = new Float32Array(numel);
      maxPoolInto(x._storage.data as Float32Array, x, root.attrs, OH, OW, out);
      env.ir[id] = Tensor.fromData(out, root.shape, 'float32');
    },
  };
}
