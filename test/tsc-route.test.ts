import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import ts from 'typescript';
import * as kiln from 'kiln';
import kilnTransformer, { decodeMappings } from '../src/tsc/index.js';
import type { FileReport } from '../src/rewrite/transform.js';
import { loadTypeEvidence } from '../src/analysis/load-types.js';
import { transformSource } from '../src/register/transform-file.js';
import { fixture, loadRewritten } from './plugin-helpers.js';

/**
 * Issue 18, item 2: kiln/tsc, the TypeScript 5.x transformer, through the compiler API's
 * customTransformers and through ts-patch: the same plans as the Babel plugin, runnable output, and
 * source maps that point at the original lines.
 */
type Module = InstanceType<typeof kiln.nn.Module>;
type Tensor = kiln.Tensor;
const OUT = resolve('test/.tmp/tsc-route');
const NAMES = ['mlp', 'breaks-mixed', 'imported-helpers', 'data-dependent-if', 'helper-break', 'modulelist', 'super-forward'];

/** Emit `files` with tsc and kiln/tsc into `outDir`; the reports kiln/tsc gave, by file. */
function emit(files: string[], rootDir: string, outDir: string, options: Record<string, unknown> = {}): Map<string, FileReport> {
  const program = ts.createProgram(files, {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    strict: true,
    skipLibCheck: true,
    sourceMap: true,
    rootDir,
    outDir,
  });
  const reports = new Map<string, FileReport>();
  const r = program.emit(undefined, undefined, undefined, false, {
    before: [kilnTransformer(program, { ...options, onReport: (f, rep) => reports.set(resolve(f), rep) })],
  });
  if (r.emitSkipped) throw new Error('tsc skipped the emit');
  return reports;
}

test('customTransformers: the same plans as the Babel plugin on the plugin fixtures', (t) => {
  for (const name of NAMES) {
    const file = resolve(fixture(name));
    const reports = emit([file], resolve(fixture(name), '..'), join(OUT, name));
    const babel = transformSource(readFileSync(file, 'utf8'), file, { sourceMaps: false }).report;
    t.deepEqual(reports.get(file), babel, name);
  }
});

test('customTransformers: the emitted JavaScript runs compiled and agrees with eager, graphs and breaks as on the Babel route', async (t) => {
  const name = 'breaks-mixed';
  emit([resolve(fixture(name))], resolve(fixture(name), '..'), join(OUT, `${name}-run`));
  const mod = (await import(pathToFileURL(join(OUT, `${name}-run`, 'input.js')).href)) as Record<string, new () => Module>;
  const plain = (await import(pathToFileURL(resolve(fixture(name))).href)) as Record<string, new () => Module>;
  const babel = (await loadRewritten<Record<string, new () => Module>>(fixture(name))).mod;
  const make = (k: Record<string, new () => Module>) => (kiln.manualSeed(2), new k.MLP!());
  const [m, viaBabel, ref] = [make(mod), make(babel), make(plain)];
  const counter = new kiln.testing.CompileCounter();
  const babelCounter = new kiln.testing.CompileCounter();
  const c = kiln.compile(m, { backend: counter });
  const cb = kiln.compile(viaBabel, { backend: babelCounter });
  const x = kiln.randn([3, 4]);
  t.true(kiln.allclose(c.call(x) as Tensor, ref.forward(x) as Tensor, { atol: 1e-5 }));
  t.true(kiln.allclose(cb.call(x) as Tensor, ref.forward(x) as Tensor, { atol: 1e-5 }));
  t.is(counter.frameCount, babelCounter.frameCount);
  t.is(kiln.explain(m)(x).graphBreakCount, 2);
});

test('customTransformers: with the program, the checker decides tensors and modules as kiln build --types does', (t) => {
  const model = resolve('test/fixtures/analysis-types/model.ts');
  const reports = emit([model], resolve('test/fixtures/analysis-types'), join(OUT, 'types'));
  const typed = transformSource(readFileSync(model, 'utf8'), model, {
    sourceMaps: false,
    pluginOptions: { types: loadTypeEvidence([model], model) },
  }).report;
  t.deepEqual(reports.get(model), typed);
  t.deepEqual(
    reports.get(model)!.plans.map((p) => p.name),
    ['Tagged.forward', 'Plain.forward'],
  );
  const untyped = emit([model], resolve('test/fixtures/analysis-types'), join(OUT, 'untyped'), { types: false });
  t.deepEqual(
    untyped.get(model)!.plans.map((p) => p.name),
    ['Plain.forward'],
  );
});

