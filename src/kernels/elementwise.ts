import type { KernelSpec } from './cache.js';
import { accessOffset, floatLit, KernelSource } from './index-map.js';
import { isIR, numelOf, type IRNode, type Layout } from './ir.js';
import { POW2_TABLE, primCode, type MathNeeds } from './kmath.js';
import type { Group } from './partition.js';
import { applyView, broadcastAccess, accessKey, type Access } from './views.js';

/**
 * Source generation for element-wise kernels. A kernel computes its group's root over a flat output of the
 * root's shape: each member is one `const` (so a value used twice is computed once per element), and each
 * value from outside the group is read from its materialised tensor through an index map that folds in the
 * views between them and the broadcast to the output shape.
 */

/** What a generated kernel needs at run time besides its source. */
export interface GeneratedKernel extends KernelSpec {
  /** The materialised IR values passed as the kernel's arguments, in order (their storage arrays). */
  readonly args: readonly number[];
}

export interface CodegenContext {
  readonly ir: readonly IRNode[];
  /** The layout each materialised IR value will have at run time. */
  layoutOf(id: number): Layout;
  /**
   * Round each IR value to float32 in the kernel (`Math.fround`), for modes whose kernels compute in float64
   * (cpu): else a value a kernel computes inside and the same value computed in another kernel and stored as
   * float32 compare unequal (`a.le(b.max())` for two equal nodes a and b fails). webasm and GL compute in float32.
   */
  readonly roundEach?: boolean;
}

/** The materialised value under a chain of views, and the index map through them. */
export function accessOf(ctx: CodegenContext, id: number): { base: number; access: Access } {
  const n = ctx.ir[id]!;
  if (n.kind === 'view') {
    const inner = accessOf(ctx, n.arg);
    return { base: inner.base, access: applyView(inner.access, n.view) };
  }
  return { base: id, access: { layers: [ctx.layoutOf(id)] } };
}

/** Reads a value's element at the current iteration point, given the access (already shaped like the value). */
export type LeafReader = (src: KernelSource, arg: string, access: Access) => string;

/** Emits a group's element-wise members as kernel code, reading everything else through `read`. */
export class ExprEmitter {
  readonly args: number[] = [];
  readonly needs: MathNeeds = { pow2: false };
  private readonly memo = new Map<number, string>();
  private readonly reads = new Map<string, string>();

  constructor(
    private readonly ctx: CodegenContext,
    private readonly members: ReadonlySet<number>,
    private readonly read: LeafReader,
  ) {}

  emit(src: KernelSource, id: number): string {
    const done = this.memo.get(id);
    if (done !== undefined) return done;
    const n = this.ctx.ir[id]!;
    let v: string;
    if (n.kind === 'ew' && this.members.has(id)) {
      const args = n.args.map((a) => (isIR(a) ? this.emit(src, a.ir) : floatLit(a.value)));
      const consts = n.args.map((a) => (isIR(a) ? undefined : a.value));
      const code = primCode(src, this.needs, n.op, args, consts);
      v = src.let(this.ctx.roundEach ? `Math.fround(${code})` : code, 'v');
    } else {
      const { base, access } = accessOf(this.ctx, id);
      let k = this.args.indexOf(base);
      if (k < 0) k = this.args.push(base) - 1;
      const key = `${k}:${accessKey(access)}`;
      v = this.reads.get(key) ?? src.let(`a${k}[${this.read(src, `a${k}`, access)}]`, 'r');
      this.reads.set(key, v);
    }
    this.memo.set(id, v);
    return v;
  }

  constants(): Record<string, Float32Array> {
    return this.needs.pow2 ? { pow2: POW2_TABLE } : {};
  }

  params(): string {
    return this.args.map((_, k) => `a${k}`).join(', ');
  }
}

/** The kernel computing an element-wise group. */
export function elementwiseKernel(ctx: CodegenContext, group: Group): GeneratedKernel {
  const root = ctx.ir[group.root]!;
  const shape = root.shape;
  const src = new KernelSource();
  src.push('const i = this.thread.x;');
  const em = new ExprEmitter(ctx, new Set(group.members), (s, _arg, access) => accessOffset(s, 'i', broadcastAccess(access, shape)));
  const v = em.emit(src, group.root);
  return {
    source: `function(${em.params()}) {\n  ${src.lines.join('\n  ')}\n  return ${v};\n}`,
    output: [numelOf(shape)],
    constants: em.constants(),
    args: em.args,
  };
}
