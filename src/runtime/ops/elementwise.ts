import { map1, map2, map3 } from './cpu-adapters.js';
import type { DType } from '../dtype.js';
import { checkApproximate, checkWhereCondition, clampDType, resultDType } from '../shape-rules/elementwise.js';
import type { Lowering } from '../lowering.js';
import { defineOp, type GradResult, type OpContext } from '../op.js';
import { Tensor } from '../tensor.js';
import { scalarTensor, zerosLike } from './creation.js';
import { binaryPrim, unaryPrim } from './lowering-helpers.js';
import { sumTo } from './reduce.js';

/** Element-wise ops: schema, eager kernel and gradient rule side by side. */

type Operand = Tensor | number;

/** The dtype of `a ∘ b` under PyTorch's promotion (numbers do not widen a tensor of the same kind). */
function resultType(a: Operand, b: Operand): DType {
  return resultDType(a, b);
}

function asTensor(v: Operand, dtype: DType): Tensor {
  return v instanceof Tensor ? v : scalarTensor(typeof v === 'boolean' ? Number(v) : v, dtype);
}

function shapeOf(v: Operand): readonly number[] {
  return v instanceof Tensor ? v.shape : [];
}

function needsGrad(v: Operand): boolean {
  return v instanceof Tensor && v.requiresGrad;
}

/** Tensors the gradient of one side needs, saved only when that side will want them. */
function saveFor(ctx: OpContext, when: boolean, t: Tensor): Tensor | null {
  return when ? ctx.save(t) : null;
}

function binary(name: string, fn: (x: number, y: number) => number) {
  return (ctx: OpContext, a: Tensor, b: Operand, dtype: DType) => {
    ctx.aShape = a.shape;
    ctx.bShape = shapeOf(b);
    return map2(name, a, asTensor(b, dtype), dtype, fn);
  };
}

/** `input ∘ alpha·other`, as `prim(input, mul(other, alpha))` when alpha is not 1. */
function withAlpha(p: 'add' | 'sub'): Lowering {
  return (k, a) => {
    const x = k.operand(a.input);
    const y = k.operand(a.other);
    if (x === null || y === null) return null;
    const alpha = a.alpha as number;
    return k.prim(p, x, alpha === 1 ? y : typeof y === 'number' ? alpha * y : k.prim('mul', y, alpha));
  };
}

export const add = defineOp<(input: Tensor, other: Operand, alpha?: number) => Tensor>({
  schema: 'add(Tensor input, Tensor|Scalar other, Scalar alpha=1)',
  forward(ctx, a, b, alpha = 1) {
    ctx.alpha = alpha;
    const fn = alpha === 1 ? (x: number, y: number) => x + y : (x: number, y: number) => x + alpha * y;
    return binary('add', fn)(ctx, a, b, resultType(a, b));
  },
  backward(ctx, g) {
    const alpha = ctx.alpha as number;
    return [sumTo(g, ctx.aShape as number[]), sumTo(alpha === 1 ? g : g.mul(alpha), ctx.bShape as number[])];
  },
  lower: withAlpha('add'),
});

export const sub = defineOp<(input: Tensor, other: Operand, alpha?: number) => Tensor>({
  schema: 'sub(Tensor input, Tensor|Scalar other, Scalar alpha=1)',
  forward(ctx, a, b, alpha = 1) {
    ctx.alpha = alpha;
    return binary('sub', (x, y) => x - alpha * y)(ctx, a, b, resultType(a, b));
  },
  backward(ctx, g) {
    return [sumTo(g, ctx.aShape as number[]), sumTo(g.mul(-(ctx.alpha as number)), ctx.bShape as number[])];
  },
  lower: withAlpha('sub'),
});

