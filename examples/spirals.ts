/**
 * `npm run demo`: train a small MLP eagerly on the two-spiral data set and report accuracy, then run the
 * trained model eager vs compiled and print what compile captured (and where a model with a
 * data-dependent branch breaks the graph).
 */
import { F, compile, explain, formatExplain, manualSeed, nn, noGrad, optim, type Tensor } from '../src/index.js';
import { twoSpirals } from './spirals-data.js';

class SpiralNet extends nn.Module {
  fc1 = new nn.Linear(2, 64);
  fc2 = new nn.Linear(64, 64);
  out = new nn.Linear(64, 2);

  override forward(x: Tensor): Tensor {
    return this.out.call(this.fc2.call(this.fc1.call(x).tanh()).tanh());
  }
}

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

/** A model whose forward branches on a tensor value: compile captures nothing there and says why. */
class Gated extends nn.Module {
  fc = new nn.Linear(2, 2);
  override forward(x: Tensor): Tensor {
    const h = this.fc.call(x);
    return h.mean().item() > 0 ? h.relu() : h.neg();
  }
}

function compiledVsEager(): void {
  const { x } = twoSpirals(200, { seed: 1 });
  manualSeed(42);
  const model = new SpiralNet().eval();
  const compiled = compile(model, { backend: 'eager' });
  const time = (f: () => unknown) => {
    f();
    const t0 = performance.now();
    for (let i = 0; i < 200; i++) f();
    return (performance.now() - t0) / 200;
  };
  noGrad(() => {
    const same = (compiled.call(x) as Tensor).sub(model.call(x)).abs().max().item();
    const eagerMs = time(() => model.call(x));
    const compiledMs = time(() => compiled.call(x));
    console.log(
      `\nSpiralNet inference on 400 points: eager ${eagerMs.toFixed(3)} ms, compiled ${compiledMs.toFixed(3)} ms, max |diff| ${same}`,
    );
  });
  console.log('explain(SpiralNet):');
  console.log(formatExplain(explain(model)(x)));
  console.log('\nexplain(Gated) — a data-dependent branch:');
  console.log(formatExplain(explain(new Gated())(x)));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const epochs = 300;
  const started = performance.now();
  console.log('kiln demo: 2-64-64-2 MLP on two spirals (400 points), Adam lr=0.01, eager');
  const { acc } = trainSpirals(epochs, (epoch, loss, a) => {
    if (epoch % 10 === 0 || epoch === 1) {
      console.log(`epoch ${String(epoch).padStart(3)}/${epochs}  loss ${loss.toFixed(4)}  accuracy ${(a * 100).toFixed(1)}%`);
    }
  });
  console.log(`final accuracy: ${(acc * 100).toFixed(1)}%  (${((performance.now() - started) / 1000).toFixed(1)} s)`);
  if (acc < 0.95) process.exitCode = 1;
  compiledVsEager();
}
