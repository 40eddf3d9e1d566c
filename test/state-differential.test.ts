import test from 'ava';
import * as kiln from 'kiln';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { loadRewritten } from './plugin-helpers.js';
import { seeded, stateProgram } from './state-programs.js';

/**
 * Issue 13's acceptance differential: 100 generated model files that mix module-level state, closures over
 * modules and variables, console.log, Math.random, plain arrays of layers and attribute mutation; three calls
 * each with the state changed between calls. Compiled must equal eager, with the same side effects, on the
 * plugin route (the file rewritten by kiln/plugin) and at run time (`compile()` of the file as tsx runs it).
 */
type Tensor = kiln.Tensor;
type Model = InstanceType<typeof kiln.nn.Module> & { hist: number[]; counter: number };
interface Built {
  model: Model;
  mutate(step: number): void;
}
interface Program {
  build(seed: number): Built;
  mutateShared(step: number): void;
  effects: string[];
}

const DIR = resolve('test/.tmp/state-programs');
const PROGRAMS = 100;

/** Run `f` with Math.random replaced by a seeded sequence and console.log counted; returns the result and counts. */
function observed<T>(f: () => T): { value: T; printed: number; randoms: number } {
  const random = Math.random;
  const log = console.log;
  const next = seeded(7);
  let printed = 0;
  let randoms = 0;
  Math.random = () => (randoms++, next());
  console.log = () => void printed++;
  try {
    return { value: f(), printed, randoms };
  } finally {
    Math.random = random;
    console.log = log;
  }
}

async function check(t: import('ava').ExecutionContext, seed: number, route: 'plugin' | 'runtime', file: string): Promise<void> {
  const mod = (route === 'plugin' ? (await loadRewritten<Program>(file)).mod : await import(pathToFileURL(file).href)) as Program;
  const eagerOne = mod.build(seed);
  const compiledOne = mod.build(seed);
  const compiled = route === 'plugin' ? compiledOne.model : kiln.compile(compiledOne.model);
  kiln.manualSeed(seed);
  for (let step = 0; step < 3; step++) {
    const x = kiln.randn([2, 4]);
    const before = mod.effects.length;
    const want = observed(() => kiln.testing.eagerly(() => eagerOne.model.call(x) as Tensor));
    const mid = mod.effects.length;
    const got = observed(() => compiled.call(x) as Tensor);
    const where = `program ${seed} (${route}), call ${step + 1}`;
    t.true(kiln.allclose(got.value, want.value, { atol: 1e-5 }), `${where}: compiled differs from eager`);
    t.is(got.printed, want.printed, `${where}: console.log count`);
    t.is(got.randoms, want.randoms, `${where}: Math.random count`);
    t.is(mod.effects.length - mid, mid - before, `${where}: effects pushed`);
    t.deepEqual(compiledOne.model.hist, eagerOne.model.hist, `${where}: this.hist`);
    t.is(compiledOne.model.counter, eagerOne.model.counter, `${where}: this.counter`);
    mod.mutateShared(step + 1);
    eagerOne.mutate(step + 1);
    compiledOne.mutate(step + 1);
  }
}

test('100 generated model files with changing state: compiled equals eager with the same side effects, on both routes', async (t) => {
  mkdirSync(DIR, { recursive: true });
  process.removeAllListeners('warning'); // run-time capture warns about free variables; not what this test checks
  for (let seed = 1; seed <= PROGRAMS; seed++) {
    const { source } = stateProgram(seed);
    const file = join(DIR, `program-${seed}.ts`);
    writeFileSync(file, source);
    await check(t, seed, 'plugin', file);
    await check(t, seed, 'runtime', file);
  }
});
