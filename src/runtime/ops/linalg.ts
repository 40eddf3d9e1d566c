import { bmm as bmmKernel } from '../cpu/matmul.js';
import { defineOp, type GradResult } from '../op.js';
import { broadcastShapes, numel } from '../shape.js';
import { NUMBER_ARITH } from '../size-arith.js';
import { checkAddmm, checkLinear, checkMatrices, matmulMeta } from '../shape-rules/linalg.js';
import { Tensor } from '../tensor.js';
import { zeros } from './creation.js';
import { add } from './elementwise.js';
import { sumTo } from './reduce.js';
import { optionalTensor } from './lowering-helpers.js';
import { isEager } from '../lowering.js';

/** Batched matmul of ≥2-D operands with broadcast batch dims; both float32. */
function bmm(a: Tensor, b: Tensor): Tensor {
  const M = a.shape[a.ndim - 2]!;
  const K = a.shape[a.ndim - 1]!;
  const N = b.shape[b.ndim - 1]!;
  // A 2-D right operand (a Linear weight): fold the left batch dims into rows, one big gemm.
  if (b.ndim === 2 && a.ndim > 2) {
    const rows = a.reshape([numel(a.shape.slice(0, -1)), K]); // not -1: K may be 0
    return bmm(rows, b).reshape([...a.shape.slice(0, -1), N]);
  }
  const batch = broadcastShapes('matmul', a.shape.slice(0, -2), b.shape.slice(0, -2));
  const count = numel(batch);
  const out = new Float32Array(count * M * N);
  const ab = a.expand([...batch, M, K]);
  const bb = b.expand([...batch, K, N]);
  const sa = ab.strides.length;
  // Where each batch entry's matrices start, in row-major batch order; one offset when the operand is
  // broadcast over the whole batch (every batch stride 0), so the GEMM packs it once.
  const offsets = (t: Tensor): number[] => {
    let offs = [t.offset];
    if (batch.every((n, d) => n === 1 || t.strides[d] === 0)) return offs;
    for (let d = 0; d < batch.length; d++) {
      const next: number[] = [];
      for (const o of offs) for (let v = 0; v < batch[d]!; v++) next.push(o + v * t.strides[d]!);
      offs = next;
    }
    return offs;
  };
  bmmKernel(
    { data: ab._storage.data as Float32Array, offsets: offsets(ab), rowStride: ab.strides[sa - 2]!, colStride: ab.strides[sa - 1]! },
    { data: bb._storage.data as Float32Array, offsets: offsets(bb), rowStride: bb.strides[sa - 2]!, colStride: bb.strides[sa - 1]! },
    count,
    M,
    N,
    K,
    out,
  );
  return Tensor.fromData(out, [...batch, M, N], 'float32');
}

/** Whether `t`'s last two dims are laid out as the transpose of a contiguous matrix (a `w.t()` view). */
function transposedLayout(t: Tensor): boolean {
  const r = t.ndim - 2;
  return t.shape[r]! > 1 && t.shape[r + 1]! > 1 && t.strides[r] === 1 && t.strides[r + 1] === t.shape[r];
}

/**
 * The gradient `lhs @ rhs` of an operand `x`, summed over broadcast batch dims, laid out like `x`: for a
 * transposed `x` it is computed as (rhsᵀ @ lhsᵀ)ᵀ, as PyTorch's mm backward does, so a Linear weight (used as
 * `w.t()`) gets a contiguous [out, in] gradient back through `t`, not a strided view every consumer gathers.
 */
function gradLike(x: Tensor, lhs: Tensor, rhs: Tensor): Tensor {
  if (!transposedLayout(x)) return sumTo(matmul(lhs, rhs), x.shape);
  const shapeT = [...x.shape.slice(0, -2), x.shape[x.ndim - 1]!, x.shape[x.ndim - 2]!];
  return sumTo(matmul(rhs.transpose(-1, -2), lhs.transpose(-1, -2)), shapeT).transpose(-1, -2);
}

export const matmul = defineOp<(input: Tensor, other: Tensor) => Tensor>({
  schema: 'matmul(Tensor input, Tensor other)',
  forward(ctx, a, b) {
    matmulMeta(NUMBER_ARITH, a, b); // the shape rule's checks: dtypes, inner sizes, batch dims, size
    // 1-D operands become a row (left) or a column (right), removed again from the result.
    const a2 = a.ndim === 1 ? a.unsqueeze(0) : a;
    const b2 = b.ndim === 1 ? b.unsqueeze(1) : b;
    let out = bmm(a2, b2);
    if (a.ndim === 1) out = out.squeeze(-2);
    if (b.ndim === 1) out = out.squeeze(-1);
    // the inputs themselves (not a2/b2, which no op made as far as a tracer can see): the rule redoes the unsqueeze
    ctx.a = a.requiresGrad || b.requiresGrad ? ctx.save(a) : null;
    ctx.b = ctx.save(b);
    ctx.aShape = a.shape;
    ctx.bShape = b.shape;
    ctx.outShape = [...out.shape];
    ctx.wantA = a.requiresGrad;
    ctx.wantB = b.requiresGrad;
    ctx.g2Shape = [
      ...broadcastShapes('matmul', a2.shape.slice(0, -2), b2.shape.slice(0, -2)),
      a2.shape[a2.ndim - 2]!,
      b2.shape[b2.ndim - 1]!,
    ];
    return out;
  },
  backward(ctx, g) {
    const a = ctx.a as Tensor;
    const b = ctx.b as Tensor;
    const a2 = a.ndim === 1 ? a.unsqueeze(0) : a;
    const b2 = b.ndim === 1 ? b.unsqueeze(1) : b;
    const g2 = g.reshape(ctx.g2Shape as number[]);
    const ga = ctx.wantA ? gradLike(a2, g2, b2.transpose(-1, -2)).reshape(ctx.aShape as number[]) : null;
    const gb = ctx.wantB ? gradLike(b2, a2.transpose(-1, -2), g2).reshape(ctx.bShape as number[]) : null;
    return [ga, gb];
  },
  lower(k, a) {
    const x = k.tensor(a.input);
    const y = k.tensor(a.other);
    return x === null || y === null ? null : k.matmul(x, y, false, null);
  },
});

