import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';

const run = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'bin/kiln.ts', ...args], { encoding: 'utf8' });

test('kiln --version and --help', (t) => {
  const { version } = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
  t.is(run('--version').stdout.trim(), version);
  const help = run('--help');
  t.is(help.status, 0);
  t.regex(help.stdout, /kiln bench/);
});

test('kiln with an unknown command fails with usage', (t) => {
  const r = run('frobnicate');
  t.is(r.status, 2);
  t.regex(r.stderr, /unknown command 'frobnicate'/);
});

test('kiln explain: graph segments and breaks with code frames; --export filters; bad input is a clear error', (t) => {
  const r = run('explain', 'test/fixtures/plugin/breaks-mixed/input.ts');
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /MLP\.forward \(line 8\): 3 graph segments, 2 breaks/);
  t.regex(r.stdout, /break {2}10:5 {2}console\.log\(\) is a side effect/);
  t.regex(r.stdout, /> 12 \| {5}if \(y\.sum\(\)\.item\(\) > 0\) \{/);
  const only = run('explain', 'test/fixtures/plugin/super-forward/input.ts', '--export', 'Derived');
  t.regex(only.stdout, /Derived\.forward/);
  t.notRegex(only.stdout, /Base\.forward/);
  const missing = run('explain', 'test/fixtures/plugin/super-forward/input.ts', '--export', 'Nope');
  t.is(missing.status, 1);
  t.regex(missing.stderr, /no rewritten class or function named 'Nope' \(found: Base, Derived\)/);
  t.regex(run('explain', 'no/such/file.ts').stderr, /'no\/such\/file\.ts' does not exist/);
});

test('kiln build: rewrites a folder to runnable JavaScript with source maps, with progress', (t) => {
  const out = 'test/.tmp/build-register';
  rmSync(out, { recursive: true, force: true });
  const r = run('build', 'test/fixtures/register', '-d', out);
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /\[1\/2\] app\.ts {2}\(1 rewritten, 1 graph break\)/);
  t.regex(r.stdout, /built 2 files into test\/\.tmp\/build-register: 2 functions rewritten, 1 graph breaks/);
  t.true(existsSync(`${out}/model.js.map`));
  const app = spawnSync(process.execPath, [`${out}/app.js`], { encoding: 'utf8' });
  t.is(app.status, 0, app.stderr);
  t.deepEqual(JSON.parse(app.stdout.trim().split('\n').pop()!), {
    graphs: 2,
    breaks: 1,
    same: true,
    reason: 'console.log() is a side effect: it runs eagerly, every call',
  });
  t.is(run('build', 'test/fixtures/register').status, 2, 'missing -d is a usage error');
});

test('node --import kiln/register runs TypeScript through the plugin, with a disk cache', (t) => {
  const go = () => spawnSync(process.execPath, ['--import', 'kiln/register', 'test/fixtures/register/app.ts'], { encoding: 'utf8' });
  const first = go();
  t.is(first.status, 0, first.stderr);
  const lines = first.stdout.trim().split('\n');
  t.is(lines[0], 'mean true', 'the break runs its console.log');
  t.deepEqual(JSON.parse(lines.pop()!), {
    graphs: 2,
    breaks: 1,
    same: true,
    reason: 'console.log() is a side effect: it runs eagerly, every call',
  });
  t.true(existsSync('node_modules/.cache/kiln'));
  t.is(go().stdout, first.stdout, 'a second run (from the cache) behaves the same');
});

test('kiln/register keeps source maps: an error thrown in a break segment points at the TypeScript line', (t) => {
  const r = spawnSync(process.execPath, ['--enable-source-maps', '--import', 'kiln/register', 'test/fixtures/register-scripts/throws.ts'], {
    encoding: 'utf8',
  });
  t.not(r.status, 0);
  t.regex(r.stderr, /Error: activations out of range/);
  t.regex(r.stderr, /test\/fixtures\/register-scripts\/throws\.ts:9:13/);
});

test('KILN_COMPILE=0 runs everything eagerly: no graph is captured in that process', (t) => {
  const go = (env: Record<string, string>) =>
    spawnSync(process.execPath, ['--import', 'kiln/register', 'test/fixtures/register-scripts/eager-env.ts'], {
      encoding: 'utf8',
      env: { ...process.env, ...env },
    });
  t.deepEqual(JSON.parse(go({ KILN_COMPILE: '0' }).stdout), { frames: 0 });
  t.deepEqual(JSON.parse(go({ KILN_COMPILE: '1' }).stdout), { frames: 2 });
});

test('examples/partition.ts partitions a 20-layer model over 4 devices and prints the DAG with latencies', (t) => {
  const r = spawnSync(process.execPath, ['--import', 'kiln/register', 'examples/partition.ts'], { encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  t.is((r.stdout.match(/^ {2}submod_\d {2}on \[\d\]/gm) ?? []).length, 4);
  t.regex(r.stdout, /whole graph, 1 GB\/s between devices: \d+\.\d\d µs/);
  t.regex(r.stdout, /partitioned module equals the original: true/);
});

test('kiln explain --export Name --input shapes runs the model once: graphs with code, ops, breaks with source, guards', (t) => {
  const r = run('explain', 'test/fixtures/plugin/data-dependent-if/input.ts', '--export', 'Gated', '--input', '2x4');
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /^Gated on inputs \[2, 4\]:\ngraphs: 3 {3}graph breaks: 1 {3}ops: 3/);
  t.regex(r.stdout, /graph 2:\n {2}forward\(h, out\) \{/);
  t.regex(r.stdout, /> {2}9 \| {5}if \(h\.sum\(\)\.gt\(0\)\.item\(\)\) \{/);
  t.regex(r.stdout, /\n {2}x: Tensor \[2, 4\] float32, requiresGrad false\n/);
  const bad = run('explain', 'test/fixtures/plugin/data-dependent-if/input.ts', '--export', 'Gated', '--input', '2xfour');
  t.is(bad.status, 1);
  t.regex(bad.stderr, /--input takes shapes like 2x4 or 2x4,3x4 \(one per forward argument\), got '2xfour'/);
  const missing = run('explain', 'test/fixtures/plugin/data-dependent-if/input.ts', '--export', 'Nope', '--input', '2x4');
  t.regex(missing.stderr, /exports no class or function 'Nope' \(found: Gated\)/);
  t.is(run('explain', 'test/fixtures/plugin/data-dependent-if/input.ts', '--input', '2x4').status, 2, '--input needs --export');
});
