import { contiguousStrides, viewStrides } from '../runtime/shape.js';
import type { Layout, ViewOp } from './ir.js';

/**
 * View ops as index maps. A kernel reads a materialised tensor through an `Access`: a stack of strided
 * layouts. The bottom one addresses the storage; each one above addresses the row-major index space of
 * the one below it. Most views just change the top layout's shape, strides and offset (as kiln's eager
 * views do); a reshape that no strides can express (of a transposed tensor, say) pushes a new layout, so
 * the kernel re-linearises the index instead of anyone copying the data.
 */
export interface Access {
  readonly layers: readonly Layout[];
}

export function topOf(a: Access): Layout {
  return a.layers[a.layers.length - 1]!;
}

function withTop(a: Access, top: Layout): Access {
  return { layers: [...a.layers.slice(0, -1), top] };
}

/** The strided layout `op` makes of `l`, or null for a reshape that strides cannot express. */
export function applyViewToLayout(l: Layout, op: ViewOp): Layout | null {
  switch (op.op) {
    case 'reshape': {
      const strides = viewStrides(l.shape, l.strides, op.shape);
      return strides ? { shape: [...op.shape], strides, offset: l.offset } : null;
    }
    case 'permute':
      return { shape: op.dims.map((d) => l.shape[d]!), strides: op.dims.map((d) => l.strides[d]!), offset: l.offset };
    case 'expand':
      return broadcastLayout(l, op.shape);
    case 'select':
      return {
        shape: l.shape.filter((_, i) => i !== op.dim),
        strides: l.strides.filter((_, i) => i !== op.dim),
        offset: l.offset + op.index * l.strides[op.dim]!,
      };
    case 'slice': {
      const shape = [...l.shape];
      const strides = [...l.strides];
      shape[op.dim] = Math.max(0, Math.ceil((op.end - op.start) / op.step));
      strides[op.dim] = l.strides[op.dim]! * op.step;
      return { shape, strides, offset: l.offset + op.start * l.strides[op.dim]! };
    }
    default:
      return op satisfies never;
  }
}

export function applyView(a: Access, op: ViewOp): Access {
  const top = topOf(a);
  const next = applyViewToLayout(top, op);
  if (next) return withTop(a, next);
  // op is a reshape of a layout no strides express: read the old index space row-major instead.
  const shape = (op as { shape: readonly number[] }).shape;
  return { layers: [...a.layers, { shape: [...shape], strides: contiguousStrides(shape), offset: 0 }] };
}

/** `l` read as if broadcast to `target` (stride 0 along new and stretched dims), as PyTorch broadcasting does. */
export function broadcastLayout(l: Layout, target: readonly number[]): Layout {
  const lead = target.length - l.shape.length;
  const strides = target.map((t, i) => {
    const d = i - lead;
    if (d < 0) return 0;
    return l.shape[d] === 1 && t !== 1 ? 0 : l.strides[d]!;
  });
  return { shape: [...target], strides, offset: l.offset };
}

export function broadcastAccess(a: Access, target: readonly number[]): Access {
  return withTop(a, broadcastLayout(topOf(a), target));
}

export function permuteAccess(a: Access, dims: readonly number[]): Access {
  return applyView(a, { op: 'permute', dims });
}

export function accessKey(a: Access): string {
  return a.layers.map((l) => `${l.shape.join('x')}/${l.strides.join(',')}@${l.offset}`).join('|');
}
