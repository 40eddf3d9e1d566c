import { normDim, rankOf } from './builder.js';
import { emit, outDType, type OnnxMapping } from './mapping.js';
import { Unsupported, type TensorValue } from './values.js';

/** Reductions, softmax and scatter-add. */

const tv = (x: unknown) => x as TensorValue;
const axesOf = (dim: unknown): number[] | null =>
  dim === null || dim === undefined ? null : typeof dim === 'number' ? [dim] : [...(dim as number[])];

function reduction(type: 'ReduceSum' | 'ReduceMean'): OnnxMapping {
  return emit((ctx, [x, dim, keepdim]) => ctx.b.reduce(type, ctx.b.operand(x, outDType(ctx)), axesOf(dim), keepdim === true));
}

/** max/min along a dim: the values and their indices (int32, as kiln's). */
function valuesAndIndices(reduce: 'ReduceMax' | 'ReduceMin', arg: 'ArgMax' | 'ArgMin'): OnnxMapping {
  return emit((ctx, [x, dim, keepdim]) => {
    const keep = keepdim === true;
    const values = ctx.b.reduce(reduce, tv(x).name, [dim as number], keep);
    const indices = ctx.b.one(arg, [tv(x).name], { axis: dim as number, keepdims: keep ? 1 : 0 });
    return [values, ctx.b.cast(indices, 'int64', 'int32')];
  });
}

export const REDUCE_ONNX = {
  sum: reduction('ReduceSum'),
  mean: reduction('ReduceMean'),
  amax: emit((ctx, [x]) => ctx.b.reduce('ReduceMax', tv(x).name, null, false)),
  amin: emit((ctx, [x]) => ctx.b.reduce('ReduceMin', tv(x).name, null, false)),
  max: valuesAndIndices('ReduceMax', 'ArgMax'),
  min: valuesAndIndices('ReduceMin', 'ArgMin'),
  argmax: emit((ctx, [x, dim, keepdim]) => {
    let input = tv(x).name;
    let axis = dim as number | null;
    if (axis === null) {
      // over the flattened input, as PyTorch's argmax without a dim
      input = ctx.b.one('Reshape', [input, ctx.b.ints([-1])]);
      axis = 0;
    }
    const keep = keepdim === true && dim !== null ? 1 : 0;
    return ctx.b.cast(ctx.b.one('ArgMax', [input], { axis, keepdims: keep }), 'int64', outDType(ctx));
  }),
  scatterAdd: emit((ctx, [x, dim, index, src]) => {
    if (ctx.b.opset < 16) throw new Unsupported("ScatterElements' reduction='add' needs opset 16 or later");
    const dtype = outDType(ctx);
    let update = ctx.b.operand(src, dtype);
    const [is, ss] = [tv(index).shape, tv(src).shape];
    if (is && ss && is.some((s, i) => s.hint !== ss[i]?.hint)) {
      // PyTorch reads src only where index has entries; ONNX wants them the same shape
      if (is.some((s) => s.dynamic)) throw new Unsupported('scatterAdd with a smaller, dynamic-shaped index than src');
      const axes = is.map((_s, i) => i);
      update = ctx.b.one('Slice', [update, ctx.b.ints(axes.map(() => 0)), ctx.b.ints(is.map((s) => s.hint)), ctx.b.ints(axes)]);
    }
    const axis = normDim(dim as number, rankOf(tv(x)));
    return ctx.b.one('ScatterElements', [ctx.b.operand(x, dtype), tv(index).name, update], { axis, reduction: 'add' });
  }),
  softmax: emit((ctx, [x, dim]) => ctx.b.one('Softmax', [ctx.b.operand(x, 'float32')], { axis: dim as number })),
  logSoftmax: emit((ctx, [x, dim]) => ctx.b.one('LogSoftmax', [ctx.b.operand(x, 'float32')], { axis: dim as number })),
} satisfies Record<string, OnnxMapping>;
