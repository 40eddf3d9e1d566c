import { nn, tensor } from '../src/index.js';
import { CNN, type CnnWeights, type MlpWeights } from './peers/shapes.mjs';

/**
 * kiln's models of the peer cases, built from the shared weights: the inference peers use them in eval
 * mode, the training bench in train mode (`.train()` on the result).
 */

/** kiln's MLP from kiln's nn, with the shared weights loaded through loadStateDict. */
export function kilnMlp(w: MlpWeights): nn.Module {
  const layers: nn.Module[] = [];
  w.layers.forEach((l, i) => {
    layers.push(new nn.Linear(l.inFeatures, l.outFeatures));
    if (i < w.layers.length - 1) layers.push(new nn.ReLU());
  });
  const model = new nn.Sequential(...layers);
  const sd = model.stateDict();
  w.layers.forEach((l, i) => {
    sd[`${2 * i}.weight`] = tensor(l.weight, { shape: [l.outFeatures, l.inFeatures] });
    sd[`${2 * i}.bias`] = tensor(l.bias);
  });
  model.loadStateDict(sd);
  return model.eval();
}

/** kiln's CNN: 3× (Conv2d, BatchNorm2d, ReLU), MaxPool2d(2), Flatten, Linear, with the shared weights. */
export function kilnCnn(w: CnnWeights): nn.Module {
  const layers: nn.Module[] = [];
  for (const c of w.convs)
    layers.push(
      new nn.Conv2d(c.inChannels, c.outChannels, 3, { padding: 1 }),
      new nn.BatchNorm2d(c.outChannels, { eps: w.eps }),
      new nn.ReLU(),
    );
  layers.push(new nn.MaxPool2d(2), new nn.Flatten(), new nn.Linear(CNN.flat, CNN.classes));
  const model = new nn.Sequential(...layers);
  const sd = model.stateDict();
  w.convs.forEach((c, i) => {
    const conv = 3 * i;
    const bn = 3 * i + 1;
    sd[`${conv}.weight`] = tensor(c.weight, { shape: [c.outChannels, c.inChannels, 3, 3] });
    sd[`${conv}.bias`] = tensor(c.bias);
    sd[`${bn}.weight`] = tensor(c.gamma);
    sd[`${bn}.bias`] = tensor(c.beta);
    sd[`${bn}.running_mean`] = tensor(c.runningMean);
    sd[`${bn}.running_var`] = tensor(c.runningVar);
  });
  sd[`${layers.length - 1}.weight`] = tensor(w.fcWeight, { shape: [CNN.classes, CNN.flat] });
  sd[`${layers.length - 1}.bias`] = tensor(w.fcBias);
  model.loadStateDict(sd);
  return model.eval();
}
