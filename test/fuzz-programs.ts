/**
 * Seeded random model programs for the differential fuzz (test/differential.test.ts): small nn.Module
 * classes and plain functions mixing element-wise ops, matmul/linear, reductions, views, softmax, layers
 * (Linear, Conv2d, BatchNorm, LayerNorm, ReLU, Dropout in eval), plain arrays of layers, numeric
 * attributes, grad-mode regions, a reduction compared with its producer, and side effects with
 * module-level state and a layer held in a closure. Each program is real source text (its `forward` is
 * the steps written out, with layers and numbers as attributes), made into a class or function with
 * `new Function`, so run-time capture reads and traces it as it would code the plugin never saw.
 */
import { F as functional, nn, noGrad, randn, type Tensor } from '../src/index.js';
import { seeded } from './state-programs.js';

/** Module-level state for the side-effect step: forward appends to the log and reads the scale. */
export const sideLog: number[] = [];
const sideScale = { value: 1.5 };

export interface Program {
  /** A readable list of the steps, for failure messages. */
  readonly description: string;
  readonly model: nn.Module | ((x: Tensor, y: Tensor) => Tensor);
  readonly inputs: Tensor[];
  readonly mode: 'train' | 'eval';
}

/** Build program `index` of the fuzz with seed `seed`. */
export function generateProgram(seed: number, index: number): Program {
  const rand = seeded(seed * 100003 + index);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const B = pick([2, 3]);
  let F = pick([3, 4, 5]);
  const asFunction = rand() < 0.25; // functions hold no layers: element-wise, matmul, reductions, views
  const layers: Record<string, nn.Module | nn.Module[]> = {};
  const attrs: Record<string, number> = {};
  const names: string[] = [];
  const steps: string[] = [];
  /** Layers the program reaches only through a closure (the side-effect step), by name. */
  const closed: Record<string, nn.Module> = {};
  let hasDropout = false;
  let n = 0;
  const add = (name: string, step: string) => {
    names.push(name);
    steps.push(step);
  };

  // A conv stem on 4-D input for some module programs.
  const conv = !asFunction && rand() < 0.25;
  const C = 2;
  const HW = 4;
  if (conv) {
    const out = pick([2, 3]);
    const key = `conv${n++}`;
    layers[key] = new nn.Conv2d(C, out, 3, { padding: 1 });
    add(`Conv2d(${C}, ${out}, 3, padding 1)`, `h = this.${key}.call(h);`);
    if (rand() < 0.5) {
      const bn = `bn${n++}`;
      layers[bn] = new nn.BatchNorm2d(out);
      add(`BatchNorm2d(${out})`, `h = this.${bn}.call(h);`);
    }
    const pooled = rand() < 0.5;
    if (pooled) add('mean([2, 3])', 'h = h.mean([2, 3]);');
    else add(`reshape([B, ${out * HW * HW}])`, `h = h.reshape([${B}, -1]);`);
    const flat = pooled ? out : out * HW * HW;
    const lin = `lin${n++}`;
    layers[lin] = new nn.Linear(flat, F);
    add(`Linear(${flat}, ${F})`, `h = this.${lin}.call(h);`);
  }
  const yShape = [B, F];

  const count = 2 + Math.floor(rand() * 5);
  for (let i = 0; i < count; i++) {
    const kind = pick(
      asFunction
        ? ['unary', 'unary', 'binary', 'scalar', 'matmulSelf', 'reduce', 'view', 'softmax']
        : ['unary', 'binary', 'scalar', 'attr', 'linear', 'matmulParam', 'reduce', 'view', 'softmax', 'norm', 'layer', 'array'].concat([
            'sharedReductionCompare',
            'noGradRegion',
            'sideEffects',
          ]),
    );
    switch (kind) {
      case 'unary': {
        const op = pick(['relu', 'tanh', 'sigmoid', 'neg', 'abs', 'expTanh', 'square'] as const);
        if (op === 'expTanh') add('tanh().exp()', 'h = h.tanh().exp();');
        else if (op === 'square') add('mul(self)', 'h = h.mul(h);');
        else add(`${op}()`, `h = h.${op}();`);
        break;
      }
      case 'binary': {
        // y has the shape the program started with; only combine while h still has it.
        if (F !== yShape[1]) break;
        const op = pick(['add', 'sub', 'mul'] as const);
        add(`${op}(y)`, `h = h.${op}(y);`);
        break;
      }
      case 'scalar': {
        const c = Math.round((rand() * 4 - 2) * 100) / 100;
        const op = pick(['add', 'mul'] as const);
        add(`${op}(${c})`, `h = h.${op}(${c});`);
        break;
      }
      case 'attr': {
        const key = `scale${n++}`;
        attrs[key] = Math.round((0.5 + rand()) * 100) / 100;
        add(`mul(this.${key})`, `h = h.mul(this.${key});`);
        break;
      }
      case 'linear': {
        const out = pick([2, 3, 4, 5]);
        const key = `lin${n++}`;
        layers[key] = new nn.Linear(F, out, { bias: rand() < 0.8 });
        add(`Linear(${F}, ${out})`, `h = this.${key}.call(h);`);
        F = out;
        break;
      }
      case 'matmulParam': {
        const out = pick([2, 3, 4]);
        const key = `w${n++}`;
        const holder = new nn.Module();
        (holder as unknown as Record<string, unknown>).weight = new nn.Parameter(randn([F, out]).mul(0.5));
        layers[key] = holder;
        add(`matmul(this.${key}.weight [${F}, ${out}])`, `h = h.matmul(this.${key}.weight);`);
        F = out;
        break;
      }
      case 'matmulSelf':
        add('matmul(h.transpose(0, 1)).matmul(h)', 'h = h.matmul(h.transpose(0, 1)).matmul(h).mul(0.1);');
        break;
      case 'reduce': {
        const r = pick(['center', 'sumKeep', 'maxKeep', 'normalize'] as const);
        if (r === 'center') add('sub(mean(-1, true))', 'h = h.sub(h.mean(-1, true));');
        else if (r === 'sumKeep') add('add(sum(-1, true))', 'h = h.add(h.sum(-1, true));');
        else if (r === 'maxKeep') add('sub(max(-1, true).values)', 'h = h.sub(h.max(-1, true).values);');
        else add('div(abs().sum(0, true).add(1))', 'h = h.div(h.abs().sum(0, true).add(1));');
        break;
      }
      case 'view': {
        const v = pick(['flatRoundTrip', 'unsqueeze', 'transposeTwice'] as const);
        const f = F;
        if (v === 'flatRoundTrip') add(`reshape([-1]).reshape([B, ${f}])`, `h = h.reshape([-1]).reshape([${B}, ${f}]);`);
        else if (v === 'unsqueeze') add('unsqueeze(1).squeeze(1)', 'h = h.unsqueeze(1).squeeze(1);');
        else add('transpose(0, 1).relu().transpose(0, 1)', 'h = h.transpose(0, 1).relu().transpose(0, 1);');
        break;
      }
      case 'softmax':
        if (rand() < 0.5) add('softmax(-1)', 'h = h.softmax(-1);');
        else add('logSoftmax(-1)', 'h = F.logSoftmax(h, -1);');
        break;
      case 'norm': {
        const key = `norm${n++}`;
        const useBn = rand() < 0.5;
        layers[key] = useBn ? new nn.BatchNorm1d(F) : new nn.LayerNorm(F);
        add(`${useBn ? 'BatchNorm1d' : 'LayerNorm'}(${F})`, `h = this.${key}.call(h);`);
        break;
      }
      case 'layer': {
        const key = `act${n++}`;
        const which = pick(['ReLU', 'Dropout'] as const);
        layers[key] = which === 'ReLU' ? new nn.ReLU() : new nn.Dropout(0.3);
        hasDropout ||= which === 'Dropout';
        add(`${which}()`, `h = this.${key}.call(h);`);
        break;
      }
      case 'sharedReductionCompare':
        add(
          'tanh().exp() == its row max, as float',
          `const e${n} = h.tanh().exp(); h = e${n}.eq(e${n}.max(-1, true).values).float().add(e${n++});`,
        );
        break;
      case 'noGradRegion':
        add('noGrad(() => mul(2)).add(h)', 'h = noGrad(() => h.mul(2)).add(h);');
        break;
      case 'sideEffects': {
        const key = `closed${n++}`;
        closed[key] = new nn.Linear(F, F); // a module reached only through a closure
        add('log.push(1); mul(module-level scale); closure Linear', `sideLog.push(1); h = closed.${key}.call(h.mul(sideScale.value));`);
        break;
      }
      case 'array': {
        // A plain array of layers (not a ModuleList), called in a loop.
        const key = `block${n++}`;
        const f = F;
        layers[key] = [new nn.Linear(f, f), new nn.ReLU()];
        add(`[Linear(${f}, ${f}), ReLU()] (plain array)`, `for (const layer of this.${key}) h = layer.call(h);`);
        break;
      }
    }
  }
  if (steps.length === 0) add('relu()', 'h = h.relu();');

  const inputs = [conv ? randn([B, C, HW, HW]) : randn([B, yShape[1]!]), randn(yShape)];
  const description = `${asFunction ? 'function' : 'module'} (${inputs.map((t) => `[${t.shape.join(', ')}]`).join(', ')}): ${names.join(' → ')}`;
  const body = `let h = x;\n${steps.join('\n')}\nreturn h;`;
  // The names a program's source may use besides its parameters: kiln's, and the side-effect step's state.
  const scope = { nn, F: functional, noGrad, sideLog, sideScale, closed };
  const make = (code: string) => new Function(...Object.keys(scope), code)(...Object.values(scope)) as unknown;
  if (asFunction) {
    const fn = make(`return function generated(x, y) {\n${body}\n};`) as (x: Tensor, y: Tensor) => Tensor;
    return { description, model: fn, inputs, mode: 'eval' };
  }
  const Generated = make(`return class Generated extends nn.Module {\nforward(x, y) {\n${body}\n}\n};`) as new () => nn.Module;
  const model = Object.assign(new Generated(), layers, attrs);
  const mode = hasDropout || rand() < 0.5 ? 'eval' : 'train';
  model.train(mode === 'train');
  return { description, model, inputs, mode };
}
