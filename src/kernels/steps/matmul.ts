import { contiguousStrides } from '../../runtime/shape.js';
import { Tensor } from '../../runtime/tensor.js';
import { accessOf } from '../elementwise.js';
import { numelOf, type IRNode } from '../ir.js';
import { gemm, isPacked, type PackedB } from '../matmul.js';
import { denseData, packedWeight, placeRows } from './operands.js';
import type { StepBuilder, StepContext } from './step.js';

/**
 * matmul (+ bias) (+ relu): one GEMM call with the bias and relu in its epilogue, writing into the buffer
 * liveness planning gave the result (or a fresh array when it escapes). A module tensor's B is packed once
 * per version, and so is a parameter passed in as a graph input (AOT graphs take parameters as inputs: an
 * inference graph called again and again with the same weights packs them once); batched B (more than 2 dims)
 * runs one GEMM per batch.
 *
 * Operand layouts, as backward graphs make them: a transposed B (`mm(g, t(w))`, a Linear weight) is packed
 * straight from its [N, K] storage; a transposed A (`mm(t(g), x)`, a weight gradient) is read once into dense
 * rows in wasm scratch memory, where the GEMM reads it, instead of becoming a contiguous tensor first. A bias
 * gradient `sum(g, [0])` that partition put in this group (A = t(g)) is summed row by row in that same pass.
 * ReLU's backward folded in as `mask` zeroes the product where the saved ReLU output is ≤ 0, in place.
 */
export const matmulStep: StepBuilder<'matmul'> = (ctx, root, group) => {
  const id = root.id;
  const aShape = ctx.ir[root.a]!.shape;
  const bShape = ctx.ir[root.b]!.shape;
  const K = aShape[aShape.length - 1]!;
  const N = root.shape[root.shape.length - 1]!;
  const batched = bShape.length > 2;
  const batch = batched ? numelOf(bShape.slice(0, -2)) : 1;
  const M = numelOf(aShape) / K / batch;
  const bIsModuleTensor = ctx.isModuleTensor(root.b);
  const bBase = ctx.baseOf(root.b);
  ctx.setLayout(id, {
    shape: root.shape,
    strides: contiguousStrides(root.shape),
    offset: 0,
    dtype: 'float32',
    storageLength: numelOf(root.shape),
  });
  // A fused bias gradient: the sum over dim 0 of A's untransposed value, i.e. A's row sums.
  const sum = group.members.map((m) => ctx.ir[m]!).find((n): n is IRNode & { kind: 'reduce' } => n.kind === 'reduce') ?? null;
  if (sum) {
    ctx.setLayout(sum.id, { shape: sum.shape, strides: contiguousStrides(sum.shape), offset: 0, dtype: 'float32', storageLength: M });
  }
  // Dense rows of a 2-D A that is not contiguous at run time go to scratch (its layout is known only then).
  const aScratch = !batched && aShape.length === 2 ? ctx.reserveScratch('matmul a', M * K) : null;
  const kind = `matmul${aIsTransposed(ctx, root.a) ? '(aT)' : ''}${root.bias !== null ? '+bias' : ''}${root.relu ? '+relu' : ''}${root.mask !== undefined ? '+mask' : ''}${sum ? '+sum' : ''}`;
  const reads = [root.a, root.b, ...(root.bias !== null ? [root.bias] : []), ...(root.mask !== undefined ? [root.mask] : [])].map((r) =>
    ctx.baseOf(r),
  );
  return {
    kind,
    note: '',
    reads,
    defines: id,
    gemmOutput: true,
    run: (env, rt) => {
      const at = rt.realise(env, root.a);
      const sums = sum ? new Float32Array(M) : undefined;
      const a = aScratch !== null ? placeRows(at, () => rt.scratch(aScratch, M * K), sums) : denseData(at);
      const bt = rt.realise(env, root.b);
      const bias = root.bias !== null ? denseData(rt.realise(env, root.bias)) : undefined;
      const out = rt.buffer(id) ?? new Float32Array(numelOf(root.shape));
      const opts = { bias, activation: root.relu ? ('relu' as const) : ('none' as const) };
      if (!batched) {
        // B as stored: [K, N], [N, K] (bTransposed, a Linear weight), or a transposed view of [N, K]
        const transposedView = !root.bTransposed && bt.ndim === 2 && bt.strides[0] === 1 && bt.strides[1] === K && K > 1;
        const bT = root.bTransposed || transposedView;
        let b: Float32Array | PackedB;
        if (bIsModuleTensor || isParameter(env.ir[bBase])) b = packedWeight(transposedView ? bt.t() : bt, K, N, bT);
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
      if (root.mask !== undefined) {
        // where(y > 0, product, 0): NaN in y zeroes too, as the comparison does
        const y = denseData(rt.realise(env, root.mask));
        for (let i = 0; i < out.length; i++) if (!(y[i]! > 0)) out[i] = 0;
      }
      env.ir[id] = Tensor.fromData(out, root.shape, 'float32');
      if (sum && sums) {
        if (sum.divisor !== undefined) for (let i = 0; i < M; i++) sums[i] = sums[i]! / sum.divisor;
        env.ir[sum.id] = Tensor.fromData(sums, sum.shape, 'float32');
      }
    },
  };
};

/** Whether A, as planned, is a 2-D view whose rows run down its storage's columns (`t(g)` of a contiguous g). */
function aIsTransposed(ctx: StepContext, a: number): boolean {
  const { access } = accessOf(ctx.codegen, a);
  if (access.layers.length !== 1 || access.layers[0]!.shape.length !== 2) return false;
  const [rows, cols] = access.layers[0]!.shape as [number, number];
  const [rowStride, colStride] = access.layers[0]!.strides as [number, number];
  return rows > 1 && cols > 1 && rowStride === 1 && colStride !== 1;
}

/**
 * A leaf that requires grad (a parameter, as AOT graphs receive them): like a module tensor, its packed form is kept
 * per storage version. Other inputs (activations, gradients) are packed per call and not kept, so wasm memory
 * does not fill with packed copies of values used once.
 */
function isParameter(t: Tensor | undefined): boolean {
  return t !== undefined && t.isLeaf && t.requiresGrad;
}
