import { IndexError, ShapeError, ValueError } from '../../errors.js';
import type { SizeArith } from '../size-arith.js';
import { normDim } from './dims.js';
import { checkNumelOf, constantOf, fmtSizes, isOne, product, sizeOf } from './meta.js';

/**
 * The shape arithmetic of the op table, written once against SizeArith: eager ops call these with
 * NUMBER_ARITH (their own checks), the shape rules with whatever arithmetic export traces with. Sizes are
 * compared only through `A.eq/lt/le`, so under export each decision becomes a guard. Dims (which axis) are
 * plain numbers; sizes are S.
 */

/** PyTorch broadcasting: align trailing dims; each pair must be equal or one of them 1. */
export function broadcastSizes<S>(A: SizeArith<S>, op: string, a: readonly S[], b: readonly S[]): S[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<S>(n);
  for (let i = 0; i < n; i++) {
    const ia = a.length - n + i;
    const ib = b.length - n + i;
    // a missing leading dim is 1: the other side's size, deciding nothing
    if (ia < 0) out[i] = b[ib]!;
    else if (ib < 0) out[i] = a[ia]!;
    else {
      const da = a[ia]!;
      const db = b[ib]!;
      if (isOne(A, da)) out[i] = db;
      else if (isOne(A, db) || A.eq(da, db)) out[i] = da;
      else throw new ShapeError(`${op}: shapes ${fmtSizes(a)} and ${fmtSizes(b)} cannot be broadcast together (dim ${i}: ${da} vs ${db})`);
    }
  }
  checkNumelOf(A, op, out);
  return out;
}

/** Whether `from` broadcasts to exactly `to` (trailing dims equal or 1, no more dims than `to`). */
export function broadcastsToSizes<S>(A: SizeArith<S>, from: readonly S[], to: readonly S[]): boolean {
  if (from.length > to.length) return false;
  for (let i = 1; i <= from.length; i++) {
    const f = from[from.length - i]!;
    if (!isOne(A, f) && !A.eq(f, to[to.length - i]!)) return false;
  }
  return true;
}

/** Whether two shapes are the same (rank, then every size through A.eq). */
export function sameSizes<S>(A: SizeArith<S>, a: readonly S[], b: readonly S[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!A.eq(a[i]!, b[i]!)) return false;
  return true;
}

/**
 * Resolve a single -1 in a target shape against the input's element count (reshape/view). Target sizes may
 * be symbolic; a -1 beside symbolic sizes is solved by cancelling them against the input's own sizes.
 */
export function viewSizes<S>(A: SizeArith<S>, op: string, from: readonly S[], shape: readonly (S | number)[]): S[] {
  let unknown = -1;
  let known = A.lit(1);
  const out = new Array<S>(shape.length);
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i]!;
    const c = constantOf(A, d);
    if (c === -1) {
      if (unknown >= 0) throw new ShapeError(`${op}: only one dimension can be -1, got ${fmtSizes(shape)}`);
      unknown = i;
      continue;
    }
    if (c !== undefined && (!Number.isInteger(c) || c < 0))
      throw new ShapeError(`${op}: invalid size ${String(d)} in shape ${fmtSizes(shape)}`);
    out[i] = sizeOf(A, d);
    known = A.mul(known, out[i]!);
  }
  const total = product(A, from);
  if (unknown < 0) {
    if (!A.eq(known, total)) throw invalidView(op, shape, total, from);
    return out;
  }
  let rest = total;
  let k = A.constant(known);
  if (k === undefined) [rest, k] = cancelFactors(A, op, from, shape, unknown);
  if (k === 0 || !A.eq(A.mod(rest, k), A.lit(0))) throw invalidView(op, shape, total, from);
  out[unknown] = A.floorDiv(rest, k);
  return out;
}

