import { contiguousStrides } from '../../runtime/shape.js';
import { Tensor } from '../../runtime/tensor.js';
import { poolKernel } from '../conv.js';
import { maxPoolInto } from '../conv-host.js';
import { numelOf } from '../ir.js';
import { generatedStep } from './generated.js';
import type { IRNodeOf, KernelStep, StepBuilder, StepContext } from './step.js';

/** Pooling: max pooling as a JS loop, average pooling as a generated gpu.js kernel (conv.ts). */
export const pool2dStep: StepBuilder<'pool2d'> = (ctx, root) =>
  root.attrs.kind === 'max'
    ? maxPoolStep(ctx, root)
    : generatedStep(ctx, `${root.attrs.kind}Pool2d`, root.id, poolKernel(ctx.codegen, root));

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
