import test from 'ava';
import { SerializationError, TraceError, ValueError } from '../src/errors.js';
import { shapeRecorder, ShapeEnv, SymSize, type Guard, guardToString } from '../src/export/symbolic/shape-env.js';
import {
  add,
  bounds,
  exprFromJSON,
  exprToJSON,
  floorDiv,
  int,
  linearInOne,
  mod,
  mul,
  neg,
  scale,
  sub,
  sym,
} from '../src/export/symbolic/expr.js';
import { satisfiesAll, solve } from '../src/export/symbolic/solve.js';
import { NUMBER_ARITH, type SizeArith } from '../src/runtime/size-arith.js';
import { tensor } from '../src/index.js';

/** A small seeded generator: rand(n) is an integer in [0, n). */
function mulberry(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return Math.floor((((x ^ (x >>> 14)) >>> 0) / 4294967296) * n);
  };
}

const s0 = sym('s0');
const s1 = sym('s1');
const s2 = sym('s2');

// ---------------------------------------------------------------------------------------------------
// Expressions

test('expr: sums collect like terms into one canonical form', (t) => {
  const a = add(add(s1, scale(s0, 2)), add(s0, int(3)));
  const b = add(int(3), add(scale(s0, 3), s1));
  t.true(a.equals(b));
  t.is(a.toString(), '3*s0 + s1 + 3');
  t.true(sub(a, a).isConstant());
  t.is(sub(a, a).constantValue(), 0);
  t.is(neg(add(s0, int(1))).toString(), '-s0 - 1');
});

test('expr: products distribute and print powers like sympy', (t) => {
  const e = mul(add(s0, int(1)), add(s0, int(-1)));
  t.is(e.toString(), 's0**2 - 1');
  t.is(mul(s0, s1).toString(), 's0*s1');
  t.true(mul(s1, s0).equals(mul(s0, s1)));
  t.is(mul(int(0), s0).toString(), '0');
});

test('expr: symbols sort naturally (s2 before s10)', (t) => {
  t.is(add(sym('s10'), sym('s2')).toString(), 's2 + s10');
});

test('expr: floor division simplifies when exact', (t) => {
  t.is(floorDiv(add(scale(s0, 2), int(4)), 2).toString(), 's0 + 2');
  t.is(floorDiv(add(scale(s0, 2), int(5)), 2).toString(), 's0 + 2');
  t.is(floorDiv(add(scale(s0, 2), int(-1)), 2).toString(), 's0 - 1');
  t.is(floorDiv(s0, 2).toString(), 's0//2');
  t.is(floorDiv(add(s0, int(1)), 2).toString(), '(s0 + 1)//2');
  t.is(floorDiv(scale(s0, 2), 4).toString(), 's0//2', 'common factors divide out');
  t.is(floorDiv(floorDiv(s0, 2), 3).toString(), 's0//6', 'nested floors merge');
  t.is(floorDiv(s0, 1), s0);
  t.is(scale(floorDiv(s0, 2), 2).toString(), '2*(s0//2)');
});

test('expr: mod simplifies when exact', (t) => {
  t.is(mod(scale(s0, 2), 2).toString(), '0');
  t.is(mod(add(scale(s0, 2), int(3)), 2).toString(), '1');
  t.is(mod(s0, 2).toString(), 'Mod(s0, 2)');
  t.is(mod(add(s0, int(4)), 3).toString(), 'Mod(s0 + 1, 3)');
  t.is(mod(add(scale(s0, 3), int(4)), 3).toString(), '1');
  t.is(mod(scale(s0, 2), 4).toString(), '2*Mod(s0, 2)');
  t.is(mod(mod(s0, 6), 3).toString(), 'Mod(s0, 3)');
  t.is(mod(mod(s0, 4), 4).toString(), 'Mod(s0, 4)');
  t.is(mod(s0, 1).toString(), '0');
});

