import { KilnError } from '../errors.js';
import { type CodegenContext, ExprEmitter, type GeneratedKernel } from './elementwise.js';
import { accessOffset, floatLit, KernelSource, offsetExpr } from './index-map.js';
import { numelOf } from './ir.js';
import type { Group } from './partition.js';
import { broadcastAccess, permuteAccess, type Access } from './views.js';

/**
 * Source generation for reductions. One output cell per kept position; it loops over the reduced
 * positions and evaluates the group's element-wise members (the reduction's producers) at each, so
 * `sum(exp(x - max))` reads x and the max and stores nothing in between. Sums use Kahan compensation:
 * float32 accumulation of long rows otherwise drifts past the 1e-4 tolerance kiln holds kernels to,
 * while the eager runtime accumulates in float64.
 *
 * Reading an input at (kept position o, reduced position r): its layout, broadcast to the reduction's
 * input shape, is permuted to [kept…, reduced…]; the kept part's offset is computed once per cell outside
 * the loop, and the reduced part's inside (for a reduction over contiguous last dims: `base + r`).
 */
export function reduceKernel(ctx: CodegenContext, group: Group): GeneratedKernel {
  const root = ctx.ir[group.root]!;
  if (root.kind !== 'reduce') throw new KilnError(`kernels: reduceKernel got a ${root.kind} node, not a reduction`);
  const inShape = ctx.ir[root.arg]!.shape;
  const dims = root.dims;
  const kept = inShape.map((_, d) => d).filter((d) => !dims.includes(d));
  const perm = [...kept, ...dims];
  const R = numelOf(dims.map((d) => inShape[d]!));
  const outer = new KernelSource();
  const body = outer.child();
  outer.push('const o = this.thread.x;');

  const read = (_s: KernelSource, _arg: string, access: Access): string => {
    const a = permuteAccess(broadcastAccess(access, inShape), perm);
    if (a.layers.length > 1) {
      // a re-linearising view below: go through the flat index
      const j = body.let(`o * ${R} + r`, 'j');
      return accessOffset(body, j, a);
    }
    const l = a.layers[0]!;
    const k = kept.length;
    const base = outer.let(offsetExpr('o', { shape: l.shape.slice(0, k), strides: l.strides.slice(0, k), offset: l.offset }), 'b');
    const inner = offsetExpr('r', { shape: l.shape.slice(k), strides: l.strides.slice(k), offset: 0 });
    return inner === '0' ? base : base === '0' ? inner : `${base} + ${inner}`;
  };
  const em = new ExprEmitter(ctx, new Set(group.members), read);
  const v = em.emit(body, root.arg);

  const lines = [...outer.lines];
  if (root.op === 'sum') {
    lines.push(
      'let acc = 0.0;',
      'let comp = 0.0;',
      `for (let r = 0; r < ${R}; r++) {`,
      ...body.lines.map((l) => `  ${l}`),
      `  const y = ${v} - comp;`,
      '  const t = acc + y;',
      '  comp = (t - acc) - y;',
      '  acc = t;',
      '}',
    );
  } else {
    const fn = root.op === 'max' ? 'Math.max' : 'Math.min';
    lines.push(
      `let acc = ${floatLit(root.op === 'max' ? -Infinity : Infinity)};`,
      `for (let r = 0; r < ${R}; r++) {`,
      ...body.lines.map((l) => `  ${l}`),
      `  acc = ${fn}(acc, ${v});`,
      '}',
    );
  }
  const result = root.divisor !== undefined ? `acc / ${floatLit(root.divisor)}` : 'acc';
  return {
    source: `function(${em.params()}) {\n  ${lines.join('\n  ')}\n  return ${result};\n}`,
    output: [numelOf(root.shape)],
    maxLoop: R,
    constants: em.constants(),
    args: em.args,
  };
}