function invalidView(op: string, shape: readonly unknown[], total: unknown, from: readonly unknown[]): ShapeError {
  return new ShapeError(`${op}: shape ${fmtSizes(shape)} is invalid for input of size ${String(total)} (shape ${fmtSizes(from)})`);
}

/**
 * For a -1 beside symbolic target sizes: the input's sizes left after cancelling each symbolic target size
 * against one of them that is the same size times a constant, either way round (`[2*s0, 3]` viewed as
 * `[s0, -1]` leaves `[2, 3]`; `[s0, 6]` as `[2*s0, -1]` leaves `[6]` over 2), and the product of the constant
 * target sizes with the constant divisors. The multiple is read from the hints and checked to hold at every
 * size (`A.constant` of the difference), so no guard is recorded.
 */
function cancelFactors<S>(A: SizeArith<S>, op: string, from: readonly S[], shape: readonly (S | number)[], unknown: number): [S, number] {
  const rest = [...from];
  let k = 1;
  /** `c` where `a` is `c·b` at every size (c a positive integer), else undefined (also for sizes with no hint: data-dependent). */
  const multiple = (a: S, b: S): number | undefined => {
    const c = ratioOfHints(A, a, b);
    return c !== undefined && c > 0 && A.constant(A.sub(a, A.mul(A.lit(c), b))) === 0 ? c : undefined;
  };
  shape.forEach((d, i) => {
    if (i === unknown) return;
    const c = constantOf(A, d);
    if (c !== undefined) {
      k *= c;
      return;
    }
    let at = rest.findIndex((f) => A.constant(A.sub(f, d as S)) === 0);
    if (at >= 0) {
      rest.splice(at, 1);
      return;
    }
    at = rest.findIndex((f) => multiple(f, d as S) !== undefined);
    if (at >= 0) {
      rest[at] = A.lit(multiple(rest[at]!, d as S)!);
      return;
    }
    at = rest.findIndex((f) => multiple(d as S, f) !== undefined);
    if (at >= 0) {
      k *= multiple(d as S, rest[at]!)!;
      rest.splice(at, 1);
      return;
    }
    throw new ShapeError(
      `${op}: cannot infer the -1 in ${fmtSizes(shape)} for input ${fmtSizes(from)}: the size ${String(d)} is none of the input's sizes nor a constant multiple or divisor of one`,
    );
  });
  return [product(A, rest), k];
}

/** `a / b` on the example values when that is an integer; undefined for a fraction, or a size with no example value. */
export function ratioOfHints<S>(A: SizeArith<S>, a: S, b: S): number | undefined {
  try {
    const hb = A.hint(b);
    const c = hb === 0 ? undefined : A.hint(a) / hb;
    return c !== undefined && Number.isInteger(c) ? c : undefined;
  } catch {
    return undefined; // an unbacked (data-dependent) size has no hint
  }
}

/** `shape` with the `dims` removed, or kept as 1 (reductions). */
export function reducedSizes<S>(A: SizeArith<S>, shape: readonly S[], dims: readonly number[], keepdim: boolean): S[] {
  const out: S[] = [];
  shape.forEach((s, d) => {
    if (!dims.includes(d)) out.push(s);
    else if (keepdim) out.push(A.lit(1));
  });
  return out;
}

