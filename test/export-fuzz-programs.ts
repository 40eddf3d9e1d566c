/**
 * Seeded random shape-generic model programs for kiln/export's differential test
 * (test/export-differential.test.ts, issue 16's acceptance). Each is the source text of one nn.Module class
 * whose `forward(x, y)` takes x [B, F0] and y [B, G] (the second input shares the batch) and mixes
 * element-wise ops, Linear, matmul, reductions, views and reshapes computed from `x.shape` / `numel()`
 * arithmetic, softmax / layerNorm, concatenation along the feature dim and batch slicing. Every step is
 * written for any batch size B ≥ 2; the generator tracks the feature size (static) so each step is valid.
 * A few programs (`specialises`) branch on the batch on purpose: export may refuse exactly those.
 *
 * The same text serves both capture routes: made into a class with `new Function` (code kiln/plugin never
 * saw) and written into a module file that kiln/plugin rewrites.
 */
import { seeded } from './state-programs.js';

export interface ExportFuzzProgram {
  /** The class's name (`P<index>`). */
  readonly name: string;
  /** `class P<i> extends nn.Module { … }`: fields for its layers and numbers, and forward. */
  readonly source: string;
  /** x's feature size. */
  readonly xFeatures: number;
  /** y's feature size. */
  readonly yFeatures: number;
  /** The program branches on the batch size, so export must refuse it. */
  readonly specialises: boolean;
  /**
   * Known limits that may make export refuse this shape-generic program (never give a wrong one): `b >> 1` on a
   * size is not recorded by kiln/plugin (it specialises), and `b - (b >> 1)` (⌈b/2⌉) is beyond the fits that
   * generalise code the plugin never saw.
   */
  readonly mayRefuse?: string;
}

/** The names a program's source uses besides its parameters, all from `kiln`. */
export const SCOPE_NAMES = ['nn', 'F', 'cat', 'randn'] as const;

