/**
 * Pre-packed B operands. Packing B into NR-column panels ([⌈N/NR⌉][K][NR], zero-padded) is O(K·N) work per
 * call; a weight used on every forward pass is packed once and kept in wasm memory, and calls read it in place.
 */

import { ValueError } from '../../errors.js';
import { checkDim, checkLength, describeB } from './check.js';
import { getRuntime, type GemmRuntime } from './runtime.js';

// A PackedB nobody can reach any more gives its wasm memory back; dispose() does it deterministically.
const registry = new FinalizationRegistry<number>((addr) => getRuntime().heap.release(addr));

/** A B matrix [K, N] packed into the SIMD kernel's panel layout, living in wasm memory. */
export class PackedB {
  private addr: number;

  /** @internal Use packB(). */
  constructor(
    readonly K: number,
    readonly N: number,
    addr: number,
    /** Bytes between consecutive panels (K·NR floats). */
    readonly panelBytes: number,
  ) {
    this.addr = addr;
    registry.register(this, addr, this);
  }

  get disposed(): boolean {
    return this.addr < 0;
  }

  /** @internal The panels' wasm address; throws once disposed. */
  address(op: string): number {
    if (this.addr < 0) throw new ValueError(`${op}: packed b [${this.K}, ${this.N}] was disposed`);
    return this.addr;
  }

  /** Frees the wasm memory now (otherwise it is freed when this object is garbage collected). */
  dispose(): void {
    if (this.addr < 0) return;
    registry.unregister(this);
    getRuntime().heap.release(this.addr);
    this.addr = -1;
  }
}

/**
 * Packs into `dst` the B at wasm address `src`: [K, N] row-major, or [N, K] when `transposed` (a Linear weight
 * [out, in] is B transposed).
 */
export function packInto(rt: GemmRuntime, src: number, K: number, N: number, transposed: boolean, dst: number): void {
  if (K === 0 || N === 0) return;
  if (transposed) rt.kernels.packB(src, 4, K * 4, K, N, dst);
  else rt.kernels.packB(src, N * 4, 4, K, N, dst);
}

export function packedBytes(rt: GemmRuntime, K: number, N: number): number {
  return Math.ceil(N / rt.cfg.nr) * rt.cfg.nr * K * 4;
}

/** Packs B [K, N] (or [N, K] with `transposed`) once, for gemm/bmm calls that reuse it. */
export function packB(b: Float32Array, K: number, N: number, opts: { transposed?: boolean } = {}): PackedB {
  const dims = { K, N };
  checkDim('packB', 'K', K, dims);
  checkDim('packB', 'N', N, dims);
  const transposed = opts.transposed ?? false;
  checkLength('packB', 'b', b, K * N, describeB(K, N, transposed));
  const rt = getRuntime();
  const dst = rt.heap.alloc(packedBytes(rt, K, N));
  packFrom(rt, b, K, N, transposed, dst);
  return new PackedB(K, N, dst, K * rt.cfg.nr * 4);
}

/** Packs `b` into `dst`: read in place when it is a view on wasm memory, else staged (packStaged). */
export function packFrom(rt: GemmRuntime, b: Float32Array, K: number, N: number, transposed: boolean, dst: number): void {
  if (rt.heap.owns(b)) packInto(rt, b.byteOffset, K, N, transposed, dst);
  else packStaged(rt, b, K, N, transposed, dst);
}

/** What packB stages in wasm memory at a time (rounded up to whole panels) for a B that lives outside it. */
const STAGE_BYTES = 256 * 1024;

/**
 * Packs a B from outside wasm memory a few panels' columns at a time through one small staging block, so
 * packing takes the packed size plus about STAGE_BYTES of wasm memory, not a second copy of B (wasm memory
 * never shrinks, so a transient copy would stay in the process's footprint for good).
 */
function packStaged(rt: GemmRuntime, b: Float32Array, K: number, N: number, transposed: boolean, dst: number): void {
  if (K === 0 || N === 0) return;
  const nr = rt.cfg.nr;
  const cols = Math.min(N, nr * Math.max(1, Math.floor(STAGE_BYTES / (nr * K * 4))));
  const stage = rt.heap.alloc(cols * K * 4);
  try {
    const f32 = rt.heap.f32;
    for (let j0 = 0; j0 < N; j0 += cols) {
      const w = Math.min(cols, N - j0);
      if (transposed)
        f32.set(b.subarray(j0 * K, (j0 + w) * K), stage >> 2); // rows j0… of [N, K]
      else for (let k = 0; k < K; k++) f32.set(b.subarray(k * N + j0, k * N + j0 + w), (stage >> 2) + k * w); // [K, w]
      packInto(rt, stage, K, w, transposed, dst + (j0 / nr) * K * nr * 4); // j0 is a whole number of panels
    }
  } finally {
    rt.heap.release(stage);
  }
}

/** B [K, N] back out of its panels (for the variants that cannot read the packed layout). */
export function unpackB(b: PackedB, op: string): Float32Array {
  const rt = getRuntime();
  const nr = rt.cfg.nr;
  const base = b.address(op) >> 2;
  const f32 = rt.heap.f32;
  const out = new Float32Array(b.K * b.N);
  for (let j = 0; j < b.N; j++) {
    const panel = base + Math.floor(j / nr) * b.K * nr + (j % nr);
    for (let k = 0; k < b.K; k++) out[k * b.N + j] = f32[panel + k * nr]!;
  }
  return out;
}
