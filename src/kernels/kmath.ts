import { floatLit, type KernelSource } from './index-map.js';
import type { Prim } from './ir.js';

/**
 * The element-wise primitives (`Prim`) as gpu.js kernel code (float32), one entry per primitive. Where the
 * wasm backend has a native opcode (sqrt, abs, min/max, floor) it is used directly; exp, exp2, tanh, sigmoid
 * and erf are computed here from a polynomial and a table of powers of two, because gpu.js calls out to
 * JavaScript's Math for them once per element, which measured 3-4× slower than the inline version (1M
 * elements: 26 ms vs 8 ms). Their error is below 3e-7 relative. log, sin, cos and non-integer powers stay on
 * Math (exact, and rare in inference graphs).
 */

/** 2^k for k in [-75, 75]: `exp` scales by two of these, so results reach the float32 range's ends exactly. */
export const POW2_TABLE = Float32Array.from({ length: 151 }, (_, i) => Math.pow(2, i - 75));

export interface MathNeeds {
  /** The kernel reads `this.constants.pow2`. */
  pow2: boolean;
}

/** e^r for |r| ≤ ln2/2 by its Taylor series to r^6, times 2^n from the table (n integral, in [-150, 150]). */
function scaledPoly(src: KernelSource, needs: MathNeeds, r: string, n: string): string {
  needs.pow2 = true;
  const p = src.let(
    `1.0 + ${r} * (1.0 + ${r} * (0.5 + ${r} * (0.16666666666666666 + ${r} * (0.041666666666666664 + ${r} * (0.008333333333333333 + ${r} * 0.001388888888888889)))))`,
    'ep',
  );
  // 2^n as 2^h · 2^(n-h) so both factors stay in the table and overflow or underflow only when the result does.
  const h = src.let(`Math.floor(${n} * 0.5)`, 'eh');
  return src.let(`${p} * this.constants.pow2[${h} + 75] * this.constants.pow2[${n} - ${h} + 75]`, 'ev');
}

/** exp(x) for a float32 expression `x`: x = n·ln2 + r, |r| ≤ ln2/2. */
export function expCode(src: KernelSource, needs: MathNeeds, x: string): string {
  const v = src.let(`Math.min(Math.max(${x}, -104.0), 89.0)`, 'ex');
  const n = src.let(`Math.floor(${v} * 1.4426950408889634 + 0.5)`, 'en');
  const r = src.let(`${v} - ${n} * 0.693145751953125 - ${n} * 1.428606765330187e-6`, 'er');
  return scaledPoly(src, needs, r, n);
}

/** 2^x: x = n + f, |f| ≤ 1/2, 2^f = e^(f·ln2) (exact reduction: no rounding of x·ln2 for large x). */
function exp2Code(src: KernelSource, needs: MathNeeds, x: string): string {
  const v = src.let(`Math.min(Math.max(${x}, -150.0), 128.0)`, 'ex');
  const n = src.let(`Math.floor(${v} + 0.5)`, 'en');
  const r = src.let(`(${v} - ${n}) * 0.6931471805599453`, 'er');
  return scaledPoly(src, needs, r, n);
}

/** tanh: an odd polynomial near 0 (where 1 - e^-2|x| would cancel), (1 - t)/(1 + t) with t = e^-2|x| elsewhere. */
function tanhCode(src: KernelSource, needs: MathNeeds, x: string): string {
  const ax = src.let(`Math.abs(${x})`, 'ta');
  const t = expCode(src, needs, `-2.0 * ${ax}`);
  const big = src.let(`(1.0 - ${t}) / (1.0 + ${t})`, 'tb');
  const x2 = src.let(`${x} * ${x}`, 'tq');
  const small = `${x} * (1.0 + ${x2} * (-0.3333333333333333 + ${x2} * (0.13333333333333333 + ${x2} * -0.05396825396825397)))`;
  return src.let(`${ax} < 0.0625 ? ${small} : (${x} < 0.0 ? -${big} : ${big})`, 'th');
}

/** erf as kiln's eager kernel computes it (Numerical Recipes' erfc fit), with the inline exp. */
function erfCode(src: KernelSource, needs: MathNeeds, x: string): string {
  const z = src.let(`Math.abs(${x})`, 'fz');
  const t = src.let(`1.0 / (1.0 + 0.5 * ${z})`, 'ft');
  const poly = `-${z} * ${z} - 1.26551223 + ${t} * (1.00002368 + ${t} * (0.37409196 + ${t} * (0.09678418 + ${t} * (-0.18628806 + ${t} * (0.27886807 + ${t} * (-1.13520398 + ${t} * (1.48851587 + ${t} * (-0.82215223 + ${t} * 0.17087277))))))))`;
  const r = src.let(`${t} * ${expCode(src, needs, poly)}`, 'fr');
  return src.let(`${x} >= 0.0 ? 1.0 - ${r} : ${r} - 1.0`, 'fe');
}

