import { DTypeError, IndexError, ShapeError, ValueError } from '../../errors.js';
import { promote, type DType } from '../dtype.js';
import { normDim } from './dims.js';
import type { SizeArith } from '../size-arith.js';
import { constantOf, fmtSizes, isMeta, meta, product, type ShapeRule, type TensorMeta } from './meta.js';
import {
  catSizes,
  checkT,
  expandSizes,
  flattenDims,
  narrowStart,
  permuteDims,
  sameSizes,
  selectIndex,
  sliceBounds,
  splitSizes,
  squeezeKeeps,
  stackSizes,
  unsqueezeSizes,
  viewSizes,
} from './sizes.js';

/** Shape rules of the shape ops (src/runtime/ops/view.ts). */

type M<S> = TensorMeta<S>;

function sliceMeta<S>(A: SizeArith<S>, x: M<S>, dim: number, start: S | number | null, end: S | number | null, step: number): M<S> {
  const d = normDim('slice', dim, x.shape.length);
  const { length } = sliceBounds(A, x.shape[d]!, start, end, step);
  const shape = [...x.shape];
  shape[d] = length;
  return meta(shape, x.dtype);
}

function selectMeta<S>(A: SizeArith<S>, x: M<S>, dim: number, index: number): M<S> {
  const { d } = selectIndex(A, x.shape, dim, index);
  return meta(
    x.shape.filter((_, k) => k !== d),
    x.dtype,
  );
}

function unsqueezeMeta<S>(A: SizeArith<S>, x: M<S>, dim: number): M<S> {
  return meta(unsqueezeSizes(A, x.shape, dim).shape, x.dtype);
}

function narrowMeta<S>(A: SizeArith<S>, x: M<S>, dim: number, start: number, length: S | number): M<S> {
  const d = normDim('narrow', dim, x.shape.length);
  const s = narrowStart(A, x.shape, d, start, length);
  return sliceMeta(A, x, d, s, A.add(s, typeof length === 'number' ? A.lit(length) : length), 1);
}

/** The region a *_scatter op writes must have src's shape and dtype exactly (PyTorch's rule). */
export function checkScatterSrc<S>(A: SizeArith<S>, op: string, x: M<S>, src: M<S>, region: M<S>): M<S> {
  if (!sameSizes(A, region.shape, src.shape)) {
    throw new ShapeError(
      `${op}: expected src to have the size of the slice of input, ${fmtSizes(region.shape)}, got ${fmtSizes(src.shape)}`,
    );
  }
  if (src.dtype !== x.dtype) throw new DTypeError(`${op}: src (${src.dtype}) must have the dtype of input (${x.dtype})`);
  return meta(x.shape, x.dtype);
}

/** asStrided's argument checks (its reach into the storage is checked when it runs). */
export function checkAsStrided<S>(
  A: SizeArith<S>,
  sizes: readonly (S | number)[],
  strides: readonly (S | number)[],
  storageOffset: S | number,
): void {
  if (sizes.length !== strides.length) {
    throw new ShapeError(`asStrided: size ${fmtSizes(sizes)} and stride ${fmtSizes(strides)} must have the same length`);
  }
  const negative = (v: S | number) => (constantOf(A, v) ?? 0) < 0;
  if (sizes.some(negative) || strides.some(negative) || negative(storageOffset)) {
    throw new ValueError(
      `asStrided: sizes, strides and the storage offset must not be negative, got ${fmtSizes(sizes)}, ${fmtSizes(strides)}, ${String(storageOffset)}`,
    );
  }
}

export function checkIndexDType(op: string, dtype: DType): void {
  if (dtype !== 'int32') throw new DTypeError(`${op}: index must be an int32 tensor, got ${dtype}`);
}

/** gather's checks (index values are checked when it runs): index has the input's rank and fits it outside `dim`. */
export function checkGather<S>(A: SizeArith<S>, x: M<S>, dim: number, index: M<S>): number {
  checkIndexDType('gather', index.dtype);
  const d = normDim('gather', dim, x.shape.length);
  if (index.shape.length !== x.shape.length) {
    throw new ShapeError(`gather: index ${fmtSizes(index.shape)} must have as many dims as the input ${fmtSizes(x.shape)}`);
  }
  index.shape.forEach((s, k) => {
    if (k !== d && A.lt(x.shape[k]!, s)) {
      throw new ShapeError(`gather: index ${fmtSizes(index.shape)} is larger than the input ${fmtSizes(x.shape)} at dim ${k}`);
    }
  });
  return d;
}