test('expr: floor and mod reject a non-positive or non-integer divisor', (t) => {
  t.throws(() => floorDiv(s0, 0), { instanceOf: ValueError, message: /positive integer constant, got 0/ });
  t.throws(() => mod(s0, -2), { instanceOf: ValueError, message: /positive integer constant, got -2/ });
  t.throws(() => floorDiv(s0, 1.5), { instanceOf: ValueError });
  t.throws(() => int(0.5), { instanceOf: ValueError, message: /integers, got 0.5/ });
});

test('expr: evaluate agrees with JavaScript integer arithmetic, negatives included', (t) => {
  const e = add(mul(floorDiv(add(s0, int(3)), 4), s1), mod(sub(s1, s0), 3));
  for (let a = -7; a <= 7; a++)
    for (let b = -5; b <= 5; b++) {
      const expect = Math.floor((a + 3) / 4) * b + ((((b - a) % 3) + 3) % 3);
      t.is(e.evaluate({ s0: a, s1: b }), expect);
    }
  t.throws(() => s2.evaluate({ s0: 1 }), { instanceOf: ValueError, message: /symbol s2/ });
});

test('expr: simplification preserves values (random expressions against evaluation)', (t) => {
  const rand = mulberry(7);
  for (let trial = 0; trial < 300; trial++) {
    const lin = add(add(scale(s0, rand(7) - 3), scale(s1, rand(5) - 2)), int(rand(11) - 5));
    const c = rand(5) + 1;
    const f = floorDiv(lin, c);
    const m = mod(lin, c);
    for (const [a, b] of [
      [0, 0],
      [3, -2],
      [-4, 5],
      [11, 7],
    ] as const) {
      const v = lin.evaluate({ s0: a, s1: b });
      t.is(f.evaluate({ s0: a, s1: b }), Math.floor(v / c));
      t.is(m.evaluate({ s0: a, s1: b }), ((v % c) + c) % c);
    }
  }
});

test('expr: freeSymbols looks inside floor and mod', (t) => {
  t.deepEqual([...add(floorDiv(s0, 2), mod(s1, 3)).freeSymbols()].sort(), ['s0', 's1']);
  t.is(int(4).freeSymbols().size, 0);
});

test('expr: subs replaces symbols and re-simplifies atoms', (t) => {
  const e = add(mod(s1, 2), floorDiv(s1, 2));
  const r = e.subs(new Map([['s1', scale(s0, 2)]]));
  t.is(r.toString(), 's0');
});

test('expr: linearInOne recognises a*s + b and nothing else', (t) => {
  t.deepEqual(linearInOne(add(scale(s0, 2), int(1))), { symbol: 's0', a: 2, b: 1 });
  t.is(linearInOne(add(s0, s1)), undefined);
  t.is(linearInOne(floorDiv(s0, 2)), undefined);
  t.is(linearInOne(int(3)), undefined);
});

test('expr: bounds by interval arithmetic', (t) => {
  const r = (s: string) => (s === 's0' ? { lower: 2, upper: 6 } : { lower: 3, upper: Infinity });
  t.deepEqual(bounds(add(s0, int(1)), r), { lower: 3, upper: 7 });
  t.deepEqual(bounds(sub(s0, s1), r), { lower: -Infinity, upper: 3 });
  t.deepEqual(bounds(floorDiv(s0, 2), r), { lower: 1, upper: 3 });
  t.deepEqual(bounds(mod(s1, 4), r), { lower: 0, upper: 3 });
  t.deepEqual(bounds(mul(s0, s1), r), { lower: 6, upper: Infinity });
});

