/**
 * A minimal browser `Worker` for Node, enough for @jax-js/jax's wasm worker pool (parallel.ts in its source):
 * jax-js runs its wasm kernels on Web Workers sharing one `WebAssembly.Memory` when `SharedArrayBuffer`
 * and a global `Worker` exist, which Node 20 lacks, so on Node it runs every kernel on the main thread.
 * This shim runs the pool's blob: worker script on `worker_threads`. jax-js sizes its pool from
 * `navigator.hardwareConcurrency` (absent on Node 20, so 4); the shim multiplexes those virtual workers
 * onto `threads` real threads (one per core here), each handling its virtual workers' messages in turn.
 * Nothing of jax-js is patched; the shim only supplies the Web API it expects.
 *
 * jax-js asks whether workers exist (`typeof Worker`) not only when it starts but whenever it generates or
 * reads back a kernel, so the global must be there during every call into the instance that uses the pool,
 * and must not be there for anything else in the process (another jax-js instance without a pool would
 * then generate kernels for shared memory it does not have): `during(fn)` sets it around one call.
 */
import { resolveObjectURL } from 'node:buffer';
import { Worker as NodeWorker } from 'node:worker_threads';

/** Runs before the worker script: the Web Worker globals it uses (`self`, `postMessage`, `onmessage`). */
const BOOTSTRAP = `
const { parentPort } = require('node:worker_threads');
let current = -1;
globalThis.self = globalThis;
globalThis.postMessage = (data) => parentPort.postMessage({ vid: current, data });
parentPort.on('message', ({ vid, data }) => {
  current = vid;
  self.onmessage({ data });
});
`;

export interface WebWorkerShim {
  /** Run `fn` (sync or async) with `globalThis.Worker` set to the shim; restores the previous value after. */
  during<T>(fn: () => T): T;
  /** Stop the real threads (the pool's workers then never answer again). */
  terminate(): Promise<void>;
  /** How many real threads were started. */
  readonly started: number;
}

export function createWebWorkerShim(threads: number): WebWorkerShim {
  const real: NodeWorker[] = [];
  const workers = new Map<number, WebWorkerLike>();
  let nextId = 0;
  let source: Promise<string> | undefined;

  interface WebWorkerLike {
    onmessage: ((e: { data: unknown }) => void) | null;
    onerror: ((e: { message: string }) => void) | null;
  }

  class WebWorker implements WebWorkerLike {
    onmessage: ((e: { data: unknown }) => void) | null = null;
    onerror: ((e: { message: string }) => void) | null = null;
    private readonly vid = nextId++;
    private readonly thread: Promise<NodeWorker>;

    constructor(url: string | URL) {
      const blob = resolveObjectURL(String(url));
      if (blob === undefined) throw new Error(`web-worker-shim: only blob: URLs are supported (got ${String(url)})`);
      source ??= blob.text();
      workers.set(this.vid, this);
      this.thread = source.then((src) => {
        const t = this.vid % threads;
        if (real[t] === undefined) {
          const w = new NodeWorker(BOOTSTRAP + src, { eval: true });
          w.on('message', ({ vid, data }: { vid: number; data: unknown }) => workers.get(vid)?.onmessage?.({ data }));
          // a thread that dies fails every virtual worker on it (jax-js listens while its workers start)
          w.on('error', (e: Error) => {
            for (const [vid, v] of workers) if (vid % threads === t) v.onerror?.({ message: e.message });
          });
          real[t] = w;
        }
        return real[t]!;
      });
    }

    postMessage(data: unknown): void {
      void this.thread.then((w) => w.postMessage({ vid: this.vid, data }));
    }

    terminate(): void {}
  }

  const g = globalThis as { Worker?: unknown };
  return {
    during<T>(fn: () => T): T {
      const previous = g.Worker;
      g.Worker = WebWorker;
      const restore = () => {
        g.Worker = previous;
      };
      let result: T;
      try {
        result = fn();
      } catch (e) {
        restore();
        throw e;
      }
      if (result instanceof Promise) return result.finally(restore) as T;
      restore();
      return result;
    },
    async terminate() {
      await Promise.all(real.map((w) => w.terminate()));
    },
    get started() {
      return real.filter(Boolean).length;
    },
  };
}
