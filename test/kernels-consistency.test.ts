import test from 'ava';
import {
  F,
  Tensor,
  compile,
  getKernelBackend,
  kernelCacheStats,
  manualSeed,
  nn,
  noGrad,
  randn,
  setKernelBackend,
  type KernelBackendName,
} from '../src/index.js';
import { Graph, GraphModule, type Node } from '../src/fx.js';
import { kernelsBackend } from '../src/kernels/index.js';
import { close } from './helpers.js';

/**
 * The 'kernels' backend computes each value once per call (issue 13, item 6): a value that a reduction and
 * its element-wise consumers share is the same float32 number in both, so invariants such as `s <= s.max()`
 * and "every row has its max" hold exactly on every call, the first one included; and a plan that meets a
 * result it did not expect never runs a side effect twice (running statistics, dropout's random draws) and is
 * not rebuilt on every call.
 */

type Act = (t: Tensor) => Tensor;

const ACTIVATIONS: [string, Act][] = [
  ['tanh().exp()', (s) => s.tanh().exp()],
  ['sigmoid', (s) => s.sigmoid()],
  ['gelu', (s) => F.gelu(s)],
  ['gelu tanh', (s) => F.gelu(s, { approximate: 'tanh' })],
  ['relu', (s) => s.relu()],
  ['exp', (s) => s.exp()],
  ['softmax', (s) => s.softmax(-1)],
  ['logSoftmax', (s) => s.logSoftmax(-1)],
  ['layerNorm', (s) => F.layerNorm(s, [10])],
];

/** Rows of a [rows, n] mask with no true element. */
function rowsWithout(mask: Tensor): number {
  const [rows, n] = mask.shape as [number, number];
  const d = mask.data();
  let missing = 0;
  for (let r = 0; r < rows; r++) {
    let any = false;
    for (let j = 0; j < n && !any; j++) any = d[r * n + j] !== 0;
    if (!any) missing++;
  }
  return missing;
}

function falses(mask: Tensor): number {
  return mask.data().filter((v) => v === 0).length;
}

/** The default kernel mode here (webasm, or headlessgl with a GPU), and cpu, whose kernels compute in float64. */
const MODES: KernelBackendName[] = [...new Set<KernelBackendName>([getKernelBackend(), 'cpu'])];

/** `fn` with kernels compiled for `mode`, then the mode before it again. */
function inMode(mode: KernelBackendName, fn: () => void): void {
  const before = getKernelBackend();
  setKernelBackend(mode);
  try {
    fn();
  } finally {
    setKernelBackend(before);
  }
}

/** `act(lin(x))`, shared by a reduction and by the element-wise consumers of the reduction's result. */
class Shared extends nn.Module {
  lin = new nn.Linear(16, 10);
  constructor(readonly act: Act) {
    super();
  }
  override forward(x: Tensor): Tensor[] {
    const s = this.act(this.lin.call(x) as Tensor);
    const rowMax = s.max(-1, true).values;
    return [
      s.eq(rowMax), // one-hot of each row's max
      s.ge(rowMax), // top-1 mask: the same elements
      s.le(s.max()), // every element at most the whole tensor's max (amax)
      s.ge(s.min()),
      s.gather(-1, s.argmax(-1, true)).eq(rowMax), // argmax picks an element equal to the max
      s.sub(s.mean(-1, true)), // compared with eager
      s.div(s.sum(-1, true).abs().add(1)),
      s,
    ];
  }
}

for (const [name, act] of ACTIVATIONS.slice(0, 3)) {
  test(`issue 13 repro: s = ${name} of lin(x); s.eq(s.max(-1, true).values) has a max in each of 1,280 rows on every call`, (t) => {
    manualSeed(13);
    const m = new Shared(act);
    const opt = compile(m);
    noGrad(() => {
      for (let call = 0; call < 4; call++) {
        const [oneHot] = opt.call(randn([1280, 16])) as Tensor[];
        t.is(rowsWithout(oneHot!), 0, `call ${call + 1}: rows with no max`);
      }
    });
  });
}

