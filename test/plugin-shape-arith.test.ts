import test from 'ava';
import { transformFileSync, type BabelFileResult, type PluginObj } from '@babel/core';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as kiln from 'kiln';
import { transformProgram } from '../src/rewrite/transform.js';
import * as H from '../src/runtime/shape-helpers.js';
import { setShapeRecorder, type ShapeRecorder } from '../src/runtime/shape-recording.js';
import type { SizeArith } from '../src/runtime/size-arith.js';
import { Tensor } from '../src/runtime/tensor.js';
import { fixture, loadRewritten } from './plugin-helpers.js';

/**
 * The plugin's shape arithmetic (issue 16 item 2): shape reads and the arithmetic and comparisons on them go
 * through kiln/plugin/runtime's helpers. Eagerly and under compile() they must be exactly the code as written;
 * under export a recorder answers them symbolically and comparisons become guards.
 */
type Module = InstanceType<typeof kiln.nn.Module>;
type Fn = (...a: unknown[]) => unknown;

const EAGER_FILE = resolve('test/fixtures/plugin-shape-arith-eager.ts');

// ---- A test-only recorder: sizes are small symbolic objects, comparisons are logged as guards ------------

class Sym {
  constructor(
    readonly expr: string,
    readonly hint: number,
    readonly value?: number,
  ) {}
}

class TestRecorder implements ShapeRecorder<Sym> {
  readonly guards: string[] = [];
  readonly items: Tensor[] = [];
  readonly tracked = new Map<object, Sym[]>();
  readonly arith: SizeArith<Sym>;

  constructor() {
    const lit = (n: number) => new Sym(String(n), n, n);
    const bin = (op: string, f: (a: number, b: number) => number) => (a: Sym, b: Sym) =>
      a.value !== undefined && b.value !== undefined ? lit(f(a.value, b.value)) : new Sym(`(${a.expr} ${op} ${b.expr})`, f(a.hint, b.hint));
    const decide = (op: string, negated: string, f: (a: number, b: number) => boolean) => (a: Sym, b: Sym) => {
      const r = f(a.hint, b.hint);
      if (a.value === undefined || b.value === undefined) this.guards.push(`${a.expr} ${r ? op : negated} ${b.expr}`);
      return r;
    };
    this.arith = {
      lit,
      add: bin('+', (a, b) => a + b),
      sub: bin('-', (a, b) => a - b),
      mul: bin('*', (a, b) => a * b),
      floorDiv: (a, b) => bin('//', (x, y) => Math.floor(x / y))(a, lit(b)),
      mod: (a, b) => bin('%', (x, y) => ((x % y) + y) % y)(a, lit(b)),
      eq: decide('==', '!=', (a, b) => a === b),
      lt: decide('<', '>=', (a, b) => a < b),
      le: decide('<=', '>', (a, b) => a <= b),
      hint: (a) => a.hint,
      constant: (a) => a.value,
    };
  }

  isSymbolic(v: unknown): v is Sym {
    return v instanceof Sym;
  }
  sizes(t: Tensor): readonly Sym[] | undefined {
    return this.tracked.get(t);
  }
  item(t: Tensor): Sym | undefined {
    this.items.push(t);
    return new Sym(`u${this.items.length - 1}`, 2);
  }
}

/** Run `f` with `r` as the active recorder. */
type SetRecorder = (r: ShapeRecorder | null) => ShapeRecorder | null;

/**
 * Rewritten fixtures import kiln/plugin/runtime, which is the built package (as `kiln` is): the recorder hook
 * their helpers read is dist's copy of shape-recording, not the one this file imports from src.
 */
const setBuiltShapeRecorder = async () =>
  ((await import(pathToFileURL(resolve('dist/src/runtime/shape-recording.js')).href)) as { setShapeRecorder: SetRecorder })
    .setShapeRecorder;

function recording<T>(r: ShapeRecorder | null, f: () => T, set: SetRecorder = setShapeRecorder): T {
  const prev = set(r);
  try {
    return f();
  } finally {
    set(prev);
  }
}