test('expr: JSON round trip, and malformed JSON is a SerializationError', (t) => {
  const e = add(mul(floorDiv(add(s0, int(1)), 2), s1), add(mod(s2, 3), int(-4)));
  const back = exprFromJSON(JSON.parse(JSON.stringify(exprToJSON(e))));
  t.true(back.equals(e));
  t.is(back.toString(), e.toString());
  for (const bad of [
    null,
    3,
    { c: 1.5, t: [] },
    { c: 0, t: [[0, ['s0']]] },
    { c: 0, t: [[1, []]] },
    { c: 0, t: [[1, ['bad name']]] },
    { c: 0, t: [[1, [{ floor: { c: 1, t: [] }, div: 0 }]]] },
    { c: 0, t: [[1, [{ div: 2 }]]] },
  ]) {
    t.throws(() => exprFromJSON(bad), { instanceOf: SerializationError }, JSON.stringify(bad));
  }
});

// ---------------------------------------------------------------------------------------------------
// ShapeEnv

function envWith(...hints: number[]): { env: ShapeEnv; syms: SymSize[] } {
  const env = new ShapeEnv();
  const syms = hints.map((h, i) => env.createSymbol(h, `x${i}.shape[0]`));
  return { env, syms };
}

test('env: static sizes stay plain numbers; symbolic arithmetic keeps hints', (t) => {
  const { env, syms } = envWith(5);
  const x = syms[0]!;
  t.is(env.add(2, 3), 5);
  t.is(env.floorDiv(7, 2), 3);
  t.is(env.mod(-3, 2), 1);
  const y = env.add(env.mul(x, 2), 1) as SymSize;
  t.true(y instanceof SymSize);
  t.is(y.hint, 11);
  t.is(y.toString(), '2*s0 + 1');
  t.is(env.sub(x, x), 0, 'cancels to a number');
  t.is(String(env.floorDiv(env.mul(x, 2), 2)), 's0');
  t.is(env.mod(env.mul(x, 4), 2), 0);
  t.is(env.constant(x), undefined);
  t.is(env.constant(4), 4);
  t.is(env.hint(y), 11);
  t.deepEqual(env.guards, [], 'arithmetic records nothing');
});

test('env: comparisons decide on hints and record normalised guards', (t) => {
  const { env, syms } = envWith(5, 6);
  const [x, y] = syms as [SymSize, SymSize];
  t.true(env.le(x, 6));
  t.false(env.lt(x, 5));
  t.true(env.eq(x, env.sub(y, 1)));
  t.false(env.eq(x, y));
  t.deepEqual(
    env.guards.map((g) => `${g.rel} ${g.expr.toString()}`),
    ['<= s0 - 6', '<= -s0 + 5', '== s0 - s1 + 1', '!= s0 - s1'],
  );
  t.deepEqual(
    env.guards.map((g) => guardToString(g)),
    ['s0 <= 6', 's0 >= 5', 's1 == s0 + 1', 's1 != s0'],
  );
  // Each guard also keeps the comparison as the code made it, with its outcome.
  t.deepEqual(
    env.guards.map((g) => `${g.source!.lhs.toString()} ${g.source!.op} ${g.source!.rhs.toString()}`),
    ['s0 <= 6', 's0 >= 5', 's0 == s1 - 1', 's0 != s1'],
  );
});

test('env: guards decided by the ranges are not recorded (sizes are >= 2 while tracing)', (t) => {
  const { env, syms } = envWith(5);
  const x = syms[0]!;
  t.false(env.eq(x, 1), 'a dynamic size is never 1');
  t.true(env.le(0, x));
  t.true(env.lt(1, x));
  t.deepEqual(env.guards, []);
  t.true(env.le(x, 8));
  t.true(env.le(x, 9), 'implied by the first guard');
  t.is(env.guards.length, 1);
});

test('env: the same guard twice is recorded once; common factors divide out', (t) => {
  const { env, syms } = envWith(4);
  const x = syms[0]!;
  env.le(env.mul(x, 2), 9);
  env.le(x, 4);
  t.is(env.guards.length, 1);
  t.is(guardToString(env.guards[0]!), 's0 <= 4');
});

test('env: guards carry the location set on the env', (t) => {
  const { env, syms } = envWith(4);
  env.loc = 'model.ts:12';
  env.le(syms[0]!, 10);
  t.is(env.guards[0]!.loc, 'model.ts:12');
});

