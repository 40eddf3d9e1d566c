import { floatLit, type KernelSource } from './index-map.js';
import type { EwOp } from './ir.js';

/**
 * Element-wise ops as gpu.js kernel code (float32). Where the wasm backend has a native opcode (sqrt, abs,
 * min/max, floor) it is used directly; exp, tanh, sigmoid and GELU are computed here from a polynomial and
 * a table of powers of two, because gpu.js calls out to JavaScript's Math for them once per element, which
 * measured 3-4× slower than the inline version (1M elements: 26 ms vs 8 ms). Their error is below 3e-7
 * relative. log and non-integer powers stay on Math (exact, and rare in inference graphs).
 */

/** 2^k for k in [-75, 75]: `exp` scales by two of these, so results reach the float32 range's ends exactly. */
export const POW2_TABLE = Float32Array.from({ length: 151 }, (_, i) => Math.pow(2, i - 75));

export interface MathNeeds {
  /** The kernel reads `this.constants.pow2`. */
  pow2: boolean;
}

/** exp(x) for a float32 expression `x`: x = n·ln2 + r, |r| ≤ ln2/2, e^r by its Taylor series to r^6. */
export function expCode(src: KernelSource, needs: MathNeeds, x: string): string {
  needs.pow2 = true;
  const v = src.let(`Math.min(Math.max(${x}, -104.0), 89.0)`, 'ex');
  const n = src.let(`Math.floor(${v} * 1.4426950408889634 + 0.5)`, 'en');
  const r = src.let(`${v} - ${n} * 0.693145751953125 - ${n} * 1.428606765330187e-6`, 'er');
  const p = src.let(
    `1.0 + ${r} * (1.0 + ${r} * (0.5 + ${r} * (0.16666666666666666 + ${r} * (0.041666666666666664 + ${r} * (0.008333333333333333 + ${r} * 0.001388888888888889)))))`,
    'ep',
  );
  // 2^n as 2^h · 2^(n-h) so both factors stay in the table and overflow or underflow only when e^x does.
  const h = src.let(`Math.floor(${n} * 0.5)`, 'eh');
  return src.let(`${p} * this.constants.pow2[${h} + 75] * this.constants.pow2[${n} - ${h} + 75]`, 'ev');
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
 * Code for one element-wise op. `args` are float32 expressions (comparisons and `where` conditions are 0/1);
 * `consts` holds the numbers each argument position had when it was a number (for pow's exponent);
 * `attrs` carries op options (alpha, clamp bounds).
 */
export function ewCode(
  src: KernelSource,
  needs: MathNeeds,
  op: EwOp,
  args: readonly string[],
  consts: readonly (number | undefined)[],
  attrs: Readonly<Record<string, number>> = {},
): string {
  const [a, b, c] = args as [string, string, string];
  switch (op) {
    case 'add':
      return attrs.alpha !== undefined && attrs.alpha !== 1 ? `(${a} + ${floatLit(attrs.alpha)} * ${b})` : `(${a} + ${b})`;
    case 'sub':
      return attrs.alpha !== undefined && attrs.alpha !== 1 ? `(${a} - ${floatLit(attrs.alpha)} * ${b})` : `(${a} - ${b})`;
    case 'mul':
      return `(${a} * ${b})`;
    case 'div':
      return `(${a} / ${b})`;
    case 'pow':
      return consts[1] !== undefined ? powCode(src, a, consts[1]) : `Math.pow(${a}, ${b})`;
    case 'neg':
      return `(-${a})`;
    case 'exp':
      return expCode(src, needs, a);
    case 'log':
      return `Math.log(${a})`;
    case 'sqrt':
      return `Math.sqrt(${a})`;
    case 'rsqrt':
      return `(1.0 / Math.sqrt(${a}))`;
    case 'abs':
      return `Math.abs(${a})`;
    case 'tanh':
      return tanhCode(src, needs, src.let(a, 'x'));
    case 'sigmoid':
      return `(1.0 / (1.0 + ${expCode(src, needs, `-${src.let(a, 'x')}`)}))`;
    case 'relu': {
      const v = src.let(a, 'x');
      return `(${v} > 0.0 ? ${v} : 0.0)`;
    }
    case 'gelu': {
      const v = src.let(a, 'x');
      return `(0.5 * ${v} * (1.0 + ${erfCode(src, needs, `${v} * ${floatLit(Math.SQRT1_2)}`)}))`;
    }
    case 'geluTanh': {
      const v = src.let(a, 'x');
      const inner = `${floatLit(Math.sqrt(2 / Math.PI))} * (${v} + 0.044715 * ${v} * ${v} * ${v})`;
      return `(0.5 * ${v} * (1.0 + ${tanhCode(src, needs, src.let(inner, 'x'))}))`;
    }
    case 'clamp': {
      const v = src.let(a, 'x');
      const lo = attrs.min;
      const hi = attrs.max;
      let e = v;
      if (hi !== undefined) e = `(${v} > ${floatLit(hi)} ? ${floatLit(hi)} : ${v})`;
      if (lo !== undefined) e = `(${v} < ${floatLit(lo)} ? ${floatLit(lo)} : ${e})`;
      return e;
    }
    case 'where':
      // a NaN condition is false, as in the eager kernel's `cond ? x : y`
      return `(${a} !== 0.0 && ${a} === ${a} ? ${b} : ${c})`;
    case 'eq':
      return `(${a} === ${b} ? 1.0 : 0.0)`;
    case 'ne':
      return `(${a} !== ${b} ? 1.0 : 0.0)`;
    case 'lt':
      return `(${a} < ${b} ? 1.0 : 0.0)`;
    case 'le':
      return `(${a} <= ${b} ? 1.0 : 0.0)`;
    case 'gt':
      return `(${a} > ${b} ? 1.0 : 0.0)`;
    case 'ge':
      return `(${a} >= ${b} ? 1.0 : 0.0)`;
    case 'identity':
      return a;
    case 'toBool':
      return `(${a} !== 0.0 ? 1.0 : 0.0)`;
    default:
      return op satisfies never;
  }
}
