import { contiguousStrides } from '../../runtime/shape.js';
import { Tensor } from '../../runtime/tensor.js';
import { numelOf } from '../ir.js';
import { gemm, isPacked, type PackedB } from '../matmul.js';
import { denseData, packedWeight } from './operands.js';
import type { StepBuilder } from './step.js';

/**
 * matmul (+ bias) (+ relu): one GEMM call with the bias and relu in its epilogue, writing into the buffer
 * liveness planning gave the result (or a fresh array when it escapes). A module tensor's B is packed once
 * per version; batched B (more than 2 dims) runs one GEMM per batch.
 */
export const matmulStep: StepBuilder<'matmul'> = (ctx, root) => {
  const id = root.id;
  const aShape = ctx.ir[root.a]!.shape;
  const bShape = ctx.ir[root.b]!.shape;
  const K = aShape[aShape.length - 1]!;
  const N = root.shape[root.shape.length - 1]!;
  const batched = bShape.length > 2;
  const batch = batched ? numelOf(bShape.slice(0, -2)) : 1;
  const M = numelOf(aShape) / K / batch;
  const bIsModuleTensor = ctx.isModuleTensor(root.b);
  ctx.setLayout(id, {
    shape: root.shape,
    strides: contiguousStrides(root.shape),
    offset: 0,
    dtype: 'float32',
    storageLength: numelOf(root.shape),
  });
  const kind = `matmul${root.bias !== null ? '+bias' : ''}${root.relu ? '+relu' : ''}`;
  const reads = [root.a, root.b, ...(root.bias !== null ? [root.bias] : [])].map((r) => ctx.baseOf(r));
  return {
    kind,
    note: '',
    reads,
    defines: id,
    gemmOutput: true,
    run: (env, rt) => {
      const a = denseData(rt.realise(env, root.a));
      const bt = rt.realise(env, root.b);
      const bias = root.bias !== null ? denseData(rt.realise(env, root.bias)) : undefined;
      const out = rt.buffer(id) ?? new Float32Array(numelOf(root.shape));
      const opts = { bias, activation: root.relu ? ('relu' as const) : ('none' as const) };
      if (!batched) {
        // B as stored: [K, N], [N, K] (bTransposed, a Linear weight), or a transposed view of [N, K]
        const transposedView = !root.bTransposed && bt.ndim === 2 && bt.strides[0] === 1 && bt.strides[1] === K && K > 1;
        const bT = root.bTransposed || transposedView;
        let b: Float32Array | PackedB;
        if (bIsModuleTensor) b = packedWeight(transposedView ? bt.t() : bt, K, N, bT);
        else b = transposedView ? denseData(bt.t()) : denseData(bt);
        gemm(a, b, M, K, N, { ...opts, bTransposed: !isPacked(b) && bT, out });
      } else {
        const b = denseData(bt);
        for (let i = 0; i < batch; i++) {
          gemm(a.subarray(i * M * K, (i + 1) * M * K), b.subarray(i * K * N, (i + 1) * K * N), M, K, N, {
            ...opts,
            out: out.subarray(i * M * N, (i + 1) * M * N),
          });
        }
      }
      env.ir[id] = Tensor.fromData(out, root.shape, 'float32');
    },
  };
};
