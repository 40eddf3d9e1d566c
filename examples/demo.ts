/**
 * `npm run demo` (= `node --import kiln/register examples/demo.ts` after a build): the models in
 * models.ts are rewritten by kiln/plugin as they load. Trains SpiralNet (through its captured graph), then
 * for each model compares eager and compiled time and results, and prints what was captured and where
 * the graph breaks, with the source.
 */
import { codeFrameColumns } from '@babel/code-frame';
import { readFileSync } from 'node:fs';
import { explain, formatExplain, manualSeed, noGrad, testing, type Tensor } from 'kiln';
import { Gated, ResidualStack, SpiralNet } from './models.js';
import { trainSpirals } from './spirals.js';
import { twoSpirals } from './spirals-data.js';

/** The eager side of each comparison: the same model running its original code. */
const eagerly = testing.eagerly;

/** Median ms per call of eager and compiled, timed in alternating rounds so machine noise hits both alike. */
function timeBoth(f: () => unknown, rounds = 15, reps = 20): { eager: number; compiled: number } {
  const once = (g: () => unknown) => {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) g();
    return (performance.now() - t0) / reps;
  };
  const e: number[] = [];
  const c: number[] = [];
  f();
  eagerly(f);
  for (let r = 0; r < rounds; r++) {
    e.push(eagerly(() => once(f)));
    c.push(once(f));
  }
  const median = (a: number[]) => a.sort((p, q) => p - q)[a.length >> 1]!;
  return { eager: median(e), compiled: median(c) };
}

function frameAt(loc: string): string {
  const m = /^(.*):(\d+):(\d+)$/.exec(loc);
  if (!m) return '';
  const frame = codeFrameColumns(
    readFileSync(m[1]!, 'utf8'),
    { start: { line: Number(m[2]), column: Number(m[3]) } },
    { linesAbove: 1, linesBelow: 1 },
  );
  return frame.replace(/^/gm, '    ');
}

const epochs = 300;
const started = performance.now();
console.log(
  `kiln demo: 2-64-64-2 MLP on two spirals (400 points), Adam lr=0.01, ${epochs} steps through the captured graph,\n` +
    '  compiled for training by AOT autograd: one joint graph, split into a forward and a backward graph of kernels',
);
const { acc, model: trained } = trainSpirals(epochs, (epoch, loss, a) => {
  if (epoch % 50 === 0 || epoch === 1)
    console.log(`epoch ${String(epoch).padStart(3)}/${epochs}  loss ${loss.toFixed(4)}  accuracy ${(a * 100).toFixed(1)}%`);
});
console.log(`final accuracy: ${(acc * 100).toFixed(1)}%  (${((performance.now() - started) / 1000).toFixed(1)} s)`);
if (acc < 0.95) process.exitCode = 1;
{
  // What each training step ran: the forward and backward programs and what the forward saved for the backward
  const { x: points } = twoSpirals(200, { seed: 1 });
  const plan = explain(trained.train())(points).kernels?.[0] ?? '';
  const lines = plan.split('\n').filter((l) => /^kiln kernels: \w+ (while|forward|backward)/.test(l) || /^ {4}/.test(l));
  console.log(lines.map((l) => `  ${l.replace(/^kiln kernels: /, '')}`).join('\n'));
  trained.eval();
}

const { x } = twoSpirals(200, { seed: 1 });
for (const Model of [SpiralNet, Gated, ResidualStack]) {
  manualSeed(7);
  const model = new Model().eval();
  noGrad(() => {
    const diff = (model.call(x) as Tensor)
      .sub(eagerly(() => model.call(x)) as Tensor)
      .abs()
      .max()
      .item();
    const { eager, compiled } = timeBoth(() => model.call(x));
    const pct = Math.round((compiled / eager - 1) * 100);
    console.log(
      `\n── ${Model.name} on 400 points: eager ${eager.toFixed(3)} ms, compiled ${compiled.toFixed(3)} ms (${pct >= 0 ? '+' : ''}${pct}%), max |diff| ${diff}`,
    );
    const report = explain(model)(x);
    console.log(formatExplain(report).replace(/^/gm, '  '));
    for (const b of report.breakReasons) console.log(`  source of the break at ${b.loc}:\n${frameAt(b.loc)}`);
  });
}
