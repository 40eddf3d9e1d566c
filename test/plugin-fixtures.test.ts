import test from 'ava';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stripVTControlCharacters } from 'node:util';
import { format } from 'prettier';
import * as kiln from 'kiln';
import { Analyzer } from '../src/analysis/classify.js';
import { FIXTURES, fixture, loadRewritten, transform } from './plugin-helpers.js';

/**
 * Every fixture under test/fixtures/plugin: the rewritten source equals the committed output.js (after
 * formatting; `UPDATE_FIXTURES=1 npm test` rewrites them), the transform's report is snapshotted, and
 * the rewritten class, run through compile() with a CompileCounter and through its own dispatcher,
 * matches the same source loaded without the plugin on three calls with different inputs.
 */
type Module = InstanceType<typeof kiln.nn.Module>;
type Tensor = kiln.Tensor;

interface Case {
  /** The export to instantiate (a module class) or call (a function). */
  readonly export: string;
  /** Inputs for call `i` (0..2). */
  readonly inputs: (i: number) => unknown[];
  /** Graphs and breaks of one call, as a CompileCounter and explain() see them. */
  readonly graphs: number;
  readonly breaks: number;
}

const rnd = (...shape: number[]) => kiln.randn(shape);
const CASES: Record<string, Case> = {
  mlp: { export: 'MLP', inputs: (i) => [rnd(2 + i, 4)], graphs: 1, breaks: 0 },
  'breaks-mixed': { export: 'MLP', inputs: (i) => [rnd(3, 4).add(i - 1)], graphs: 3, breaks: 2 },
  modulelist: { export: 'Lists', inputs: () => [rnd(2, 4), rnd(2, 4)], graphs: 1, breaks: 0 },
  moduledict: { export: 'Heads', inputs: (i) => [rnd(2, 4), ['with space', 'ünïcode', 'nope'][i]], graphs: 1, breaks: 0 },
  'sequential-shared': { export: 'Shared', inputs: () => [rnd(3, 4)], graphs: 1, breaks: 0 },
  'super-forward': { export: 'Derived', inputs: () => [rnd(2, 4)], graphs: 1, breaks: 0 },
  'static-getter': { export: 'Scaled', inputs: () => [rnd(2, 4)], graphs: 1, breaks: 0 },
  'attr-shadows-method': { export: 'Precedence', inputs: () => [rnd(4, 4)], graphs: 1, breaks: 0 },
  'helper-break': { export: 'WithHelper', inputs: () => [rnd(2, 4)], graphs: 4, breaks: 2 },
  // seeded inputs: which arms run (and so how many graphs there are: a no-op arm needs none) depends on the data
  'data-dependent-ternary': { export: 'Ternaries', inputs: (i) => (kiln.manualSeed(7 + i), [rnd(2, 4).add(i - 1)]), graphs: 5, breaks: 3 },
  'data-dependent-if': { export: 'Gated', inputs: (i) => [rnd(2, 4).add(i - 1)], graphs: 3, breaks: 1 },
  'console-log': { export: 'Logged', inputs: () => [rnd(2, 4)], graphs: 2, breaks: 1 },
  'param-patterns': {
    export: 'Pair',
    inputs: (i) => [{ a: rnd(2, 4), b: rnd(2, 4) }, ...Array.from({ length: i }, () => rnd(2, 4))],
    graphs: 1,
    breaks: 0,
  },
  unsupported: { export: 'Private', inputs: () => [rnd(2, 4)], graphs: 0, breaks: 1 },
  'imported-helpers': { export: 'UsesHelpers', inputs: () => [rnd(2, 4)], graphs: 2, breaks: 1 },
  'reexported-base': { export: 'Head', inputs: () => [rnd(2, 4)], graphs: 1, breaks: 0 },
};

/** console.log replaced by a recorder while `f` runs, so fixtures that log stay quiet and their logs can be compared. */
async function withLogs<T>(f: () => T | Promise<T>): Promise<{ result: T; logs: string[] }> {
  const logs: string[] = [];
  const orig = console.log;
  console.log = (...a: unknown[]) => void logs.push(a.map(String).join(' '));
  try {
    return { result: await f(), logs };
  } finally {
    console.log = orig;
  }
}

const cases = readdirSync(FIXTURES).filter((d) => existsSync(fixture(d)));

