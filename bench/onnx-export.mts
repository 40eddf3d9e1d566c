/**
 * kiln/export's toOnnx on the bench MLP (784-512-512-10, batch 64, the peers' weights): the model exported once
 * with a dynamic batch dim and run by onnxruntime-node, beside kiln eager and kiln compiled (`backend: 'kernels'`)
 * on the same model. Every contender's output is checked against the plain-JS reference first; the three are then
 * timed in interleaved rounds (median of each), onnxruntime-node on the peers' settings (2 intra-op threads,
 * spinning off). `KILN_BENCH_ONLY=onnx` runs just this.
 */
import { Dim, exportProgram, onnxBytes } from '../src/export/index.js';
import { compile, noGrad, tensor, type Tensor } from '../src/index.js';
import { getGemmThreads } from '../src/kernels/gemm/index.js';
import { kilnMlp } from './kiln-models.mjs';
import { MLP, checkClose, mlpData, mlpRef } from './peers.mjs';

const ROUNDS = Math.max(7, Number(process.env.KILN_BENCH_ROUNDS ?? 11));
const WARMUP = 3;
const ORT_THREADS = 2;

export const ONNX_ROW = 'kiln model exported to ONNX, run by onnxruntime-node';

interface OnnxCheck {
  name: string;
  unit: string;
  value: number;
  target: string;
  pass: boolean;
  detail?: object;
}

function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
}

/** Interleaved rounds of async contenders (the order flips each round); median ms of each. */
async function sideBySideAsync(contenders: Record<string, () => Promise<unknown>>): Promise<Record<string, number>> {
  const names = Object.keys(contenders);
  for (const n of names) for (let i = 0; i < WARMUP; i++) await contenders[n]!();
  const times: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  for (let r = 0; r < ROUNDS; r++) {
    for (const n of r % 2 === 0 ? names : [...names].reverse()) {
      const t0 = performance.now();
      await contenders[n]!();
      times[n]!.push(performance.now() - t0);
    }
  }
  return Object.fromEntries(names.map((n) => [n, median(times[n]!)]));
}

export async function onnxExportBench(): Promise<OnnxCheck[]> {
  const ort = await import('onnxruntime-node');
  const { weights, x: data } = mlpData();
  const ref = mlpRef(weights, data);
  const model = kilnMlp(weights);
  const x = tensor(data, { shape: [MLP.batch, MLP.sizes[0]] });
  const compiled = compile(model, { backend: 'kernels' });

  const t0 = performance.now();
  const program = exportProgram(model, [x], { dynamicShapes: [{ 0: Dim('batch', { min: 1, max: 4096 }) }] });
  const t1 = performance.now();
  const bytes = onnxBytes(program);
  const exportProgramMs = t1 - t0;
  const toOnnxMs = performance.now() - t1;
  const session = await ort.InferenceSession.create(bytes, {
    executionProviders: ['cpu'],
    intraOpNumThreads: ORT_THREADS,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
  });
  const feeds = { input: new ort.Tensor('float32', data, [MLP.batch, MLP.sizes[0]]) };
  const ortRun = async () => (await session.run(feeds))[session.outputNames[0]!]!.data as Float32Array;
  const eager = () => noGrad(() => model.call(x) as Tensor);
  const kernels = () => noGrad(() => compiled.call(x) as Tensor);
  try {
    checkClose('kiln eager MLP', eager().data(), ref);
    checkClose('kiln compiled MLP', kernels().data(), ref);
    checkClose('onnxruntime-node on the exported MLP', await ortRun(), ref);
    const ms = await sideBySideAsync({
      'kiln eager': async () => eager(),
      'kiln compiled': async () => kernels(),
      [ONNX_ROW]: ortRun,
    });
    const label = `MLP ${MLP.sizes.join('-')} b${MLP.batch}`;
    console.log(
      `  ${label}, median of ${ROUNDS} interleaved rounds: ${Object.entries(ms)
        .map(([k, v]) => `${k} ${v.toFixed(2)} ms`)
        .join(', ')}`,
    );
    const speedup = ms['kiln compiled']! / ms[ONNX_ROW]!;
    const detail = { ms, exportProgramMs, toOnnxMs, onnxBytes: bytes.length, ortThreads: ORT_THREADS, kilnGemmThreads: getGemmThreads() };
    return [
      { name: `${label}: kiln eager`, unit: 'ms', value: ms['kiln eager']!, target: 'checked', pass: true, detail },
      { name: `${label}: kiln compiled (kernels)`, unit: 'ms', value: ms['kiln compiled']!, target: 'checked', pass: true },
      { name: `${label}: ${ONNX_ROW}`, unit: 'ms', value: ms[ONNX_ROW]!, target: 'checked', pass: true },
      // the program → ONNX step (exportProgram's own time, which dominates, is in the detail and in the export check)
      { name: `${label}: toOnnx time (program to ONNX bytes)`, unit: 'ms', value: toOnnxMs, target: '< 1000', pass: toOnnxMs < 1000 },
      { name: `${label}: onnxruntime-node speed-up over kiln compiled`, unit: '×', value: speedup, target: '> 1', pass: speedup > 1 },
    ];
  } finally {
    await session.release();
  }
}
