import test from 'ava';
import { spawnSync } from 'node:child_process';
import { stripVTControlCharacters } from 'node:util';

/** `kiln check …` from source; output without colours (CI sets FORCE_COLOR). */
const check = (...args: string[]) => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'bin/kiln.ts', 'check', ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: stripVTControlCharacters(r.stdout), stderr: stripVTControlCharacters(r.stderr) };
};
const MODELS = 'test/fixtures/check/models.ts';

test('kiln check: a model that compiles faithfully passes on both backends, grad on and off, train and eval, and exits 0', (t) => {
  const r = check(MODELS, '--export', 'Mlp', '--input', '8x4');
  t.is(r.status, 0, r.stderr);
  t.is(
    r.stdout,
    'Mlp on inputs [8, 4] float32, seed 0:\ndifferential check: 16 compiled runs against eager, up to 1 graph each: all match\n',
  );
});

test('kiln check: a function with two inputs (repeated --input) and int32 inputs with a seed', (t) => {
  const pair = check(MODELS, '--export', 'pairScore', '--input', '8x4', '--input', '8x4');
  t.is(pair.status, 0, pair.stderr);
  t.regex(pair.stdout, /^pairScore on inputs \[8, 4\], \[8, 4\] float32, seed 0:\ndifferential check: 8 compiled runs against eager/);
  const ids = check(MODELS, '--export', 'Lookup', '--input', '2x3', '--dtype', 'int32', '--seed', '4');
  t.is(ids.status, 0, ids.stderr);
  t.regex(ids.stdout, /^Lookup on inputs \[2, 3\] int32, seed 4:\n.*all match/);
});

test('kiln check: a mismatch prints an aligned report (backend, grad, mode, inputs, what, how) and exits 1', (t) => {
  const r = check(MODELS, '--export', 'HiddenState', '--input', '2x3');
  t.is(r.status, 1);
  const lines = r.stdout.split('\n');
  t.regex(lines[1]!, /^differential check: 16 compiled runs against eager, up to 1 graph each: \d+ mismatches$/);
  t.regex(lines[2]!, /^ {2}eager {4}grad {4}train {2}given {5}output {11}6 of 6 elements differ; worst at \d: \S+, eager \S+$/);
  t.regex(lines[3]!, /^ {53}the graph run agrees with the Interpreter on its inputs/);
  t.regex(r.stdout, /\n {2}kernels {2}noGrad {2}train {2}given {5}output {11}6 of 6 elements differ/);
  t.regex(r.stdout, /\n {2}… and \d+ more \(report\.mismatches lists all\)\n$/);
});

test('kiln check: usage errors exit 2 with the usage line; a missing file or export exits 1 naming it', (t) => {
  const noExport = check(MODELS, '--input', '8x4');
  t.is(noExport.status, 2);
  t.regex(noExport.stderr, /kiln check: --export Name is required\nusage: kiln check <file\.ts> --export Name --input 8x4/);
  t.regex(check(MODELS, '--export', 'Mlp').stderr, /give at least one --input shape/);
  t.regex(check(MODELS, '--export', 'Mlp', '--input', '8xfour').stderr, /--input takes a shape like 8x4 .*got '8xfour'/);
  t.regex(
    check(MODELS, '--export', 'Mlp', '--input', '8x4', '--dtype', 'float64').stderr,
    /--dtype must be float32 or int32, got 'float64'/,
  );
  t.regex(check(MODELS, '--export', 'Mlp', '--input', '8x4', '--seed', 'x').stderr, /--seed must be an integer, got 'x'/);
  t.regex(check(MODELS, '--export', 'Mlp', '--input', '8x4', '--frobnicate', '1').stderr, /unknown option '--frobnicate'/);
  const missing = check(MODELS, '--export', 'Nope', '--input', '8x4');
  t.is(missing.status, 1);
  t.regex(missing.stderr, /exports no class or function 'Nope' \(found: HiddenState, Lookup, Mlp, pairScore\)/);
  const wrongShape = check(MODELS, '--export', 'Mlp', '--input', '8x5');
  t.is(wrongShape.status, 1, 'a model that does not run eagerly on those shapes has nothing to compare');
  t.regex(wrongShape.stderr, /^Linear\(in_features=4, out_features=8\): expected input \[\.\.\., 4\], got \[8, 5\]/);
  const noFile = check('no/such/model.ts', '--export', 'Mlp', '--input', '8x4');
  t.is(noFile.status, 1);
  t.regex(noFile.stderr, /'no\/such\/model\.ts' does not exist/);
});

test('kiln --help lists check', (t) => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'bin/kiln.ts', '--help'], { encoding: 'utf8' });
  t.regex(r.stdout, /kiln check <file\.ts> --export Name --input 8x4 \[--input 8x4 \.\.\.\]/);
});
