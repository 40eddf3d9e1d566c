/**
 * The one shared WebAssembly.Memory the GEMM kernels run on, with a small first-fit allocator over it.
 *
 * The memory is shared (a SharedArrayBuffer) for two reasons: worker threads run the same kernels on it, and a
 * shared memory never moves when it grows, so Float32Array views handed to callers stay valid across growth
 * (a plain memory detaches every view on grow). Addresses stay below 2 GiB so they are positive i32 values.
 */

import { ValueError } from '../../errors.js';
import { wasm } from './wasm-api.js';

const PAGE = 65536;
const ALIGN = 64;
/** Bytes reserved at address 0 for the thread pool's control words. */
export const CONTROL_BYTES = 1024;
export const MAX_PAGES = 32768;

export class WasmHeap {
  readonly memory = new wasm.Memory({ initial: 16, maximum: MAX_PAGES, shared: true });
  /** Free blocks as [address, bytes], sorted by address, coalesced. */
  private free: [number, number][] = [[CONTROL_BYTES, 16 * PAGE - CONTROL_BYTES]];
  private readonly used = new Map<number, number>();
  /** Every buffer object this memory has shown (a shared memory gets a new, longer one after each grow). */
  private readonly buffers = new WeakSet<ArrayBufferLike>();
  private f32View = this.track();

  private track(): Float32Array {
    const buf = this.memory.buffer;
    this.buffers.add(buf);
    return new Float32Array(buf);
  }

  /** A Float32Array over the whole memory as it is now. */
  get f32(): Float32Array {
    if (this.f32View.byteLength !== this.memory.buffer.byteLength) this.f32View = this.track();
    return this.f32View;
  }

  /** Whether `view` lies in this memory (its byteOffset is then its wasm address). */
  owns(view: ArrayBufferView): boolean {
    return this.buffers.has(view.buffer);
  }

  /** Allocates `bytes` (64-byte aligned, so v128 and cache-line friendly), growing the memory as needed. */
  alloc(bytes: number): number {
    const size = Math.max(ALIGN, Math.ceil(bytes / ALIGN) * ALIGN);
    for (;;) {
      for (let i = 0; i < this.free.length; i++) {
        const [addr, len] = this.free[i]!;
        if (len < size) continue;
        if (len === size) this.free.splice(i, 1);
        else this.free[i] = [addr + size, len - size];
        this.used.set(addr, size);
        return addr;
      }
      this.grow(size);
    }
  }

  isBlockStart(addr: number): boolean {
    return this.used.has(addr);
  }

  /** Blocks taken for one call and given back together, in that call's `finally`. */
  scratch(): { take(bytes: number): number; releaseAll(): void } {
    const taken: number[] = [];
    return {
      take: (bytes) => {
        const addr = this.alloc(bytes);
        taken.push(addr);
        return addr;
      },
      releaseAll: () => {
        for (const addr of taken.splice(0)) this.release(addr);
      },
    };
  }

  release(addr: number): void {
    const size = this.used.get(addr);
    if (size === undefined) return;
    this.used.delete(addr);
    this.insertFree(addr, size);
  }

  /** A view of `length` floats at `addr`. */
  view(addr: number, length: number): Float32Array {
    return this.f32.subarray(addr >> 2, (addr >> 2) + length);
  }

  private insertFree(addr: number, size: number): void {
    let i = 0;
    while (i < this.free.length && this.free[i]![0] < addr) i++;
    this.free.splice(i, 0, [addr, size]);
    // Coalesce with the next block, then with the previous one.
    const next = this.free[i + 1];
    if (next && addr + size === next[0]) {
      this.free[i] = [addr, size + next[1]];
      this.free.splice(i + 1, 1);
    }
    const prev = this.free[i - 1];
    if (prev && prev[0] + prev[1] === addr) {
      prev[1] += this.free[i]![1];
      this.free.splice(i, 1);
    }
  }

  /**
   * Grows by the pages a block of `size` bytes still lacks (a free block at the end counts toward it). Not
   * geometrically: a shared memory has its maximum reserved up front, so growing commits pages and never
   * copies, and wasm memory never shrinks, so any slack would stay in the process's footprint for good.
   */
  private grow(size: number): void {
    const pages = this.memory.buffer.byteLength / PAGE;
    const last = this.free[this.free.length - 1];
    const tail = last && last[0] + last[1] === pages * PAGE ? last[1] : 0;
    const atLeast = size - tail;
    const add = Math.min(Math.ceil(atLeast / PAGE), MAX_PAGES - pages);
    if (add * PAGE < atLeast) {
      throw new ValueError(`gemm: needs ${atLeast} more bytes of wasm memory, past its ${MAX_PAGES * PAGE} byte (2 GiB) limit`);
    }
    const start = pages * PAGE;
    this.memory.grow(add);
    this.insertFree(start, add * PAGE);
  }
}