test('env: valueOf specialises with a recorded guard, toString prints the expression', (t) => {
  const { env, syms } = envWith(5);
  const x = syms[0]!;
  t.is(`${x}`, 's0');
  t.is(+x, 5);
  t.is(Math.max(x as unknown as number, 3), 5);
  t.is(env.guards.length, 1);
  t.like(env.guards[0], { rel: '==', kind: 'specialization' });
  t.is(guardToString(env.guards[0]!), 's0 == 5');
});

test('env: sizes of another env or non-sizes are refused', (t) => {
  const a = envWith(3);
  const b = envWith(3);
  t.throws(() => a.env.add(a.syms[0]!, b.syms[0]!), { instanceOf: ValueError, message: /another export/ });
  t.throws(() => a.env.add('3' as unknown as number, a.syms[0]!), { instanceOf: ValueError });
  t.throws(() => a.env.floorDiv(a.syms[0]!, 0), { instanceOf: ValueError });
  t.throws(() => a.env.mod(a.syms[0]!, 2.5), { instanceOf: ValueError });
  t.throws(() => a.env.lit(1.5), { instanceOf: ValueError });
  t.throws(() => a.env.createSymbol(-1, 'x'), { instanceOf: ValueError });
});

test('env: unbacked values cannot be decided until check() narrows them', (t) => {
  const env = new ShapeEnv();
  const u = env.createUnbacked('x.item()');
  t.is(u.toString(), 'u0');
  t.is(u.hint, undefined);
  t.throws(() => env.le(u, 5), { instanceOf: TraceError, message: /data-dependent values \(u0 from x\.item\(\)\).*check/ });
  t.throws(() => env.hint(u), { instanceOf: TraceError });
  t.throws(() => +u, { instanceOf: TraceError });
  env.constrainRange(u, 4, 7);
  t.true(env.le(u, 9), 'now decided by the range');
  t.false(env.lt(u, 4));
  t.deepEqual(env.rangeOf(u), { lower: 4, upper: 7 });
  t.true(env.guards.every((g) => g.kind === 'assertion'));
  t.is(env.guards.length, 2);
  t.throws(() => env.assume('le', u, 3), { instanceOf: ValueError, message: /can never hold/ });
  t.throws(() => env.constrainRange(u, 5, 4), { instanceOf: ValueError, message: /empty range/ });
});

test('env: markSizeLike lets a data-dependent value be used as a size', (t) => {
  const env = new ShapeEnv();
  const n = env.createUnbacked('x.item()');
  env.markSizeLike(n);
  t.true(env.le(0, n));
  t.deepEqual(env.rangeOf(n), { lower: 0, upper: Infinity });
});

test('env: a shape rule written against SizeArith runs on numbers and on symbols', (t) => {
  // A broadcasting rule: the shape rules of the op table are written this way.
  function broadcast<S>(ar: SizeArith<S>, a: S, b: S): S {
    if (ar.eq(a, b)) return a;
    if (ar.eq(a, ar.lit(1))) return b;
    if (ar.eq(b, ar.lit(1))) return a;
    throw new Error('not broadcastable');
  }
  t.is(broadcast(NUMBER_ARITH, 1, 4), 4);
  const { env, syms } = envWith(5, 5);
  const r = broadcast(env, syms[0]!, syms[1]!);
  t.is(String(r), 's0');
  t.deepEqual(
    env.guards.map((g) => guardToString(g)),
    ['s1 == s0'],
  );
});

test('env: shapeRecorder exposes the env as the plugin hook', (t) => {
  const env = new ShapeEnv();
  const x = env.createSymbol(3, 'x.shape[0]');
  const a = tensor([1, 2, 3]);
  const r = shapeRecorder(env, (tt) => (tt === a ? [x] : undefined));
  t.is(r.arith, env);
  t.true(r.isSymbolic(x));
  t.false(r.isSymbolic(3));
  t.deepEqual(r.sizes(a), [x]);
  t.is(r.item, undefined);
});