export const mul = defineOp<(input: Tensor, other: Operand) => Tensor>({
  schema: 'mul(Tensor input, Tensor|Scalar other)',
  forward(ctx, a, b) {
    ctx.a = saveFor(ctx, needsGrad(b), a);
    // the other operand as given: a number stays a number (a scalar tensor made here is no op's output)
    ctx.b = a.requiresGrad ? (b instanceof Tensor ? ctx.save(b) : b) : null;
    return binary('mul', (x, y) => x * y)(ctx, a, b, resultType(a, b));
  },
  backward(ctx, g) {
    const a = ctx.a as Tensor | null;
    const b = ctx.b as Operand | null;
    return [b === null ? null : sumTo(g.mul(b), ctx.aShape as number[]), a && sumTo(g.mul(a), ctx.bShape as number[])];
  },
  lower: binaryPrim('mul'),
});

/** True division: integer inputs give float32, as in PyTorch. */
export const div = defineOp<(input: Tensor, other: Operand) => Tensor>({
  schema: 'div(Tensor input, Tensor|Scalar other)',
  forward(ctx, a, b) {
    const out = binary('div', (x, y) => x / y)(ctx, a, asTensor(b, 'float32'), 'float32');
    ctx.b = b instanceof Tensor ? ctx.save(b) : b;
    ctx.wantA = a.requiresGrad;
    ctx.out = saveFor(ctx, needsGrad(b), out);
    return out;
  },
  backward(ctx, g) {
    // PyTorch's div rules: grad / other, and -grad · result / other
    const b = ctx.b as Operand;
    const out = ctx.out as Tensor | null;
    return [ctx.wantA ? sumTo(g.div(b), ctx.aShape as number[]) : null, out && sumTo(g.neg().mul(out).div(b), ctx.bShape as number[])];
  },
  lower: binaryPrim('div'),
});

export const pow = defineOp<(input: Tensor, exponent: Operand) => Tensor>({
  schema: 'pow(Tensor input, Tensor|Scalar exponent)',
  forward(ctx, a, e) {
    const dtype = resultType(a, e);
    const et = asTensor(e, dtype);
    const out = binary('pow', Math.pow)(ctx, a, et, dtype);
    ctx.a = saveFor(ctx, a.requiresGrad || needsGrad(e), a);
    ctx.e = a.requiresGrad ? (e instanceof Tensor ? ctx.save(e) : e) : null;
    ctx.out = saveFor(ctx, needsGrad(e), out);
    return out;
  },
  backward(ctx, g) {
    // PyTorch's pow_backward: grad · e · a^(e-1), zero where e = 0; and grad · result · log(a), zero where a <= 0
    const a = ctx.a as Tensor;
    const e = ctx.e as Operand | null;
    const out = ctx.out as Tensor | null;
    let ga: Tensor | null = null;
    if (typeof e === 'number') ga = e === 0 ? g.mul(0) : g.mul(a.pow(e - 1).mul(e));
    else if (e) ga = g.mul(where(e.eq(0), 0, e.mul(a.pow(e.sub(1)))));
    const ge = out && g.mul(where(a.gt(0), out.mul(a.log()), 0));
    return [ga && sumTo(ga, ctx.aShape as number[]), ge && sumTo(ge, ctx.bShape as number[])];
  },
  lower: binaryPrim('pow'),
});

/**
 * A unary op whose gradient needs either its input (`x`) or its output (`y`), written with op-table calls
 * (PyTorch's derivatives.yaml formulas). `keepInt` ops (neg, abs, relu) keep integer dtypes; the others
 * compute in float32 like PyTorch.
 */
function unary(
  name: string,
  fn: (x: number) => number,
  saves: 'x' | 'y' | 'none',
  grad: (g: Tensor, v: Tensor) => Tensor,
  lower: Lowering,
  keepInt = false,
) {
  return defineOp<(input: Tensor) => Tensor>({
    schema: `${name}(Tensor input)`,
    forward(ctx, x) {
      const y = map1(x, keepInt ? x.dtype : 'float32', fn);
      if (saves !== 'none') ctx.v = ctx.save(saves === 'x' ? x : y);
      return y;
    },
    backward(ctx, g) {
      return [grad(g, ctx.v as Tensor)];
    },
    lower,
  });
}

