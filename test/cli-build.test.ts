import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { stripVTControlCharacters } from 'node:util';

/**
 * `kiln build` as the Babel route (issue 18, item 3): each test writes a small project in a temp folder (with
 * `node_modules/kiln` linked to this package and `@babel` to its Babel, as an install would) and runs the built binary in it
 * (`npm run build` first).
 */
const BIN = resolve('dist/bin/kiln.js');

// Outside the repository: a link back into it under test/ would make test globs loop.
const ROOT = mkdtempSync(join(tmpdir(), 'kiln-cli-build-'));
test.after.always(() => rmSync(ROOT, { recursive: true, force: true }));

function project(name: string, files: Record<string, string>): string {
  const dir = join(ROOT, name);
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  mkdirSync(join(dir, 'node_modules'), { recursive: true });
  symlinkSync(resolve('.'), join(dir, 'node_modules', 'kiln'));
  symlinkSync(resolve('node_modules/@babel'), join(dir, 'node_modules', '@babel'));
  return dir;
}

const kiln = (cwd: string, ...args: string[]) => {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd, encoding: 'utf8' });
  return { status: r.status, stdout: stripVTControlCharacters(r.stdout), stderr: stripVTControlCharacters(r.stderr) };
};
const node = (cwd: string, file: string) => spawnSync(process.execPath, [file], { cwd, encoding: 'utf8' });

const MODEL = `import { nn, type Tensor } from 'kiln';
import { Block } from './layers';
import { double } from './util.ts';

export class Net extends nn.Module {
  block = new Block();
  override forward(x: Tensor): Tensor {
    const h = this.block.call(x);
    console.log('hidden', h.shape.join('x'));
    return double(h.relu());
  }
}
`;
const LAYERS = `import { nn, type Tensor } from 'kiln';
export class Block extends nn.Module {
  fc = new nn.Linear(4, 4);
  override forward(x: Tensor): Tensor {
    return this.fc.call(x);
  }
}
`;
const UTIL = `import type { Tensor } from 'kiln';\nexport const double = (x: Tensor) => x.mul(2);\n`;
const MAIN = `import { manualSeed, randn } from 'kiln';
import { Net } from './model';
manualSeed(0);
const y = new Net().call(randn([2, 4]));
// the plan kiln/plugin attached to forward, with the options it was built with
const plan = (Net.prototype.forward as unknown as Record<symbol, { options?: object }>)[Symbol.for('kiln.plan')];
console.log(JSON.stringify({ shape: y.shape, options: plan?.options ?? null }));
`;
const PRESET_AND_PLUGIN = JSON.stringify({
  presets: ['@babel/preset-typescript'],
  plugins: [['kiln/plugin', { backend: 'eager', cacheSizeLimit: 3 }]],
});
const APP = { 'src/model.ts': MODEL, 'src/layers/index.ts': LAYERS, 'src/util.ts': UTIL, 'src/main.ts': MAIN };

test("kiln build uses the project's Babel config and plugin options, and the output runs (imports rewritten to .js)", (t) => {
  const dir = project('config', { ...APP, 'babel.config.json': PRESET_AND_PLUGIN });
  const r = kiln(dir, 'build', 'src', '-d', 'out');
  t.is(r.status, 0, r.stderr);
  const model = readFileSync(join(dir, 'out/model.js'), 'utf8');
  t.regex(model, /options: \{\s+backend: "eager",\s+cacheSizeLimit: 3\s+\}/, 'the plugin options from babel.config.json');
  t.regex(model, /from "\.\/layers\/index\.js"/, 'a folder import becomes its index.js');
  t.regex(model, /from "\.\/util\.js"/, 'a .ts import becomes .js');
  t.regex(readFileSync(join(dir, 'out/main.js'), 'utf8'), /from "\.\/model\.js"/, 'an extensionless import becomes .js');
  const app = node(dir, 'out/main.js');
  t.is(app.status, 0, app.stderr);
  const lines = app.stdout.trim().split('\n');
  t.is(lines[0], 'hidden 2x4');
  t.deepEqual(JSON.parse(lines[1]!), { shape: [2, 4], options: { backend: 'eager', cacheSizeLimit: 3 } });
});