/** A stand-in tensor (a built kiln Tensor to `instanceof`) whose method calls are logged and return itself. */
function fakeTensor(shape: number[], calls: { method: string; args: unknown[] }[]): Tensor {
  const fake: Tensor = new Proxy(Object.create(kiln.Tensor.prototype) as Tensor, {
    get(_t, prop) {
      if (prop === 'shape') return shape;
      if (typeof prop === 'symbol' || prop === 'then') return undefined; // not a promise
      return (...args: unknown[]) => {
        calls.push({ method: prop, args });
        return fake;
      };
    },
  });
  return fake;
}

async function quietly<T>(f: () => T): Promise<{ result: T; logs: string[] }> {
  const logs: string[] = [];
  const orig = console.log;
  console.log = (...a: unknown[]) => void logs.push(a.map(String).join(' '));
  try {
    return { result: await f(), logs };
  } finally {
    console.log = orig;
  }
}

/** `file` rewritten by the plugin's transform with the shape arithmetic left out (what the plugin did before). */
async function loadWithoutShapeArith<T>(file: string): Promise<T> {
  const plugin = (): PluginObj => ({
    visitor: {
      Program(path, state) {
        transformProgram(path, state.filename, state.cwd, { shapeArith: false });
      },
    },
  });
  const r = transformFileSync(file, {
    configFile: false,
    babelrc: false,
    cwd: process.cwd(),
    plugins: [plugin],
    presets: [['@babel/preset-typescript', { onlyRemoveTypeImports: false }]],
  }) as BabelFileResult;
  const hash = createHash('sha1').update(`without:${file}${r.code}`).digest('hex').slice(0, 12);
  const out = join(dirname(file), `.rewritten-${hash}.mjs`);
  writeFileSync(out, r.code!);
  return (await import(pathToFileURL(out).href)) as T;
}

// ---- (a) eagerly: exactly the code as written ------------------------------------------------------------

const OPERANDS: unknown[] = [0, 3, -7, 2.5, NaN, Infinity, '4', 'px', '', null, undefined, true, {}, [2], { valueOf: () => 5 }];

test('with no recorder every helper is the expression it replaces, for any operands (strings, NaN, objects)', (t) => {
  const same = (got: () => unknown, want: () => unknown, what: string) => {
    let g: unknown, w: unknown, ge: unknown, we: unknown;
    try {
      g = got();
    } catch (e) {
      ge = (e as Error).constructor;
    }
    try {
      w = want();
    } catch (e) {
      we = (e as Error).constructor;
    }
    t.true(Object.is(g, w) && ge === we, `${what}: got ${String(g)}, expected ${String(w)}`);
  };
  for (const a of OPERANDS as number[]) {
    for (const b of OPERANDS as number[]) {
      const ab = `${String(a)}, ${String(b)}`;
      same(
        () => H.add(a, b),
        () => a + b,
        `add(${ab})`,
      );
      same(
        () => H.sub(a, b),
        () => a - b,
        `sub(${ab})`,
      );
      same(
        () => H.mul(a, b),
        () => a * b,
        `mul(${ab})`,
      );
      same(
        () => H.div(a, b),
        () => a / b,
        `div(${ab})`,
      );
      same(
        () => H.mod(a, b),
        () => a % b,
        `mod(${ab})`,
      );
      same(
        () => H.floorDiv(a, b),
        () => Math.floor(a / b),
        `floorDiv(${ab})`,
      );
      same(
        () => H.lt(a, b),
        () => a < b,
        `lt(${ab})`,
      );
      same(
        () => H.le(a, b),
        () => a <= b,
        `le(${ab})`,
      );
      same(
        () => H.gt(a, b),
        () => a > b,
        `gt(${ab})`,
      );
      same(
        () => H.ge(a, b),
        () => a >= b,
        `ge(${ab})`,
      );
      same(
        () => H.eq(a, b),
        () => a === b,
        `eq(${ab})`,
      );
      same(
        () => H.ne(a, b),
        () => a !== b,
        `ne(${ab})`,
      );
      same(
        () => H.looseEq(a, b),
        () => a == b,
        `looseEq(${ab})`,
      );
      same(
        () => H.looseNe(a, b),
        () => a != b,
        `looseNe(${ab})`,
      );
    }
    let v = a;
    v++;
    same(
      () => H.inc(a),
      () => v,
      `inc(${String(a)})`,
    );
    same(
      () => H.concrete(a),
      () => a,
      `concrete(${String(a)})`,
    );
  }
  const x = kiln.randn([2, 3, 5]);
  t.is(H.size(x, 1), 3);
  t.is(H.size(x, -1), undefined); // x.shape[-1], as written
  t.is(H.sizeAt(x, -1), 5);
  t.is(H.sizeOf(x, -1), 5);
  t.is(H.sizeOf(x), x.shape);
  t.is(H.shape(x), x.shape);
  t.is(H.numel(x), 30);
  t.is(H.ndim(x), 3);
  t.is(H.item(kiln.tensor([7])), 7);
  t.throws(() => H.sizeOf(x, 3), { instanceOf: kiln.IndexError }); // x.size(3)'s own error
  t.throws(() => H.size(undefined, 0), { instanceOf: TypeError });
});