/** torch.matmul's operand checks and result shape (1-D operands, broadcast batch dims); dtypes checked by the caller. */
export function matmulSizes<S>(A: SizeArith<S>, a: readonly S[], b: readonly S[]): S[] {
  if (a.length === 0 || b.length === 0) {
    throw new ShapeError(`matmul: both arguments need at least 1 dim, got shapes ${fmtSizes(a)} and ${fmtSizes(b)}`);
  }
  const k1 = a[a.length - 1]!;
  const k2 = b[b.length === 1 ? 0 : b.length - 2]!;
  if (!A.eq(k1, k2)) throw new ShapeError(`matmul: shapes ${fmtSizes(a)} and ${fmtSizes(b)} cannot be multiplied (${k1} != ${k2})`);
  const rows = a.length === 1 ? [] : [a[a.length - 2]!];
  const cols = b.length === 1 ? [] : [b[b.length - 1]!];
  if (a.length <= 2 && b.length <= 2) {
    checkNumelOf(A, 'matmul', [rows[0] ?? A.lit(1), cols[0] ?? A.lit(1)]);
    return [...rows, ...cols];
  }
  const batchA = a.slice(0, -2);
  const batchB = b.slice(0, -2);
  const batch = batchA.length >= batchB.length ? [...batchA] : [...batchB];
  for (let i = 1; i <= Math.min(batchA.length, batchB.length); i++) {
    const da = batchA[batchA.length - i]!;
    const db = batchB[batchB.length - i]!;
    if (isOne(A, da)) batch[batch.length - i] = db;
    else if (isOne(A, db) || A.eq(da, db)) batch[batch.length - i] = da;
    else {
      throw new ShapeError(
        `matmul: shapes ${fmtSizes(a)} and ${fmtSizes(b)} cannot be multiplied: batch dims ${fmtSizes(batchA)} and ${fmtSizes(batchB)} ` +
          `do not broadcast (${da} vs ${db})`,
      );
    }
  }
  checkNumelOf(A, 'matmul', [...batch, rows[0] ?? A.lit(1), cols[0] ?? A.lit(1)]);
  return [...batch, ...rows, ...cols];
}

/** torch.cat: every tensor has the first's rank and sizes outside `dim`; the result adds up `dim`. */
export function catSizes<S>(A: SizeArith<S>, shapes: readonly (readonly S[])[], dim: number): { d: number; shape: S[] } {
  if (shapes.length === 0) throw new ValueError('cat: expected a non-empty array of tensors');
  const first = shapes[0]!;
  const d = normDim('cat', dim, first.length);
  shapes.forEach((s, i) => {
    const ok = i === 0 || (s.length === first.length && s.every((n, k) => k === d || A.eq(n, first[k]!)));
    if (!ok) {
      throw new ShapeError(`cat: tensor ${i} has shape ${fmtSizes(s)}, which does not match tensor 0 ${fmtSizes(first)} outside dim ${d}`);
    }
  });
  const shape = [...first];
  if (first.length > 0) shape[d] = shapes.slice(1).reduce<S>((acc, s) => A.add(acc, s[d]!), first[d]!);
  return { d, shape };
}

/** torch.stack: tensors of one shape, a new dim of their count at `dim`. */
export function stackSizes<S>(A: SizeArith<S>, shapes: readonly (readonly S[])[], dim: number): S[] {
  if (shapes.length === 0) throw new ValueError('stack: expected a non-empty array of tensors');
  const first = shapes[0]!;
  shapes.forEach((s, i) => {
    if (i > 0 && !sameSizes(A, s, first)) {
      throw new ShapeError(
        `stack: expects each tensor to be equal size, but got ${fmtSizes(first)} at entry 0 and ${fmtSizes(s)} at entry ${i}`,
      );
    }
  });
  const d = normDim('stack', dim, first.length + 1);
  const out = [...first];
  out.splice(d, 0, A.lit(shapes.length));
  return out;
}

/**
 * Output positions of a sliding window (convolution, pooling) along one dim of `size`: kernel k, stride s,
 * padding p each side, dilation d, PyTorch's ceil mode (a last window must start inside the input or its
 * left padding).
 */
export function windowSize<S>(A: SizeArith<S>, size: S, k: number, s: number, p: number, d: number, ceil: boolean): S {
  const span = A.add(size, A.lit(2 * p - d * (k - 1) - 1));
  let out = A.add(A.floorDiv(ceil ? A.add(span, A.lit(s - 1)) : span, s), A.lit(1));
  if (ceil && A.le(A.add(size, A.lit(p)), A.mul(A.sub(out, A.lit(1)), A.lit(s)))) out = A.sub(out, A.lit(1));
  return out;
}

