import { DTypeError, IndexError, ShapeError } from '../../errors.js';
import type { DType } from '../dtype.js';
import { normDim, normDims } from './dims.js';
import type { SizeArith } from '../size-arith.js';
import { fmtSizes, meta, product, type ShapeRule, type TensorMeta } from './meta.js';
import { reducedSizes } from './sizes.js';

/** Shape rules of the reductions (src/runtime/ops/reduce.ts) and the checks the eager ops share with them. */

export type Dims = number | readonly number[] | null;

/** The dims a reduction reduces: all of them for null or [], else the given ones wrapped, sorted, unique. */
export function reduceDims(op: string, ndim: number, dim: Dims): number[] {
  return dim === null || (Array.isArray(dim) && dim.length === 0) ? normDims(op, undefined, ndim) : normDims(op, dim, ndim);
}

/** max/min/argmax have no identity: an empty input is an error. */
export function checkNonEmpty<S>(A: SizeArith<S>, op: string, shape: readonly S[]): void {
  if (A.eq(product(A, shape), A.lit(0))) throw new IndexError(`${op}: cannot reduce an empty tensor of shape ${fmtSizes(shape)}`);
}

export function checkMeanDType(dtype: DType): void {
  if (dtype !== 'float32') throw new DTypeError(`mean: input dtype must be float32, got ${dtype} (call .float() first)`);
}

/** scatterAdd's dtype and shape checks (index values are checked when it runs); returns the wrapped dim. */
export function checkScatterAdd<S>(A: SizeArith<S>, x: TensorMeta<S>, dim: number, index: TensorMeta<S>, src: TensorMeta<S>): number {
  if (index.dtype !== 'int32') throw new DTypeError(`scatterAdd: index must be an int32 tensor, got ${index.dtype}`);
  if (src.dtype !== x.dtype) throw new DTypeError(`scatterAdd: src (${src.dtype}) must have the dtype of input (${x.dtype})`);
  const d = normDim('scatterAdd', dim, Math.max(x.shape.length, 1));
  if (index.shape.length !== x.shape.length || src.shape.length !== x.shape.length) {
    throw new ShapeError(
      `scatterAdd: index ${fmtSizes(index.shape)}, src ${fmtSizes(src.shape)} and input ${fmtSizes(x.shape)} must have the same number of dims`,
    );
  }
  index.shape.forEach((s, k) => {
    if (A.lt(src.shape[k]!, s) || (k !== d && A.lt(x.shape[k]!, s))) {
      throw new ShapeError(
        `scatterAdd: index ${fmtSizes(index.shape)} is larger than src ${fmtSizes(src.shape)} or input ${fmtSizes(x.shape)} at dim ${k}`,
      );
    }
  });
  return d;
}

const dimReduce =
  (name: string): ShapeRule =>
  (A, [x, dim, keepdim]) => {
    const t = x as TensorMeta<never>;
    checkNonEmpty(A, name, t.shape);
    const shape = reducedSizes(A, t.shape, [normDim(name, dim as number, t.shape.length)], keepdim as boolean);
    return [meta(shape, t.dtype), meta(shape, 'int32')];
  };

const allReduce =
  (name: string): ShapeRule =>
  (A, [x]) => {
    const t = x as TensorMeta<never>;
    checkNonEmpty(A, name, t.shape);
    reduceDims(name, t.shape.length, null);
    return meta([], t.dtype);
  };

const softmaxRule =
  (name: string): ShapeRule =>
  (_A, [x, dim]) => {
    const t = x as TensorMeta<never>;
    normDim(name, dim as number, t.shape.length);
    return meta(t.shape, 'float32');
  };

export const REDUCE_RULES = {
  sum: (A, [x, dim, keepdim]) => {
    const t = x as TensorMeta<never>;
    const dims = reduceDims('sum', t.shape.length, dim as Dims);
    return meta(reducedSizes(A, t.shape, dims, keepdim as boolean), t.dtype === 'float32' ? 'float32' : 'int32');
  },
  mean: (A, [x, dim, keepdim]) => {
    const t = x as TensorMeta<never>;
    checkMeanDType(t.dtype);
    const dims = reduceDims('mean', t.shape.length, dim as Dims);
    return meta(reducedSizes(A, t.shape, dims, keepdim as boolean), 'float32');
  },
  amax: allReduce('amax'),
  amin: allReduce('amin'),
  max: dimReduce('max'),
  min: dimReduce('min'),
  argmax: (A, [x, dim, keepdim]) => {
    const t = x as TensorMeta<never>;
    checkNonEmpty(A, 'argmax', t.shape);
    if (dim === null) return meta(keepdim ? t.shape.map(() => A.lit(1)) : [], 'int32');
    return meta(reducedSizes(A, t.shape, [normDim('argmax', dim as number, t.shape.length)], keepdim as boolean), 'int32');
  },
  scatterAdd: (A, [x, dim, index, src]) => {
    const t = x as TensorMeta<never>;
    checkScatterAdd(A, t, dim as number, index as TensorMeta<never>, src as TensorMeta<never>);
    return meta(t.shape, t.dtype);
  },
  softmax: softmaxRule('softmax'),
  logSoftmax: softmaxRule('logSoftmax'),
} satisfies Record<string, ShapeRule>;
