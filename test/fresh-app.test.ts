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

/**
 * The app's build through each route but `kiln/register` (run separately): Babel with `kiln/plugin` (what the
 * Babel CLI runs), `kiln build`, the TypeScript transformer `kiln/tsc`, and esbuild with `kiln/bundler`. Each
 * writes `out/<route>/model.js`; the script prints each output's plans as `name: kinds of segments`.
 */
const ROUTES = `import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { transformSync } from '@babel/core';
import ts from 'typescript';
import { build } from 'esbuild';
import kilnTransformer from 'kiln/tsc';
import { esbuild as kilnEsbuild } from 'kiln/bundler';

const file = 'src/model.ts';
const source = readFileSync(file, 'utf8');
const emit = (route, code) => {
  mkdirSync('out/' + route, { recursive: true });
  writeFileSync('out/' + route + '/model.js', code);
};
emit('babel', transformSync(source, { filename: file, babelrc: false, configFile: false,
  plugins: ['kiln/plugin'], presets: ['@babel/preset-typescript'] }).code);
execFileSync(process.execPath, ['node_modules/kiln/dist/bin/kiln.js', 'build', 'src/model.ts', '-d', 'out/build']);
emit('tsc', ts.transpileModule(source, { fileName: file,
  compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  transformers: { before: [kilnTransformer(undefined, {}, { ts })] } }).outputText);
const bundled = await build({ entryPoints: [file], bundle: false, write: false, format: 'esm', plugins: [kilnEsbuild()] });
emit('bundler', bundled.outputFiles[0].text);
const plans = {};
for (const route of ['babel', 'build', 'tsc', 'bundler']) {
  const code = readFileSync('out/' + route + '/model.js', 'utf8');
  plans[route] = [...code.matchAll(/name: "([^"]+)"/g)].map((m) => m[1]).join(',') + ': ' +
    [...code.matchAll(/kind: "(graph|break|branch)"/g)].map((m) => m[1]).join(',');
}
console.log(JSON.stringify(plans));
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
  // what an app installs itself to use the other routes: Babel (kiln's peer), TypeScript, a bundler
  for (const pkg of ['@babel', 'typescript', 'esbuild']) symlinkSync(join(deps, pkg), join(APP, 'node_modules', pkg), 'dir');
  writeFileSync(join(APP, 'package.json'), JSON.stringify({ name: 'fresh-app', private: true, type: 'module' }));
  writeFileSync(join(APP, 'src/model.ts'), MODEL);
  writeFileSync(join(APP, 'src/mistake.ts'), MISTAKE);
  writeFileSync(join(APP, 'src/node10.ts'), NODE10);
  writeFileSync(join(APP, 'routes.mjs'), ROUTES);
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

test('every route builds the same plans in the app (Babel, kiln build, kiln/tsc, kiln/bundler), and each build runs', (t) => {
  const r = spawnSync(process.execPath, ['routes.mjs'], { cwd: APP, encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  const plans = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, string>;
  t.deepEqual(Object.keys(plans), ['babel', 'build', 'tsc', 'bundler']);
  t.regex(plans.babel!, /^Net\.forward: graph$/);
  for (const [route, plan] of Object.entries(plans)) t.is(plan, plans.babel, route);
  for (const route of Object.keys(plans)) {
    const run = spawnSync(process.execPath, [`out/${route}/model.js`], { cwd: APP, encoding: 'utf8' });
    t.is(run.status, 0, `${route}: ${run.stderr}`);
    t.deepEqual(JSON.parse(run.stdout.trim().split('\n').pop()!), { shape: [2, 3], traced: true }, route);
  }
});