test('rewritten code with strings, NaN, fractions and object operands gives what the code as written gives', async (t) => {
  const { mod, code } = await loadRewritten<Record<string, Fn>>(EAGER_FILE);
  const plain = (await import(EAGER_FILE)) as Record<string, Fn>;
  // The rewrite happened (else this would compare the code with itself).
  for (const helper of ['shape', 'add', 'div', 'floorDiv', 'mod', 'lt', 'looseEq', 'inc', 'concrete', 'sizeAt', 'sizeOf', 'ndim'])
    t.regex(code, new RegExp(`_kiln\\.${helper}\\(`), helper);
  t.regex(code, /_kiln\.mul\(others\[0\], first\)/, 'a rest element of a shape holds sizes');
  t.regex(code, /_kiln\.concrete\(first\)\.toFixed\(1\)/, 'a number method concretises');
  for (const extra of OPERANDS) {
    for (const shape of [
      [3, 4],
      [7, 2, 1],
    ]) {
      const x = kiln.randn(shape);
      t.deepEqual(
        kiln.testing.eagerly(() => mod.mixed!(x, extra)),
        plain.mixed!(x, extra),
        `mixed(${shape.join('x')}, ${String(extra)})`,
      );
    }
  }
  const x = kiln.randn([3, 4]);
  t.deepEqual(
    kiln.testing.eagerly(() => mod.withParam!(x, 2)),
    plain.withParam!(x, 2),
  );
  t.deepEqual(
    kiln.testing.eagerly(() => mod.withParam!(x, '2')),
    plain.withParam!(x, '2'),
  );
});

test('the shape-arith fixture rewritten runs as written, eagerly and through its dispatcher', async (t) => {
  const { mod } = await loadRewritten<Record<string, new () => Module>>(fixture('shape-arith'));
  const plain = (await import(fixture('shape-arith'))) as Record<string, new () => Module>;
  kiln.manualSeed(3);
  const m = new mod.ShapeArith!();
  const ref = new plain.ShapeArith!();
  ref.loadStateDict(m.stateDict());
  for (const [rows, k] of [
    [3, 2],
    [8, 5],
    [4, 1],
  ] as const) {
    const x = kiln.randn([rows, 4]);
    const kt = kiln.tensor([k], { dtype: 'int32' });
    const want = await quietly(() => ref.forward(x, kt) as kiln.Tensor);
    const eager = await quietly(() => kiln.testing.eagerly(() => m.call(x, kt) as kiln.Tensor));
    const direct = await quietly(() => m.call(x, kt) as kiln.Tensor);
    t.deepEqual(eager.result.shape, want.result.shape);
    t.true(kiln.allclose(eager.result, want.result, { atol: 1e-6 }), `eager, ${rows} rows`);
    t.true(kiln.allclose(direct.result, want.result, { atol: 1e-5 }), `dispatcher, ${rows} rows`);
    t.deepEqual(eager.logs, want.logs);
    t.deepEqual(direct.logs, want.logs);
  }
});

// ---- (b) under a recorder: symbolic sizes and guards -----------------------------------------------------

