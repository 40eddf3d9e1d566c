/**
 * Issue 18 item 1's target: a 2,000-line project builds with types (`kiln build --types`) in under 5 s.
 * Generates a project of module classes and helpers across files (imports between them, untyped locals,
 * helper return types, an alias of nn.Module) into bench/.tmp/types-project, then times `build` with and
 * without types in this one process (the machine's load shows in both) and prints the numbers as JSON.
 *
 *   npm run build && npx tsx bench/types-build.mts
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { build } from '../src/cli/build.js';

const root = resolve('bench/.tmp/types-project');
const FILES = 30;

function moduleFile(i: number): string {
  const prev = i > 0 ? `import { block${i - 1}, Layer${i - 1} } from './m${i - 1}.js';\n` : '';
  const base = i > 0 ? `Layer${i - 1}` : 'nn.Module';
  const lines = [
    `import { nn, F, type Tensor } from 'kiln';`,
    prev,
    `export const Layer${i} = nn.Module;`,
    `export function block${i}(x: Tensor, k: number): Tensor {`,
    `  const h = x.mul(k);`,
    `  return F.relu(h).add(x);`,
    `}`,
  ];
  for (let c = 0; c < 4; c++) {
    lines.push(
      `export class Net${i}_${c} extends ${c % 2 === 0 ? base : 'nn.Module'} {`,
      `  fc1 = new nn.Linear(8, 8);`,
      `  fc2 = new nn.Linear(8, 8);`,
      `  scale = ${c + 1};`,
      `  override forward(x: Tensor): Tensor {`,
      `    const a = ${i > 0 ? `block${i - 1}` : `block${i}`}(this.fc1.call(x), this.scale);`,
      `    const b = this.fc2.call(a);`,
      `    const parts = [a, b];`,
      `    let out = b;`,
      `    for (const p of parts) out = out.add(p);`,
      `    if (this.scale > 2) out = out.mul(0.5);`,
      `    const n = out.shape[0];`,
      `    return out.mul(n);`,
      `  }`,
      `}`,
    );
  }
  return lines.join('\n') + '\n';
}

rmSync(root, { recursive: true, force: true });
mkdirSync(join(root, 'src'), { recursive: true });
let total = 0;
for (let i = 0; i < FILES; i++) {
  const text = moduleFile(i);
  total += text.split('\n').length - 1;
  writeFileSync(join(root, 'src', `m${i}.ts`), text);
}
writeFileSync(
  join(root, 'tsconfig.json'),
  JSON.stringify({
    compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, skipLibCheck: true },
    include: ['src'],
  }),
);
const time = (types: boolean) => {
  const t0 = performance.now();
  const args = {
    sources: [join(root, 'src')],
    outDir: join(root, types ? 'out-types' : 'out'),
    copyFiles: false,
    ignore: [],
    watch: false,
    types,
  };
  const r = build(args, { log: () => {}, error: () => {} });
  return { ms: Math.round(performance.now() - t0), files: r.files.length, plans: r.plans, breaks: r.breaks };
};
const plain = time(false);
const typed = time(true);
const result = { lines: total, files: FILES, withoutTypes: plain, withTypes: typed, targetMs: 5000, met: typed.ms < 5000 };
console.log(JSON.stringify(result, null, 2));
