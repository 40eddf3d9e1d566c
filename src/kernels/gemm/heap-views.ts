/**
 * Float32Array views directly on the GEMM kernels' wasm memory. gemm/bmm use such views in place (no copy in
 * for a and b, no copy out for `out`), which is how a compiled plan keeps activations in wasm memory across
 * calls. The memory is shared and never moves, so views stay valid when it grows; each must be freed once.
 */

import { ValueError } from '../../errors.js';
import { getRuntime } from './runtime.js';

/** A zero-filled Float32Array of `length` elements living in wasm memory. */
export function heapAlloc(length: number): Float32Array {
  if (!Number.isInteger(length) || length < 0) throw new ValueError(`heapAlloc: length must be a non-negative integer, got ${length}`);
  const { heap } = getRuntime();
  const addr = heap.alloc(length * 4);
  const view = heap.view(addr, length);
  view.fill(0);
  return view;
}

/** Gives back the memory of a view from heapAlloc (not a subarray of one). */
export function heapFree(view: Float32Array): void {
  const { heap } = getRuntime();
  if (!heap.owns(view) || !heap.isBlockStart(view.byteOffset)) {
    throw new ValueError('heapFree: the array was not returned by heapAlloc (or was already freed)');
  }
  heap.release(view.byteOffset);
}

/** Whether `view` lives in the kernels' wasm memory, so gemm can use it without copying. */
export function onHeap(view: ArrayBufferView): boolean {
  return getRuntime().heap.owns(view);
}
