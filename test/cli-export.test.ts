import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { stripVTControlCharacters } from 'node:util';
import { manualSeed, nn, noGrad, randn, type Tensor } from 'kiln';
import { parseDynamicFlag, resolveDynamicFlags } from '../src/cli/dynamic-flags.js';

/**
 * `kiln export` and `kiln run` (issue 16 item 10), spawned as users run them: the built CLI (`npm run build`
 * first), `node dist/bin/kiln.js`, on the models in test/fixtures/cli-export/model.ts. Output without colours
 * (CI sets FORCE_COLOR).
 */

const kiln = (...args: string[]) => {
  const r = spawnSync(process.execPath, ['dist/bin/kiln.js', ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: stripVTControlCharacters(r.stdout), stderr: stripVTControlCharacters(r.stderr) };
};
const MODEL = 'test/fixtures/cli-export/model.ts';
const TMP = 'test/.tmp/cli-export';
rmSync(TMP, { recursive: true, force: true });
mkdirSync(TMP, { recursive: true });

/** The model of the fixture as `kiln export --seed 0` builds it (weights drawn after manualSeed), in eval mode. */
async function liveModel(name: string): Promise<nn.Module> {
  const mod = (await import(resolve(MODEL))) as Record<string, new () => nn.Module>;
  manualSeed(0);
  const m = new mod[name]!();
  m.eval();
  return m;
}

/** `min … max … mean …` as `kiln run` prints a float32 output. */
const stats = (t: Tensor) => {
  const v = Array.from(t.data());
  const f = (x: number) => x.toPrecision(4);
  return `min ${f(Math.min(...v))}  max ${f(Math.max(...v))}  mean ${f(v.reduce((a, b) => a + b, 0) / v.length)}`;
};

test('kiln export: a dynamic batch prints the signature table, the graph and the range constraints, and writes the program', async (t) => {
  const out = `${TMP}/mlp.kiln`;
  const r = kiln('export', MODEL, '--export', 'Mlp', '--input', '8x4', '--dynamic', '0:batch:1:64', '-o', out);
  t.is(r.status, 0, r.stderr);
  const size = statSync(out).size;
  t.is(
    r.stdout,
    [
      'Mlp from test/fixtures/cli-export/model.ts, exported in eval mode with grad off on inputs [8, 4] float32, seed 0',
      'dynamic dims:',
      "  x.shape[0] = Dim('batch', { min: 1, max: 64 })",
      '',
      'signature:',
      '          kind         name          target',
      '  input   PARAMETER    p_fc1_weight  fc1.weight',
      '  input   PARAMETER    p_fc1_bias    fc1.bias',
      '  input   PARAMETER    p_fc2_weight  fc2.weight',
      '  input   PARAMETER    p_fc2_bias    fc2.bias',
      '  input   USER_INPUT   x',
      '  output  USER_OUTPUT  add_1',
      '',
      'graph:',
      '  forward(p_fc1_weight, p_fc1_bias, p_fc2_weight, p_fc2_bias, x) {',
      '    const t = ops.t(p_fc1_weight);',
      '    const matmul = ops.matmul(x, t);',
      '    const add = ops.add(matmul, p_fc1_bias);',
      '    const relu = ops.relu(add);',
      '    const t_1 = ops.t(p_fc2_weight);',
      '    const matmul_1 = ops.matmul(relu, t_1);',
      '    const add_1 = ops.add(matmul_1, p_fc2_bias);',
      '    return [add_1];',
      '  }',
      '',
      'range constraints:',
      '  s0: [1, 64]',
      '',
      `wrote ${out} (${(size / 1024).toFixed(1)} KiB)`,
      '',
    ].join('\n'),
    'eval mode: the dropout between the layers is not in the graph',
  );
  t.true(JSON.parse(readFileSync(out, 'utf8')).format === 'kiln.exported_program');
});

test('kiln run: the saved program runs at two batch sizes in its range and gives the live module’s outputs', async (t) => {
  const out = `${TMP}/mlp-run.kiln`;
  t.is(kiln('export', MODEL, '--export', 'Mlp', '--input', '8x4', '--dynamic', '0:batch:1:64', '-o', out).status, 0);
  const m = await liveModel('Mlp');
  for (const [batch, seed] of [
    [3, 0],
    [64, 5],
  ] as const) {
    const r = kiln('run', out, '--input', `${batch}x4`, '--seed', String(seed));
    t.is(r.status, 0, r.stderr);
    manualSeed(seed);
    const want = noGrad(() => m.call(randn([batch, 4])) as Tensor);
    const first = Array.from(want.data().slice(0, 5), (v) => v.toPrecision(4)).join(', ');
    t.is(
      r.stdout,
      `${out} on inputs [${batch}, 4] float32, seed ${seed}:\n  output  [${batch}, 3]  float32  ${stats(want)}  [${first}, …]\n`,
    );
  }
});

test('kiln run: inputs outside the range constraints or of another static size exit 1 with the program’s check', (t) => {
  const out = `${TMP}/mlp-range.kiln`;
  t.is(kiln('export', MODEL, '--export', 'Mlp', '--input', '8x4', '--dynamic', '0:batch:1:64', '-o', out).status, 0);
  const big = kiln('run', out, '--input', '65x4');
  t.is(big.status, 1);
  t.is(big.stderr, 'Expected input at *args[0].shape[0] to be <= 64, but got 65\n', 'the message alone, no stack');
  t.is(big.stdout, '');
  const wide = kiln('run', out, '--input', '8x5');
  t.is(wide.status, 1);
  t.regex(wide.stderr, /^Expected input at \*args\[0\]\.shape\[1\] to be equal to 4, but got 5/);
  const ints = kiln('run', out, '--input', '8x4', '--dtype', 'int32');
  t.is(ints.status, 1);
  t.regex(ints.stderr, /^Expected input at \*args\[0\]\.dtype to be float32, but got int32/);
  const two = kiln('run', out, '--input', '8x4,8x4');
  t.is(two.status, 1);
  t.regex(two.stderr, /^Trying to flatten user inputs/);
});

test('kiln export: without --dynamic every size is static; the program refuses another batch', (t) => {
  const out = `${TMP}/mlp-static.kiln`;
  const r = kiln('export', MODEL, '--export', 'Mlp', '--input', '8x4', '-o', out);
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /\ndynamic dims:\n {2}none: every size is static\n/);
  t.regex(r.stdout, /\nrange constraints:\n {2}none\n/);
  t.is(kiln('run', out, '--input', '8x4').status, 0);
  t.regex(kiln('run', out, '--input', '3x4').stderr, /^Expected input at \*args\[0\]\.shape\[0\] to be equal to 8, but got 3/);
});

