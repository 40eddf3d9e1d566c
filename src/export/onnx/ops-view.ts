import { INT64_MAX, normDim, rankOf, sizesOf } from './builder.js';
import { emit, notExportable, outDType, type EmitContext, type OnnxMapping } from './mapping.js';
import { knownSizes, type StaticSize } from './static-sizes.js';
import type { TensorMeta } from '../../runtime/shape-rules/index.js';
import { Unsupported, type TensorValue } from './values.js';

/** Views and copies of shape: Reshape, Transpose, Slice, Gather, Concat, … (ONNX has no views; each is a copy). */

const tv = (x: unknown) => x as TensorValue;

function reshape(ctx: EmitContext, x: TensorValue, shape: readonly unknown[]): string {
  const literalZero = shape.some((s) => s === 0);
  // ONNX's Reshape reads 0 as "copy this dim" unless allowzero is set; kiln's 0 is a size
  return ctx.b.one('Reshape', [x.name, ctx.b.shapeVector(shape)], literalZero ? { allowzero: 1 } : {});
}

/** The output's own shape as a constant, when the rules found every size static. */
function staticOut(ctx: EmitContext): number[] | undefined {
  const sizes = knownSizes((ctx.out as TensorMeta<StaticSize>).shape);
  return sizes.every((s) => s !== null) ? (sizes as number[]) : undefined;
}

function flatten(ctx: EmitContext, x: TensorValue, startDim: number, endDim: number): string {
  const rank = rankOf(x);
  const fixed = staticOut(ctx);
  if (fixed) return reshape(ctx, x, fixed);
  const start = normDim(startDim, Math.max(rank, 1));
  const end = normDim(endDim, Math.max(rank, 1));
  const parts = [ctx.b.shapeSlice(x.name, 0, start), ctx.b.ints([-1]), ctx.b.shapeSlice(x.name, end + 1, rank)];
  return ctx.b.one('Reshape', [x.name, ctx.b.one('Concat', parts, { axis: 0 })]);
}

function transposeOf(ctx: EmitContext, x: TensorValue, perm: readonly number[]): string {
  return ctx.b.one('Transpose', [x.name], { perm: perm.map((d) => normDim(d, perm.length)) });
}

/** Sizes along `dim` that ONNX's Split needs as a list: the input's size there must be static. */
function splitSizes(x: TensorValue, dim: number, splitSize: number | readonly number[], op: string): number[] {
  const size = sizesOf(x)[normDim(dim, rankOf(x))];
  if (typeof splitSize !== 'number') return [...splitSize];
  if (size === null || size === undefined) throw new Unsupported(`${op} along a dynamic dim (ONNX's Split needs the number of outputs)`);
  const out: number[] = [];
  for (let at = 0; at < size; at += splitSize) out.push(Math.min(splitSize, size - at));
  return out;
}

function sliceArg(ctx: EmitContext, v: unknown, fallback: number | bigint): string {
  if (v === null || v === undefined) return ctx.b.ints([fallback]);
  return ctx.b.shapeVector([v]);
}