test('kiln build without a Babel config adds kiln/plugin (defaults) and TypeScript; --config picks another config', (t) => {
  const dir = project('no-config', {
    ...APP,
    'configs/alt.json': JSON.stringify({ presets: ['@babel/preset-typescript'], plugins: [['kiln/plugin', { backend: 'aot_eager' }]] }),
  });
  t.is(kiln(dir, 'build', 'src', '-d', 'out').status, 0);
  t.notRegex(readFileSync(join(dir, 'out/model.js'), 'utf8'), /options:/, 'no options: the plugin defaults');
  t.deepEqual(JSON.parse(node(dir, 'out/main.js').stdout.trim().split('\n')[1]!).options, null);
  const alt = kiln(dir, 'build', 'src', '--out-dir', 'alt', '--config', 'configs/alt.json');
  t.is(alt.status, 0, alt.stderr);
  t.deepEqual(JSON.parse(node(dir, 'alt/main.js').stdout.trim().split('\n')[1]!).options, { backend: 'aot_eager' });
  const missing = kiln(dir, 'build', 'src', '-d', 'x', '--config', 'nope.json');
  t.is(missing.status, 2);
  t.regex(missing.stderr, /--config 'nope\.json' is not a file/);
});

test('kiln build writes source maps whose sources are the originals, relative to the map, with sourcesContent', (t) => {
  const dir = project('maps', APP);
  t.is(kiln(dir, 'build', 'src', '-d', 'out').status, 0);
  for (const [out, src] of [
    ['out/model.js', 'src/model.ts'],
    ['out/layers/index.js', 'src/layers/index.ts'],
  ] as const) {
    const map = JSON.parse(readFileSync(join(dir, `${out}.map`), 'utf8')) as { file: string; sources: string[]; sourcesContent: string[] };
    t.is(resolve(dirname(join(dir, out)), map.sources[0]!), join(dir, src));
    t.is(map.sourcesContent[0], readFileSync(join(dir, src), 'utf8'));
    t.is(map.file, out.split('/').pop()!);
    t.regex(readFileSync(join(dir, out), 'utf8'), new RegExp(`//# sourceMappingURL=${map.file}\\.map\\n$`));
  }
});

test('kiln build goes on past a file with a syntax error, prints only its code frame, and exits 1 with a summary', (t) => {
  const dir = project('bad-file', { ...APP, 'src/bad.ts': 'export const a = (x: number) => {\n  return x +* 2;\n};\n' });
  const r = kiln(dir, 'build', 'src', '-d', 'out');
  t.is(r.status, 1);
  t.regex(r.stdout, /\[1\/5\] bad\.ts {2}FAILED/);
  t.true(existsSync(join(dir, 'out/model.js')), 'the files after the bad one are built');
  t.regex(r.stdout, /built 4 files into out: 2 functions rewritten, 2 graph breaks\n1 file failed: src\/bad\.ts/);
  t.is(
    r.stderr.trim(),
    [
      'src/bad.ts: Unexpected token (2:12)',
      '',
      '  1 | export const a = (x: number) => {',
      '> 2 |   return x +* 2;',
      '    |             ^',
      '  3 | };',
      '  4 |',
    ].join('\n'),
    'the code frame and nothing else (no stack, no parser fields)',
  );
});

test('kiln build prints one line per graph break under its file, and --report writes them as JSON', (t) => {
  const dir = project('report', { ...APP, 'babel.config.json': PRESET_AND_PLUGIN });
  const r = kiln(dir, 'build', 'src', '-d', 'out', '--report', 'reports/build.json');
  t.is(r.status, 0, r.stderr);
  t.regex(
    r.stdout,
    /\[3\/4\] model\.ts {2}\(1 rewritten, 2 graph breaks\)\n {4}src\/model\.ts:9:5 {2}Net\.forward: console\.log\(\) is a side effect/,
  );
  t.regex(r.stdout, /\n {4}src\/model\.ts:10:12 {2}Net\.forward: calls double\(\)/);
  const report = JSON.parse(readFileSync(join(dir, 'reports/build.json'), 'utf8')) as {
    plans: number;
    breaks: number;
    failed: number;
    files: {
      file: string;
      output: string;
      rewritten: string[];
      breaks: { loc: string; function: string; reason: string; kind: string }[];
    }[];
  };
  t.like(report, { plans: 2, breaks: 2, failed: 0 });
  const model = report.files.find((f) => f.file === 'src/model.ts')!;
  t.is(model.output, 'out/model.js');
  t.deepEqual(model.rewritten, ['Net.forward']);
  t.deepEqual(model.breaks[0], {
    loc: 'src/model.ts:9:5',
    function: 'Net.forward',
    reason: 'console.log() is a side effect: it runs eagerly, every call',
    kind: 'break',
  });
});