test('kiln export: two inputs share one Dim; two outputs are summarised by path; a mismatched batch is refused', (t) => {
  const out = `${TMP}/pair.kiln`;
  const r = kiln('export', MODEL, '--export', 'Pair', '--input', '8x4,8x5', '--dynamic', '0:batch:2:16', '-o', out);
  t.is(r.status, 0, r.stderr);
  t.regex(
    r.stdout,
    /\ndynamic dims:\n {2}x\.shape\[0\] = Dim\('batch', \{ min: 2, max: 16 \}\)\n {2}y\.shape\[0\] = Dim\('batch', \{ min: 2, max: 16 \}\)\n/,
  );
  t.regex(
    r.stdout,
    /\n {2}input {3}USER_INPUT {3}x\n {2}input {3}USER_INPUT {3}y\n {2}output {2}USER_OUTPUT {2}\w+\n {2}output {2}USER_OUTPUT {2}\w+\n/,
  );
  t.regex(r.stdout, /\nrange constraints:\n {2}s0: \[2, 16\]\n/);
  const run = kiln('run', out, '--input', '5x4', '--input', '5x5');
  t.is(run.status, 0, run.stderr);
  t.regex(
    run.stdout,
    /\n {2}output\[0\] {2}\[5, 2\] {2}float32 {2}min \S+ {2}max \S+ {2}mean \S+ {2}\[[^\]]+, …\]\n {2}output\[1\] {2}\[5\] {5}float32 {2}min /,
  );
  const mismatch = kiln('run', out, '--input', '5x4,6x5');
  t.is(mismatch.status, 1);
  t.regex(mismatch.stderr, /^Expected input at \*args\[1\]\.shape\[0\] to be equal to 5, but got 6/);
});