export const VIEW_ONNX = {
  view: emit((ctx, [x, shape]) => reshape(ctx, tv(x), shape as unknown[])),
  reshape: emit((ctx, [x, shape]) => reshape(ctx, tv(x), shape as unknown[])),
  flatten: emit((ctx, [x, startDim, endDim]) => flatten(ctx, tv(x), startDim as number, endDim as number)),
  permute: emit((ctx, [x, dims]) => transposeOf(ctx, tv(x), dims as number[])),
  transpose: emit((ctx, [x, d0, d1]) => {
    const rank = rankOf(tv(x));
    if (rank < 2) return ctx.b.one('Identity', [tv(x).name]);
    const perm = Array.from({ length: rank }, (_, i) => i);
    const [a, b] = [normDim(d0 as number, rank), normDim(d1 as number, rank)];
    [perm[a], perm[b]] = [perm[b]!, perm[a]!];
    return transposeOf(ctx, tv(x), perm);
  }),
  t: emit((ctx, [x]) => (rankOf(tv(x)) < 2 ? ctx.b.one('Identity', [tv(x).name]) : transposeOf(ctx, tv(x), [1, 0]))),
  unsqueeze: emit((ctx, [x, dim]) => ctx.b.one('Unsqueeze', [tv(x).name, ctx.b.ints([normDim(dim as number, rankOf(tv(x)) + 1)])])),
  squeeze: emit((ctx, [x, dim]) => {
    const sizes = sizesOf(tv(x));
    // only static 1s squeeze: a dynamic dim was at least 2 when exported, and PyTorch's squeeze leaves other sizes alone
    const axes =
      dim === null || dim === undefined
        ? sizes.flatMap((s, i) => (s === 1 ? [i] : []))
        : sizes[normDim(dim as number, sizes.length)] === 1
          ? [normDim(dim as number, sizes.length)]
          : [];
    return axes.length === 0 ? ctx.b.one('Identity', [tv(x).name]) : ctx.b.one('Squeeze', [tv(x).name, ctx.b.ints(axes)]);
  }),
  asStrided: notExportable('ONNX has no strided view (asStrided reads storage by strides)'),
  expand: emit((ctx, [x, shape]) => {
    // kiln's -1 keeps the input's size; ONNX's Expand broadcasts, so 1 does the same
    const target = (shape as unknown[]).map((s) => (s === -1 ? 1 : s));
    return ctx.b.one('Expand', [tv(x).name, ctx.b.shapeVector(target)]);
  }),
  slice: emit((ctx, [x, dim, start, end, step]) =>
    ctx.b.one('Slice', [
      tv(x).name,
      sliceArg(ctx, start, 0),
      sliceArg(ctx, end, INT64_MAX),
      ctx.b.ints([dim as number]),
      ctx.b.ints([step as number]),
    ]),
  ),
  narrow: emit((ctx, [x, dim, start, length]) => {
    if (typeof start !== 'number' || typeof length !== 'number') throw new Unsupported('narrow with a computed start or length');
    return ctx.b.one('Slice', [tv(x).name, ctx.b.ints([start]), ctx.b.ints([start + length]), ctx.b.ints([dim as number])]);
  }),
  split: emit((ctx, [x, splitSize, dim]) => {
    const sizes = splitSizes(tv(x), dim as number, splitSize as number | number[], 'split');
    return ctx.b.op('Split', [tv(x).name, ctx.b.ints(sizes)], { axis: dim as number }, sizes.length);
  }),
  unbind: emit((ctx, [x, dim]) => {
    const sizes = splitSizes(tv(x), dim as number, 1, 'unbind');
    const parts =
      sizes.length === 1 ? [tv(x).name] : ctx.b.op('Split', [tv(x).name, ctx.b.ints(sizes)], { axis: dim as number }, sizes.length);
    return parts.map((p) => ctx.b.one('Squeeze', [p, ctx.b.ints([dim as number])]));
  }),
  select: emit((ctx, [x, dim, index]) => {
    if (typeof index !== 'number') throw new Unsupported('select with a computed index');
    return ctx.b.one('Gather', [tv(x).name, ctx.b.constant('int64', [], [index])], { axis: dim as number });
  }),
  sliceScatter: notExportable('scatter-into-a-slice ops are not mapped to ONNX (ScatterND) yet'),
  selectScatter: notExportable('scatter-into-a-slice ops are not mapped to ONNX (ScatterND) yet'),
  viewScatter: notExportable('writes through a view chain are not mapped to ONNX yet'),
  index: notExportable('advanced indexing is not mapped to ONNX yet (use select, slice, gather or indexSelect)'),
  gather: emit((ctx, [x, dim, index]) => ctx.b.one('GatherElements', [tv(x).name, tv(index).name], { axis: dim as number })),
  indexSelect: emit((ctx, [x, dim, index]) => ctx.b.one('Gather', [tv(x).name, tv(index).name], { axis: dim as number })),
  cat: emit((ctx, [tensors, dim]) => {
    const dtype = outDType(ctx);
    return ctx.b.one(
      'Concat',
      (tensors as TensorValue[]).map((t) => ctx.b.operand(t, dtype)),
      { axis: dim as number },
    );
  }),
  stack: emit((ctx, [tensors, dim]) => {
    const ts = tensors as TensorValue[];
    const dtype = outDType(ctx);
    const axis = normDim(dim as number, rankOf(ts[0]!) + 1);
    const parts = ts.map((t) => ctx.b.one('Unsqueeze', [ctx.b.operand(t, dtype), ctx.b.ints([axis])]));
    return ctx.b.one('Concat', parts, { axis });
  }),
} satisfies Record<string, OnnxMapping>;
