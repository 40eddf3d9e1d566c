import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, realpathSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import ts from 'typescript';

/**
 * A new user's app (issue 18, item 6): kiln's packed tarball unpacked into a temporary project's
 * node_modules, its dependencies linked from this repo's install (the machine is offline, and a full install
 * builds gpu.js's native `gl`), then the user's code type-checked with `skipLibCheck: false` under each
 * supported `moduleResolution` and a model run through `node --import kiln/register`. Needs `npm run build`.
 */
const APP = resolve('test/.tmp/fresh-app');

const MODEL = `import { F, compile, nn, noGrad, allclose, randn, type Tensor } from 'kiln';
import { symbolicTrace } from 'kiln/fx';

export class Net extends nn.Module {
  conv = new nn.Conv2d(1, 2, 3, { padding: 1 });
  fc = new nn.Linear(2 * 4 * 4, 3);
  override forward(x: Tensor): Tensor {
    const h = F.relu(F.conv2d(x, this.conv.weight, this.conv.bias, { stride: 2, padding: 1 }));
    return F.softmax(this.fc.call(h.flatten(1)), { dim: 1 });
  }
}

const net = new Net();
const x = randn([2, 1, 8, 8]);
const eager = noGrad(() => net.call(x));
const compiled = noGrad(() => compile(net).call(x));
const traced = noGrad(() => symbolicTrace(new Net()).graph.nodes.length);
if (!allclose(eager, compiled, { atol: 1e-5 })) throw new Error('compiled output differs from eager');
console.log(JSON.stringify({ shape: eager.shape, traced: traced > 0 }));
`;

/** A mistake the published types must catch in the user's code. */
const MISTAKE = `import { F, randn } from 'kiln';
// @ts-expect-error: misspelt option
F.conv2d(randn([1, 1, 4, 4]), randn([1, 1, 3, 3]), null, { strid: 2 });
`;

/** kiln/fx under moduleResolution node (node10) works through typesVersions. */
const NODE10 = `import { symbolicTrace } from 'kiln/fx';
import type { KilnPluginOptions } from 'kiln/plugin';
export const opts: KilnPluginOptions = { backend: 'kernels' };
export const trace = symbolicTrace;
`;

const setup = (() => {
  rmSync(APP, { recursive: true, force: true });
  mkdirSync(join(APP, 'node_modules'), { recursive: true });
  mkdirSync(join(APP, 'src'));
  execFileSync('npm', ['pack', '--ignore-scripts', '--pack-destination', APP], { stdio: ['ignore', 'pipe', 'pipe'] });
  const tarball = readdirSync(APP).find((f) => f.endsWith('.tgz'))!;
  execFileSync('tar', ['-xzf', join(APP, tarball), '-C', join(APP, 'node_modules')]);
  renameSync(join(APP, 'node_modules/package'), join(APP, 'node_modules/kiln'));
  // kiln's own dependencies (and its peers) resolve from its folder; the app's @types from the app's
  const deps = realpathSync('node_modules');
  symlinkSync(deps, join(APP, 'node_modules/kiln/node_modules'), 'dir');
  symlinkSync(join(deps, '@types'), join(APP, 'node_modules/@types'), 'dir');
  writeFileSync(join(APP, 'package.json'), JSON.stringify({ name: 'fresh-app', private: true, type: 'module' }));
  writeFileSync(join(APP, 'src/model.ts'), MODEL);
  writeFileSync(join(APP, 'src/mistake.ts'), MISTAKE);
  writeFileSync(join(APP, 'src/node10.ts'), NODE10);
  return tarball;
})();

function typeCheck(files: readonly string[], options: ts.CompilerOptions): string[] {
  const program = ts.createProgram(
    files.map((f) => join(APP, 'src', f)),
    { strict: true, noEmit: true, skipLibCheck: false, target: ts.ScriptTarget.ES2022, types: ['node'], ...options },
  );
  return ts
    .getPreEmitDiagnostics(program)
    .map((d) => `${d.file?.fileName.replace(APP, '') ?? ''}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`);
}

test('the tarball is kiln', (t) => {
  t.regex(setup, /^kiln-\d+\.\d+\.\d+\.tgz$/);
});

for (const [name, mod, res] of [
  ['nodenext', ts.ModuleKind.NodeNext, ts.ModuleResolutionKind.NodeNext],
  ['node16', ts.ModuleKind.Node16, ts.ModuleResolutionKind.Node16],
] as const) {
  test(`a user's model type-checks against the packed kiln with skipLibCheck false, moduleResolution ${name}`, (t) => {
    t.deepEqual(typeCheck(['model.ts', 'mistake.ts'], { module: mod, moduleResolution: res }), []);
  });
}

test(`moduleResolution node (node10) sees kiln/fx and kiln/plugin through typesVersions, skipLibCheck false`, (t) => {
  t.deepEqual(
    typeCheck(['node10.ts'], { module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Node10, esModuleInterop: true }),
    [],
  );
});

test('the app runs its TypeScript model through node --import kiln/register, compiled equal to eager', (t) => {
  const r = spawnSync(process.execPath, ['--import', 'kiln/register', 'src/model.ts'], { cwd: APP, encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  t.deepEqual(JSON.parse(r.stdout.trim().split('\n').pop()!), { shape: [2, 3], traced: true });
});