export function unsqueezeSizes<S>(A: SizeArith<S>, shape: readonly S[], dim: number): { d: number; shape: S[] } {
  const d = normDim('unsqueeze', dim, shape.length + 1);
  const out = [...shape];
  out.splice(d, 0, A.lit(1));
  return { d, shape: out };
}

/** Which dims squeeze keeps: all but the size-1 ones (or only `dim`, if it is size 1). */
export function squeezeKeeps<S>(A: SizeArith<S>, shape: readonly S[], dim: number | null): boolean[] {
  const only = dim === null ? null : shape.length === 0 ? 0 : normDim('squeeze', dim, shape.length);
  return shape.map((s, i) => !((only === null || only === i) && isOne(A, s)));
}

/** permute's dims checked and wrapped. */
export function permuteDims(ndim: number, shapeForMessage: readonly unknown[], dims: readonly number[]): number[] {
  if (dims.length !== ndim) {
    throw new ShapeError(`permute: dims ${fmtSizes(dims)} must have one entry per dim of the input ${fmtSizes(shapeForMessage)}`);
  }
  const d = dims.map((v) => normDim('permute', v, ndim));
  if (new Set(d).size !== d.length) throw new ValueError(`permute: dims ${fmtSizes(dims)} repeat a dim`);
  return d;
}

/** flatten's [start, end] dims checked and wrapped (an input with no dims flattens to [1]). */
export function flattenDims(ndim: number, startDim: number, endDim: number): [number, number] {
  const s = normDim('flatten', startDim, ndim);
  const e = normDim('flatten', endDim, ndim);
  if (s > e) throw new IndexError(`flatten: startDim ${startDim} cannot come after endDim ${endDim}`);
  return [s, e];
}

/** t(): at most 2 dims. */
export function checkT(ndim: number): void {
  if (ndim > 2) throw new ShapeError(`t: expects a tensor with <= 2 dimensions, but self is ${ndim}-D (use transpose)`);
}

/**
 * expand: the output size at each dim (a -1 keeps the input's), and whether the input's dim is broadcast
 * (its stride becomes 0).
 */
export function expandSizes<S>(A: SizeArith<S>, from: readonly S[], shape: readonly (S | number)[]): { shape: S[]; broadcast: boolean[] } {
  if (shape.length < from.length) {
    throw new ShapeError(`expand: the target shape ${fmtSizes(shape)} has fewer dims than the input ${fmtSizes(from)}`);
  }
  const lead = shape.length - from.length;
  const out: S[] = [];
  const broadcast: boolean[] = [];
  shape.forEach((s, i) => {
    const c = constantOf(A, s);
    if (c !== undefined && c < -1)
      throw new ShapeError(`expand: invalid size ${c} at dim ${i} of ${fmtSizes(shape)} (sizes are ≥ 0, or -1 to keep a dim)`);
    const src = i - lead;
    const have = src >= 0 ? from[src]! : A.lit(1);
    if (c === -1 && src < 0) throw new ShapeError(`expand: -1 is not allowed for the new leading dim ${i} in ${fmtSizes(shape)}`);
    const want = c === -1 ? have : sizeOf(A, s);
    let widened = false;
    if (c !== -1 && !A.eq(have, want)) {
      if (!isOne(A, have)) {
        throw new ShapeError(
          `expand: the expanded size (${want}) must match the existing size (${have}) at dim ${i}; target ${fmtSizes(shape)}, input ${fmtSizes(from)}`,
        );
      }
      widened = true;
    }
    out.push(want);
    broadcast.push(src < 0 || widened);
  });
  checkNumelOf(A, 'expand', out);
  return { shape: out, broadcast };
}

