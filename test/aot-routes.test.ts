import test from 'ava';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as kiln from 'kiln';
import { loadRewritten } from './plugin-helpers.js';

/**
 * (Sizes above the kernels backend's AOT threshold: smaller training calls run eagerly, where that is faster.)
 * Compiled training on both capture routes: a class the plugin rewrote trains through its captured graphs
 * with no code change, and the same source loaded as written trains through `compile()`'s run-time capture.
 * Either way each step's output comes from AOT autograd's compiled forward (its tape node is
 * CompiledFunctionBackward), and losses, gradients and parameters follow eager training.
 */
type Tensor = kiln.Tensor;
type Module = InstanceType<typeof kiln.nn.Module>;

const SOURCE = `
import { nn, type Tensor } from 'kiln';

export class Net extends nn.Module {
  fc1 = new nn.Linear(48, 96);
  fc2 = new nn.Linear(96, 16);
  override forward(x: Tensor): Tensor {
    const h = this.fc1.call(x).relu();
    return this.fc2.call(h.mul(h.sigmoid()));
  }
}

/** Breaks the graph in the middle: each captured segment trains compiled, the print runs eagerly. */
export class WithBreak extends nn.Module {
  fc1 = new nn.Linear(48, 96);
  fc2 = new nn.Linear(96, 16);
  seen = 0;
  override forward(x: Tensor): Tensor {
    const h = this.fc1.call(x).tanh();
    this.seen = this.seen + 1;
    console.debug('seen', this.seen);
    return this.fc2.call(h);
  }
}
`;

const dir = resolve('test/.tmp/aot-routes');
mkdirSync(dir, { recursive: true });
const file = join(dir, 'models.ts');
writeFileSync(file, SOURCE);
type Models = Record<'Net' | 'WithBreak', new () => Module>;
const rewritten = (await loadRewritten<Models>(file)).mod;
const plain = (await import(pathToFileURL(file).href)) as Models;

function train(m: Module, run: (x: Tensor) => Tensor, steps: number): { losses: number[]; gradFns: string[] } {
  kiln.manualSeed(5);
  const opt = new kiln.optim.Adam(m.parameters(), { lr: 0.01 });
  const losses: number[] = [];
  const gradFns: string[] = [];
  for (let i = 0; i < steps; i++) {
    const x = kiln.randn([32, 48]);
    const y = kiln.tensor(
      Array.from({ length: 32 }, (_, i) => i % 16),
      { dtype: 'int32' },
    );
    opt.zeroGrad();
    const out = run(x);
    gradFns.push(out.gradFn?.name ?? 'none');
    const loss = kiln.F.crossEntropy(out, y);
    loss.backward();
    opt.step();
    losses.push(loss.item());
  }
  return { losses, gradFns };
}

for (const [route, mod] of [
  ['plugin', rewritten],
  ['run-time capture', plain],
] as const) {
  for (const name of ['Net', 'WithBreak'] as const) {
    test(`${name} trains compiled by AOT autograd (${route}), as eager does`, (t) => {
      const debug = console.debug;
      console.debug = () => {};
      try {
        kiln.manualSeed(1);
        const ref = new mod[name]();
        kiln.manualSeed(1);
        const m = new mod[name]();
        const want = kiln.testing.eagerly(() => train(ref, (x) => ref.call(x) as Tensor, 4));
        const run =
          route === 'plugin'
            ? (x: Tensor) => m.call(x) as Tensor
            : (
                (c) => (x: Tensor) =>
                  c.call(x) as Tensor
              )(kiln.compile(m));
        const got = train(m, run, 4);
        // The last segment's output comes from the compiled forward; the break (WithBreak) runs eagerly between.
        // Run-time capture cannot split code it never saw around a side effect: that forward runs eagerly whole.
        const eagerWhole = route === 'run-time capture' && name === 'WithBreak';
        t.deepEqual(got.gradFns, Array<string>(4).fill(eagerWhole ? 'addBackward' : 'CompiledFunctionBackward'));
        got.losses.forEach((l, i) =>
          t.true(Math.abs(l - want.losses[i]!) < 1e-4 * Math.max(1, Math.abs(l)), `loss ${i}: ${l} vs ${want.losses[i]}`),
        );
        m.parameters().forEach((p, i) => t.true(kiln.allclose(p, ref.parameters()[i]!, { rtol: 1e-4, atol: 1e-5 }), `parameter ${i}`));
      } finally {
        console.debug = debug;
      }
    });
  }
}
