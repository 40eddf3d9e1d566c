/**
 * Training on the two-spiral data set: full-batch Adam on a SpiralNet. Used by the demo (where kiln/plugin
 * has rewritten SpiralNet, so training runs through captured graphs) and by the training test (eager).
 */
import { F, manualSeed, noGrad, optim, type Tensor } from 'kiln';
import { SpiralNet } from './models.js';
import { twoSpirals } from './spirals-data.js';

export function accuracy(logits: Tensor, labels: Tensor): number {
  return logits.argmax(1).eq(labels).float().mean().item();
}

/** Full-batch Adam on the spirals; calls `onEpoch` once per epoch. */
export function trainSpirals(epochs: number, onEpoch?: (epoch: number, loss: number, acc: number) => void) {
  const { x, y } = twoSpirals(200, { seed: 1 });
  manualSeed(42);
  const model = new SpiralNet();
  const opt = new optim.Adam(model.parameters(), { lr: 0.01 });
  for (let epoch = 1; epoch <= epochs; epoch++) {
    opt.zeroGrad();
    const logits = model.call(x);
    const loss = F.crossEntropy(logits, y);
    loss.backward();
    opt.step();
    onEpoch?.(epoch, loss.item(), accuracy(logits, y));
  }
  const acc = noGrad(() => accuracy(model.eval().call(x), y));
  return { model, acc };
}
