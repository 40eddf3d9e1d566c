import test from 'ava';
import * as kiln from 'kiln';
import { splitSegmentResult } from '../src/compile/segment-output.js';
import { passes, symbolicTrace } from '../src/fx.js';
import { nn as srcNn, type Tensor as SrcTensor } from '../src/index.js';
import { loadRewritten } from './plugin-helpers.js';

/**
 * Captured graphs read like the user's code (issue 14, item 6): a plugin segment's graph outputs the user's
 * values, without the plan's exit flag (`[1, value]`, `[0, ...slots]`) or the slots it leaves unset
 * (`undefined`), and the compiled segment still hands the plan the layout it expects.
 */
type Module = InstanceType<typeof kiln.nn.Module>;
type Tensor = kiln.Tensor;
type Ctor = new () => Module;

const FIXTURE = 'test/fixtures/clean-graphs/early-exit.ts';
const load = async () => (await loadRewritten<Record<string, Ctor>>(FIXTURE)).mod;
const close = (a: unknown, b: unknown) => kiln.allclose(a as Tensor, b as Tensor, { atol: 1e-5 });
const eager = <T>(f: () => T): T => kiln.testing.eagerly(f);

/** console.log silenced while `f` runs (the fixture's break segments log). */
function quiet<T>(f: () => T): T {
  const orig = console.log;
  console.log = () => {};
  try {
    return f();
  } finally {
    console.log = orig;
  }
}

/** The protocol a graph must not show: `undefined` anywhere, or an exit flag leading an array literal. */
function assertClean(t: import('ava').ExecutionContext, codes: readonly string[]): void {
  for (const code of codes) {
    t.notRegex(code, /undefined/, code);
    t.notRegex(code, /\[\s*[01]\s*[,\]]/, code);
  }
}

const forward = (...lines: string[]) =>
  `forward(${lines[0]}) {\n${lines
    .slice(1)
    .map((l) => `  ${l}`)
    .join('\n')}\n}`;

test('plugin segments: graphs output the user values, no exit flag and no unset slot', async (t) => {
  const { EarlyExit } = await load();
  const m = new EarlyExit!();
  const x = kiln.randn([2, 4]);
  const r = quiet(() => kiln.explain(kiln.compile(m))(x));
  const codes = r.graphs.map((g) => g.code);
  assertClean(t, codes);
  t.deepEqual(codes, [
    // `next` with slots [extra (unset), h, g]: the two set values, not `[undefined, fc, mul]`
    forward('x', 'const fc = this.fc.call(x);', 'const mul = x.mul(2);', 'return [fc, mul];'),
    // `either` that falls through: the new `extra`, not `[0, relu]`
    forward('extra, h', 'const relu = ops.relu(h);', 'return relu;'),
    // the captured arm that returns: its value, not `[1, neg]`
    forward('extra', 'const neg = extra.neg();', 'return neg;'),
  ]);
  t.is(r.graphBreakCount, 2);
});

test('plugin segments: the rebuilt layout gives the eager results, on every exit', async (t) => {
  const { EarlyExit } = await load();
  const m = new EarlyExit!() as Module & { skip: boolean };
  const compiled = kiln.compile(m);
  for (const skip of [false, true, false]) {
    m.skip = skip;
    for (const sign of [1, -1]) {
      const x = kiln.randn([3, 4]).mul(sign);
      const want = quiet(() => eager(() => m.call(x)));
      t.true(
        close(
          quiet(() => compiled.call(x)),
          want,
        ),
        `skip=${skip} compiled`,
      );
      t.true(
        close(
          quiet(() => m.call(x)),
          want,
        ),
        `skip=${skip} dispatcher`,
      );
    }
  }
});

