import test from 'ava';
import { build } from 'esbuild';
import { readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as kiln from 'kiln';
import kilnBundler from '../src/bundler/index.js';
import type { FileReport } from '../src/rewrite/transform.js';
import { transformSource } from '../src/register/transform-file.js';
import { fixture, loadRewritten } from './plugin-helpers.js';

/**
 * Issue 18, item 2: kiln/bundler (unplugin) tried with esbuild: a model bundled with the plugin carries the
 * same plans as the Babel route, runs compiled with the same graphs and breaks, and agrees with eager.
 */
type Module = InstanceType<typeof kiln.nn.Module>;
type Tensor = kiln.Tensor;
const OUT = resolve('test/.tmp/bundler-route');

async function bundle(name: string, options: Record<string, unknown> = {}) {
  const reports = new Map<string, FileReport>();
  const outfile = join(OUT, name, 'bundle.mjs');
  rmSync(join(OUT, name), { recursive: true, force: true });
  await build({
    entryPoints: [fixture(name)],
    bundle: true,
    format: 'esm',
    platform: 'node',
    outfile,
    sourcemap: true,
    logLevel: 'silent',
    // kiln stays a package import (resolved at run time), as in an app that depends on it
    external: ['kiln', 'kiln/*'],
    plugins: [kilnBundler.esbuild({ ...options, onReport: (id, r) => reports.set(resolve(id), r) })],
  });
  return { reports, outfile };
}

test('esbuild: every bundled file gets the plans the Babel route gives it', async (t) => {
  const { reports } = await bundle('imported-helpers');
  t.is(reports.size, 2, 'the entry and the helper file it imports');
  for (const [file, report] of reports) {
    t.deepEqual(report, transformSource(readFileSync(file, 'utf8'), file, { sourceMaps: false }).report, file);
  }
});

test('esbuild: the bundle runs compiled with the same graphs and breaks as the Babel route, and agrees with eager', async (t) => {
  const { outfile } = await bundle('breaks-mixed', { backend: 'eager' });
  const code = readFileSync(outfile, 'utf8');
  t.regex(code, /backend: "eager"/, 'plugin options reach the plan');
  const mod = (await import(pathToFileURL(outfile).href)) as Record<string, new () => Module>;
  const babel = (await loadRewritten<Record<string, new () => Module>>(fixture('breaks-mixed'))).mod;
  const plain = (await import(pathToFileURL(resolve(fixture('breaks-mixed'))).href)) as Record<string, new () => Module>;
  const make = (k: Record<string, new () => Module>) => (kiln.manualSeed(4), new k.MLP!());
  const [m, viaBabel, ref] = [make(mod), make(babel), make(plain)];
  const counter = new kiln.testing.CompileCounter();
  const babelCounter = new kiln.testing.CompileCounter();
  const c = kiln.compile(m, { backend: counter });
  const cb = kiln.compile(viaBabel, { backend: babelCounter });
  for (let i = 0; i < 2; i++) {
    const x = kiln.randn([2 + i, 4]);
    t.true(kiln.allclose(c.call(x) as Tensor, ref.forward(x) as Tensor, { atol: 1e-5 }));
    t.true(kiln.allclose(cb.call(x) as Tensor, ref.forward(x) as Tensor, { atol: 1e-5 }));
  }
  t.is(counter.frameCount, babelCounter.frameCount);
  t.is(kiln.explain(m)(kiln.randn([3, 4])).graphBreakCount, 2);
});

test('esbuild: the source map points at the original TypeScript file', async (t) => {
  const { outfile } = await bundle('mlp');
  const map = JSON.parse(readFileSync(`${outfile}.map`, 'utf8')) as { sources: string[] };
  t.true(
    map.sources.some((s) => s.endsWith('fixtures/plugin/mlp/input.ts')),
    map.sources.join(', '),
  );
});

test('rollup: kiln.rollup() resolves TypeScript `./x.js` imports, gives every file the Babel route plans, and the bundle runs as eager', async (t) => {
  const { rollup } = await import('rollup');
  const reports = new Map<string, FileReport>();
  const b = await rollup({
    input: fixture('imported-helpers'),
    external: (id) => /^kiln(\/|$)/.test(id),
    plugins: [kilnBundler.rollup({ onReport: (id, r) => reports.set(resolve(id), r) })],
  });
  const outfile = join(OUT, 'rollup', 'bundle.mjs');
  rmSync(join(OUT, 'rollup'), { recursive: true, force: true });
  await b.write({ file: outfile, format: 'esm' });
  t.is(reports.size, 2, 'the entry and the helper file it imports');
  for (const [file, report] of reports) {
    t.deepEqual(report, transformSource(readFileSync(file, 'utf8'), file, { sourceMaps: false }).report, file);
  }
  const mod = (await import(pathToFileURL(outfile).href)) as Record<string, new () => Module>;
  const plain = (await import(pathToFileURL(resolve(fixture('imported-helpers'))).href)) as Record<string, new () => Module>;
  const name = Object.keys(plain).find((k) => typeof plain[k] === 'function')!;
  kiln.manualSeed(5);
  const m = new mod[name]!();
  kiln.manualSeed(5);
  const ref = new plain[name]!();
  const x = kiln.randn([3, 4]);
  t.true(kiln.allclose(kiln.compile(m).call(x) as Tensor, ref.forward(x) as Tensor, { atol: 1e-5 }));
});
