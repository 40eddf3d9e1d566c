import { Unsupported, type TensorValue } from './values.js';
import { emit, GRADIENT_OP, notExportable, outDType, type EmitContext, type OnnxMapping } from './mapping.js';

/** Element-wise ops: ONNX's broadcasting matches PyTorch's; operands are cast to the output's dtype first (type promotion). */

function binary(type: string, scaleArg = false): OnnxMapping {
  return emit((ctx, [a, b, alpha]) => {
    const dtype = outDType(ctx);
    let rhs = ctx.b.operand(b, dtype);
    if (scaleArg && alpha !== undefined && alpha !== 1) rhs = ctx.b.one('Mul', [rhs, ctx.b.scalar(alpha as number, dtype)]);
    return ctx.b.one(type, [ctx.b.operand(a, dtype), rhs]);
  });
}

/** A unary op on a float input (integer inputs are promoted, as kiln's float ops do). */
function unary(type: string): OnnxMapping {
  return emit((ctx, [x]) => ctx.b.one(type, [ctx.b.operand(x, outDType(ctx))]));
}

/** The dtype comparisons compute in: float if either side is, else int32 (ONNX's Less/Greater take no bools). */
function compareDType(a: unknown, b: unknown, type: string): 'float32' | 'int32' | 'bool' {
  const dt = (v: unknown) =>
    typeof v === 'number' ? (Number.isInteger(v) ? 'int32' : 'float32') : typeof v === 'boolean' ? 'bool' : (v as TensorValue).dtype;
  const [x, y] = [dt(a), dt(b)];
  if (x === 'float32' || y === 'float32') return 'float32';
  if (x === 'bool' && y === 'bool' && type === 'Equal') return 'bool';
  return 'int32';
}

function compare(type: string, negate = false): OnnxMapping {
  return emit((ctx, [a, b]) => {
    const dtype = compareDType(a, b, type);
    const r = ctx.b.one(type, [ctx.b.operand(a, dtype), ctx.b.operand(b, dtype)]);
    return negate ? ctx.b.one('Not', [r]) : r;
  });
}

/** gelu: 0.5·x·(1 + erf(x/√2)), or the tanh approximation (ONNX's Gelu op is opset 20). */
function gelu(ctx: EmitContext, x: string, approximate: string): string {
  const { b } = ctx;
  const half = b.scalar(0.5, 'float32');
  const one = b.scalar(1, 'float32');
  let inner: string;
  if (approximate === 'none') inner = b.one('Erf', [b.one('Mul', [x, b.scalar(Math.SQRT1_2, 'float32')])]);
  else if (approximate === 'tanh') {
    const cube = b.one('Mul', [b.one('Mul', [x, x]), x]);
    const arg = b.one('Add', [x, b.one('Mul', [cube, b.scalar(0.044715, 'float32')])]);
    inner = b.one('Tanh', [b.one('Mul', [arg, b.scalar(Math.sqrt(2 / Math.PI), 'float32')])]);
  } else throw new Unsupported(`approximate '${approximate}' is neither 'none' nor 'tanh'`);
  return b.one('Mul', [b.one('Mul', [x, half]), b.one('Add', [inner, one])]);
}

export const ELEMENTWISE_ONNX = {
  add: binary('Add', true),
  sub: binary('Sub', true),
  mul: binary('Mul'),
  div: binary('Div'),
  pow: binary('Pow'),
  neg: unary('Neg'),
  exp: unary('Exp'),
  log: unary('Log'),
  sqrt: unary('Sqrt'),
  abs: unary('Abs'),
  tanh: unary('Tanh'),
  sigmoid: unary('Sigmoid'),
  relu: unary('Relu'),
  sin: unary('Sin'),
  cos: unary('Cos'),
  exp2: emit((ctx, [x]) => ctx.b.one('Pow', [ctx.b.scalar(2, 'float32'), ctx.b.operand(x, 'float32')])),
  gelu: emit((ctx, [x, approximate]) => gelu(ctx, ctx.b.operand(x, 'float32'), approximate as string)),
  clamp: emit((ctx, [x, min, max]) => {
    const dtype = outDType(ctx);
    const bound = (v: unknown) => (v === null || v === undefined ? '' : ctx.b.scalar(v as number, dtype));
    return ctx.b.one('Clip', [ctx.b.operand(x, dtype), bound(min), bound(max)]);
  }),
  where: emit((ctx, [cond, a, b]) => {
    const dtype = outDType(ctx);
    return ctx.b.one('Where', [ctx.b.operand(cond, 'bool'), ctx.b.operand(a, dtype), ctx.b.operand(b, dtype)]);
  }),
  eq: compare('Equal'),
  ne: compare('Equal', true),
  lt: compare('Less'),
  le: compare('LessOrEqual'),
  gt: compare('Greater'),
  ge: compare('GreaterOrEqual'),
  clone: emit((ctx, [x]) => ctx.b.one('Identity', [(x as TensorValue).name])),
  toDType: emit((ctx, [x]) => ctx.b.one('Identity', [ctx.b.operand(x, outDType(ctx))])),
  dropoutMask: emit((ctx, [x, mask, scale]) => {
    const masked = ctx.b.one('Mul', [ctx.b.operand(x, 'float32'), ctx.b.operand(mask, 'float32')]);
    return ctx.b.one('Mul', [masked, ctx.b.scalar(scale as number, 'float32')]);
  }),
  tanhBackward: notExportable(GRADIENT_OP),
  sigmoidBackward: notExportable(GRADIENT_OP),
  thresholdBackward: notExportable(GRADIENT_OP),
  geluBackward: notExportable(GRADIENT_OP),
} satisfies Record<string, OnnxMapping>;

export { gelu as geluNodes };
