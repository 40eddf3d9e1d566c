import test from 'ava';
import { ValueError, nn, optim, tensor } from '../src/index.js';

const param = (v: number[]) => new nn.Parameter(tensor(v));

test('SGD with momentum and weight decay follows PyTorch update rule', (t) => {
  const p = param([1, -2]);
  const opt = new optim.SGD([p], { lr: 0.1, momentum: 0.9, weightDecay: 0.01 });
  const grads = [
    [0.5, 0.5],
    [1, -1],
  ];
  const buf = [0, 0];
  const w = [1, -2];
  grads.forEach((g, step) => {
    p.grad = tensor(g);
    opt.step();
    for (let i = 0; i < 2; i++) {
      const d = g[i]! + 0.01 * w[i]!;
      buf[i] = step === 0 ? d : 0.9 * buf[i]! + d;
      w[i] = w[i]! - 0.1 * buf[i]!;
    }
  });
  (p.toArray() as number[]).forEach((v, i) => t.true(Math.abs(v - w[i]!) < 1e-6));
  opt.zeroGrad();
  t.is(p.grad, null);
});

test('Adam matches the bias-corrected update, step by step', (t) => {
  const p = param([0.5]);
  const opt = new optim.Adam([p], { lr: 0.1 });
  let m = 0;
  let v = 0;
  let w = 0.5;
  for (let step = 1; step <= 3; step++) {
    const g = 2 * w; // d/dw w²
    p.grad = tensor([g]);
    opt.step();
    m = 0.9 * m + 0.1 * g;
    v = 0.999 * v + 0.001 * g * g;
    w -= (0.1 * (m / (1 - 0.9 ** step))) / (Math.sqrt(v / (1 - 0.999 ** step)) + 1e-8);
  }
  t.true(Math.abs(p.item() - w) < 1e-6);
});

test('optimizers accept parameter groups and skip params without grads', (t) => {
  const a = param([1]);
  const b = param([1]);
  const opt = new optim.SGD([{ params: [a], lr: 1 }, { params: [b] }], { lr: 0.1 });
  a.grad = tensor([1]);
  b.grad = tensor([1]);
  opt.step();
  t.is(a.item(), 0);
  t.true(Math.abs(b.item() - 0.9) < 1e-7);
  const c = param([1]);
  new optim.SGD([c], { lr: 1 }).step();
  t.is(c.item(), 1);
});

test('bad optimizer settings are rejected', (t) => {
  t.throws(() => new optim.SGD([], { lr: 0.1 }), { instanceOf: ValueError, message: 'SGD: got an empty parameter list' });
  t.throws(() => new optim.SGD([param([1])], { lr: -1 }), { message: 'SGD: lr must be a finite number ≥ 0, got -1' });
  t.throws(() => new optim.Adam([param([1])], { betas: [0.9, 1] }), {
    message: 'Adam: betas[1] must be a finite number ≥ 0 and < 1, got 1',
  });
  const nonLeaf = param([1]).mul(2);
  t.throws(() => new optim.SGD([nonLeaf]), { message: /can't optimize a non-leaf tensor/ });
});