test('kiln build --copy-files copies what it does not compile; --ignore skips files for both', (t) => {
  const dir = project('copy', {
    ...APP,
    'src/data.json': '{"a":1}\n',
    'src/types.d.ts': 'export type X = number;\n',
    'src/model.test.ts': 'throw new Error("a test file is not built");\n',
    'src/fixtures/big.json': '{}\n',
  });
  const r = kiln(dir, 'build', 'src', '-d', 'out', '--copy-files', '--ignore', '**/*.test.ts', '--ignore=src/fixtures/**');
  t.is(r.status, 0, r.stderr);
  t.is(readFileSync(join(dir, 'out/data.json'), 'utf8'), '{"a":1}\n');
  t.true(existsSync(join(dir, 'out/types.d.ts')));
  t.false(existsSync(join(dir, 'out/model.test.js')));
  t.false(existsSync(join(dir, 'out/fixtures')));
  t.regex(r.stdout, /; 2 copied/);
  const plain = project('no-copy', { ...APP, 'src/data.json': '{}' });
  t.is(kiln(plain, 'build', 'src', '-d', 'out').status, 0);
  t.false(existsSync(join(plain, 'out/data.json')), 'without --copy-files only compiled files are written');
});

test('kiln build: a config Babel cannot load is one clear error; usage errors exit 2; --help', (t) => {
  const dir = project('broken-config', { ...APP, 'babel.config.json': JSON.stringify({ plugins: ['kiln-no-such-plugin'] }) });
  const r = kiln(dir, 'build', 'src', '-d', 'out');
  t.is(r.status, 1);
  t.regex(
    r.stderr,
    /^kiln build: Babel could not load the project's config for src\/layers\/index\.ts: Cannot find module 'babel-plugin-kiln-no-such-plugin'/,
  );
  t.is(r.stderr.match(/Cannot find module/g)?.length, 1, 'said once');
  t.notRegex(r.stderr, /^\s+at /m);
  t.is(kiln(dir, 'build', 'src').status, 2);
  t.regex(kiln(dir, 'build', 'src').stderr, /-d <out> \(--out-dir\) is required/);
  t.regex(kiln(dir, 'build', 'src', '-d', 'out', '--frob').stderr, /unknown option '--frob'/);
  const help = kiln(dir, 'build', '--help');
  t.is(help.status, 0);
  t.regex(help.stdout, /--copy-files/);
  t.regex(help.stdout, /tsc --emitDeclarationOnly/);
});

test('kiln build --watch rebuilds a file when it changes', async (t) => {
  const dir = project('watch', APP);
  const child = spawn(process.execPath, [BIN, 'build', 'src', '-d', 'out', '--watch'], { cwd: dir });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const until = async (f: () => boolean, what: string) => {
    for (let i = 0; i < 300 && !f(); i++) await new Promise((r) => setTimeout(r, 50));
    t.true(f(), `${what}; output so far:\n${out}`);
  };
  try {
    await until(() => out.includes('watching for changes'), 'the first build finishes');
    writeFileSync(join(dir, 'src/util.ts'), `${UTIL}export const triple = (x: Tensor) => x.mul(3);\n`);
    await until(() => readFileSync(join(dir, 'out/util.js'), 'utf8').includes('triple'), 'util.ts is rebuilt');
    t.regex(out, /\[1\/1\] util\.ts/);
  } finally {
    child.kill();
  }
});
