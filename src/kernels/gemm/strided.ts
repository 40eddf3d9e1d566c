/**
 * The wasm SIMD GEMM over strided operands, for the eager runtime: tensors are views (a transposed weight, an
 * expanded batch, a sliced row block) on plain Float32Array storage, so each operand is brought into wasm
 * memory in the layout the kernels read: A as dense rows (one memcpy per matrix when its rows are contiguous,
 * a strided copy otherwise), B packed into NR-column panels (the wasm packer for a dense or transposed-dense
 * B, a strided JS packer otherwise). The result is copied into the caller's array. Imports only ./gemm and
 * src/errors.ts, so src/runtime can use it without depending on the rest of src/kernels.
 */

import { DTypeError, ValueError } from '../../errors.js';
import { packedBytes, packFrom } from './packed-b.js';
import { getRuntime, type GemmRuntime } from './runtime.js';
import { executeJob } from './simd-gemm.js';
import type { Job } from './threads.js';

/**
 * `offsets.length` matrices in one array: entry i's element (r, c) is `data[offsets[i] + r·rowStride +
 * c·colStride]`. A single offset is one matrix shared by (broadcast to) every batch entry.
 */
export interface StridedMatrices {
  readonly data: Float32Array;
  readonly offsets: ArrayLike<number>;
  readonly rowStride: number;
  readonly colStride: number;
}

let works: boolean | undefined;

/** Whether the wasm SIMD GEMM runs in this engine (WebAssembly with SIMD and shared memory); probed once. */
export function simdGemmWorks(): boolean {
  if (works === undefined) {
    try {
      getRuntime();
      works = true;
    } catch {
      works = false;
    }
  }
  return works;
}

function checkOperand(op: string, name: string, x: StridedMatrices, batch: number): void {
  if (!(x.data instanceof Float32Array))
    throw new DTypeError(`${op}: ${name} must be float32 data, got ${(x.data as object).constructor.name}`);
  if (x.offsets.length !== 1 && x.offsets.length !== batch) {
    throw new ValueError(`${op}: ${name} has ${x.offsets.length} matrices, expected 1 (broadcast) or batch=${batch}`);
  }
}

/** Copies a rows×cols strided matrix into wasm memory at float index `dst`, dense row-major. */
function placeRows(f32: Float32Array, dst: number, x: StridedMatrices, off: number, rows: number, cols: number): void {
  const { data, rowStride: rs, colStride: cs } = x;
  if (cs === 1 && rs === cols) {
    f32.set(data.subarray(off, off + rows * cols), dst);
  } else if (cs === 1) {
    for (let r = 0; r < rows; r++) f32.set(data.subarray(off + r * rs, off + r * rs + cols), dst + r * cols);
  } else {
    // A transposed view: read down its contiguous columns (rowStride 1 is the common case).
    for (let c = 0; c < cols; c++) {
      const src = off + c * cs;
      for (let r = 0; r < rows; r++) f32[dst + r * cols + c] = data[src + r * rs]!;
    }
  }
}

/** Packs a K×N strided matrix into NR-column panels at byte address `dst` (the layout packB makes). */
function packStrided(rt: GemmRuntime, dst: number, x: StridedMatrices, off: number, K: number, N: number): void {
  const { data, rowStride: rs, colStride: cs } = x;
  if (cs === 1 && rs === N) return packFrom(rt, data.subarray(off, off + K * N), K, N, false, dst);
  if (rs === 1 && cs === K) return packFrom(rt, data.subarray(off, off + K * N), K, N, true, dst);
  const f32 = rt.heap.f32;
  const nr = rt.cfg.nr;
  const base = dst >> 2;
  for (let j0 = 0; j0 < N; j0 += nr) {
    const w = Math.min(nr, N - j0);
    const panel = base + j0 * K;
    for (let k = 0; k < K; k++) {
      const row = panel + k * nr;
      const src = off + k * rs + j0 * cs;
      for (let j = 0; j < w; j++) f32[row + j] = data[src + j * cs]!;
      for (let j = w; j < nr; j++) f32[row + j] = 0;
    }
  }
}

/**
 * out[outOffset + (i·M + r)·N + c] = Σ_k A_i[r, k] · B_i[k, c] for every batch entry i, on the wasm SIMD
 * kernels (and the worker threads when the job is big enough). M, K, N ≥ 1; float32 accumulation.
 */
export function bmmStrided(
  a: StridedMatrices,
  b: StridedMatrices,
  batch: number,
  M: number,
  K: number,
  N: number,
  out: Float32Array,
  outOffset = 0,
): void {
  checkOperand('bmm', 'a', a, batch);
  checkOperand('bmm', 'b', b, batch);
  const rt = getRuntime();
  const { heap, cfg } = rt;
  const scratch = heap.scratch();
  const temp = scratch.take;
  try {
    // One B for the whole batch with one A per entry: the batch is just more rows of A.
    let rowsM = M;
    let entries = batch;
    if (b.offsets.length === 1 && a.offsets.length === batch) {
      rowsM = M * batch;
      entries = 1;
    }
    const aCount = a.offsets.length;
    const aAddr = temp(aCount * M * K * 4);
    for (let i = 0; i < aCount; i++) placeRows(heap.f32, (aAddr >> 2) + i * M * K, a, a.offsets[i]!, M, K);
    const per = packedBytes(rt, K, N);
    const bCount = b.offsets.length;
    const bp = temp(per * bCount);
    for (let i = 0; i < bCount; i++) packStrided(rt, bp + i * per, b, b.offsets[i]!, K, N);
    const c = temp(batch * M * N * 4);
    const job: Job = {
      a: aAddr,
      ldaB: K * 4,
      bp,
      panelB: K * cfg.nr * 4,
      c,
      ldcB: N * 4,
      M: rowsM,
      N,
      K,
      flags: 0,
      biasp: 0,
      batch: entries,
      aBatchB: aCount > 1 ? M * K * 4 : 0,
      bBatchB: bCount > 1 ? per : 0,
      cBatchB: M * N * 4,
    };
    executeJob(rt, job);
    out.set(heap.view(c, batch * M * N), outOffset);
  } finally {
    scratch.releaseAll();
  }
}