for (const name of cases) {
  test(`fixture ${name}: rewritten source matches output.js`, async (t) => {
    const { code, report } = transform(fixture(name));
    const got = await format(code, { parser: 'babel', printWidth: 120 });
    const file = join(FIXTURES, name, 'output.js');
    if (process.env.UPDATE_FIXTURES === '1') writeFileSync(file, got);
    t.true(existsSync(file), `${file} is missing: run UPDATE_FIXTURES=1 npm test and review it`);
    t.is(got, readFileSync(file, 'utf8'));
    t.snapshot(report, `${name}: plans, segments and break reasons`);
  });
}

for (const [name, c] of Object.entries(CASES)) {
  test(`fixture ${name}: compiled equals eager over three calls; graphs and breaks as expected`, async (t) => {
    const { mod } = await loadRewritten<Record<string, new () => Module>>(fixture(name));
    const plain = (await import(fixture(name))) as Record<string, new () => Module>;
    kiln.manualSeed(1);
    const m = new mod[c.export]!();
    const ref = new plain[c.export]!();
    ref.loadStateDict(m.stateDict());
    const counter = new kiln.testing.CompileCounter();
    const compiled = kiln.compile(m, { backend: counter });
    for (let i = 0; i < 3; i++) {
      kiln.manualSeed(100 + i);
      const args = c.inputs(i);
      const eager = await withLogs(() => ref.forward(...args) as Tensor);
      const viaCompile = await withLogs(() => compiled.call(...args) as Tensor);
      const direct = await withLogs(() => m.call(...args) as Tensor);
      t.true(kiln.allclose(viaCompile.result, eager.result, { atol: 1e-5 }), `call ${i} via compile()`);
      t.true(kiln.allclose(direct.result, eager.result, { atol: 1e-5 }), `call ${i} via the dispatcher`);
      t.deepEqual(viaCompile.logs.length, eager.logs.length, 'side effects run once per call');
      if (i === 0) t.is(counter.frameCount, c.graphs, 'graphs compiled on the first call');
    }
    const { result: report } = await withLogs(() => kiln.explain(m)(...c.inputs(0)));
    t.is(report.graphCount, c.graphs);
    t.is(report.graphBreakCount, c.breaks);
    for (const b of report.breakReasons) t.regex(b.loc, /^test\/fixtures\/plugin\/.*input\.ts:\d+:\d+$/);
  });
}

test('plugin options: bad values are clear errors; include/exclude choose the files rewritten', (t) => {
  const file = fixture('mlp');
  t.throws(() => transform(file, { backend: 'gpu' as never }), {
    message: /kiln\/plugin: backend must be one of 'kernels', 'eager', 'aot_eager' in a Babel config, got "gpu"/,
  });
  t.throws(() => transform(file, { cacheSize: 3 } as never), {
    message: /kiln\/plugin: unknown option 'cacheSize' \(expected one of backend, cacheSizeLimit, include, exclude/,
  });
  t.throws(() => transform(file, { cacheSizeLimit: -1 }), { message: /cacheSizeLimit must be a non-negative integer, got -1/ });
  t.regex(transform(file, { include: ['test/fixtures/plugin/mlp/**'] }).code, /_kiln\.run\(this, _MLP_forward, \[x\]\)/);
  t.notRegex(transform(file, { include: 'src/**' }).code, /_kiln/);
  t.notRegex(transform(file, { exclude: ['**/mlp/*.ts'] }).code, /_kiln/);
  const withOptions = transform(file, { backend: 'eager', cacheSizeLimit: 2 }).code;
  t.regex(withOptions, /options: \{\s*backend: "eager",\s*cacheSizeLimit: 2\s*\}/);
});

test('a file with no module classes is left as it was; a syntax error is Babel’s own, with the location', (t) => {
  const { code, report } = transform('test/helpers.ts');
  t.notRegex(code, /_kiln/);
  t.deepEqual(report, { plans: [], skipped: [] });
  // Babel colours the frame when the terminal allows it (CI sets FORCE_COLOR), so compare the plain text.
  const error = t.throws(() => transform('test/fixtures/plugin-bad-syntax.ts'));
  t.regex(stripVTControlCharacters(error.message), /plugin-bad-syntax\.ts: Unexpected token \(2:25\)[^]*> 2 \| {3}forward/);
});

test('a class the analysis trips over is left as written and reported, never a failed build', (t) => {
  const orig = Analyzer.prototype.analyze;
  Analyzer.prototype.analyze = () => {
    throw new Error('unexpected node shape');
  };
  try {
    const { code, report } = transform(fixture('mlp'));
    t.notRegex(code, /_kiln/);
    t.deepEqual(report.skipped, [
      { name: 'MLP', line: 3, reason: "the plugin's analysis failed (unexpected node shape); compile() captures it at run time" },
    ]);
  } finally {
    Analyzer.prototype.analyze = orig;
  }
});
