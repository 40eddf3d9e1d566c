import type { Layout } from './ir.js';
import type { Access } from './views.js';

/**
 * Index arithmetic for generated kernels. Kernels run over a flat output; every input is read at the storage
 * offset its layout gives for the current element. Dims of size 1 are dropped and neighbouring dims that
 * are contiguous with each other are merged first, so a plain contiguous read is just `a[i]` and a bias
 * broadcast over rows is `a[i % 512]`.
 *
 * gpu.js computes `/` and `%` in float32, exact for integers below 2^24; plans keep every tensor a kernel
 * touches under that size (see MAX_KERNEL_ELEMENTS).
 */

export const MAX_KERNEL_ELEMENTS = 1 << 24;

/** Accumulates a kernel body: statements, and fresh local names. */
export class KernelSource {
  readonly lines: string[] = [];

  /** `names` is shared with the source this one is nested in (a loop body), so locals never clash. */
  constructor(private readonly names: { next: number } = { next: 0 }) {}

  /** A source for a nested block (a loop body) whose locals cannot clash with this one's. */
  child(): KernelSource {
    return new KernelSource(this.names);
  }

  fresh(prefix = 't'): string {
    return `${prefix}${this.names.next++}`;
  }

  /** Declare `expr` as a new local and return its name (a bare name or literal is returned as is). */
  let(expr: string, prefix = 't'): string {
    if (/^[A-Za-z_]\w*$/.test(expr) || /^-?\d+(\.\d+)?$/.test(expr)) return expr;
    const name = this.fresh(prefix);
    this.lines.push(`const ${name} = ${expr};`);
    return name;
  }

  push(...lines: string[]): void {
    this.lines.push(...lines);
  }
}

interface Run {
  size: number;
  stride: number;
}

/** The layout's dims without size-1 dims, with dims merged where the outer one steps over the inner one exactly. */
export function coalesce(l: Layout): Run[] {
  const out: Run[] = [];
  l.shape.forEach((size, d) => {
    if (size === 1) return;
    const stride = l.strides[d]!;
    const last = out[out.length - 1];
    if (last && last.stride === stride * size) {
      last.size *= size;
      last.stride = stride;
    } else out.push({ size, stride });
  });
  return out;
}

/** The offset (under `l`) of the element whose row-major index over `l.shape` is `idx`. */
export function offsetExpr(idx: string, l: Layout): string {
  const runs = coalesce(l);
  const terms: string[] = [];
  let inner = 1;
  for (let g = runs.length - 1; g >= 0; g--) {
    const { size, stride } = runs[g]!;
    if (stride !== 0) {
      let coord = inner === 1 ? idx : `Math.floor(${idx} / ${inner})`;
      if (g > 0) coord = `(${coord} % ${size})`;
      terms.push(stride === 1 ? coord : `${coord} * ${stride}`);
    }
    inner *= size;
  }
  if (l.offset !== 0 || terms.length === 0) terms.push(String(l.offset));
  return terms.length === 1 ? terms[0]! : `(${terms.reverse().join(' + ')})`;
}

/** The storage offset of row-major element `idx` of an access's top layout, through every layer. */
export function accessOffset(src: KernelSource, idx: string, a: Access): string {
  let e = idx;
  for (let k = a.layers.length - 1; k >= 0; k--) {
    e = offsetExpr(e, a.layers[k]!);
    if (k > 0) e = src.let(e, 'ix');
  }
  return e;
}

/** A number as a float literal gpu.js parses as Float (integers get a `.0`). */
export function floatLit(v: number): string {
  if (Number.isNaN(v)) return '(0.0 / 0.0)';
  if (v === Infinity) return '(1.0 / 0.0)';
  if (v === -Infinity) return '(-1.0 / 0.0)';
  const f = Math.fround(v);
  if (Number.isInteger(f) && Math.abs(f) < 1e15) return `${f}.0`;
  const s = String(f);
  return s.includes('.') || s.includes('e') ? s : `${s}.0`;
}