/** A gradient rule `(grad, saved) → grad` as one kernel pass: the fused backward ops below. */
function fusedBackward(
  name: string,
  params: string,
  fn: (g: number, v: number) => number,
  grad: (ctx: OpContext, gg: Tensor) => readonly (Tensor | null)[],
  lower: Lowering,
) {
  return defineOp<(gradOutput: Tensor, v: Tensor) => Tensor>({
    schema: `${name}(Tensor gradOutput, ${params})`,
    forward(ctx, g, v) {
      ctx.g = ctx.save(g);
      ctx.v = ctx.save(v);
      return map2(name, g, v, 'float32', fn);
    },
    backward: grad,
    lower,
  });
}

/** PyTorch's tanh_backward: gradOutput · (1 - output²). */
export const tanhBackward = fusedBackward(
  'tanhBackward',
  'Tensor output',
  (g, y) => g * (1 - y * y),
  (ctx, gg) => {
    const [g, y] = [ctx.g as Tensor, ctx.v as Tensor];
    return [sumTo(tanhBackward(gg, y), g.shape), sumTo(gg.mul(g).mul(y).mul(-2), y.shape)];
  },
  (k, a) => {
    const g = k.operand(a.gradOutput);
    const y = k.operand(a.output);
    return g === null || y === null ? null : k.prim('mul', g, k.prim('sub', 1, k.prim('mul', y, y)));
  },
);

/** PyTorch's sigmoid_backward: gradOutput · output · (1 - output). */
export const sigmoidBackward = fusedBackward(
  'sigmoidBackward',
  'Tensor output',
  (g, y) => g * y * (1 - y),
  (ctx, gg) => {
    const [g, y] = [ctx.g as Tensor, ctx.v as Tensor];
    return [sumTo(sigmoidBackward(gg, y), g.shape), sumTo(gg.mul(g).mul(y.mul(-2).add(1)), y.shape)];
  },
  (k, a) => {
    const g = k.operand(a.gradOutput);
    const y = k.operand(a.output);
    return g === null || y === null ? null : k.prim('mul', k.prim('mul', g, y), k.prim('sub', 1, y));
  },
);

/** PyTorch's threshold_backward: gradOutput where self > threshold, else 0 (relu's rule with threshold 0). */
export const thresholdBackward = defineOp<(gradOutput: Tensor, self: Tensor, threshold: number) => Tensor>({
  schema: 'thresholdBackward(Tensor gradOutput, Tensor self, Scalar threshold)',
  forward(ctx, g, x, threshold) {
    ctx.x = ctx.save(x);
    ctx.threshold = threshold;
    ctx.gShape = g.shape;
    return map2('thresholdBackward', g, x, 'float32', (gg, v) => (v > threshold ? gg : 0));
  },
  backward: (ctx, gg): GradResult[] => [
    sumTo(thresholdBackward(gg, ctx.x as Tensor, ctx.threshold as number), ctx.gShape as number[]),
    zerosLike(ctx.x as Tensor), // PyTorch's: the mask is flat almost everywhere
  ],
  lower(k, a) {
    const g = k.operand(a.gradOutput);
    const x = k.operand(a.self);
    return g === null || x === null ? null : k.prim('where', k.prim('gt', x, a.threshold as number), g, 0);
  },
});

