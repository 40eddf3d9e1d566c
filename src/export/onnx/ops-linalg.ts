import { rankOf } from './builder.js';
import { emit, outDType, type OnnxMapping } from './mapping.js';
import type { TensorValue } from './values.js';

/** Matrix products: MatMul, and Gemm where the operands are matrices (linear on 2-D input, addmm). */

const tv = (x: unknown) => x as TensorValue;

const matmul = emit((ctx, [a, b]) => ctx.b.one('MatMul', [ctx.b.operand(a, outDType(ctx)), ctx.b.operand(b, outDType(ctx))]));

export const LINALG_ONNX = {
  matmul,
  mm: matmul,
  linear: emit((ctx, [x, weight, bias]) => {
    const b = bias === null || bias === undefined ? undefined : tv(bias).name;
    if (rankOf(tv(x)) === 2) return ctx.b.one('Gemm', [tv(x).name, tv(weight).name, ...(b ? [b] : [])], { transB: 1 });
    const y = ctx.b.one('MatMul', [tv(x).name, ctx.b.one('Transpose', [tv(weight).name], { perm: [1, 0] })]);
    return b ? ctx.b.one('Add', [y, b]) : y;
  }),
  addmm: emit((ctx, [input, mat1, mat2, beta, alpha]) =>
    ctx.b.one('Gemm', [tv(mat1).name, tv(mat2).name, tv(input).name], {
      alpha: { float: alpha as number },
      beta: { float: beta as number },
    }),
  ),
} satisfies Record<string, OnnxMapping>;
