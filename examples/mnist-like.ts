/**
 * A small CNN trained end to end on synthetic digits (examples/digits-data.ts), as a user would write it:
 * `data.DataLoader` batches, training through `compile(model)`, a safetensors checkpoint reloaded into a fresh
 * model, and that model exported (`exportProgram` with a dynamic batch Dim, then `toOnnx`) and run by
 * onnxruntime-node, whose predictions on a held-out batch must equal kiln's (exit 1 if not).
 *
 *   npm run build && node --import kiln/register examples/mnist-like.ts [--epochs 5] [--budget 30]
 *
 * `--budget` stops training after that many seconds (checked between batches). Files go to a temp dir.
 */
import { SingleBar } from 'cli-progress';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { F, compile, data, loadSafetensors, manualSeed, nn, noGrad, optim, saveSafetensors, type Tensor } from 'kiln';
import { Dim, exportProgram, toOnnx } from 'kiln/export';
import { IMAGE_SIZE, SyntheticDigits } from './digits-data.js';

/** conv-bn-relu-pool twice, then a linear classifier: [N, 1, 12, 12] → [N, 10] logits. */
class DigitNet extends nn.Module {
  features = new nn.Sequential(
    new nn.Conv2d(1, 8, 3, { padding: 1 }),
    new nn.BatchNorm2d(8),
    new nn.ReLU(),
    new nn.MaxPool2d(2),
    new nn.Conv2d(8, 16, 3, { padding: 1 }),
    new nn.BatchNorm2d(16),
    new nn.ReLU(),
    new nn.MaxPool2d(2),
  );
  flatten = new nn.Flatten();
  classifier = new nn.Linear(16 * (IMAGE_SIZE / 4) ** 2, 10);

  override forward(x: Tensor): Tensor {
    return this.classifier.call(this.flatten.call(this.features.call(x)));
  }
}

const { values: args } = parseArgs({ options: { epochs: { type: 'string', default: '5' }, budget: { type: 'string' } } });
const epochs = Number(args.epochs);
const budgetS = args.budget === undefined ? Infinity : Number(args.budget);
if (!Number.isInteger(epochs) || epochs < 1 || !(budgetS >= 0)) {
  console.error(`usage: mnist-like.ts [--epochs N ≥ 1] [--budget seconds ≥ 0], got --epochs ${args.epochs} --budget ${args.budget}`);
  process.exit(2);
}

const BATCH = 32;
const train = new SyntheticDigits(1280, 1);
const heldOut = new SyntheticDigits(200, 2);
const loader = new data.DataLoader(train, { batchSize: BATCH, shuffle: true, seed: 0, dropLast: true });
// One batch holding the whole held-out set (200, not a multiple of the training batch: the export's dim is dynamic)
const [xTest, yTest] = [...new data.DataLoader(heldOut, { batchSize: heldOut.length })][0]! as [Tensor, Tensor];

manualSeed(0);
const model = new DigitNet();
const compiled = compile(model);
const opt = new optim.AdamW(model.parameters(), { lr: 1e-2, weightDecay: 1e-4 });

// A bar on an interactive terminal; plain lines in logs and CI (which also set FORCE_COLOR on pipes)
console.log(
  `DigitNet (conv-bn-relu-pool ×2, linear) on ${train.length} synthetic ${IMAGE_SIZE}×${IMAGE_SIZE} digits, batch ${BATCH}, AdamW, ` +
    `${epochs} epoch${epochs === 1 ? '' : 's'}${budgetS === Infinity ? '' : ` or ${budgetS} s`}, trained through compile(model)`,
);
const env = process.env;
const fancy = process.stdout.isTTY === true && env.CI === undefined && env.FORCE_COLOR === undefined;
const started = performance.now();
const elapsedS = () => (performance.now() - started) / 1000;
let steps = 0;
training: for (let epoch = 1; epoch <= epochs; epoch++) {
  const bar = fancy
    ? new SingleBar({
        format: `epoch ${epoch}/${epochs} [{bar}] {value}/{total} batches  loss {loss}`,
        hideCursor: true,
        clearOnComplete: true,
      })
    : null;
  bar?.start(loader.length, 0, { loss: '-' });
  let lossSum = 0;
  let batches = 0;
  for (const [x, y] of loader as Iterable<[Tensor, Tensor]>) {
    if (elapsedS() > budgetS) {
      bar?.stop();
      console.log(`budget of ${budgetS} s reached after ${steps} steps`);
      break training;
    }
    opt.zeroGrad();
    const loss = F.crossEntropy(compiled.call(x) as Tensor, y);
    loss.backward();
    opt.step();
    const l = loss.item();
    lossSum += l;
    batches++;
    steps++;
    bar?.update(batches, { loss: l.toFixed(3) });
  }
  bar?.stop();
  console.log(`epoch ${epoch}/${epochs}: mean loss ${(lossSum / batches).toFixed(4)} over ${batches} batches (${elapsedS().toFixed(1)} s)`);
}

