import test from 'ava';
import { spawnSync } from 'node:child_process';
import { compileOffSetting, LOG_CHANNELS, parseLogSetting } from '../src/logging.js';

/**
 * KILN_LOG like TORCH_LOGS and KILN_COMPILE (issue 18, item 4). Both are read once when kiln loads, so each
 * case runs test/fixtures/logging/capture.ts in its own process: one recompile (batch 2 then 3 with
 * dynamic: false), one run-time graph break (item()), one training call through AOT autograd.
 */
const capture = (env: Record<string, string>) => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/fixtures/logging/capture.ts'], {
    encoding: 'utf8',
    env: { ...process.env, KILN_LOG: '', KILN_COMPILE: '', ...env },
  });
  const channels = [...new Set([...r.stderr.matchAll(/^\[kiln:(\w+)\]/gm)].map((m) => m[1]!))];
  return { ...r, channels };
};

test('KILN_LOG=recompiles logs each recompile with the callable and the guard that failed', (t) => {
  const r = capture({ KILN_LOG: 'recompiles' });
  t.is(r.status, 0, r.stderr);
  t.regex(r.stderr, /^\[kiln:recompiles\] Recompiling Plain\.forward: guard 'x\.shape\[0\] == 2' failed \(compilation 2\)$/m);
  t.deepEqual(r.channels, ['recompiles'], 'only the channel asked for');
});

test('without KILN_LOG nothing is logged', (t) => {
  const r = capture({});
  t.is(r.status, 0, r.stderr);
  t.deepEqual(r.channels, []);
  t.notRegex(r.stderr, /kiln kernels:/);
});

test('KILN_LOG=graph_breaks,guards,graph_code: where capture broke, the guards and the code of each graph', (t) => {
  const r = capture({ KILN_LOG: 'graph_breaks, guards,graph_code' });
  t.is(r.status, 0, r.stderr);
  t.regex(r.stderr, /^\[kiln:graph_breaks\] Gate\.forward: graph break at Gate\.forward: .*h\.sum\(\)\.item\(\) reads a tensor's value/m);
  t.regex(r.stderr, /^\[kiln:guards\] Plain\.forward: guards\n {4}isGradEnabled\(\) == true\n(?: {4}.*\n)* {4}x\.shape\[0\] == 3\n/m);
  t.regex(r.stderr, /^\[kiln:graph_code\] Plain\.forward: captured graph\n {4}forward\(x\) \{\n/m);
  t.deepEqual(r.channels.sort(), ['graph_breaks', 'graph_code', 'guards']);
});

test('KILN_LOG=aot logs the forward and backward graphs AOT autograd compiles', (t) => {
  const r = capture({ KILN_LOG: 'aot' });
  t.is(r.status, 0, r.stderr);
  t.regex(r.stderr, /^\[kiln:aot\] aotModule: graph \d+_forward\n {4}forward\(primals_1/m);
  t.regex(r.stderr, /^\[kiln:aot\] aotModule: graph \d+_backward\n {4}forward\(.*tangents_1\)/m);
});

test('KILN_LOG=all turns every channel on, kernels included', (t) => {
  const r = capture({ KILN_LOG: 'all' });
  t.is(r.status, 0, r.stderr);
  t.deepEqual(r.channels.sort(), ['aot', 'graph_breaks', 'graph_code', 'guards', 'recompiles']);
  const kernels = spawnSync(
    process.execPath,
    [
      '--import',
      'tsx',
      '-e',
      "import('./src/index.ts').then((k) => k.noGrad(() => k.compile(new k.nn.Linear(4, 4)).call(k.randn([2, 4]))))",
    ],
    { encoding: 'utf8', env: { ...process.env, KILN_LOG: 'all' } },
  );
  t.regex(kernels.stderr, /kiln kernels: /, 'the kernels channel as before');
});

test('an unknown KILN_LOG name is an error that lists the valid names', (t) => {
  const r = capture({ KILN_LOG: 'recompiles,graph_break' });
  t.not(r.status, 0);
  t.regex(
    r.stderr,
    /ValueError: KILN_LOG: unknown log name 'graph_break' in "recompiles,graph_break"; valid names are recompiles, graph_breaks, guards, graph_code, kernels, aot, all/,
  );
  t.throws(() => parseLogSetting('kernel'), { message: /unknown log name 'kernel'/ });
  t.deepEqual([...parseLogSetting(' kernels  aot ')], ['kernels', 'aot'], 'spaces separate too');
  t.deepEqual([...parseLogSetting('all')], [...LOG_CHANNELS]);
  t.is(parseLogSetting('').size, 0);
});

test('KILN_COMPILE accepts 0, false and off (any case): nothing is compiled', (t) => {
  for (const value of ['0', 'false', 'off', 'OFF']) {
    const r = capture({ KILN_COMPILE: value });
    t.is(r.status, 0, r.stderr);
    t.deepEqual(JSON.parse(r.stdout.trim()), { frames: 0 }, `KILN_COMPILE=${value}`);
  }
  t.deepEqual(JSON.parse(capture({ KILN_COMPILE: '1' }).stdout.trim()), { frames: 2 });
  const bad = capture({ KILN_COMPILE: 'nah' });
  t.not(bad.status, 0);
  t.regex(bad.stderr, /KILN_COMPILE must be 0, false or off \(run eagerly\) or 1, true or on \(compile\), got "nah"/);
  t.true(compileOffSetting('False'));
  t.false(compileOffSetting(undefined));
  t.false(compileOffSetting('on'));
});