test('kiln export: a branch on the batch gives the constraint error with its suggested fix, also as a flag, and writes nothing', (t) => {
  const out = `${TMP}/branch.kiln`;
  const r = kiln('export', MODEL, '--export', 'ShapeBranch', '--input', '8x4', '--dynamic', '0:batch', '-o', out);
  t.is(r.status, 1);
  t.regex(
    r.stderr,
    /^Constraints violated \(batch\)!\n {2}- Not all values of batch = x\.shape\[0\] in the specified range satisfy the generated guard x\.shape\[0\] >= 7/,
  );
  t.regex(r.stderr, /\n\nSuggested fixes:\n {2}batch = Dim\('batch', \{ min: 7 \}\)\n\nas kiln export flags:\n {2}--dynamic 0:batch:7\n$/);
  t.notRegex(r.stderr, /\n {4}at .*\.js:\d+/, 'no stack');
  t.false(existsSync(out));
  const ranged = kiln('export', MODEL, '--export', 'ShapeBranch', '--input', '8x4', '--dynamic', '0:batch:1:64', '-o', out);
  t.regex(
    ranged.stderr,
    /Suggested fixes:\n {2}batch = Dim\('batch', \{ min: 7, max: 64 \}\)\n\nas kiln export flags:\n {2}--dynamic 0:batch:7:64\n$/,
  );

  const fixed = kiln('export', MODEL, '--export', 'ShapeBranch', '--input', '8x4', '--dynamic', '0:batch:7', '-o', out);
  t.is(fixed.status, 0, fixed.stderr);
  t.regex(fixed.stdout, /\nrange constraints:\n {2}s0: \[7, inf\]\n/);
  t.is(kiln('run', out, '--input', '7x4').status, 0);
  t.regex(kiln('run', out, '--input', '6x4').stderr, /^Expected input at \*args\[0\]\.shape\[0\] to be >= 7, but got 6/);
});

test('kiln export: a dim the code specialises suggests dropping its flag', (t) => {
  const r = kiln(
    'export',
    MODEL,
    '--export',
    'ExactWidth',
    '--input',
    '8x4',
    '--dynamic',
    '0:b:2:64',
    '--dynamic',
    '1:w',
    '-o',
    `${TMP}/w.kiln`,
  );
  t.is(r.status, 1);
  t.regex(r.stderr, /^Constraints violated \(w\)!\n {2}- You marked w as dynamic but your code specialized it to be a constant \(4\)/);
  t.regex(r.stderr, /Suggested fixes:\n {2}w = 4\n\nas kiln export flags:\n {2}drop --dynamic 1:w \(the code needs w to be 4\)\n$/);
});