export const neg = unary(
  'neg',
  (x) => -x,
  'none',
  (g) => g.neg(),
  unaryPrim('neg'),
  true,
);
export const exp = unary('exp', Math.exp, 'y', (g, y) => g.mul(y), unaryPrim('exp'));
export const log = unary('log', Math.log, 'x', (g, x) => g.div(x), unaryPrim('log'));
export const sqrt = unary('sqrt', Math.sqrt, 'y', (g, y) => g.div(y.mul(2)), unaryPrim('sqrt'));
/** abs: grad · sign(x), 0 at x = 0. */
export const abs = unary('abs', Math.abs, 'x', (g, x) => where(x.gt(0), g, where(x.lt(0), g.neg(), 0)), unaryPrim('abs'), true);
export const tanh = unary('tanh', Math.tanh, 'y', (g, y) => tanhBackward(g, y), unaryPrim('tanh'));
export const sigmoid = unary(
  'sigmoid',
  (x) => 1 / (1 + Math.exp(-x)),
  'y',
  (g, y) => sigmoidBackward(g, y),
  unaryPrim('sigmoid'),
);
/** relu is `max(x, 0)`: NaN stays NaN, as in PyTorch (and the GEMM epilogue that applies it after a matmul). */
export const relu = unary(
  'relu',
  (x) => (x > 0 || x !== x ? x : 0),
  'y',
  (g, y) => thresholdBackward(g, y, 0),
  (k, a) => {
    const x = k.operand(a.input);
    return x === null ? null : k.prim('max', x, 0);
  },
  true,
);
export const sin = unary('sin', Math.sin, 'x', (g, x) => g.mul(x.cos()), unaryPrim('sin'));
export const cos = unary('cos', Math.cos, 'x', (g, x) => g.mul(x.sin().neg()), unaryPrim('cos'));
/** 2^x; its gradient is 2^x · ln 2. */
export const exp2 = unary(
  'exp2',
  (x) => 2 ** x,
  'y',
  (g, y) => g.mul(y).mul(Math.LN2),
  unaryPrim('exp2'),
);

/** erf with |error| < 1.2e-7 (Numerical Recipes' erfc Chebyshev fit), ample for float32. */
export function erf(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r =
    t *
    Math.exp(
      -z * z -
        1.26551223 +
        t *
          (1.00002368 +
            t *
              (0.37409196 +
                t *
                  (0.09678418 +
                    t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? 1 - r : r - 1;
}

const SQRT1_2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);
const TANH_C = Math.sqrt(2 / Math.PI);

function geluExact(x: number): number {
  return 0.5 * x * (1 + erf(x * SQRT1_2));
}

function geluExactGrad(x: number): number {
  return 0.5 * (1 + erf(x * SQRT1_2)) + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x);
}

function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(TANH_C * (x + 0.044715 * x * x * x)));
}

function geluTanhGrad(x: number): number {
  const inner = TANH_C * (x + 0.044715 * x * x * x);
  const th = Math.tanh(inner);
  return 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * TANH_C * (1 + 3 * 0.044715 * x * x);
}

export const gelu = defineOp<(input: Tensor, approximate?: 'none' | 'tanh') => Tensor>({
  schema: 'gelu(Tensor input, str approximate="none")',
  forward(ctx, x, approximate = 'none') {
    checkApproximate('gelu', approximate);
    ctx.x = ctx.save(x);
    ctx.approximate = approximate;
    return map1(x, 'float32', approximate === 'tanh' ? geluTanh : geluExact);
  },
  backward: (ctx, g) => [geluBackward(g, ctx.x as Tensor, ctx.approximate as 'none' | 'tanh')],
  lower(k, a) {
    const x = k.operand(a.input);
    if (x === null) return null;
    const half = k.prim('mul', x, 0.5);
    if (a.approximate !== 'tanh') return k.prim('mul', half, k.prim('add', k.prim('erf', k.prim('mul', x, SQRT1_2)), 1));
    const cubic = k.prim('mul', k.prim('mul', k.prim('mul', x, 0.044715), x), x);
    return k.prim('mul', half, k.prim('add', k.prim('tanh', k.prim('mul', k.prim('add', x, cubic), TANH_C)), 1));
  },
});

/** gelu''(x), written with op-table calls: the double backward of geluBackward. */
function geluSecondDerivative(x: Tensor, approximate: string): Tensor {
  const x2 = x.mul(x);
  if (approximate !== 'tanh') return x2.mul(-0.5).exp().mul(INV_SQRT_2PI).mul(x2.neg().add(2)); // φ(x)·(2 - x²)
  // u = c(x + 0.044715x³), t = tanh u: gelu'' = (1 - t²)·(u' - x·t·u'² + x·u''/2)
  const u = x.add(x2.mul(x).mul(0.044715)).mul(TANH_C);
  const th = u.tanh();
  const du = x2
    .mul(3 * 0.044715)
    .add(1)
    .mul(TANH_C);
  const d2u = x.mul(6 * 0.044715 * TANH_C);
  const bracket = du.sub(x.mul(th).mul(du.mul(du))).add(x.mul(d2u).mul(0.5));
  return th.mul(th).neg().add(1).mul(bracket);
}