/** `x ** e` for a number e: small integer powers by multiplication, the rest through Math.pow. */
function powCode(src: KernelSource, x: string, e: number): string {
  if (e === 0) return '1.0';
  if (e === 1) return x;
  if (e === 0.5) return `Math.sqrt(${x})`;
  if (Number.isInteger(e) && Math.abs(e) <= 4) {
    const v = src.let(x, 'pw');
    const prod = Array.from({ length: Math.abs(e) }, () => v).join(' * ');
    return e > 0 ? `(${prod})` : `(1.0 / (${prod}))`;
  }
  return `Math.pow(${x}, ${floatLit(e)})`;
}

/**
 * Kernel code for one primitive: `args` are float32 expressions (comparisons and `where` conditions are 0/1),
 * `consts` the numbers each argument position had when it was a number (pow's exponent).
 */
type PrimCode = (src: KernelSource, needs: MathNeeds, args: readonly string[], consts: readonly (number | undefined)[]) => string;

const PRIMS: { readonly [P in Prim]: PrimCode } = {
  add: (_s, _n, [a, b]) => `(${a} + ${b})`,
  sub: (_s, _n, [a, b]) => `(${a} - ${b})`,
  mul: (_s, _n, [a, b]) => `(${a} * ${b})`,
  div: (_s, _n, [a, b]) => `(${a} / ${b})`,
  pow: (src, _n, [a, b], consts) => (consts[1] !== undefined ? powCode(src, a!, consts[1]) : `Math.pow(${a}, ${b})`),
  // NaN-propagating, like PyTorch's maximum/minimum (and the eager relu and clamp)
  max: (_s, _n, [a, b]) => `Math.max(${a}, ${b})`,
  min: (_s, _n, [a, b]) => `Math.min(${a}, ${b})`,
  neg: (_s, _n, [a]) => `(-${a})`,
  abs: (_s, _n, [a]) => `Math.abs(${a})`,
  exp: (src, needs, [a]) => expCode(src, needs, a!),
  exp2: (src, needs, [a]) => exp2Code(src, needs, a!),
  log: (_s, _n, [a]) => `Math.log(${a})`,
  sqrt: (_s, _n, [a]) => `Math.sqrt(${a})`,
  sin: (_s, _n, [a]) => `Math.sin(${a})`,
  cos: (_s, _n, [a]) => `Math.cos(${a})`,
  tanh: (src, needs, [a]) => tanhCode(src, needs, src.let(a!, 'x')),
  sigmoid: (src, needs, [a]) => `(1.0 / (1.0 + ${expCode(src, needs, `-${src.let(a!, 'x')}`)}))`,
  erf: (src, needs, [a]) => erfCode(src, needs, src.let(a!, 'x')),
  // a NaN condition is false, as in the eager kernel's `cond ? x : y`
  where: (_s, _n, [c, a, b]) => `(${c} !== 0.0 && ${c} === ${c} ? ${a} : ${b})`,
  eq: (_s, _n, [a, b]) => `(${a} === ${b} ? 1.0 : 0.0)`,
  ne: (_s, _n, [a, b]) => `(${a} !== ${b} ? 1.0 : 0.0)`,
  lt: (_s, _n, [a, b]) => `(${a} < ${b} ? 1.0 : 0.0)`,
  le: (_s, _n, [a, b]) => `(${a} <= ${b} ? 1.0 : 0.0)`,
  gt: (_s, _n, [a, b]) => `(${a} > ${b} ? 1.0 : 0.0)`,
  ge: (_s, _n, [a, b]) => `(${a} >= ${b} ? 1.0 : 0.0)`,
  copy: (_s, _n, [a]) => a!,
  toBool: (_s, _n, [a]) => `(${a} !== 0.0 ? 1.0 : 0.0)`,
};

/** Code for one primitive applied to `args` (see PrimCode). */
export function primCode(
  src: KernelSource,
  needs: MathNeeds,
  prim: Prim,
  args: readonly string[],
  consts: readonly (number | undefined)[],
): string {
  return PRIMS[prim](src, needs, args, consts);
}