for (const mode of MODES) {
  test(`a producer shared by reductions and their consumers (${mode}): invariants hold exactly, values match eager, one plan`, (t) => {
    manualSeed(14);
    inMode(mode, () => {
      for (const [name, act] of ACTIVATIONS) {
        const m = new Shared(act);
        const opt = compile(m);
        const plans = kernelCacheStats().plans;
        noGrad(() => {
          for (let call = 0; call < 3; call++) {
            const x = randn([1280, 16]).mul(call + 1);
            const got = opt.call(x) as Tensor[];
            const want = m.call(x) as Tensor[];
            const [oneHot, top1, belowMax, aboveMin, argmaxIsMax] = got as [Tensor, Tensor, Tensor, Tensor, Tensor];
            const at = `${name}, call ${call + 1}`;
            t.is(rowsWithout(oneHot), 0, `${at}: every row has its max`);
            t.deepEqual(top1.data(), oneHot.data(), `${at}: s >= max is s == max`);
            t.is(falses(belowMax), 0, `${at}: s <= s.max()`);
            t.is(falses(aboveMin), 0, `${at}: s >= s.min()`);
            t.is(falses(argmaxIsMax), 0, `${at}: s[argmax] == max`);
            for (const k of [5, 6, 7]) close(t, got[k]!, want[k]!, `${at}: output ${k} against eager`);
          }
        });
        t.is(kernelCacheStats().plans - plans, 1, `${name}: planned once`);
      }
    });
  });
}

/** The same activation written twice: one copy fused into a reduction's kernel, the other into a comparison's. */
class Twice extends nn.Module {
  lin = new nn.Linear(16, 10);
  constructor(readonly act: Act) {
    super();
  }
  override forward(x: Tensor): Tensor[] {
    const h = this.lin.call(x) as Tensor;
    return [this.act(h).le(this.act(h).max()), this.act(h).ge(this.act(h).min()), this.act(h).sub(this.act(h).mean(-1, true))];
  }
}

for (const mode of MODES) {
  test(`one expression in two kernels rounds the same (${mode}): act(h) <= act(h).max() as eagerly`, (t) => {
    manualSeed(20);
    inMode(mode, () => {
      for (const [name, act] of ACTIVATIONS) {
        const m = new Twice(act);
        const opt = compile(m);
        noGrad(() => {
          for (let call = 0; call < 3; call++) {
            const x = randn([1280, 16]).mul(3);
            const [le, ge, centred] = opt.call(x) as Tensor[];
            t.is(falses(le!), 0, `${name}, call ${call + 1}: act(h) <= act(h).max()`);
            t.is(falses(ge!), 0, `${name}, call ${call + 1}: act(h) >= act(h).min()`);
            close(t, centred!, (m.call(x) as Tensor[])[2]!, `${name}, call ${call + 1}: against eager`);
          }
        });
      }
    });
  });
}

test('the first call returns values computed one way: eager steps never see eager values mixed with kernel values', (t) => {
  manualSeed(15);
  const m = new Shared((s) => s.tanh().exp());
  noGrad(() => {
    const x = randn([1280, 16]);
    const got = compile(m).call(x) as Tensor[];
    const want = m.call(x) as Tensor[];
    // the planning call's result is the eager run's, so it equals eager exactly
    got.forEach((g, k) => t.deepEqual(g.data(), want[k]!.data(), `output ${k}`));
  });
});

/** BatchNorm in training mode, a conv on its result, then a slice of the conv's result (an eager `index`). */
class BnConvSlice extends nn.Module {
  bn = new nn.BatchNorm2d(3);
  conv = new nn.Conv2d(3, 8, 3);
  constructor(readonly after: Act = (y) => y) {
    super();
  }
  override forward(x: Tensor): Tensor {
    return this.after((this.conv.call(this.bn.call(x)) as Tensor).index([':', '1:5']));
  }
}

function bnTwins(after?: Act): [BnConvSlice, BnConvSlice] {
  manualSeed(16);
  const a = new BnConvSlice(after);
  const b = new BnConvSlice(after);
  b.loadStateDict(a.stateDict());
  a.train();
  b.train();
  return [a, b];
}

for (const [what, after] of [
  ['the slice is the output', undefined],
  ['a kernel reads the slice', (y: Tensor) => y.relu().mul(2)],
] as const) {
  test(`issue 13 repro: BN(train) → conv → index(slice), ${what}: running stats advance once per call, one plan`, (t) => {
    const [eager, model] = bnTwins(after);
    const opt = compile(model);
    const plans = kernelCacheStats().plans;
    noGrad(() => {
      manualSeed(17);
      for (let call = 1; call <= 4; call++) {
        const x = randn([2, 3, 8, 8]).mul(call);
        close(t, opt.call(x) as Tensor, eager.call(x), `call ${call}`);
        t.is(model.bn.num_batches_tracked!.item(), call, `num_batches_tracked after call ${call}`);
      }
    });
    close(t, model.bn.running_mean!, eager.bn.running_mean!, 'running mean');
    close(t, model.bn.running_var!, eager.bn.running_var!, 'running var');
    t.is(model.bn.num_batches_tracked!.item(), eager.bn.num_batches_tracked!.item());
    t.is(kernelCacheStats().plans - plans, 1, 'planned once');
  });
}