/** indexSelect's checks: a 0-d or 1-D int32 index; returns the wrapped dim. */
export function checkIndexSelect(x: M<unknown>, dim: number, index: M<unknown>): number {
  checkIndexDType('indexSelect', index.dtype);
  if (index.shape.length > 1) throw new ShapeError(`indexSelect: index must be 1-D, got shape ${fmtSizes(index.shape)}`);
  return normDim('indexSelect', dim, x.shape.length);
}

function indexSelectMeta<S>(A: SizeArith<S>, x: M<S>, dim: number, index: M<S>): M<S> {
  const d = checkIndexSelect(x, dim, index);
  const shape = [...x.shape];
  shape[d] = index.shape.length === 0 ? A.lit(1) : index.shape[0]!;
  return meta(shape, x.dtype);
}

export function parseSlice(spec: string): { start: number | null; end: number | null; step: number } {
  const parts = spec.split(':');
  const num = (s: string | undefined) => (s === undefined || s.trim() === '' ? null : Number(s));
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p.trim() !== '' && !/^\s*-?\d+\s*$/.test(p))) {
    throw new IndexError(`index: '${spec}' is not a slice (expected 'start:end' or 'start:end:step')`);
  }
  return { start: num(parts[0]), end: num(parts[1]), step: num(parts[2]) ?? 1 };
}

/** The index op's checks of its specs before it walks them: one ellipsis at most, no more indices than dims. */
export function checkIndexSpecs(ndim: number, specs: readonly unknown[]): number {
  const consuming = specs.filter((s) => s !== null && s !== '...').length;
  if (specs.filter((s) => s === '...').length > 1) throw new IndexError(`index: an index can only have a single ellipsis ('...')`);
  if (consuming > ndim) throw new IndexError(`index: too many indices for a tensor of dimension ${ndim} (got ${consuming})`);
  return consuming;
}

function indexMeta<S>(A: SizeArith<S>, x: M<S>, slices: unknown): M<S> {
  const specs = Array.isArray(slices) ? (slices as readonly unknown[]) : [slices];
  const consuming = checkIndexSpecs(x.shape.length, specs);
  let out = x;
  let dim = 0;
  let tensorIndices = 0;
  for (const spec of specs) {
    if (spec === '...') dim += x.shape.length - consuming;
    else if (spec === null) out = unsqueezeMeta(A, out, dim++);
    else if (typeof spec === 'number') {
      if (!Number.isInteger(spec)) throw new IndexError(`index: ${spec} is not an integer index`);
      out = selectMeta(A, out, dim, spec);
    } else if (typeof spec === 'string') {
      const { start, end, step } = parseSlice(spec);
      out = sliceMeta(A, out, dim++, start, end, step);
    } else if (isMeta(spec)) {
      if (++tensorIndices > 1) throw new IndexError('index: only one tensor index is supported');
      const idx = spec as M<S>;
      if (idx.dtype === 'bool') {
        if (idx.shape.length !== 1 || !A.eq(idx.shape[0]!, out.shape[dim]!)) {
          throw new IndexError(`index: the mask ${fmtSizes(idx.shape)} does not match dim ${dim} of size ${out.shape[dim]}`);
        }
        // PyTorch gives an unbacked size here; SizeArith has none, so refuse rather than guess
        throw new ShapeError('index: a boolean mask selects a data-dependent number of elements; its output size has no shape rule');
      }
      out = indexSelectMeta(A, out, dim++, idx);
    } else if (typeof spec === 'object') {
      const s = spec as { start?: number; end?: number; step?: number };
      out = sliceMeta(A, out, dim++, s.start ?? null, s.end ?? null, s.step ?? 1);
    } else {
      throw new IndexError(`index: unsupported index ${String(spec)}`);
    }
  }
  return out;
}