test('plugin segments: a loop left by break and an early return capture as one clean graph', async (t) => {
  const { LoopExit } = await load();
  const m = new LoopExit!() as Module & { steps: number; stopAt: number };
  const x = kiln.randn([2, 4]);
  const r = quiet(() => kiln.explain(m)(x));
  const codes = r.graphs.map((g) => g.code);
  assertClean(t, codes);
  t.deepEqual(codes, [
    forward('x', 'const fc = this.fc.call(x);', 'return fc;'),
    forward('y', 'const relu = ops.relu(y);', 'const add = relu.add(0);', 'const mul = add.mul(2);', 'return mul;'),
  ]);
  for (const [steps, stopAt] of [
    [3, 1],
    [7, 9],
    [7, 2],
  ] as const) {
    Object.assign(m, { steps, stopAt });
    const want = quiet(() => eager(() => m.call(x)));
    t.true(
      close(
        quiet(() => m.call(x)),
        want,
      ),
      `steps=${steps} stopAt=${stopAt}`,
    );
  }
});

class PlainEarlyExit extends kiln.nn.Module {
  fc = new kiln.nn.Linear(4, 4);
  skip = false;

  override forward(x: Tensor): Tensor {
    let extra: Tensor;
    const h = this.fc.call(x);
    if (this.skip) return h;
    // eslint-disable-next-line prefer-const -- declared before the early return on purpose
    extra = kiln.F.relu(h);
    return extra.add(h);
  }
}

test('compile() on plain code with an early return: the graph outputs the returned value only', (t) => {
  const m = new PlainEarlyExit();
  const x = kiln.randn([2, 4]);
  for (const [skip, want] of [
    [false, forward('x', 'const fc = this.fc.call(x);', 'const relu = ops.relu(fc);', 'const add = relu.add(fc);', 'return add;')],
    [true, forward('x', 'const fc = this.fc.call(x);', 'return fc;')],
  ] as const) {
    m.skip = skip;
    const r = kiln.explain(m)(x);
    const codes = r.graphs.map((g) => g.code);
    assertClean(t, codes);
    t.deepEqual(codes, [want]);
    t.true(
      close(
        kiln.compile(m).call(x),
        eager(() => m.call(x)),
      ),
    );
  }
});

test('splitSegmentResult: flags and unset slots leave the output and come back in the rebuilt result', (t) => {
  const a = { a: 1 };
  const b = { b: 2 };
  const cases: [Parameters<typeof splitSegmentResult>, unknown][] = [
    [['return', a], a],
    [['return', undefined], undefined],
    [
      ['next', [undefined, a, b]],
      [a, b],
    ],
    [['next', [a, undefined]], a],
    [['next', undefined], []],
    [['either', [1, a]], a],
    [['either', [1, undefined]], undefined],
    [['either', [0, undefined, b]], b],
    [['either', [0]], []],
  ];
  for (const [[exit, result], output] of cases) {
    const split = splitSegmentResult(exit, result);
    t.deepEqual(split.output, output, `${exit} ${JSON.stringify(result)}`);
    t.deepEqual(split.rebuild(split.output), result, `${exit} ${JSON.stringify(result)} rebuilt`);
  }
  // A result without the shape its exit promises stays whole (never a silently dropped value).
  const odd = splitSegmentResult('either', [2, a]);
  t.deepEqual(odd.output, [2, a]);
  t.deepEqual(odd.rebuild(odd.output), [2, a]);
});

test('printed calls follow torch.fx: as recorded (x.flatten(1)), and normalised with every default shown', (t) => {
  // kiln's sources, like fx (the plugin tests above load the built package)
  class Flat extends srcNn.Module {
    override forward(x: SrcTensor): SrcTensor {
      return x.flatten(1).relu();
    }
  }
  const gm = symbolicTrace(new Flat());
  t.is(gm.code, forward('x', 'const flatten = x.flatten(1);', 'const relu = flatten.relu();', 'return relu;'));
  const normalised = new passes.NormalizeArgs(new passes.NormalizeOperators(gm).transform()).transform();
  t.is(
    normalised.code,
    forward(
      'x',
      'const flatten = ops.flatten({ input: x, startDim: 1, endDim: -1 });',
      'const relu = ops.relu({ input: flatten });',
      'return relu;',
    ),
  );
});
