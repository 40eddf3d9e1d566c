import test from 'ava';
import { trainSpirals } from '../examples/spirals.js';

test('an MLP learns the two spirals to ≥ 95% accuracy in 300 full-batch Adam steps (fixed seed)', (t) => {
  const losses: number[] = [];
  const { acc } = trainSpirals(300, (_epoch, loss) => losses.push(loss));
  t.true(acc >= 0.95, `final accuracy ${acc}`);
  t.true(losses[losses.length - 1]! < losses[0]! / 10, `loss went from ${losses[0]} to ${losses[losses.length - 1]}`);
});