export const VIEW_RULES = {
  view: (A, [x, shape]) => {
    const t = x as M<never>;
    return meta(viewSizes(A, 'view', t.shape, shape as readonly never[]), t.dtype);
  },
  reshape: (A, [x, shape]) => {
    const t = x as M<never>;
    return meta(viewSizes(A, 'reshape', t.shape, shape as readonly never[]), t.dtype);
  },
  flatten: (A, [x, startDim, endDim]) => {
    const t = x as M<never>;
    if (t.shape.length === 0) return meta([A.lit(1)], t.dtype);
    const [s, e] = flattenDims(t.shape.length, startDim as number, endDim as number);
    return meta([...t.shape.slice(0, s), product(A, t.shape.slice(s, e + 1)), ...t.shape.slice(e + 1)], t.dtype);
  },
  permute: (_A, [x, dims]) => {
    const t = x as M<never>;
    const d = permuteDims(t.shape.length, t.shape, dims as number[]);
    return meta(
      d.map((v) => t.shape[v]!),
      t.dtype,
    );
  },
  transpose: (_A, [x, dim0, dim1]) => {
    const t = x as M<never>;
    if (t.shape.length === 0) return meta([], t.dtype);
    const a = normDim('transpose', dim0 as number, t.shape.length);
    const b = normDim('transpose', dim1 as number, t.shape.length);
    const shape = [...t.shape];
    [shape[a], shape[b]] = [shape[b]!, shape[a]!];
    return meta(shape, t.dtype);
  },
  t: (_A, [x]) => {
    const t = x as M<never>;
    checkT(t.shape.length);
    return meta(t.shape.length < 2 ? t.shape : [t.shape[1]!, t.shape[0]!], t.dtype);
  },
  unsqueeze: (A, [x, dim]) => unsqueezeMeta(A, x as M<never>, dim as number),
  squeeze: (A, [x, dim]) => {
    const t = x as M<never>;
    const keep = squeezeKeeps(A, t.shape, dim as number | null);
    return meta(
      t.shape.filter((_, i) => keep[i]),
      t.dtype,
    );
  },
  asStrided: (A, [x, size, stride, storageOffset]) => {
    const sizes = size as readonly never[];
    checkAsStrided(A, sizes, stride as readonly never[], storageOffset as never);
    return meta(
      sizes.map((s) => (typeof s === 'number' ? A.lit(s) : s)),
      (x as M<never>).dtype,
    );
  },
  expand: (A, [x, shape]) => {
    const t = x as M<never>;
    return meta(expandSizes(A, t.shape, shape as readonly never[]).shape, t.dtype);
  },
  slice: (A, [x, dim, start, end, step]) => sliceMeta(A, x as M<never>, dim as number, start as never, end as never, step as number),
  narrow: (A, [x, dim, start, length]) => narrowMeta(A, x as M<never>, dim as number, start as number, length as never),
  split: (A, [x, splitSize, dim]) => {
    const t = x as M<never>;
    const d = normDim('split', dim as number, t.shape.length);
    return splitSizes(A, t.shape, d, splitSize as number | readonly never[]).map((k) => {
      const shape: unknown[] = [...t.shape];
      shape[d] = k;
      return meta(shape as never[], t.dtype);
    });
  },
  unbind: (A, [x, dim]) => {
    const t = x as M<never>;
    if (t.shape.length === 0) throw new IndexError('unbind: dimension specified as 0 but tensor has no dimensions');
    const d = normDim('unbind', dim as number, t.shape.length);
    // one output per entry: the count is the size's value, guarded (PyTorch specialises the size the same way)
    const n = A.hint(t.shape[d]!);
    A.eq(t.shape[d]!, A.lit(n));
    const out = meta(
      t.shape.filter((_, k) => k !== d),
      t.dtype,
    );
    return Array.from({ length: n }, () => out);
  },
  select: (A, [x, dim, index]) => selectMeta(A, x as M<never>, dim as number, index as number),
  sliceScatter: (A, [x, src, dim, start, end, step]) => {
    const t = x as M<never>;
    if (t.shape.length === 0) throw new IndexError('sliceScatter: cannot slice a 0-d tensor');
    return checkScatterSrc(
      A,
      'sliceScatter',
      t,
      src as M<never>,
      sliceMeta(A, t, dim as number, start as never, end as never, step as number),
    );
  },
  selectScatter: (A, [x, src, dim, index]) => {
    const t = x as M<never>;
    return checkScatterSrc(A, 'selectScatter', t, src as M<never>, selectMeta(A, t, dim as number, index as number));
  },
  gather: (A, [x, dim, index]) => {
    const t = x as M<never>;
    checkGather(A, t, dim as number, index as M<never>);
    return meta((index as M<never>).shape, t.dtype);
  },
  indexSelect: (A, [x, dim, index]) => indexSelectMeta(A, x as M<never>, dim as number, index as M<never>),
  cat: (A, [tensors, dim]) => {
    const ts = tensors as readonly M<never>[];
    const { shape } = catSizes(
      A,
      ts.map((t) => t.shape),
      dim as number,
    );
    return meta(shape, ts.map((t) => t.dtype).reduce(promote));
  },
  stack: (A, [tensors, dim]) => {
    const ts = tensors as readonly M<never>[];
    const shape = stackSizes(
      A,
      ts.map((t) => t.shape),
      dim as number,
    );
    return meta(shape, ts.map((t) => t.dtype).reduce(promote));
  },
  index: (A, [x, slices]) => indexMeta(A, x as M<never>, slices),
} satisfies Record<string, ShapeRule>;
