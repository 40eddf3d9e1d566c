/**
 * Argument checks shared by every GEMM variant, so they all reject bad input the same way, before any work.
 * Messages name the op, the shapes and what was expected.
 */

import { DTypeError, ShapeError, ValueError } from '../../errors.js';

export type Activation = 'none' | 'relu';

export interface GemmOptions {
  /** B is given as [N, K] (a Linear weight is [out, in]) instead of [K, N]. Not used with a PackedB. */
  bTransposed?: boolean;
  /** Length N, added to every row (per output column) before the activation. */
  bias?: Float32Array;
  activation?: Activation;
  /** Where to write the M×N result (batch·M×N for bmm); a new array when absent. */
  out?: Float32Array;
}

export function describeB(K: number, N: number, transposed: boolean): string {
  return transposed ? `b [${N}, ${K}] (transposed)` : `b [${K}, ${N}]`;
}

function dimList(dims: Record<string, number>): string {
  return Object.entries(dims)
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');
}

export function checkDim(op: string, name: string, value: number, dims: Record<string, number>): void {
  if (!Number.isInteger(value) || value < 0) {
    throw new ValueError(`${op}: ${name} must be a non-negative integer, got ${value} (${dimList(dims)})`);
  }
}

function describeValue(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  return typeof value === 'object' ? ((value as object).constructor?.name ?? 'object') : typeof value;
}

function isPackedLike(b: unknown): boolean {
  return (
    typeof b === 'object' && b !== null && typeof (b as { K?: unknown }).K === 'number' && typeof (b as { N?: unknown }).N === 'number'
  );
}

export function checkLength(op: string, name: string, value: unknown, expected: number, shape: string): void {
  if (!(value instanceof Float32Array)) {
    throw new DTypeError(`${op}: ${name} must be a Float32Array, got ${describeValue(value)} (for ${shape})`);
  }
  if (value.length !== expected) {
    throw new ShapeError(`${op}: ${name} has ${value.length} elements, expected ${expected} for ${shape}`);
  }
}

/** The fields every variant reads after checking. */
export interface Checked {
  readonly bias: Float32Array | undefined;
  readonly relu: boolean;
  /** bmm: one B for every batch entry (a PackedB, or a raw B of K·N elements). */
  readonly bBroadcast: boolean;
}

/**
 * Checks dims, a, b (a raw B's length, or a PackedB's dims), the epilogue and out. `batch` is bmm's leading
 * dim; there a raw B may hold one matrix per batch entry or a single one, broadcast.
 */
export function checkGemm(
  op: string,
  a: Float32Array,
  b: Float32Array | { readonly K: number; readonly N: number },
  M: number,
  K: number,
  N: number,
  opts: GemmOptions,
  batch?: number,
): Checked {
  const dims: Record<string, number> = batch === undefined ? { M, K, N } : { batch, M, K, N };
  for (const [name, v] of Object.entries(dims)) checkDim(op, name, v, dims);
  const transposed = opts.bTransposed ?? false;
  const B = batch ?? 1;
  const lead = batch === undefined ? '' : `${B}, `;
  const bBroadcast = batch === undefined || !(b instanceof Float32Array) || (b.length === K * N && b.length !== B * K * N);
  const bShape = b instanceof Float32Array ? (transposed ? `${N}, ${K}` : `${K}, ${N}`) : `${K}, ${N}`;
  const shapes =
    `a [${lead}${M}, ${K}] @ b [${bBroadcast ? '' : lead}${bShape}]` + (transposed && b instanceof Float32Array ? ' (transposed)' : '');
  checkLength(op, 'a', a, B * M * K, shapes);
  if (!(b instanceof Float32Array) && !isPackedLike(b)) {
    throw new DTypeError(`${op}: b must be a Float32Array or a PackedB from packB(), got ${describeValue(b)} (for ${shapes})`);
  }
  if (b instanceof Float32Array) {
    if (batch !== undefined && b.length !== K * N && b.length !== B * K * N) {
      throw new ShapeError(
        `${op}: b has ${b.length} elements, expected batch·K·N = ${B * K * N} or K·N = ${K * N} (one b for every batch entry) for ${shapes}`,
      );
    }
    checkLength(op, 'b', b, (bBroadcast ? 1 : B) * K * N, shapes);
  } else if (b.K !== K || b.N !== N) {
    throw new ShapeError(`${op}: packed b is [K=${b.K}, N=${b.N}], expected [K=${K}, N=${N}] for ${shapes}`);
  }
  const act = opts.activation ?? 'none';
  if (act !== 'none' && act !== 'relu') {
    throw new ValueError(`${op}: activation must be 'none' or 'relu', got ${JSON.stringify(act)}`);
  }
  if (opts.bias !== undefined) checkLength(op, 'bias', opts.bias, N, `${shapes} (one bias per output column, N=${N})`);
  if (opts.out !== undefined) checkLength(op, 'out', opts.out, B * M * N, `${shapes} (out is [${lead}${M}, ${N}])`);
  return { bias: opts.bias, relu: act === 'relu', bBroadcast };
}
