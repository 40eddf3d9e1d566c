import test from 'ava';
import { spawnSync } from 'node:child_process';
import { stripVTControlCharacters } from 'node:util';
import { compile, explain, formatExplain, nn, randn, type Tensor } from '../src/index.js';

/**
 * `explain` and `kiln explain` (issue 18, item 5): guards per segment, code frames in formatExplain,
 * `explain(compile(fn))`, the run flags (--eval, --dtype, --args, --json), --help everywhere, `kiln` alone,
 * and the classes and functions the plugin skipped, with the reason. CLI cases run the built binary.
 */
const kiln = (...args: string[]) => {
  const r = spawnSync(process.execPath, ['dist/bin/kiln.js', ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: stripVTControlCharacters(r.stdout), stderr: stripVTControlCharacters(r.stderr) };
};

class Broken extends nn.Module {
  fc = new nn.Linear(4, 4);
  override forward(x: Tensor): Tensor {
    const h = this.fc.call(x);
    if (h.sum().item() > 1e9) return h;
    return h.relu();
  }
}

test('formatExplain shows a code frame under each break', (t) => {
  const f = (x: Tensor) => {
    const y = x.exp();
    if (y.sum().item() > 1e9) return y;
    return y.neg();
  };
  const text = formatExplain(explain(f)(randn([2, 2])));
  t.regex(
    text,
    /break at .*explain-report\.test\.ts:\d+:\d+:\n {2}.*reads a tensor's value|break at .*explain-report\.test\.ts:\d+:\d+:\n {2}symbolic tracing/,
  );
  t.regex(text, /\n {4,}> *\d+ \| +if \(y\.sum\(\)\.item\(\) > 1e9\) return y;\n/);
});

test('explain(compile(fn)) explains fn: its own parameter names, not the wrapper rest parameter', (t) => {
  const f = (x: Tensor) => x.relu().mul(2);
  const r = explain(compile(f, { backend: 'eager' }))(randn([2, 4]));
  t.is(r.graphCount, 1);
  t.true(r.guards.includes('x.shape[0] == 2'), r.guards.join('\n'));
  t.false(
    r.guards.some((g) => g.startsWith('args')),
    'no guard on the wrapper ...args',
  );
  t.is(r.kernels, undefined, "compile()'s backend ('eager') is the one explained");
});

test('explain groups guards by the segment they belong to; formatExplain titles each group', (t) => {
  // run-time capture: one callable, one group, titled as before
  const one = explain(new Broken())(randn([2, 4]));
  t.is(one.guardsBySegment.length, 1);
  t.is(one.guardsBySegment[0]!.segment, 'Broken.forward');
  t.deepEqual(one.guardsBySegment[0]!.guards, one.guards);
  t.regex(formatExplain(one), /\nguards:\n {2}x: Tensor \[2, 4\] float32/);
});

test('kiln explain --input: guards of each plugin segment with the segment named, and break code frames', (t) => {
  const r = kiln('explain', 'test/fixtures/plugin/breaks-mixed/input.ts', '--export', 'MLP', '--input', '3x4');
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /^MLP on inputs \[3, 4\]:\ngraphs: 4 {3}graph breaks: 2/m);
  t.regex(
    r.stdout,
    /\nguards of MLP\.forward \(segment at test\/fixtures\/plugin\/breaks-mixed\/input\.ts:9:5\):\n {2}x: Tensor \[3, 4\] float32/,
  );
  t.regex(
    r.stdout,
    /\nguards of MLP\.forward \(segment at test\/fixtures\/plugin\/breaks-mixed\/input\.ts:11:5\):\n {2}h: Tensor \[3, 8\] float32/,
  );
  t.regex(
    r.stdout,
    /\nbreak at test\/fixtures\/plugin\/breaks-mixed\/input\.ts:12:9:\n.*\n(?: {4}.*\n)* {4}> 12 \| +if \(y\.sum\(\)\.item\(\) > 0\) \{/,
  );
  t.regex(r.stdout, /isGradEnabled\(\) == true/);
  t.regex(r.stdout, /training == true/);
});

test('kiln explain --eval runs in eval mode under noGrad; --dtype int32; --json is the report as JSON', (t) => {
  const ev = kiln('explain', 'test/fixtures/plugin/breaks-mixed/input.ts', '--export', 'MLP', '--input', '3x4', '--eval', '--json');
  t.is(ev.status, 0, ev.stderr);
  const json = JSON.parse(ev.stdout.slice(ev.stdout.indexOf('{'))) as {
    mode: string;
    graphCount: number;
    graphBreakCount: number;
    guards: string[];
    guardsBySegment: { segment: string; guards: string[] }[];
    graphs: string[];
    breakReasons: { loc: string }[];
  };
  t.is(json.mode, 'eval mode, noGrad');
  t.true(json.guards.includes('isGradEnabled() == false'));
  t.true(json.guards.includes('self.training == false'));
  t.is(json.graphBreakCount, 2);
  t.is(json.graphs.length, json.graphCount);
  t.regex(json.graphs[0]!, /forward\(x\)/);
  t.true(json.guardsBySegment.length >= 3);
  const int = kiln('explain', 'test/fixtures/explain/sized.ts', '--export', 'shifted', '--input', '2x3', '--dtype', 'int32', '--json');
  t.is(int.status, 0, int.stderr);
  t.true((JSON.parse(int.stdout) as { guards: string[] }).guards.includes('x.dtype == int32'));
  t.regex(kiln('explain', 'x.ts', '--eval').stderr, /--eval only apply to a run: add --input shapes/);
  t.regex(kiln('explain', 'x.ts', '--input', '2x4').stderr, /--input needs --export Name/);
  const badArgs = kiln('explain', 'x.ts', '--export', 'A', '--input', '2x4', '--args', '{oops');
  t.is(badArgs.status, 1, 'a bad value exits 1');
  t.regex(badArgs.stderr, /--args takes the constructor's arguments as JSON/);
  t.is(kiln('explain', 'x.ts', '--export', 'A', '--input', '2x4', '--frob').status, 2, 'a wrong command line exits 2');
  const evalTitle = kiln(
    'explain',
    'test/fixtures/explain/sized.ts',
    '--export',
    'shifted',
    '--input',
    '2x3',
    '--dtype',
    'int32',
    '--seed',
    '3',
    '--eval',
  );
  t.regex(evalTitle.stdout, /^shifted on inputs \[2, 3\] \(int32, seed 3, noGrad\):/m);
});

test('kiln explain --args passes the constructor arguments; a constructor that needs them says how', (t) => {
  const file = 'test/fixtures/explain/sized.ts';
  const r = kiln('explain', file, '--export', 'Sized', '--input', '2x3', '--args', '[3, 5]', '--json');
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /"x\.shape\[1\] == 3"/);
  const missing = kiln('explain', file, '--export', 'Sized', '--input', '2x3');
  t.is(missing.status, 1);
  t.regex(missing.stderr, /kiln explain: new Sized\(\) without arguments threw .*; pass the constructor's arguments with --args/);
});

test('kiln explain lists the classes and functions kiln/plugin skipped, with the reason', (t) => {
  const r = kiln('explain', 'test/fixtures/explain/skipped.ts');
  t.is(r.status, 0, r.stderr);
  // `const Base = kiln.nn.Module` is followed (the analysis knows aliases of nn.Module): Aliased is rewritten
  t.regex(r.stdout, /2 functions rewritten by kiln\/plugin/);
  t.regex(r.stdout, /Aliased\.forward \(line 9\): 1 graph segment, 0 breaks/);
  t.regex(r.stdout, /Expr \(line 14\) left for run-time capture: a class expression is not rewritten/);
  t.regex(r.stdout, /compile\(\(…\) => …\) \(line 21\) left for run-time capture: it reads variables of the function around it/);
  const json = JSON.parse(kiln('explain', 'test/fixtures/explain/skipped.ts', '--json').stdout) as { skipped: { name: string }[] };
  t.deepEqual(
    json.skipped.map((s) => s.name),
    ['Expr', 'compile((…) => …)'],
  );
});

test('every subcommand takes --help; kiln alone prints usage and exits non-zero', (t) => {
  for (const cmd of ['build', 'explain', 'check', 'export', 'run', 'bench']) {
    const r = kiln(cmd, '--help');
    t.is(r.status, 0, `${cmd}: ${r.stderr}`);
    t.regex(r.stdout, new RegExp(`^usage: kiln ${cmd}`), cmd);
  }
  t.regex(kiln('explain', 'file.ts', '-h').stdout, /--eval/);
  const bare = kiln();
  t.is(bare.status, 2);
  t.regex(bare.stderr, /usage:\n {2}kiln bench/);
  t.is(bare.stdout, '');
});