// ---------------------------------------------------------------------------------------------------
// Solver

test('solve: single-symbol inequalities become ranges', (t) => {
  const { env, syms } = envWith(5);
  env.le(syms[0]!, 6);
  env.le(3, syms[0]!);
  const s = solve(env);
  t.deepEqual(s.ranges.get('s0'), { lower: 3, upper: 6 });
  t.is(s.narrowing.get('s0')!.length, 2);
  t.deepEqual(s.residual, []);
});

test('solve: equalities become replacements (s1 = s0 + 1, s2 = 2*s0) and carry ranges over', (t) => {
  const env = new ShapeEnv();
  const x = env.createSymbol(5, 'x', { range: { lower: 3, upper: 6 } });
  const y = env.createSymbol(6, 'y', { range: { lower: 4, upper: 6 } });
  const z = env.createSymbol(10, 'z');
  env.eq(x, env.sub(y, 1));
  env.eq(z, env.mul(x, 2));
  const s = solve(env);
  t.is(s.replacements.get('s1')!.toString(), 's0 + 1');
  t.is(s.replacements.get('s2')!.toString(), '2*s0');
  t.deepEqual(s.ranges.get('s0'), { lower: 3, upper: 5 }, "y's max 6 caps x at 5");
  t.false(s.ranges.has('s1'));
});

test('solve: an equality with a constant is a specialisation', (t) => {
  const { env, syms } = envWith(5, 7);
  env.eq(syms[0]!, 5);
  env.le(env.add(syms[0]!, syms[1]!), 20);
  const s = solve(env);
  t.is(s.replacements.get('s0')!.constantValue(), 5);
  t.deepEqual(s.ranges.get('s1'), { lower: 2, upper: 15 }, 's0 + s1 <= 20 became s1 <= 15');
});

test('solve: divisibility from Mod guards, with the offset the guard reads (s0 + 1 ≡ 0 mod 3 → s0 = 3k - 1)', (t) => {
  const { env, syms } = envWith(10, 11);
  env.eq(env.mod(syms[0]!, 2), 0);
  env.eq(env.mod(env.add(syms[1]!, 1), 3), 0);
  env.le(syms[1]!, 30);
  const s = solve(env);
  t.like(s.divisibility.get('s0'), { modulus: 2, offset: 0 });
  t.like(s.divisibility.get('s1'), { modulus: 3, offset: -1 });
  t.deepEqual(s.ranges.get('s1'), { lower: 2, upper: 29 }, 'range ends move to admissible values');
});

test('solve: an odd size read as != 0 mod 2 is divisibility too; two congruences combine', (t) => {
  const { env, syms } = envWith(9);
  env.eq(env.mod(syms[0]!, 2), 0); // false: records Mod(s0, 2) != 0
  env.eq(env.mod(syms[0]!, 3), 0); // true
  const s = solve(env);
  const d = s.divisibility.get('s0')!;
  t.is(d.modulus, 6);
  t.is(((d.offset % 6) + 6) % 6, 3);
});

test('solve: what cannot be folded stays as residual run-time guards', (t) => {
  const { env, syms } = envWith(3, 4, 12);
  const [w0, w1, x] = syms as [SymSize, SymSize, SymSize];
  env.eq(env.mul(w0, w1), x); // non-linear
  env.le(w0, w1); // two symbols
  const s = solve(env);
  t.deepEqual(s.residual.map((g) => guardToString(g)).sort(), ['s0 - s1 <= 0', 's0*s1 - s2 == 0'].sort());
  t.is(s.replacements.size, 0);
});

test('solve: contradictory assertions are reported', (t) => {
  const env = new ShapeEnv();
  const u = env.createUnbacked('x.item()');
  const guards: Guard[] = [
    { rel: '<=', expr: sub(int(4), u.expr), kind: 'assertion' },
    { rel: '<=', expr: sub(u.expr, int(3)), kind: 'assertion', loc: 'm.ts:3' },
  ];
  t.throws(() => solve(env, guards), { instanceOf: ValueError, message: /contradict.*u0 <= 3.*leaves no value.*m\.ts:3/ });
});