/** Python's slice clamping along a dim of size n: the start, end (≥ start) and the number of elements taken. */
export function sliceBounds<S>(
  A: SizeArith<S>,
  n: S,
  start: S | number | null,
  end: S | number | null,
  step: number,
): { start: S; end: S; length: S } {
  if (step <= 0) throw new ValueError(`slice: step must be positive, got ${step}`);
  const zero = A.lit(0);
  const clampIdx = (v: S | number): S => {
    const c = constantOf(A, v);
    const w = c !== undefined && c < 0 ? A.add(A.lit(c), n) : sizeOf(A, v);
    if (A.lt(w, zero)) return zero;
    return A.lt(n, w) ? n : w;
  };
  const s = start === null ? zero : clampIdx(start);
  const e0 = end === null ? n : clampIdx(end);
  const e = A.lt(e0, s) ? s : e0;
  return { start: s, end: e, length: A.floorDiv(A.add(A.sub(e, s), A.lit(step - 1)), step) };
}

/** narrow's start (wrapped) checked against the dim's size n. */
export function narrowStart<S>(A: SizeArith<S>, shape: readonly S[], d: number, start: number, length: S | number): S {
  const n = shape[d]!;
  const s = start < 0 ? A.add(A.lit(start), n) : A.lit(start);
  if (A.lt(s, A.lit(0)) || A.lt(n, s)) throw new IndexError(`narrow: start ${start} is out of range for dim ${d} of size ${n}`);
  const len = sizeOf(A, length);
  if ((constantOf(A, length) ?? 0) < 0 || A.lt(n, A.add(s, len))) {
    throw new IndexError(`narrow: start (${s}) + length (${String(length)}) exceeds dim ${d} of size ${n} (shape ${fmtSizes(shape)})`);
  }
  return s;
}

/** select's index (wrapped) checked against the dim's size. */
export function selectIndex<S>(A: SizeArith<S>, shape: readonly S[], dim: number, index: number): { d: number; i: S } {
  if (shape.length === 0) throw new IndexError('select: cannot select from a 0-d tensor');
  const d = normDim('select', dim, shape.length);
  const n = shape[d]!;
  const i = A.lit(index);
  if (A.lt(i, A.sub(A.lit(0), n)) || A.le(n, i)) {
    throw new IndexError(`select: index ${index} is out of bounds for dim ${d} with size ${n} (shape ${fmtSizes(shape)})`);
  }
  return { d, i: index < 0 ? A.add(i, n) : i };
}

/** split's piece sizes along dim d of size n: pieces of `splitSize` (the last may be shorter), or the listed sizes. */
export function splitSizes<S>(A: SizeArith<S>, shape: readonly S[], d: number, splitSize: number | readonly (S | number)[]): S[] {
  const n = shape[d]!;
  if (typeof splitSize === 'number') {
    if (!Number.isInteger(splitSize) || splitSize <= 0)
      throw new ValueError(`split: splitSize must be a positive integer, got ${splitSize}`);
    // The number of pieces is decided on the size's value, guarded: (count - 1)·splitSize < n ≤ count·splitSize.
    const count = Math.max(1, Math.ceil(A.hint(n) / splitSize));
    const before = (count - 1) * splitSize;
    if (count > 1) A.lt(A.lit(before), n);
    A.le(n, A.lit(count * splitSize));
    return Array.from({ length: count }, (_, i) => (i < count - 1 ? A.lit(splitSize) : A.sub(n, A.lit(before))));
  }
  const sizes = splitSize.map((k) => sizeOf(A, k));
  const total = sizes.reduce((a, b) => A.add(a, b), A.lit(0));
  const bad = splitSize.some((k) => {
    const c = constantOf(A, k);
    return c !== undefined && (!Number.isInteger(c) || c < 0);
  });
  if (bad || !A.eq(total, n)) {
    throw new ShapeError(
      `split: sizes ${fmtSizes(sizes)} must be non-negative and add up to ${n}, the size of dim ${d} of ${fmtSizes(shape)}`,
    );
  }
  return sizes;
}