/** PyTorch's gelu_backward: gradOutput · gelu'(self), one kernel pass. */
export const geluBackward = defineOp<(gradOutput: Tensor, self: Tensor, approximate?: 'none' | 'tanh') => Tensor>({
  schema: 'geluBackward(Tensor gradOutput, Tensor self, str approximate="none")',
  forward(ctx, g, x, approximate = 'none') {
    checkApproximate('geluBackward', approximate);
    ctx.g = ctx.save(g);
    ctx.x = ctx.save(x);
    ctx.approximate = approximate;
    const d = approximate === 'tanh' ? geluTanhGrad : geluExactGrad;
    return map2('geluBackward', g, x, 'float32', (gg, v) => gg * d(v));
  },
  backward(ctx, gg): GradResult[] {
    const [g, x] = [ctx.g as Tensor, ctx.x as Tensor];
    const approximate = ctx.approximate as 'none' | 'tanh';
    return [sumTo(geluBackward(gg, x, approximate), g.shape), sumTo(gg.mul(g).mul(geluSecondDerivative(x, approximate)), x.shape)];
  },
  lower(k, a) {
    const g = k.operand(a.gradOutput);
    const x = k.operand(a.self);
    if (g === null || x === null) return null;
    let d;
    if (a.approximate !== 'tanh') {
      // 0.5·(1 + erf(x/√2)) + x·φ(x)
      const cdf = k.prim('mul', k.prim('add', k.prim('erf', k.prim('mul', x, SQRT1_2)), 1), 0.5);
      const pdf = k.prim('mul', k.prim('exp', k.prim('mul', k.prim('mul', x, x), -0.5)), INV_SQRT_2PI);
      d = k.prim('add', cdf, k.prim('mul', x, pdf));
    } else {
      const x2 = k.prim('mul', x, x);
      const th = k.prim('tanh', k.prim('mul', k.prim('add', x, k.prim('mul', k.prim('mul', x2, x), 0.044715)), TANH_C));
      const left = k.prim('mul', k.prim('add', th, 1), 0.5);
      const sech2 = k.prim('sub', 1, k.prim('mul', th, th));
      const du = k.prim('mul', k.prim('add', k.prim('mul', x2, 3 * 0.044715), 1), TANH_C);
      d = k.prim('add', left, k.prim('mul', k.prim('mul', k.prim('mul', x, 0.5), sech2), du));
    }
    return k.prim('mul', g, d);
  },
});

export const clamp = defineOp<(input: Tensor, min?: number | null, max?: number | null) => Tensor>({
  schema: 'clamp(Tensor input, Scalar? min=null, Scalar? max=null)',
  forward(ctx, x, min, max) {
    const dtype = clampDType(x.dtype, min, max);
    const lo = min ?? -Infinity;
    const hi = max ?? Infinity;
    ctx.x = ctx.save(x);
    ctx.lo = lo;
    ctx.hi = hi;
    // min(max(x, lo), hi) as PyTorch: NaN stays NaN, and hi wins when lo > hi
    return map1(x, dtype, (v) => Math.min(Math.max(v, lo), hi));
  },
  backward(ctx, g) {
    // PyTorch's clamp_backward: grad where min <= x <= max, else 0
    const lo = ctx.lo as number;
    const hi = ctx.hi as number;
    const x = ctx.x as Tensor;
    const upper = hi === Infinity ? g : where(x.le(hi), g, 0);
    return [lo === -Infinity ? upper : where(x.ge(lo), upper, 0)];
  },
  lower(k, a) {
    const x = k.tensor(a.input);
    if (x === null) return null;
    const lo = typeof a.min === 'number' ? k.prim('max', x, a.min) : x;
    return typeof a.max === 'number' ? k.prim('min', lo, a.max) : lo;
  },
});

