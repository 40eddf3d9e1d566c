import { DTypeError, ShapeError } from '../../errors.js';
import { gemm } from '../cpu/matmul.js';
import { defineOp } from '../op.js';
import { broadcastShapes, checkNumel, fmt, MAX_NUMEL, numel } from '../shape.js';
import { Tensor } from '../tensor.js';
import { add } from './elementwise.js';
import { sumTo } from './reduce.js';

/** Batched matmul of ≥2-D operands with broadcast batch dims; both float32. */
function bmm(a: Tensor, b: Tensor): Tensor {
  const M = a.shape[a.ndim - 2]!;
  const K = a.shape[a.ndim - 1]!;
  const N = b.shape[b.ndim - 1]!;
  // A 2-D right operand (a Linear weight): fold the left batch dims into rows, one big gemm.
  if (b.ndim === 2 && a.ndim > 2) {
    const rows = a.reshape([-1, K]);
    return bmm(rows, b).reshape([...a.shape.slice(0, -1), N]);
  }
  const batch = broadcastShapes('matmul', a.shape.slice(0, -2), b.shape.slice(0, -2));
  const count = numel(batch);
  const out = new Float32Array(count * M * N);
  const ab = a.expand([...batch, M, K]);
  const bb = b.expand([...batch, K, N]);
  const idx = new Array<number>(batch.length).fill(0);
  for (let n = 0; n < count; n++) {
    let aOff = ab.offset;
    let bOff = bb.offset;
    idx.forEach((v, d) => {
      aOff += v * ab.strides[d]!;
      bOff += v * bb.strides[d]!;
    });
    const sa = ab.strides.length;
    gemm(
      { data: ab._storage.data, offset: aOff, rowStride: ab.strides[sa - 2]!, colStride: ab.strides[sa - 1]! },
      { data: bb._storage.data, offset: bOff, rowStride: bb.strides[sa - 2]!, colStride: bb.strides[sa - 1]! },
      M,
      N,
      K,
      out,
      n * M * N,
    );
    for (let d = batch.length - 1; d >= 0; d--) {
      if (++idx[d]! < batch[d]!) break;
      idx[d] = 0;
    }
  }
  return Tensor.fromData(out, [...batch, M, N], 'float32');
}

/** Batch dims must broadcast and the product must fit in a tensor; the message names both full shapes. */
function checkBatchDims(a: Tensor, b: Tensor): void {
  const batchA = a.shape.slice(0, -2);
  const batchB = b.shape.slice(0, -2);
  const batch = batchA.length >= batchB.length ? [...batchA] : [...batchB];
  for (let i = 1; i <= Math.min(batchA.length, batchB.length); i++) {
    const da = batchA[batchA.length - i]!;
    const db = batchB[batchB.length - i]!;
    if (da !== db && da !== 1 && db !== 1) {
      throw new ShapeError(
        `matmul: shapes ${fmt(a.shape)} and ${fmt(b.shape)} cannot be multiplied: batch dims ${fmt(batchA)} and ${fmt(batchB)} ` +
          `do not broadcast (${da} vs ${db})`,
      );
    }
    batch[batch.length - i] = da === 1 ? db : da;
  }
  checkNumel('matmul', [...batch, a.ndim === 1 ? 1 : a.shape[a.ndim - 2]!, b.shape[b.ndim - 1]!]);
}

export const matmul = defineOp<(input: Tensor, other: Tensor) => Tensor>({
  schema: 'matmul(Tensor input, Tensor other)',
  forward(ctx, a, b) {
    if (a.dtype !== 'float32' || b.dtype !== 'float32') {
      throw new DTypeError(`matmul: expected float32 tensors, got ${a.dtype} and ${b.dtype}`);
    }
    if (a.ndim === 0 || b.ndim === 0) {
      throw new ShapeError(`matmul: both arguments need at least 1 dim, got shapes ${fmt(a.shape)} and ${fmt(b.shape)}`);
    }
    const k1 = a.shape[a.ndim - 1]!;
    const k2 = b.shape[b.ndim === 1 ? 0 : b.ndim - 2]!;
    if (k1 !== k2) {
      throw new ShapeError(`matmul: shapes ${fmt(a.shape)} and ${fmt(b.shape)} cannot be multiplied (${k1} != ${k2})`);
    }
    if (a.ndim > 2 || b.ndim > 2) checkBatchDims(a, b);
    else if ((a.ndim === 1 ? 1 : a.shape[0]!) * b.shape[b.ndim - 1]! > MAX_NUMEL) {
      checkNumel('matmul', [a.ndim === 1 ? 1 : a.shape[0]!, b.shape[b.ndim - 1]!]);
    }
    // 1-D operands become a row (left) or a column (right), removed again from the result.
    const a2 = a.ndim === 1 ? a.unsqueeze(0) : a;
    const b2 = b.ndim === 1 ? b.unsqueeze(1) : b;
    let out = bmm(a2, b2);
    if (a.ndim === 1) out = out.squeeze(-2);
    if (b.ndim === 1) out = out.squeeze(-1);
    ctx.a = a.requiresGrad || b.requiresGrad ? ctx.save(a2) : null;
    ctx.b = ctx.save(b2);
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
    const a2 = ctx.a as Tensor;
    const b2 = ctx.b as Tensor;
    const g2 = g.reshape(ctx.g2Shape as number[]);
    const ga = ctx.wantA ? sumTo(bmm(g2, b2.transpose(-1, -2)), a2.shape).reshape(ctx.aShape as number[]) : null;
    const gb = ctx.wantB ? sumTo(bmm(a2.transpose(-1, -2), g2), b2.shape).reshape(ctx.bShape as number[]) : null;
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
    if (w.ndim !== 2) throw new ShapeError(`linear: weight must be 2-D [out, in], got ${fmt(w.shape)}`);
    const inF = w.shape[1]!;
    if (x.ndim === 0 || x.shape[x.ndim - 1] !== inF) {
      throw new ShapeError(`linear: expected input [..., ${inF}] for weight ${fmt(w.shape)}, got ${fmt(x.shape)}`);
    }
    const y = matmul(x, w.t());
    return bias ? add(y, bias) : y;
  },
  lower(k, a) {
    const x = k.tensor(a.input);
    const w = k.tensor(a.weight);
    if (x === null || w === null) return null;
    if (k.shape(w).length !== 2) return { eager: `linear: a ${k.shape(w).length}-d weight (the GEMM takes [out, in])` };
    const bias = a.bias === null || a.bias === undefined ? null : k.tensor(a.bias);
    return k.matmul(x, w, true, bias);
  },
});