model.eval();
const predict = (m: nn.Module): { logits: Tensor; preds: Int32Array } =>
  noGrad(() => {
    const logits = m.call(xTest) as Tensor;
    return { logits, preds: logits.argmax(1).data() as Int32Array };
  });
const trained = predict(compiled);
const labels = yTest.data() as Int32Array;
const accuracy = trained.preds.filter((p, i) => p === labels[i]).length / labels.length;
console.log(`held-out accuracy: ${(accuracy * 100).toFixed(1)}% on ${labels.length} digits (chance 10%)`);

/** Throws (so the process exits 1) when two prediction vectors differ, naming the first difference. */
function requireSamePredictions(what: string, got: ArrayLike<number>, want: ArrayLike<number>): void {
  const bad = Array.from(want).findIndex((w, i) => got[i] !== w);
  if (got.length !== want.length || bad >= 0)
    throw new Error(`FAILED: ${what}: predictions differ from kiln's (sample ${bad}: ${got[bad]} vs ${want[bad]})`);
}

const dir = mkdtempSync(join(tmpdir(), 'kiln-mnist-like-'));
try {
  // Checkpoint, then a fresh model with other random weights loads it
  const ckpt = join(dir, 'digits.safetensors');
  saveSafetensors(model.stateDict(), ckpt, { metadata: { steps: String(steps) } });
  manualSeed(123);
  const fresh = new DigitNet();
  fresh.loadStateDict(loadSafetensors(ckpt));
  fresh.eval();
  const reloaded = predict(fresh);
  requireSamePredictions('the model reloaded from safetensors', reloaded.preds, trained.preds);
  console.log('checkpoint: saved to safetensors, reloaded into a fresh DigitNet: same predictions');

  // Export with a dynamic batch (traced at 8, run at 200), write ONNX, run it in onnxruntime-node
  const program = exportProgram(fresh, [xTest.narrow(0, 0, 8)], { dynamicShapes: [{ 0: Dim('batch', { min: 1, max: 1024 }) }] });
  const onnxPath = join(dir, 'digits.onnx');
  toOnnx(program, onnxPath);
  const ort = await import('onnxruntime-node');
  const session = await ort.InferenceSession.create(onnxPath);
  const input = new ort.Tensor('float32', xTest.contiguous().data() as Float32Array, [...xTest.shape]);
  const output = (await session.run({ [session.inputNames[0]!]: input }))[session.outputNames[0]!]!;
  await session.release();
  const ortLogits = output.data as Float32Array;
  const ortPreds = Int32Array.from({ length: labels.length }, (_, i) => {
    const row = ortLogits.subarray(i * 10, i * 10 + 10);
    return row.indexOf(Math.max(...row));
  });
  const kilnLogits = reloaded.logits.data();
  let maxDiff = 0;
  for (let i = 0; i < kilnLogits.length; i++) maxDiff = Math.max(maxDiff, Math.abs(ortLogits[i]! - kilnLogits[i]!));
  requireSamePredictions('onnxruntime-node', ortPreds, reloaded.preds);
  if (!(maxDiff <= 1e-3)) throw new Error(`FAILED: onnxruntime-node logits differ from kiln's by up to ${maxDiff}`);
  console.log(
    `ONNX: exported with a dynamic batch dim (traced at 8), run by onnxruntime-node at ${labels.length}: predictions equal kiln's ` +
      `on all ${labels.length} held-out digits (max |logit diff| ${maxDiff.toExponential(1)})`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log(`done in ${elapsedS().toFixed(1)} s`);