export const where = defineOp<(condition: Tensor, input: Operand, other: Operand) => Tensor>({
  schema: 'where(Tensor condition, Tensor|Scalar input, Tensor|Scalar other)',
  forward(ctx, c, a, b) {
    checkWhereCondition(c.dtype);
    const dtype = resultType(a, b);
    ctx.c = ctx.save(c);
    ctx.aShape = shapeOf(a);
    ctx.bShape = shapeOf(b);
    ctx.wantA = needsGrad(a);
    ctx.wantB = needsGrad(b);
    return map3('where', c, asTensor(a, dtype), asTensor(b, dtype), dtype, (cv, x, y) => (cv ? x : y));
  },
  backward(ctx, g): GradResult[] {
    const c = ctx.c as Tensor;
    return [
      null,
      ctx.wantA ? sumTo(where(c, g, 0), ctx.aShape as number[]) : null,
      ctx.wantB ? sumTo(where(c, 0, g), ctx.bShape as number[]) : null,
    ];
  },
  lower(k, a) {
    const c = k.operand(a.condition);
    const x = k.operand(a.input);
    const y = k.operand(a.other);
    return c === null || x === null || y === null ? null : k.prim('where', c, x, y);
  },
});

function compare(name: 'eq' | 'ne' | 'lt' | 'le' | 'gt' | 'ge', fn: (x: number, y: number) => boolean) {
  return defineOp<(input: Tensor, other: Operand) => Tensor>({
    schema: `${name}(Tensor input, Tensor|Scalar other)`,
    forward(_ctx, a, b) {
      return map2(name, a, asTensor(b, resultType(a, b)), 'bool', (x, y) => (fn(x, y) ? 1 : 0));
    },
    lower: binaryPrim(name),
  });
}

export const eq = compare('eq', (x, y) => x === y);
export const ne = compare('ne', (x, y) => x !== y);
export const lt = compare('lt', (x, y) => x < y);
export const le = compare('le', (x, y) => x <= y);
export const gt = compare('gt', (x, y) => x > y);
export const ge = compare('ge', (x, y) => x >= y);

export const clone = defineOp<(input: Tensor) => Tensor>({
  schema: 'clone(Tensor input)',
  forward: (_ctx, x) => map1(x, x.dtype, (v) => v),
  backward: (_ctx, g) => [g],
  lower: unaryPrim('copy'),
});

/** Cast to `dtype`; the gradient flows back only into float32 inputs. */
export const toDType = defineOp<(input: Tensor, dtype: DType) => Tensor>({
  schema: 'toDType(Tensor input, dtype? dtype)',
  forward: (_ctx, x, dtype) => map1(x, dtype, (v) => v),
  backward: (_ctx, g) => [g],
  lower(k, a) {
    const x = k.operand(a.input);
    if (x === null) return null;
    if (a.dtype === 'float32') return k.prim('copy', x);
    if (a.dtype === 'bool') return k.prim('toBool', x);
    return { eager: `toDType: the kernels compute float32 and bool, not ${String(a.dtype)}` };
  },
});

/** Random keep-mask dropout: zero with probability p and scale survivors by 1/(1-p). */
export const dropoutMask = defineOp<(input: Tensor, mask: Tensor, scale: number) => Tensor>({
  schema: 'dropoutMask(Tensor input, Tensor mask, Scalar scale)',
  forward(ctx, x, mask, scale) {
    ctx.mask = mask;
    ctx.scale = scale;
    return map2('dropout', x, mask, 'float32', (v, m) => (m ? v * scale : 0));
  },
  backward(ctx, g) {
    const scale = ctx.scale as number;
    return [map2('dropout', g, ctx.mask as Tensor, 'float32', (gg, m) => (m ? gg * scale : 0))];
  },
  lower: { eager: 'dropoutMask: applies the random mask of a training-mode dropout, which runs eagerly' },
});