test('source maps of the tsc output point at the original lines', (t) => {
  const name = 'imported-helpers';
  emit([resolve(fixture(name))], resolve(fixture(name), '..'), join(OUT, `${name}-map`));
  const js = readFileSync(join(OUT, `${name}-map`, 'input.js'), 'utf8').split('\n');
  const map = JSON.parse(readFileSync(join(OUT, `${name}-map`, 'input.js.map'), 'utf8')) as { sources: string[]; mappings: string };
  t.regex(map.sources[0]!, /fixtures\/plugin\/imported-helpers\/input\.ts$/);
  const original = readFileSync(fixture(name), 'utf8').split('\n');
  const lines = decodeLines(map.mappings);
  for (const [text, want] of [
    ['export class UsesHelpers', 'export class UsesHelpers'],
    ['fc = new nn.Linear', 'fc = new nn.Linear'],
  ] as const) {
    const gen = js.findIndex((l) => l.includes(text));
    const orig = original.findIndex((l) => l.includes(want));
    t.true(gen >= 0 && orig >= 0);
    t.is(lines[gen], orig, `${text} maps to line ${orig + 1}`);
  }
});

test('ts-patch: plugins: [{ transform: kiln/tsc }] with options emits the plan, with the options block', (t) => {
  const dir = join(OUT, 'tspc');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  // A path to the built transformer: kiln is not installed under node_modules in its own checkout.
  const config = {
    compilerOptions: {
      target: 'ES2022',
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      strict: true,
      skipLibCheck: true,
      outDir: 'out',
      rootDir: '../../../fixtures/plugin/mlp',
      plugins: [{ transform: '../../../../dist/src/tsc/index.js', backend: 'eager', cacheSizeLimit: 3 }],
    },
    files: ['../../../fixtures/plugin/mlp/input.ts'],
  };
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify(config));
  const r = spawnSync(process.execPath, ['node_modules/ts-patch/bin/tspc.js', '-p', join(dir, 'tsconfig.json')], { encoding: 'utf8' });
  t.is(r.status, 0, r.stdout + r.stderr);
  const out = readFileSync(join(dir, 'out', 'input.js'), 'utf8');
  t.regex(out, /_kiln\.run\(this, _MLP_forward, \[x\]\)/);
  t.regex(out, /options: \{\s*backend: "eager",\s*cacheSizeLimit: 3\s*\}/);
});

test("kiln/tsc is an export of the package (API.md's kiln/tsc), and kiln/bundler too", (t) => {
  const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { exports: Record<string, { default: string }> };
  t.is(pkg.exports['./tsc']!.default, './dist/src/tsc/index.js');
  t.is(pkg.exports['./bundler']!.default, './dist/src/bundler/index.js');
});

/** For each generated line, the original line (0-based) of its first mapped segment. */
const decodeLines = (mappings: string) => decodeMappings(mappings).map((segs) => segs[0]?.[1]);

test('compiling a module whose forward was not rewritten says so once, with the recipes', async (t) => {
  class NotRewritten extends kiln.nn.Module {
    override forward(x: Tensor): Tensor {
      return x.relu();
    }
  }
  class AlsoNot extends kiln.nn.Module {
    override forward(x: Tensor): Tensor {
      return x.neg();
    }
  }
  const warnings: Error[] = [];
  const listen = (w: Error) => void warnings.push(w);
  process.on('warning', listen);
  try {
    const x = kiln.randn([2, 3]);
    t.true(kiln.allclose(kiln.compile(new NotRewritten()).call(x) as Tensor, x.relu()));
    t.true(kiln.allclose(kiln.compile(new AlsoNot()).call(x) as Tensor, x.neg()));
    await new Promise((r) => setImmediate(r));
  } finally {
    process.off('warning', listen);
  }
  const mine = warnings.filter((w) => w.name === 'KilnPluginWarning');
  t.is(mine.length, 1, 'once per process');
  t.regex(mine[0]!.message, /NotRewritten\.forward was not rewritten by the kiln plugin/);
  for (const recipe of ['node --import kiln/register', 'kiln/plugin', 'kiln/tsc', 'tsc --noEmit && kiln build', 'kiln/bundler'])
    t.true(mine[0]!.message.includes(recipe), recipe);
});
