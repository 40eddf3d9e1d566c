/**
 * Random model files for the state differential test (issue 13's acceptance): each mixes module-level
 * state, config objects, plain arrays of layers, closures over modules and variables, `console.log`,
 * `Math.random`, pushes to outside arrays and attribute mutation, with a `mutate(step)` that changes that
 * state between calls. Seeded, so a failure names a program that can be regenerated.
 */

/** mulberry32: a small seeded generator, so programs are the same on every machine. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The statements a forward may contain; each keeps `h` a [2, 4] tensor. */
const STATEMENTS: readonly string[] = [
  'h = h.mul(scale);',
  'h = h.add(cfg.shift).mul(cfg.gain.value);',
  'h = layers[0]!.call(h);',
  'for (const l of layers) h = l.call(h).tanh();',
  'h = inner.call(h).add(bias);',
  "console.log('forward', scale);",
  "effects.push('forward');",
  'this.hist.push(h.shape[0]!);',
  'h = h.add(Math.random());',
  'this.counter += 1;',
  'h = h.add(this.counter);',
  'h = this.fc.call(h).relu();',
  'if (scale > 1) h = h.neg();',
  'h = h.sigmoid().mul(cfg.gain.value);',
  'h = h.add(offsets[1]!);',
];

/** What `mutate(step)` may do between calls. */
const MUTATIONS: readonly string[] = [
  'scale = 1 + (step % 3);',
  'cfg.shift = step * 0.5;',
  'cfg.gain.value = 2 - step * 0.25;',
  'if (step === 2) layers[0] = new nn.Linear(4, 4);',
  'bias = step;',
  'offsets[1] = step * 0.1;',
  'if (step === 1) layers.push(new nn.Tanh());',
];

export interface StateProgram {
  readonly seed: number;
  readonly source: string;
}

export function stateProgram(seed: number): StateProgram {
  const rand = seeded(seed);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rand() * xs.length)]!;
  const body = Array.from({ length: 3 + Math.floor(rand() * 5) }, () => pick(STATEMENTS));
  const mutations = Array.from({ length: 1 + Math.floor(rand() * 3) }, () => pick(MUTATIONS));
  const source = `// state program ${seed}
import { manualSeed, nn, type Tensor } from 'kiln';

export let scale = ${1 + Math.floor(rand() * 2)};
export const cfg = { shift: ${(rand() * 2 - 1).toFixed(2)}, gain: { value: ${(0.5 + rand()).toFixed(2)} } };
export const layers: nn.Module[] = [new nn.Linear(4, 4)];
export const offsets = [0, 0.25];
export const effects: string[] = [];

export function build(seed: number) {
  manualSeed(seed);
  const inner = new nn.Linear(4, 4);
  let bias = 0;
  class Model extends nn.Module {
    fc = new nn.Linear(4, 4);
    counter = 0;
    hist: number[] = [];
    override forward(x: Tensor): Tensor {
      let h = x;
      ${body.join('\n      ')}
      return h;
    }
  }
  const model = new Model();
  return {
    model,
    mutate(step: number): void {
      ${mutations.filter((m) => m.startsWith('bias')).join('\n      ') || 'void step;'}
    },
  };
}

// Module-level state is shared by every model built here; closure state is each build's own.
export function mutateShared(step: number): void {
  ${mutations.filter((m) => !m.startsWith('bias')).join('\n  ') || 'void step;'}
}
`;
  return { seed, source };
}
