import test from 'ava';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as kiln from 'kiln';
import { loadTypeEvidence } from '../src/analysis/load-types.js';
import { build } from '../src/cli/build.js';
import { explainFile } from '../src/cli/explain.js';
import { transformSource } from '../src/register/transform-file.js';
import { FIXTURES, fixture } from './plugin-helpers.js';

/**
 * Issue 18, item 1: type-aware analysis. With a TypeScript project loaded (ts-morph), the checker decides
 * which values are tensors and modules across files — an imported alias of nn.Module, what a typed helper
 * returns into an untyped local — and where annotations suffice both routes emit the same plans and code.
 */
type Module = InstanceType<typeof kiln.nn.Module>;
type Tensor = kiln.Tensor;
const TYPES_DIR = resolve('test/fixtures/analysis-types');
const MODEL = join(TYPES_DIR, 'model.ts');
const pluginFixtures = readdirSync(FIXTURES)
  .map((d) => resolve(fixture(d)))
  .filter((f) => existsSync(f));

// One project for every file below: loading it is the slow part.
const evidence = loadTypeEvidence([MODEL, ...pluginFixtures], MODEL);
const withTypes = (file: string) =>
  transformSource(readFileSync(file, 'utf8'), file, { sourceMaps: false, pluginOptions: { types: evidence } });
const withoutTypes = (file: string) => transformSource(readFileSync(file, 'utf8'), file, { sourceMaps: false });

test('both routes emit the same plans and code for every plugin fixture (annotations suffice there)', (t) => {
  t.true(pluginFixtures.length >= 10);
  for (const file of pluginFixtures) {
    const a = withoutTypes(file);
    const b = withTypes(file);
    t.deepEqual(b.report, a.report, file);
    t.is(b.code, a.code, file);
  }
});

test('types: a class extending an alias of nn.Module imported from another file is rewritten (Babel alone cannot see it)', (t) => {
  t.deepEqual(
    withoutTypes(MODEL).report!.plans.map((p) => p.name),
    ['Plain.forward'],
  );
  t.deepEqual(
    withTypes(MODEL).report!.plans.map((p) => p.name),
    ['Tagged.forward', 'Plain.forward'],
  );
});

test("types: an untyped local holding a typed helper's tensor is a tensor (formatting it is a break)", (t) => {
  const plan = withTypes(MODEL).report!.plans.find((p) => p.name === 'Tagged.forward')!;
  const brk = plan.segments.find((s) => s.kind === 'break')!;
  t.is(brk.loc, '11:17');
  t.regex(brk.reason!, /formats tensor h as text/);
  // untyped locals of tensor methods and helpers stay captured whole on both routes
  const plain = withTypes(MODEL).report!.plans.find((p) => p.name === 'Plain.forward')!;
  t.deepEqual(
    plain.segments.map((s) => s.kind),
    ['graph'],
  );
});

test('types: the rewritten alias subclass runs as eagerly, through its plan', async (t) => {
  const { code } = withTypes(MODEL);
  const hash = createHash('sha1').update(code).digest('hex').slice(0, 12);
  const out = join(TYPES_DIR, `.rewritten-${hash}.mjs`);
  writeFileSync(out, code);
  // the rewritten file imports ./layers.js, which resolves to layers.ts only under tsx: give it a twin
  writeFileSync(
    join(TYPES_DIR, 'layers.js'),
    transformSource(readFileSync(join(TYPES_DIR, 'layers.ts'), 'utf8'), join(TYPES_DIR, 'layers.ts'), { sourceMaps: false }).code,
  );
  try {
    const mod = (await import(pathToFileURL(out).href)) as Record<string, new () => Module>;
    const plain = (await import(pathToFileURL(MODEL).href)) as Record<string, new () => Module>;
    kiln.manualSeed(5);
    const m = new mod.Tagged!();
    kiln.manualSeed(5);
    const ref = new plain.Tagged!();
    const c = kiln.compile(m, { backend: 'eager' });
    for (let i = 0; i < 2; i++) {
      const x = kiln.randn([2 + i, 4]);
      t.true(kiln.allclose(c.call(x) as Tensor, ref.forward(x) as Tensor, { atol: 1e-6 }));
    }
    t.is(kiln.explain(m)(kiln.randn([2, 4])).graphBreakCount, 2);
  } finally {
    rmSync(join(TYPES_DIR, 'layers.js'), { force: true });
  }
});

test('kiln build --types rewrites what the checker shows; without it, what the annotations show', (t) => {
  const out = mkdtempSync(join(tmpdir(), 'kiln-types-'));
  try {
    const typed: string[] = [];
    const args = (dir: string, types: boolean) => ({
      sources: [TYPES_DIR],
      outDir: join(out, dir),
      copyFiles: false,
      ignore: [],
      watch: false,
      types,
    });
    const io = (lines: string[]) => ({ log: (l: string) => lines.push(l), error: (e: string) => lines.push(e) });
    build(args('typed', true), io(typed));
    const plain: string[] = [];
    build(args('plain', false), io(plain));
    t.true(
      typed.some((l) => /model\.ts {2}\(2 rewritten, 2 graph breaks\)/.test(l)),
      typed.join('\n'),
    );
    t.true(
      plain.some((l) => /model\.ts {2}\(1 rewritten, 0 graph breaks\)/.test(l)),
      plain.join('\n'),
    );
    t.regex(readFileSync(join(out, 'typed', 'model.js'), 'utf8'), /name: "Tagged\.forward"/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('kiln explain is type-aware by default inside a TypeScript project; --no-types turns it off', (t) => {
  t.true(existsSync(join(dirname(dirname(dirname(TYPES_DIR))), 'tsconfig.json')));
  t.regex(explainFile(MODEL), /Tagged\.forward \(line 9\): 2 graph segments, 2 breaks/);
  t.notRegex(explainFile(MODEL, undefined, false, { types: false }), /Tagged\.forward/);
});

test('a file changed since the project was loaded gets no type evidence (offsets would not agree)', (t) => {
  const edited = `// edited\n${readFileSync(MODEL, 'utf8')}`;
  const r = transformSource(edited, MODEL, { sourceMaps: false, pluginOptions: { types: evidence } });
  t.deepEqual(
    r.report!.plans.map((p) => p.name),
    ['Plain.forward'],
  );
});
