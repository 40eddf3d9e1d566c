import { IndexError, KilnError } from '../errors.js';
import type { Tensor } from '../runtime/tensor.js';
import { accessOf, type CodegenContext, type GeneratedKernel } from './elementwise.js';
import { accessOffset, KernelSource } from './index-map.js';
import { numelOf, type IRNode } from './ir.js';

/**
 * Embedding lookups: output element (r, j) is row index[r], column j of the table, with both read through
 * their index maps (a transposed table or a sliced index tensor is read in place).
 */
export function gatherKernel(ctx: CodegenContext, node: IRNode): GeneratedKernel {
  if (node.kind !== 'gather') throw new KilnError(`kernels: gatherKernel got a ${node.kind} node, not a gather`);
  const index = accessOf(ctx, node.index);
  const table = accessOf(ctx, node.table);
  const D = ctx.ir[node.table]!.shape[1]!;
  const src = new KernelSource();
  src.push('const i = this.thread.x;', `const r = Math.floor(i / ${D});`, `const j = i % ${D};`);
  const row = src.let(`a0[${accessOffset(src, 'r', index.access)}]`, 'row');
  const flat = src.let(`${row} * ${D} + j`, 'k');
  const value = src.let(`a1[${accessOffset(src, flat, table.access)}]`, 'v');
  return {
    source: `function(a0, a1) {\n  ${src.lines.join('\n  ')}\n  return ${value};\n}`,
    output: [numelOf(node.shape)],
    args: [index.base, table.base],
  };
}

/** The eager embedding's check, so a compiled lookup rejects the indices eager would (a kernel cannot throw). */
export function checkIndices(index: Tensor, rows: number): void {
  for (const v of index.data()) {
    if (v < 0 || v >= rows) throw new IndexError(`embedding: index ${v} is out of range for an embedding table of ${rows} rows`);
  }
}
