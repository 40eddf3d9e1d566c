import test from 'ava';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

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
