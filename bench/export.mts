/**
 * kiln/export on a 50-layer model (Linear(128, 128) + ReLU, batch 32): the time exportProgram takes, the time
 * load takes for the saved file, and the run time of the loaded program's module() against the live module,
 * timed side by side (both run the same eager ops; the program adds its input checks and the flat call).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportProgram, load, save } from '../src/export/index.js';
import { manualSeed, nn, noGrad, randn, type Tensor } from '../src/index.js';
import { sideBySide, type TrainingCheck } from './training.mjs';

const LAYERS = 50;

function deepModel(): nn.Module {
  const layers: nn.Module[] = [];
  for (let i = 0; i < LAYERS; i++) layers.push(new nn.Linear(128, 128), new nn.ReLU());
  return new nn.Sequential(...layers).eval();
}

function medianMs(runs: number, f: () => void): number {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    f();
    times.push(performance.now() - t0);
  }
  return times.sort((a, b) => a - b)[runs >> 1]!;
}

export function exportBench(): Omit<TrainingCheck, 'group'>[] {
  manualSeed(0);
  const model = deepModel();
  const x = randn([32, 128]);
  const exportMs = medianMs(3, () => void exportProgram(model, [x]));
  const dir = mkdtempSync(join(tmpdir(), 'kiln-bench-export-'));
  try {
    const path = join(dir, 'deep.kiln');
    save(exportProgram(model, [x]), path);
    const loadMs = medianMs(5, () => void load(path));
    const loaded = load(path).module();
    const want = noGrad(() => model.call(x) as Tensor);
    const got = noGrad(() => loaded.call(x) as Tensor);
    const diff = got.sub(want).abs().max().item();
    if (!(diff < 1e-5)) throw new Error(`export bench: the loaded program differs from the live module by ${diff}`);
    // a 10% target on ~20 ms calls: more rounds than the default, so one slow round moves the median less
    const ms = sideBySide(
      `${LAYERS}-layer model, loaded program vs live module`,
      { live: () => noGrad(() => model.call(x)), loaded: () => noGrad(() => loaded.call(x)) },
      31,
    );
    const ratio = ms.loaded! / ms.live!;
    return [
      {
        name: `export time, ${LAYERS}-layer model`,
        unit: 'ms',
        value: exportMs,
        target: '< 1000',
        pass: exportMs < 1000,
        detail: { layers: LAYERS },
      },
      { name: `load time of a saved ${LAYERS}-layer program`, unit: 'ms', value: loadMs, target: '< 1000', pass: loadMs < 1000 },
      { name: 'loaded program run time ÷ live module', unit: '×', value: ratio, target: '≤ 1.1', pass: ratio <= 1.1, detail: { ms } },
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