/** Property: the solver's answer describes exactly the brute-force solution set of random linear guards. */
test('solve: random linear guards against brute-force enumeration over a small box', (t) => {
  const rand = mulberry(12345);
  const LO = 2;
  const HI = 12;
  const seen = { replacements: 0, divisibility: 0, residual: 0, narrowed: 0 };
  for (let trial = 0; trial < 200; trial++) {
    const env = new ShapeEnv();
    const hint = [LO + rand(HI - LO + 1), LO + rand(HI - LO + 1)];
    const xs = hint.map((h, i) => env.createSymbol(h, `x${i}`, { range: { lower: LO, upper: HI } }));
    const nGuards = 1 + rand(4);
    for (let k = 0; k < nGuards; k++) {
      const a = rand(5) - 2;
      const b = rand(3) - 1;
      const lhs = env.add(env.add(env.mul(xs[0]!, a), env.mul(xs[1]!, b)), rand(9) - 4);
      const kind = rand(6);
      if (kind === 0) env.le(lhs, rand(15));
      else if (kind === 1) env.lt(rand(10), lhs);
      else if (kind === 2) {
        // An equality that holds at the example (a relation, or a specialisation when a2 is 0).
        const a2 = rand(3);
        env.eq(xs[1]!, env.add(env.mul(xs[0]!, a2), hint[1]! - a2 * hint[0]!));
      } else if (kind === 3) env.eq(env.mod(env.add(xs[rand(2)]!, rand(4)), 2 + rand(3)), rand(2));
      else if (kind === 4)
        env.eq(xs[rand(2)]!, LO + rand(HI - LO + 1)); // mostly false: a != guard
      else {
        // 2*x0 == 3*x1 + c at the example: no unit coefficient to eliminate.
        env.eq(env.mul(xs[0]!, 2), env.add(env.mul(xs[1]!, 3), 2 * hint[0]! - 3 * hint[1]!));
      }
    }
    const sol = solve(env);
    seen.replacements += sol.replacements.size;
    seen.divisibility += sol.divisibility.size;
    seen.residual += sol.residual.length;
    seen.narrowed += sol.narrowing.size;
    const box = { lower: LO, upper: HI };
    for (let v0 = LO; v0 <= HI; v0++)
      for (let v1 = LO; v1 <= HI; v1++) {
        const point = new Map([
          ['s0', v0],
          ['s1', v1],
        ]);
        const truth = satisfiesAll(env.guards, point);
        // The solution's description: replacements hold, free symbols in range and divisible, residuals hold.
        let described = true;
        for (const [s, e] of sol.replacements) if (point.get(s) !== e.evaluate(point)) described = false;
        for (const [s, r] of sol.ranges) {
          const v = point.get(s)!;
          const rr = { lower: Math.max(r.lower, box.lower), upper: Math.min(r.upper, box.upper) };
          if (v < rr.lower || v > rr.upper) described = false;
          const d = sol.divisibility.get(s);
          if (d && (((v - d.offset) % d.modulus) + d.modulus) % d.modulus !== 0) described = false;
        }
        if (!satisfiesAll(sol.residual, point)) described = false;
        if (truth !== described) {
          t.fail(
            `trial ${trial}: at (${v0}, ${v1}) guards say ${truth}, solution says ${described}: ${env.guards.map((g) => guardToString(g)).join('; ')}`,
          );
          return;
        }
      }
    t.true(
      satisfiesAll(
        env.guards,
        new Map([
          ['s0', hint[0]!],
          ['s1', hint[1]!],
        ]),
      ),
      'the example satisfies its own guards',
    );
  }
  // Every part of the solver was exercised.
  for (const [k, n] of Object.entries(seen)) t.true(n > 0, k);
});