class DropThenConv extends nn.Module {
  conv = new nn.Conv2d(3, 4, 3);
  drop = new nn.Dropout(0.5);
  override forward(x: Tensor): Tensor {
    return this.drop.call((this.conv.call(x) as Tensor).index([':', ':', '1:3'])) as Tensor;
  }
}

test('dropout in training mode draws its mask once per call: same masks and random stream as eager', (t) => {
  manualSeed(18);
  const m = new DropThenConv();
  const x = randn([2, 3, 6, 6]);
  const opt = compile(m);
  const plans = kernelCacheStats().plans;
  noGrad(() => {
    manualSeed(19);
    const want = [0, 1, 2, 3].map(() => m.call(x));
    const eagerNext = randn([4]);
    manualSeed(19);
    const got = [0, 1, 2, 3].map(() => opt.call(x) as Tensor);
    const compiledNext = randn([4]);
    got.forEach((g, i) => close(t, g, want[i]!, `call ${i + 1}`));
    t.deepEqual(compiledNext.data(), eagerNext.data(), 'the random stream advanced as much as eagerly');
  });
  t.is(kernelCacheStats().plans - plans, 1, 'planned once');
});

/**
 * A graph built by hand: x, then f(x) (a plain function, so an eager step), then what `use` adds. f's result may
 * change between calls at one input signature, which no captured kiln op does, so the plan's eager completion is
 * reached on purpose.
 */
function changingGraph(f: (x: Tensor) => unknown, use: (g: Graph, x: Node, fx: Node) => Node): GraphModule {
  const g = new Graph();
  const x = g.placeholder('x');
  const fx = g.callFunction(f as (...a: never[]) => unknown, [x]);
  g.output(use(g, x, fx));
  return new GraphModule({}, g, 'Changing');
}

test('an eager step whose result changes shape mid-plan: the call finishes eagerly, nothing runs twice, then eager', (t) => {
  let calls = 0;
  const f = (x: Tensor) => {
    calls++;
    return calls >= 3 ? x.index([':', '0:2']) : x.mul(1);
  };
  const gm = changingGraph(f, (g, _x, y) => g.callMethod('relu', [g.callMethod('mul', [y, 3])]));
  const run = kernelsBackend(gm);
  const x = randn([4, 5]);
  noGrad(() => {
    close(t, run(x) as Tensor, x.mul(3).relu(), 'call 1 (plans)');
    close(t, run(x) as Tensor, x.mul(3).relu(), 'call 2 (the plan)');
    t.is(calls, 2);
    close(t, run(x) as Tensor, x.index([':', '0:2']).mul(3).relu(), 'call 3: f changed shape, finished eagerly');
    t.is(calls, 3, 'f ran once in call 3');
    t.regex(run.pprint(), /eager \(the plan stopped: [a-z_]+ returned float32\[4, 2\], planned for float32\[4, 5\]\)/);
    close(t, run(x) as Tensor, x.index([':', '0:2']).mul(3).relu(), 'call 4 runs eagerly');
    t.is(calls, 4);
  });
});

test('a number an eager step returns and a kernel bakes in: a changed number finishes the call eagerly, never stale', (t) => {
  let scale = 2;
  const f = () => scale;
  const gm = changingGraph(f, (g, x, y) => g.callMethod('add', [g.callMethod('mul', [x, y]), 1]));
  const run = kernelsBackend(gm);
  const x = randn([3, 4]);
  noGrad(() => {
    close(t, run(x) as Tensor, x.mul(2).add(1), 'call 1 (plans)');
    close(t, run(x) as Tensor, x.mul(2).add(1), 'call 2 (the plan)');
    scale = 5;
    close(t, run(x) as Tensor, x.mul(5).add(1), 'call 3: the number changed');
    t.regex(run.pprint(), /the plan stopped: [a-z_]+ returned 5, planned for 2/);
  });
});