/** Build program `index` of the fuzz with seed `seed`. */
export function generateExportProgram(seed: number, index: number): ExportFuzzProgram {
  const rand = seeded(seed * 100003 + index);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const name = `P${index}`;
  const xFeatures = pick([2, 3, 4, 6]);
  const yFeatures = pick([2, 3, 4]);
  let f = xFeatures; // h's feature size; h is always [B, f] between steps
  let n = 0; // fields and block-local names
  let specialises = false;
  let mayRefuse: string | undefined;
  const fields: string[] = [];
  const steps: string[] = [];
  const field = (prefix: string, init: string) => {
    const key = `${prefix}${n++}`;
    fields.push(`  ${key} = ${init};`);
    return key;
  };
  const count = 3 + Math.floor(rand() * 6);
  for (let i = 0; i < count; i++) {
    const kind = pick([
      'unary',
      'unary',
      'scalar',
      'attr',
      'linear',
      'linear',
      'matmulParam',
      'matmulSelf',
      'reduce',
      'reduce',
      'view',
      'view',
      'view',
      'view',
      'softmax',
      'norm',
      'cat',
      'second',
      'batchValue',
      'narrowFeatures',
      'rollBatch',
      'trivialBranch',
      'batchHalves',
      'repeatBatch',
      ...(rand() < 0.15 ? ['batchBranch'] : []),
    ]);
    switch (kind) {
      case 'unary':
        steps.push(
          pick([
            'h = h.relu();',
            'h = h.tanh();',
            'h = h.sigmoid();',
            'h = h.neg();',
            'h = h.abs();',
            'h = h.tanh().exp();',
            'h = h.mul(h);',
          ]),
        );
        break;
      case 'scalar': {
        const c = Math.round((rand() * 4 - 2) * 100) / 100;
        steps.push(`h = h.${pick(['add', 'mul'])}(${c});`);
        break;
      }
      case 'attr':
        steps.push(`h = h.mul(this.${field('scale', String(Math.round((0.5 + rand()) * 100) / 100))});`);
        break;
      case 'linear': {
        const out = pick([2, 3, 4, 6, 8]);
        steps.push(`h = this.${field('lin', `new nn.Linear(${f}, ${out}${rand() < 0.2 ? ', { bias: false }' : ''})`)}.call(h);`);
        f = out;
        break;
      }
      case 'matmulParam': {
        const out = pick([2, 3, 4]);
        steps.push(`h = h.matmul(this.${field('w', `new nn.Parameter(randn([${f}, ${out}]).mul(0.5))`)});`);
        f = out;
        break;
      }
      case 'matmulSelf': // a [B, B] intermediate
        steps.push('h = h.matmul(h.transpose(0, 1)).matmul(h).mul(0.1);');
        break;
      case 'reduce':
        steps.push(
          pick([
            'h = h.sub(h.mean(-1, true));',
            'h = h.add(h.sum(-1, true));',
            'h = h.sub(h.max(-1, true).values);',
            'h = h.div(h.abs().sum(0, true).add(1));', // over the batch
            'h = h.sub(h.mean(0, true));',
            'h = h.mul(h.sum(1).unsqueeze(1).tanh());',
          ]),
        );
        break;
      case 'view': {
        const options = [
          'const [b] = h.shape;\nh = h.view([b, -1]).relu();',
          `h = h.reshape([-1]).view([x.shape[0], ${f}]);`,
          `h = h.flatten().view([-1, ${f}]).tanh();`,
          'const [b, c] = h.shape;\nh = h.view([b, c, 1]).mul(h.view([b, 1, c])).sum(2).mul(0.5);',
          'h = h.view([h.shape[0], 1, h.shape[1]]).transpose(0, 1).squeeze(0);',
          'const b = h.shape[0];\nh = h.unsqueeze(1).expand([b, 3, h.shape[1]]).sum(1);',
          'h = h.reshape([h.numel() / h.shape[1], h.shape[1]]).sigmoid();',
        ];
        if (f % 2 === 0) {
          options.push(
            'const [b, c] = h.shape;\nh = h.reshape([h.shape[0] * 2, c / 2]).tanh().reshape([b, c]);',
            'const b = x.shape[0];\nh = h.reshape([h.shape[0] * 2, -1]).softmax(-1).view([b, -1]);',
            'h = h.reshape([h.numel() / 2, 2]).relu().view([h.shape[0], -1]);',
            `h = h.view([h.shape[0], 2, ${f / 2}]).transpose(1, 2).reshape([y.shape[0], ${f}]);`,
          );
        }
        steps.push(pick(options));
        break;
      }
      case 'softmax':
        steps.push(pick(['h = h.softmax(-1);', 'h = F.logSoftmax(h, 1);', 'h = h.softmax(0);']));
        break;
      case 'norm':
        if (rand() < 0.5) steps.push(`h = this.${field('norm', `new nn.LayerNorm(${f})`)}.call(h);`);
        else steps.push('h = F.layerNorm(h, [h.shape[1]]);');
        break;
      case 'cat': {
        const which = pick(['y', 'self', 'ySum']);
        if (which === 'y') {
          steps.push('h = cat([h, y], 1);');
          f += yFeatures;
        } else if (which === 'self' && f <= 8) {
          steps.push('h = cat([h, h.tanh()], -1);');
          f *= 2;
        } else {
          steps.push('h = cat([y.sum(-1, true), h], 1);');
          f += 1;
        }
        break;
      }
      case 'second':
        if (rand() < 0.5) steps.push(pick(['h = h.mul(y.mean(-1, true));', 'h = h.add(y.abs().sum(1, true));']));
        else steps.push(`h = h.add(this.${field('proj', `new nn.Linear(${yFeatures}, ${f})`)}.call(y));`);
        break;
      case 'batchValue': // a size used as a number, not a shape
        steps.push(pick(['h = h.div(x.shape[0]);', 'h = h.add(h.sum(0, true).div(h.shape[0]));', 'h = h.mul(y.shape[0] + 1).mul(0.1);']));
        break;
      case 'narrowFeatures':
        if (f >= 2) {
          steps.push('h = h.narrow(1, 0, Math.floor(h.shape[1] / 2));');
          f = Math.floor(f / 2);
        }
        break;
      case 'rollBatch': // batch slices whose sizes come from shape arithmetic
        steps.push(
          pick([
            'h = cat([h.narrow(0, 1, h.shape[0] - 1), h.narrow(0, 0, 1)], 0);',
            'const b = h.shape[0];\nh = h.narrow(0, 0, b - 1).sum(0, true).add(h.narrow(0, b - 1, 1)).expand([b, -1]).add(h);',
          ]),
        );
        break;
      case 'batchHalves': // floor division of the batch: rows [0, ⌊b/2⌋) and the rest
        if (rand() < 0.75) {
          steps.push(
            'const half = Math.floor(h.shape[0] / 2);\nh = h.add(h.narrow(0, 0, half).mean(0, true)).sub(h.narrow(0, half, h.shape[0] - half).mean(0, true));',
          );
        } else {
          steps.push(
            'const [first, rest] = [h.size(0) >> 1, h.size(0) - (h.size(0) >> 1)];\nh = cat([h.narrow(0, rest, first), h.narrow(0, 0, rest)], 0);',
          );
          mayRefuse = 'b >> 1 and b - (b >> 1) on the batch';
        }
        break;
      case 'repeatBatch': // the batch doubled and folded back, the second copy scaled
        steps.push(
          pick([
            'const b = h.shape.at(0);\nh = cat([h, h.mul(0.5)], 0).view([2, b, -1]).sum(0);',
            'h = h.unsqueeze(0).expand([2, ...h.shape]).reshape([2 * h.shape[0], h.shape[1]]).narrow(0, h.shape[0], h.shape[0]).tanh();',
            'h = h.t().matmul(y.narrow(1, 0, 1)).t().add(h);',
          ]),
        );
        break;
      case 'trivialBranch': // true at every size the Dim allows (min 2): must not specialise the batch
        steps.push('if (x.shape[0] > 1) h = h.mul(1.5);\nelse h = h.neg();');
        break;
      case 'batchBranch':
        specialises = true;
        steps.push('if (h.shape[0] <= 6) h = h.mul(2);\nelse h = h.add(1);');
        break;
    }
  }
  const body = ['let h = x;', ...steps.map((s) => (s.startsWith('const ') ? `{\n${indent(s)}\n}` : s)), 'return h;'];
  const source = [`class ${name} extends nn.Module {`, ...fields, '  forward(x, y) {', indent(indent(body.join('\n'))), '  }', '}'].join(
    '\n',
  );
  return { name, source, xFeatures, yFeatures, specialises, ...(mayRefuse !== undefined ? { mayRefuse } : {}) };
}

const indent = (s: string) =>
  s
    .split('\n')
    .map((l) => `  ${l}`)
    .join('\n');

/** The program's class made from its source text with `new Function` (code kiln/plugin never saw). */
export function buildProgramClass(p: ExportFuzzProgram, scope: Record<(typeof SCOPE_NAMES)[number], unknown>): new () => unknown {
  const make = new Function(...SCOPE_NAMES, `return ${p.source};`) as (...a: unknown[]) => new () => unknown;
  return make(...SCOPE_NAMES.map((k) => scope[k]));
}

/** A module file exporting the programs' classes, for kiln/plugin to rewrite. */
export function programsFile(programs: readonly ExportFuzzProgram[]): string {
  return [
    '// Generated by test/export-fuzz-programs.ts for test/export-differential.test.ts.',
    `import { ${SCOPE_NAMES.join(', ')} } from 'kiln';`,
    '',
    ...programs.map((p) => `export ${p.source}\n`),
  ].join('\n');
}
