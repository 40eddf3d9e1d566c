/**
 * Buffer planning by liveness. The GEMM writes its result into a buffer it is given, so each GEMM result
 * that only kernels read gets a slot: a Float32Array allocated on the plan's first run and reused on every
 * later call, and shared between results whose lifetimes do not overlap (a slot is free again after the
 * step that last reads its value). Results that escape (graph outputs, values eager nodes read, which might
 * keep a view of them) always get fresh arrays. gpu.js kernels hand back fresh arrays of their own (they
 * copy their output out of wasm memory), so only GEMM results are planned.
 */

export interface StepUse {
  /** The IR value the step defines, or -1. */
  readonly defines: number;
  readonly reads: readonly number[];
  /** The step's result is written by the GEMM into a buffer it is given. */
  readonly gemmOutput: boolean;
}

export interface SlotPlan {
  /** The slot of each planned value. */
  readonly slotOf: ReadonlyMap<number, number>;
  /** Each slot's size in elements (the largest value it holds). */
  readonly sizes: readonly number[];
}

export function planSlots(steps: readonly StepUse[], sizeOf: (id: number) => number, escapes: (id: number) => boolean): SlotPlan {
  const lastRead = new Map<number, number>();
  steps.forEach((s, i) => s.reads.forEach((r) => lastRead.set(r, i)));
  const slotOf = new Map<number, number>();
  const sizes: number[] = [];
  const free: number[] = [];
  steps.forEach((s, i) => {
    if (s.gemmOutput && s.defines >= 0 && !escapes(s.defines) && lastRead.has(s.defines)) {
      const need = sizeOf(s.defines);
      // best fit: the smallest free slot that is big enough, else grow the largest free one, else a new slot
      let pick = -1;
      for (const f of free) if (sizes[f]! >= need && (pick < 0 || sizes[f]! < sizes[pick]!)) pick = f;
      if (pick < 0 && free.length > 0) pick = free.reduce((a, b) => (sizes[a]! >= sizes[b]! ? a : b));
      if (pick >= 0) free.splice(free.indexOf(pick), 1);
      else pick = sizes.push(0) - 1;
      sizes[pick] = Math.max(sizes[pick]!, need);
      slotOf.set(s.defines, pick);
    }
    // values whose last reader is this step free their slots for the steps after it
    for (const r of new Set(s.reads)) {
      const slot = slotOf.get(r);
      if (slot !== undefined && lastRead.get(r) === i) free.push(slot);
    }
  });
  return { slotOf, sizes };
}