/** y = x · Wᵀ + b, with `weight` of shape [out, in] like PyTorch. */
export const linear = defineOp<(input: Tensor, weight: Tensor, bias?: Tensor | null) => Tensor>({
  schema: 'linear(Tensor input, Tensor weight, Tensor? bias=null)',
  composite: true,
  forward(_ctx, x, w, bias = null) {
    checkLinear(NUMBER_ARITH, x, w, bias);
    const y = matmul(x, w.t());
    return bias ? add(y, bias) : y;
  },
  lower(k, a) {
    const x = k.tensor(a.input);
    const w = k.tensor(a.weight);
    if (x === null || w === null) return null;
    if (k.shape(w).length !== 2) return { eager: `linear: a ${k.shape(w).length}-d weight (the GEMM takes [out, in])` };
    const bias = optionalTensor(k, a.bias);
    return bias === false ? null : k.matmul(x, w, true, bias);
  },
});

/** torch.mm: the product of two matrices (no broadcasting, no 1-D operands; `matmul` has those). */
export const mm = defineOp<(input: Tensor, mat2: Tensor) => Tensor>({
  schema: 'mm(Tensor input, Tensor mat2)',
  forward(ctx, a, b) {
    checkMatrices(NUMBER_ARITH, 'mm', a, b, ['self', 'mat2']);
    ctx.a = a.requiresGrad || b.requiresGrad ? ctx.save(a) : null;
    ctx.b = ctx.save(b);
    return bmm(a, b);
  },
  backward(ctx, g): GradResult[] {
    const a = ctx.a as Tensor | null;
    const b = ctx.b as Tensor | null;
    return [b && mm(g, b.t()), a && mm(a.t(), g)];
  },
  lower(k, a) {
    const x = k.tensor(a.input);
    const y = k.tensor(a.mat2);
    return x === null || y === null ? null : k.matmul(x, y, false, null);
  },
});

/**
 * torch.addmm: beta·input + alpha·(mat1 @ mat2), `input` broadcast to [n, p]. As in PyTorch (BLAS's gemm),
 * beta = 0 ignores `input` and alpha = 0 ignores the product: NaN and Inf in the ignored term do not propagate.
 */
export const addmm = defineOp<(input: Tensor, mat1: Tensor, mat2: Tensor, beta?: number, alpha?: number) => Tensor>({
  schema: 'addmm(Tensor input, Tensor mat1, Tensor mat2, Scalar beta=1, Scalar alpha=1)',
  forward(ctx, input, m1, m2, beta = 1, alpha = 1) {
    const outShape = checkAddmm(NUMBER_ARITH, input, m1, m2);
    const b = Number(beta);
    const al = Number(alpha);
    Object.assign(ctx, { inputShape: input.shape, beta: b, alpha: al });
    ctx.m1 = m2.requiresGrad ? ctx.save(m1) : null;
    ctx.m2 = m1.requiresGrad ? ctx.save(m2) : null;
    const term = b === 0 ? null : b === 1 ? input : input.mul(b);
    if (al === 0) return term === null ? zeros(outShape) : term.expand(outShape).contiguous();
    const product = bmm(m1, m2);
    const scaled = al === 1 ? product : product.mul(al);
    return term === null ? scaled : scaled.add(term);
  },
  backward(ctx, g) {
    const beta = ctx.beta as number;
    const alpha = ctx.alpha as number;
    const m1 = ctx.m1 as Tensor | null;
    const m2 = ctx.m2 as Tensor | null;
    const gScaled = alpha === 1 ? g : g.mul(alpha);
    return [sumTo(beta === 1 ? g : g.mul(beta), ctx.inputShape as number[]), m2 && mm(gScaled, m2.t()), m1 && mm(m1.t(), gScaled)];
  },
  lower(k, a) {
    const input = k.tensor(a.input);
    const x = k.tensor(a.mat1);
    const y = k.tensor(a.mat2);
    if (input === null || x === null || y === null) return null;
    const beta = Number(a.beta);
    const alpha = Number(a.alpha);
    if (alpha === 0) return { eager: 'addmm: alpha = 0 (the result is beta·input broadcast, no product)' };
    const p = k.shape(y)[1]!;
    // The GEMM adds a [p] bias itself (as linear's does).
    const inputShape = k.shape(input);
    const foldBias = beta === 1 && alpha === 1 && inputShape.length === 1 && inputShape[0] === p && k.dtype(input) === 'float32';
    const product = k.matmul(x, y, false, foldBias ? input : null);
    if (foldBias || isEager(product)) return product;
    const scaled = alpha === 1 ? product : k.prim('mul', product, alpha);
    if (beta === 0) return scaled;
    return k.prim('add', scaled, beta === 1 ? input : k.prim('mul', input, beta));
  },
});
