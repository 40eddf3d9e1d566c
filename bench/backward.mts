/**
 * `KILN_BENCH_ONLY=backward`: the MLP's backward graph (784-512-512-10, batch 64) as AOT autograd hands it to
 * the 'kernels' backend (issue 15, item 7: `mm(t(g), x)` weight gradients, `mm(g, w)` input gradients,
 * `sum(g, [0])` bias gradients, ReLU masks), three ways side by side in one process, interleaved rounds:
 * - compiled: `kernelsBackend` on the traced backward graph;
 * - the same graph run eagerly (`gm.forward`), op by op on the eager runtime;
 * - eager autograd: `loss.backward()` of the same nn MLP (its forward, which records the tape, runs untimed
 *   before each round's backward).
 * Every contender's gradients are checked against eager autograd's before anything is timed.
 */
import { manualSeed, nn, noGrad, ops, randn, type Tensor } from '../src/index.js';
import { symbolicTrace } from '../src/fx.js';
import { kernelsBackend } from '../src/kernels/index.js';

export interface BackwardCheck {
  name: string;
  unit: string;
  value: number;
  target: string;
  pass: boolean;
  detail?: object;
}

const ROUNDS = Number(process.env.KILN_BENCH_ROUNDS ?? 15);

const tr = (x: Tensor) => ops.transpose(x, 0, 1);
const reluMask = (g: Tensor, y: Tensor) => ops.where(ops.gt(y, 0), g, 0);

/** The MLP's backward graph: saved input x, weights w2, w3, saved ReLU outputs h1, h2, the output's gradient g. */
function mlpBackward(x: Tensor, w2: Tensor, w3: Tensor, h1: Tensor, h2: Tensor, g: Tensor): Tensor[] {
  const gw3 = ops.mm(tr(g), h2);
  const gb3 = ops.view(ops.sum(g, [0], true), [10]);
  const ga2 = reluMask(ops.mm(g, w3), h2);
  const gw2 = ops.mm(tr(ga2), h1);
  const gb2 = ops.sum(ga2, [0]);
  const ga1 = reluMask(ops.mm(ga2, w2), h1);
  const gw1 = ops.mm(tr(ga1), x);
  const gb1 = ops.sum(ga1, [0]);
  return [gw1, gb1, gw2, gb2, gw3, gb3];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

function maxRelDiff(got: Tensor, want: Tensor): number {
  const a = got.data();
  const b = want.data();
  let worst = 0;
  for (let i = 0; i < b.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / (1 + Math.abs(b[i]!)));
  return worst;
}

export function backwardBench(): BackwardCheck[] {
  manualSeed(0);
  const model = new nn.Sequential(new nn.Linear(784, 512), new nn.ReLU(), new nn.Linear(512, 512), new nn.ReLU(), new nn.Linear(512, 10));
  const [l1, , l2, , l3] = [...model.children()] as nn.Linear[];
  const params = model.parameters();
  const x = randn([64, 784]);
  const g = randn([64, 10]);
  const h1 = noGrad(() => l1!.call(x).relu());
  const h2 = noGrad(() => l2!.call(h1).relu());
  const args = [x, l2!.weight.detach(), l3!.weight.detach(), h1, h2, g];
  const gm = symbolicTrace(mlpBackward as (...xs: Tensor[]) => Tensor[]);
  const compiled = kernelsBackend(gm, args) as unknown as (...xs: Tensor[]) => Tensor[];

  const autogradBackward = (): Tensor[] => {
    for (const p of params) p.grad = null;
    const loss = model.call(x).mul(g).sum();
    const t0 = performance.now();
    loss.backward();
    lastAutogradMs = performance.now() - t0;
    return [l1!.weight, l1!.bias!, l2!.weight, l2!.bias!, l3!.weight, l3!.bias!].map((p) => p.grad!);
  };
  let lastAutogradMs = 0;
  const want = autogradBackward();
  noGrad(() => {
    for (const [who, got] of [
      ['compiled', compiled(...args)],
      ['compiled (plan)', compiled(...args)],
      ['same graph eagerly', gm.forward(...args) as Tensor[]],
    ] as const) {
      got.forEach((t, i) => {
        const d = maxRelDiff(t, want[i]!);
        if (!(d < 1e-4)) throw new Error(`backward bench: ${who} gradient ${i} differs from eager autograd's by ${d}`);
      });
    }
  });

  const contenders: Record<string, () => number> = {
    compiled: () => {
      const t0 = performance.now();
      noGrad(() => compiled(...args));
      return performance.now() - t0;
    },
    'same graph eagerly': () => {
      const t0 = performance.now();
      noGrad(() => gm.forward(...args));
      return performance.now() - t0;
    },
    'eager autograd backward': () => {
      autogradBackward();
      return lastAutogradMs;
    },
  };
  const names = Object.keys(contenders);
  for (const n of names) for (let i = 0; i < 3; i++) contenders[n]!(); // warm-up
  const times: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  for (let r = 0; r < ROUNDS; r++) for (const n of names) times[n]!.push(contenders[n]!());
  const ms = Object.fromEntries(names.map((n) => [n, median(times[n]!)]));
  console.log(
    `  MLP backward graph (784-512-512-10, batch 64), median of ${ROUNDS} interleaved rounds: ` +
      names.map((n) => `${n} ${ms[n]!.toFixed(2)} ms`).join(', '),
  );
  const overAutograd = ms['eager autograd backward']! / ms.compiled!;
  const overGraph = ms['same graph eagerly']! / ms.compiled!;
  return [
    {
      name: 'MLP backward graph compiled vs eager autograd',
      unit: '×',
      value: overAutograd,
      target: '≥ 1',
      pass: overAutograd >= 1,
      detail: { ms },
    },
    {
      name: 'MLP backward graph compiled vs the graph eagerly',
      unit: '×',
      value: overGraph,
      target: '≥ 1',
      pass: overGraph >= 1,
      detail: { ms },
    },
  ];
}