test('kiln run: a truncated, edited or foreign file exits 1 with the SerializationError', (t) => {
  const out = `${TMP}/mlp-corrupt.kiln`;
  t.is(kiln('export', MODEL, '--export', 'Mlp', '--input', '8x4', '--dynamic', '0:batch:1:64', '-o', out).status, 0);
  const text = readFileSync(out, 'utf8');
  writeFileSync(`${TMP}/truncated.kiln`, text.slice(0, text.length >> 1));
  const truncated = kiln('run', `${TMP}/truncated.kiln`, '--input', '8x4');
  t.is(truncated.status, 1);
  t.regex(
    truncated.stderr,
    /^export\.load: test\/\.tmp\/cli-export\/truncated\.kiln is not a kiln\.exported_program file \(not valid JSON/,
  );
  writeFileSync(`${TMP}/edited.kiln`, text.replace('"upper":64', '"upper":65'));
  const edited = kiln('run', `${TMP}/edited.kiln`, '--input', '8x4');
  t.is(edited.status, 1);
  t.is(edited.stderr, 'export.load: test/.tmp/cli-export/edited.kiln is corrupt (its SHA-256 does not match its contents)\n');
  const foreign = kiln('run', MODEL, '--input', '8x4');
  t.is(foreign.status, 1);
  t.regex(foreign.stderr, /^export\.load: test\/fixtures\/cli-export\/model\.ts is not a kiln\.exported_program file/);
  const missing = kiln('run', `${TMP}/none.kiln`, '--input', '8x4');
  t.is(missing.status, 1);
  t.regex(missing.stderr, /^kiln run: 'test\/\.tmp\/cli-export\/none\.kiln' does not exist/);
});

test('kiln export / run: bad flags exit 2 with the message and the usage line', (t) => {
  const usage = (r: { status: number | null; stderr: string }, why: RegExp, cmd = 'export') => {
    t.is(r.status, 2, r.stderr);
    t.regex(r.stderr, why);
    t.regex(r.stderr, new RegExp(`\\nusage: kiln ${cmd} <file\\.`));
  };
  const exp = (...a: string[]) => kiln('export', MODEL, ...a);
  usage(exp('--input', '8x4', '-o', 'x.kiln'), /^kiln export: --export Name is required\n/);
  usage(exp('--export', 'Mlp', '-o', 'x.kiln'), /give the --input shapes, one per forward argument/);
  usage(exp('--export', 'Mlp', '--input', '8x4'), /-o out\.kiln is required/);
  usage(exp('--export', 'Mlp', '--input', '8xfour', '-o', 'x.kiln'), /--input takes shapes like 8x4 or 8x4,8x3 .*got '8xfour'/);
  usage(
    exp('--export', 'Mlp', '--input', '8x4', '--dynamic', 'batch', '-o', 'x.kiln'),
    /--dynamic takes \[input\.\]dim:name\[:min\[:max\]\] .*got 'batch'/,
  );
  usage(
    exp('--export', 'Mlp', '--input', '8x4', '--dynamic', '0:b:64:1', '-o', 'x.kiln'),
    /--dynamic 0:b:64:1: max must be greater than min/,
  );
  usage(exp('--export', 'Mlp', '--input', '8x4', '--dynamic', '2:b', '-o', 'x.kiln'), /--dynamic 2:b: no input has a dim 2/);
  usage(
    exp('--export', 'Mlp', '--input', '8x4', '--dynamic', '1.0:b', '-o', 'x.kiln'),
    /--dynamic 1\.0:b: there is no input 1 \(1 --input shape given\)/,
  );
  usage(exp('--export', 'Mlp', '--input', '8x4', '--dtype', 'float64', '-o', 'x.kiln'), /--dtype must be float32 or int32, got 'float64'/);
  usage(exp('--export', 'Mlp', '--input', '8x4', '--seed', 'x', '-o', 'x.kiln'), /--seed must be an integer, got 'x'/);
  usage(exp('--export', 'Mlp', '--input', '8x4', '-o'), /-o needs a value/);
  usage(kiln('export', '--export', 'Mlp'), /^kiln export: no model file given/);
  usage(kiln('run', 'x.kiln'), /^kiln run: give the --input shapes/, 'run');
  usage(kiln('run', 'x.kiln', '--input', '8x4', '--frobnicate', '1'), /^kiln run: unknown option '--frobnicate'/, 'run');
  usage(kiln('run'), /^kiln run: no program file given/, 'run');
});

test('kiln export: a missing class, a function or a dim that cannot be dynamic exits 1 with the message', (t) => {
  const missing = kiln('export', MODEL, '--export', 'Nope', '--input', '8x4', '-o', `${TMP}/n.kiln`);
  t.is(missing.status, 1);
  t.regex(missing.stderr, /exports no class or function 'Nope' \(found: /);
  const fn = kiln('export', MODEL, '--export', 'double', '--input', '8x4', '-o', `${TMP}/n.kiln`);
  t.is(fn.status, 1);
  t.regex(
    fn.stderr,
    /^kiln export: 'double' in test\/fixtures\/cli-export\/model\.ts is a function; kiln export exports an nn\.Module class/,
  );
  const small = kiln('export', MODEL, '--export', 'Mlp', '--input', '1x4', '--dynamic', '0:batch', '-o', `${TMP}/n.kiln`);
  t.is(small.status, 1);
  t.regex(small.stderr, /^1 not in range \[2, Infinity\]: the example size x\.shape\[0\] = 1 is too small for batch/);
  t.false(existsSync(`${TMP}/n.kiln`));
});

test('kiln export --help and kiln run --help print their usage; kiln --help lists both', (t) => {
  const exp = kiln('export', '--help');
  t.is(exp.status, 0);
  t.regex(exp.stdout, /^usage: kiln export <file\.ts> --export Name --input 8x4\[,8x3\] \[--dynamic SPEC\]\.\.\. .* -o out\.kiln\n/);
  t.regex(exp.stdout, /in eval mode, with grad off/);
  t.regex(exp.stdout, /--dynamic \[input\.\]dim:name\[:min\[:max\]\]/);
  const run = kiln('run', '-h');
  t.is(run.status, 0);
  t.regex(run.stdout, /^usage: kiln run <file\.kiln> --input 8x4\[,8x3\]/);
  const all = kiln('--help');
  t.regex(
    all.stdout,
    /\n {2}kiln export <file\.ts> --export Name --input 8x4\[,8x3\] \[--dynamic \[input\.\]dim:name\[:min\[:max\]\]\]\.\.\./,
  );
  t.regex(all.stdout, /\n {2}kiln run <file\.kiln> --input 8x4\[,8x3\]/);
});

test('--dynamic flags: 0:batch marks dim 0 of every input, 1.0:n only input 1, one name is one Dim, ranges must agree', (t) => {
  const flags = (...specs: string[]) => specs.map(parseDynamicFlag);
  t.deepEqual(resolveDynamicFlags(flags('0:batch:1:64'), [[8, 4], [8, 3], []]), {
    perInput: [{ 0: 'batch' }, { 0: 'batch' }, null],
    ranges: new Map([['batch', { min: 1, max: 64 }]]),
  });
  t.deepEqual(
    resolveDynamicFlags(flags('1.0:n', '0.1:f::inf'), [
      [8, 4],
      [8, 3],
    ]),
    {
      perInput: [{ 1: 'f' }, { 0: 'n' }],
      ranges: new Map([
        ['n', {}],
        ['f', { max: Infinity }],
      ]),
    },
  );
  t.deepEqual(
    resolveDynamicFlags(flags('0.0:b:2', '1.1:b'), [
      [8, 4],
      [3, 8],
    ]).perInput,
    [{ 0: 'b' }, { 1: 'b' }],
    'one Dim shared by two dims',
  );
  t.throws(() => resolveDynamicFlags(flags('0.0:b:2', '1.0:b:3'), [[8], [8]]), {
    message: "--dynamic 1.0:b:3: 'b' already has the range of --dynamic 0.0:b:2; give the range once",
  });
  t.throws(() => resolveDynamicFlags(flags('0:a', '0.0:b'), [[8]]), {
    message: "--dynamic 0.0:b: dim 0 of input 0 is already 'a'; a dim can only be one Dim",
  });
  t.throws(() => resolveDynamicFlags(flags('0.2:a'), [[8, 4]]), {
    message: '--dynamic 0.2:a: input 0 has shape [8, 4], which has no dim 2',
  });
  t.deepEqual(parseDynamicFlag('0:b:1:∞'), { spec: '0:b:1:∞', dim: 0, name: 'b', min: 1, max: Infinity });
  t.throws(() => parseDynamicFlag('0:b:1:2:3'), { message: /--dynamic takes \[input\.\]dim:name\[:min\[:max\]\]/ });
  t.throws(() => parseDynamicFlag('-1:b'), { message: /got '-1:b'/ });
});