test('under a recorder: x.shape[0] <= 6 records s0 <= 6, b * n reaches the op symbolically, item() goes to recorder.item', async (t) => {
  const { mod } = await loadRewritten<Record<string, new () => Module>>(fixture('shape-arith'));
  const m = new mod.ShapeArith!();
  (m as unknown as { fc: Module }).fc = new kiln.nn.Identity();
  const calls: { method: string; args: unknown[] }[] = [];
  const x = fakeTensor([3, 4], calls);
  const k = fakeTensor([1], calls);
  const r = new TestRecorder();
  r.tracked.set(x, [new Sym('s0', 3), new Sym('s1', 4)]);
  const setBuilt = await setBuiltShapeRecorder();
  const { logs } = await quietly(() => recording(r, () => kiln.testing.eagerly(() => m.call(x, k)), setBuilt));
  t.is(r.guards[0], 's0 <= 6', 'the if on x.shape[0] is a guard from le');
  const view = calls.find((c) => c.method === 'view')!;
  t.deepEqual(view.args, [[new Sym('(s0 * s1)', 12)]], 'h.view(b * n) gets the product of the symbols');
  const view3 = calls.filter((c) => c.method === 'view')[1]!;
  t.deepEqual(view3.args, [[new Sym('s0', 3), 2, new Sym('(s1 // 2)', 2)]], 'Math.floor(h.shape[1] / 2) is symbolic floor division');
  t.deepEqual(r.items, [k, x], 'both item() calls asked the recorder (the second in the branch test)');
  const narrow = calls.find((c) => c.method === 'narrow')!;
  t.deepEqual(narrow.args, [0, 0, new Sym('u0', 2)], 'the unbacked size reaches narrow');
  const mul = calls.filter((c) => c.method === 'mul').at(-1)!;
  t.deepEqual(mul.args, [new Sym('(s1 - (s1 // 2))', 2)], 'x.shape.at(-1) - half');
  // x.numel() % 2 === 0: the dividend's sign, then the parity, decided on the example (12) and guarded.
  // x.numel() % 2 === 0: the dividend's sign, then the parity, decided on the example (12) and guarded; then
  // the branch test picked.sum().item() > x.shape[0] compares the unbacked u1 (example 2) with s0.
  t.deepEqual(r.guards.slice(1), ['0 <= ((1 * s0) * s1)', '(((1 * s0) * s1) % 2) == 0', 's0 >= u1']);
  t.deepEqual(logs, ['shapes 3,4 true'], 'h.shape in console.log was left as written');
});

test('under a recorder: fractions, strings and Math calls concretise a size with a specialisation guard', (t) => {
  const r = new TestRecorder();
  const s = new Sym('s0', 6);
  recording(r, () => {
    t.is(H.div(s, 4), 1.5);
    t.is(H.add('n=', s), 'n=6');
    t.is(H.add(s, 0.5), 6.5);
    t.is(H.concrete(s), 6);
    t.is(H.concrete(r.arith.lit(3)), 3, 'a literal concretises without a guard');
    t.is(H.lt(s, 2.5), false); // s0 < 2.5 is s0 <= 2
    t.is(H.ge(s, 2.5), true); // s0 >= 2.5 is 3 <= s0
    t.is(H.eq(s, 2.5), false); // never equal: no guard
    t.is(H.lt(s, NaN), false);
    t.is(H.eq(s, '6'), false, 'never === a string: no guard');
    t.is(H.ne(s, undefined), true);
    t.is(H.looseEq(s, null), false, 'never == null: no guard');
    t.deepEqual(H.mod(H.sub(s, 10), 4), new Sym('(0 - ((0 - (s0 - 10)) % 4))', 0)); // JS remainder keeps the dividend's sign
  });
  t.deepEqual(r.guards, ['s0 == 6', 's0 == 6', 's0 == 6', 's0 == 6', 's0 > 2', '3 <= s0', '0 > (s0 - 10)']);
});

