/**
 * The memory check's child process: bench/run.mts runs one per variant, so neither variant's caches, wasm
 * memory or garbage can reach the other's numbers. `node --expose-gc --import tsx bench/memory.mts eager|compiled`
 * prints one JSON line, a MemoryReport.
 *
 * The model is the bench's MLP 784-512-512-10 on a batch of 64, called under noGrad. Memory is sampled as
 * heapUsed + external (external counts ArrayBuffers, so every Float32Array, and unshared wasm memories such
 * as gpu.js kernels') + the GEMM's wasm memory (a shared memory, which Node counts nowhere else). The baseline
 * is taken with the model and input built and nothing run, after a full GC. Then WARMUP calls (tracing,
 * planning, kernel and wasm compiles, weight packing, heap growth, JIT tiers), then CALLS measured calls, each
 * after a full GC: whatever a call leaves before the next GC (its garbage and its output) counts as its own,
 * so a call's sample bounds from above what was live during it. A variant's peak is its largest sample above
 * the baseline: what it keeps between calls (plans, packed weights, planned buffers, grown wasm memory,
 * compiled code) plus one call.
 */
import { compile, manualSeed, nn, noGrad, randn, type Tensor } from '../src/index.js';
import { gemmHeapBytes } from '../src/kernels/gemm/index.js';
import { KERNEL_CONFIG } from '../src/kernels/gemm/runtime.js';
import { MLP } from './peers/shapes.mjs';

export interface MemoryReport {
  variant: 'eager' | 'compiled';
  /** Largest (sample after a call − baseline), bytes. */
  peak: number;
  /** Held between calls once warm (after the warm-up and a full GC), above the baseline, bytes. */
  retained: number;
  /** Largest growth during one call (GC'd before it), bytes: the call's garbage and output. */
  perCall: number;
  /** The GEMM's wasm memory at the end, bytes (part of `retained`). */
  wasm: number;
  /** Of that, the weights packed into the GEMM's panel layout (a second copy of the weights), bytes. */
  packedWeights: number;
  /** Largest RSS above the baseline's, bytes: all the OS gave the process, worker threads included. */
  rss: number;
}

const WARMUP = 100;
/** Calls after a full GC that are not counted: the first ones allocate more (V8 re-tunes after full GCs). */
const SETTLE = 5;
const CALLS = 20;

function sample(): { bytes: number; rss: number } {
  const m = process.memoryUsage();
  return { bytes: m.heapUsed + m.external + gemmHeapBytes(), rss: m.rss };
}

function collect(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('bench/memory.mts needs node --expose-gc');
  gc();
  gc();
}

function measure(variant: 'eager' | 'compiled'): MemoryReport {
  manualSeed(0);
  const sizes = MLP.sizes;
  const layers: nn.Module[] = [];
  for (let i = 1; i < sizes.length; i++) {
    layers.push(new nn.Linear(sizes[i - 1]!, sizes[i]!));
    if (i < sizes.length - 1) layers.push(new nn.ReLU());
  }
  const model = new nn.Sequential(...layers).eval();
  const x = randn([MLP.batch, sizes[0]!]);
  const target = variant === 'eager' ? model : compile(model, { backend: 'kernels' });
  const forward = () => noGrad(() => target.call(x) as Tensor);
  collect();
  const base = sample();
  for (let i = 0; i < WARMUP; i++) forward();
  collect();
  const retained = sample().bytes - base.bytes;
  let peak = 0;
  let perCall = 0;
  let rss = 0;
  let out: Tensor | undefined;
  for (let i = -SETTLE; i < CALLS; i++) {
    out = undefined;
    collect();
    const before = sample();
    out = forward();
    const after = sample();
    if (i < 0) continue;
    peak = Math.max(peak, after.bytes - base.bytes);
    perCall = Math.max(perCall, after.bytes - before.bytes);
    rss = Math.max(rss, after.rss - base.rss);
  }
  if (out?.shape[1] !== sizes[sizes.length - 1]) throw new Error('bench/memory.mts: wrong output shape');
  // each Linear weight [out, in] is packed as B [K = in, N = out] in NR-column panels (packedBytes in packed-b.ts)
  const nr = KERNEL_CONFIG.nr;
  const packed = sizes.slice(1).reduce((sum, n, i) => sum + Math.ceil(n / nr) * nr * sizes[i]! * 4, 0);
  return { variant, peak, retained, perCall, wasm: gemmHeapBytes(), packedWeights: variant === 'compiled' ? packed : 0, rss };
}

const variant = process.argv[2];
if (variant !== 'eager' && variant !== 'compiled') throw new Error(`usage: bench/memory.mts eager|compiled (got ${variant})`);
console.log(JSON.stringify(measure(variant)));
