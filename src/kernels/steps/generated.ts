import type { IKernelRunShortcut } from 'gpu.js';
import { Tensor } from '../../runtime/tensor.js';
import { contiguousStrides } from '../../runtime/shape.js';
import { getKernel } from '../cache.js';
import type { GeneratedKernel } from '../elementwise.js';
import { MAX_KERNEL_ELEMENTS } from '../index-map.js';
import { numelOf } from '../ir.js';
import { TooLarge, type KernelStep, type StepContext } from './step.js';

/** Steps that run one generated gpu.js kernel (element-wise, reductions, average pooling, embedding lookups). */

/** A step running one generated gpu.js kernel whose result is the IR value `id`, stored contiguous. */
export function generatedStep(ctx: StepContext, kind: string, id: number, gen: GeneratedKernel): KernelStep {
  const n = ctx.ir[id]!;
  ctx.setLayout(id, {
    shape: n.shape,
    strides: contiguousStrides(n.shape),
    offset: 0,
    dtype: n.dtype,
    storageLength: numelOf(n.shape),
  });
  const kernel = kernelFor(ctx, gen);
  const numel = numelOf(n.shape);
  return {
    kind,
    note: '',
    reads: gen.args,
    defines: id,
    gemmOutput: false,
    run: (env) => {
      const data = numel === 0 ? new Float32Array(0) : (kernel(...gen.args.map((a) => env.ir[a]!._storage.data)) as Float32Array);
      env.ir[id] = Tensor.fromData(n.dtype === 'bool' ? Uint8Array.from(data) : data, n.shape, n.dtype);
    },
  };
}

/** The compiled kernel for `gen` on the plan's mode, keyed by its arguments' dtypes and storage sizes. */
export function kernelFor(ctx: StepContext, gen: GeneratedKernel): IKernelRunShortcut {
  const metas = gen.args.map((a) => ctx.layoutOf(a));
  if (numelOf(gen.output) >= MAX_KERNEL_ELEMENTS || metas.some((m) => m.storageLength >= MAX_KERNEL_ELEMENTS)) {
    throw new TooLarge(`a kernel over 2^24 elements or more is beyond gpu.js's float32 index arithmetic`);
  }
  return getKernel(ctx.mode, gen, metas.map((m) => `${m.dtype}${m.storageLength}`).join(','));
}