test('under a recorder: reads of tensors it does not track, and plain numbers, stay plain', (t) => {
  const r = new TestRecorder();
  const x = kiln.randn([2, 3]);
  recording(r, () => {
    t.is(H.size(x, 1), 3);
    t.is(H.numel(x), 6);
    t.is(H.add(2, 3), 5);
    t.is(H.le(H.size(x, 0), 6), true);
  });
  t.deepEqual(r.guards, []);
});

// ---- (c) under compile(): the same graphs as before the rewrite ------------------------------------------

test('under compile() the rewritten shape-arith fixture captures at least what it did without the shape rewrite, with the same results', async (t) => {
  const { mod } = await loadRewritten<Record<string, new () => Module>>(fixture('shape-arith'));
  const before = await loadWithoutShapeArith<Record<string, new () => Module>>(fixture('shape-arith'));
  const plain = (await import(fixture('shape-arith'))) as Record<string, new () => Module>;
  kiln.manualSeed(5);
  const ref = new plain.ShapeArith!();
  const inputs = (
    [
      [3, 2],
      [3, 1],
      [8, 5],
    ] as const
  ).map(([rows, k]) => [kiln.randn([rows, 4]), kiln.tensor([k], { dtype: 'int32' })]);
  const run = async (cls: new () => Module) => {
    const m = new cls();
    m.loadStateDict(ref.stateDict());
    const counter = new kiln.testing.CompileCounter();
    const compiled = kiln.compile(m, { backend: counter });
    for (const [i, args] of inputs.entries()) {
      const { result } = await quietly(() => compiled.call(...args) as kiln.Tensor);
      const { result: want } = await quietly(() => ref.forward(...args) as kiln.Tensor);
      t.true(kiln.allclose(result, want, { atol: 1e-5 }), `${cls.name} call ${i} equals eager`);
    }
    const { result: report } = await quietly(() => kiln.explain(m)(...inputs[0]!));
    return { frames: counter.frameCount, ops: counter.opCount, report };
  };
  const now = await run(mod.ShapeArith!);
  const was = await run(before.ShapeArith!);
  // the rewrite's size helpers give compile's trace graph nodes for sizes (src/compile/traced-sizes.ts), so it
  // captures what the plain code breaks on, and never breaks where the plain code was captured
  t.true(now.ops >= was.ops, `ops ${now.ops} < ${was.ops}`);
  t.true(now.report.graphBreakCount <= was.report.graphBreakCount);
  const wasReasons = was.report.breakReasons.map((b) => b.reason);
  t.true(
    now.report.breakReasons.every((b) => wasReasons.includes(b.reason)),
    now.report.breakReasons.map((b) => b.reason).join('; '),
  );
  t.true(now.frames > 0, 'graphs were captured at all');
});

test('under compile() rewritten functions mixing sizes with strings and NaN give the same results, capturing at least as before', async (t) => {
  const { mod } = await loadRewritten<Record<string, Fn>>(EAGER_FILE);
  const before = await loadWithoutShapeArith<Record<string, Fn>>(EAGER_FILE);
  const plain = (await import(EAGER_FILE)) as Record<string, Fn>;
  for (const [name, extra] of [
    ['mixed', '4'],
    ['mixed', NaN],
    ['withParam', 2],
  ] as const) {
    const counts = [mod, before].map((m) => {
      const counter = new kiln.testing.CompileCounter();
      const compiled = kiln.compile(m[name]!, { backend: counter }) as Fn;
      for (const shape of [
        [3, 4],
        [5, 4],
      ]) {
        const x = kiln.randn(shape);
        t.deepEqual(compiled(x, extra), plain[name]!(x, extra), `${name}(${shape.join('x')}, ${String(extra)})`);
      }
      const report = kiln.explain(m[name]!)(kiln.randn([3, 4]), extra);
      return [counter.frameCount, report.graphCount, report.graphBreakCount];
    });
    const [[nowFrames, nowGraphs, nowBreaks], [wasFrames, wasGraphs, wasBreaks]] = counts as [number[], number[]];
    t.true(nowFrames! >= wasFrames! && nowGraphs! >= wasGraphs! && nowBreaks! <= wasBreaks!, `${name}: ${counts.join(' vs ')}`);
  }
});
