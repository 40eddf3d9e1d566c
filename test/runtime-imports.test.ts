import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { transform } from './plugin-helpers.js';

/**
 * Babel stays off the run-time path (issue 14, item 7): a process that imports the built `kiln`, compiles
 * models and runs them (kiln's own layers, and a class the plugin rewrote ahead of time) loads no
 * `@babel/*` module. The child records every ESM resolution through a `module.register` resolve hook and,
 * at the end, reads the CommonJS cache (Babel's packages are CommonJS, loaded by `require`).
 */
const TMP = resolve('test/.tmp/runtime-imports');

/** Resolve hook: each specifier and the URL it resolved to, appended to the log file named in its data. */
const HOOKS = `
import { appendFileSync } from 'node:fs';
let log;
export function initialize(data) { log = data.log; }
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  appendFileSync(log, specifier + ' ' + r.url + '\\n');
  return r;
}`;

function runChild(script: string, name: string): { status: number | null; stderr: string; stdout: string; resolved: string[] } {
  mkdirSync(TMP, { recursive: true });
  const log = join(TMP, `${name}.log`);
  writeFileSync(log, '');
  const hooks = join(TMP, 'hooks.mjs');
  writeFileSync(hooks, HOOKS);
  const register = join(TMP, `${name}-register.mjs`);
  writeFileSync(
    register,
    `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hooks).href)}, { data: { log: ${JSON.stringify(log)} } });\n`,
  );
  const main = join(TMP, `${name}.mjs`);
  writeFileSync(main, script);
  const r = spawnSync(process.execPath, ['--import', pathToFileURL(register).href, main], { encoding: 'utf8' });
  const resolved = readFileSync(log, 'utf8').split('\n').filter(Boolean);
  return { status: r.status, stderr: r.stderr, stdout: r.stdout, resolved };
}

/** The end of every child script: the CommonJS modules loaded, as JSON on the last line of stdout. */
const REPORT_CJS = `
import { createRequire } from 'node:module';
console.log(JSON.stringify(Object.keys(createRequire(import.meta.url).cache)));
`;

function assertNoBabel(t: import('ava').ExecutionContext, r: ReturnType<typeof runChild>): void {
  t.is(r.status, 0, r.stderr);
  const cjs = JSON.parse(r.stdout.trim().split('\n').pop()!) as string[];
  t.true(
    r.resolved.some((l) => l.startsWith('kiln ')),
    'the hook saw kiln resolve',
  );
  t.deepEqual(
    r.resolved.filter((l) => /@babel[/\\]/.test(l)),
    [],
  );
  t.deepEqual(
    cjs.filter((f) => /@babel[/\\]/.test(f)),
    [],
  );
}

test('importing kiln, compiling its layers and training a step loads no @babel module', (t) => {
  const r = runChild(
    `
import * as kiln from 'kiln';
const { nn } = kiln;
const model = new nn.Sequential(new nn.Linear(4, 8), new nn.ReLU(), new nn.Flatten(), new nn.Linear(8, 2));
const compiled = kiln.compile(model);
const opt = new kiln.optim.SGD(model.parameters(), { lr: 0.1 });
for (let i = 0; i < 3; i++) {
  const loss = compiled.call(kiln.randn([5, 4])).pow(2).mean();
  opt.zeroGrad();
  loss.backward();
  opt.step();
}
const out = kiln.noGrad(() => compiled.call(kiln.randn([5, 4])));
if (out.shape.join() !== '5,2') throw new Error('bad shape ' + out.shape);
${REPORT_CJS}`,
    'layers',
  );
  assertNoBabel(t, r);
});

test('running a class the plugin rewrote ahead of time, compiled and through its dispatcher, loads no @babel module', (t) => {
  // The transform runs here (Babel is the build step); the child only runs its output.
  const { code } = transform('test/fixtures/clean-graphs/early-exit.ts');
  mkdirSync(TMP, { recursive: true });
  const model = join(TMP, 'early-exit.rewritten.mjs');
  writeFileSync(model, code);
  const r = runChild(
    `
import * as kiln from 'kiln';
import { EarlyExit, LoopExit } from ${JSON.stringify(pathToFileURL(model).href)};
const log = console.log;
console.log = () => {}; // the fixture's break segments log
for (const M of [EarlyExit, LoopExit]) {
  const m = new M();
  const compiled = kiln.compile(m);
  for (let i = 0; i < 3; i++) {
    const x = kiln.randn([3, 4]);
    const want = kiln.testing.eagerly(() => m.call(x));
    if (!kiln.allclose(compiled.call(x), want, { atol: 1e-5 }) || !kiln.allclose(m.call(x), want, { atol: 1e-5 }))
      throw new Error(M.name + ' differs from eager');
  }
}
console.log = log;
${REPORT_CJS}`,
    'plugin',
  );
  assertNoBabel(t, r);
});

test('importing kiln, kiln/fx, kiln/aot, kiln/export and kiln/plugin/runtime alone loads no @babel module', (t) => {
  const r = runChild(
    `
import * as kiln from 'kiln';
import * as fx from 'kiln/fx';
import * as aot from 'kiln/aot';
import * as exp from 'kiln/export';
import * as rt from 'kiln/plugin/runtime';
for (const m of [kiln, fx, aot, exp, rt]) if (Object.keys(m).length === 0) throw new Error('empty module');
${REPORT_CJS}`,
    'subpaths',
  );
  assertNoBabel(t, r);
});
