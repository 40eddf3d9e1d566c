import test from 'ava';
import { manualSeed, ops, randn, tensor } from '../src/index.js';
import { KilnError } from '../src/errors.js';
import { windowOut } from '../src/runtime/cpu/conv.js';
import { setTraceDispatch, type TraceDispatch } from '../src/runtime/dispatch.js';
import { bindArgs, OPS, type Op } from '../src/runtime/op.js';
import { NUMBER_ARITH, type SizeArith } from '../src/runtime/size-arith.js';
import { inferMeta, OP_NAMES, shapeRuleOf, SHAPE_RULES, type OpMeta, type TensorMeta } from '../src/runtime/shape-rules/index.js';
import { Tensor as TensorClass } from '../src/runtime/tensor.js';
import { GRAD_CASES } from './grad-cases.js';

/**
 * The op table's shape rules (issue 16): each agrees with its eager op on the op sweep's cases (every op call a
 * case makes, forward and backward, checked against the rule with plain numbers), every op has one, bad
 * shapes give the eager op's error, and with symbolic sizes they record the guards PyTorch's export records.
 */

interface Call {
  readonly op: string;
  readonly args: readonly unknown[];
  readonly out: unknown;
}

/** Run `body` recording every op call (bound arguments and result), nested calls of composite ops included. */
function recordCalls(body: () => void): Call[] {
  const calls: Call[] = [];
  const recorder: TraceDispatch = {
    symbolic: false,
    isTraced: (x) => x instanceof TensorClass,
    callOp(fn, args, kwargs) {
      const op = fn as unknown as Op<(...a: never[]) => unknown>;
      const bound = bindArgs(op.schema, args, kwargs);
      const out = op.invoke(args, kwargs);
      calls.push({ op: op.opName, args: bound, out });
      return out;
    },
  };
  const prev = setTraceDispatch(recorder);
  try {
    body();
  } finally {
    setTraceDispatch(prev);
  }
  return calls;
}

/** An eager output as metas: a tensor, or an array of them (null where a gradient was not asked for). */
function metaOf(out: unknown): OpMeta<number> {
  const one = (t: unknown): TensorMeta<number> | null => (t instanceof TensorClass ? { shape: [...t.shape], dtype: t.dtype } : null);
  return Array.isArray(out) ? out.map(one) : one(out)!;
}

function plainMeta(m: OpMeta<number>): unknown {
  const one = (t: TensorMeta<number> | null) => t && { shape: [...t.shape], dtype: t.dtype };
  return Array.isArray(m) ? (m as readonly (TensorMeta<number> | null)[]).map(one) : one(m as TensorMeta<number>);
}

/** Cases for the ops the sweep does not reach (not differentiable): op name, and a call of it. */
const EXTRA_CASES: [string, () => void][] = [
  ['compare', () => void [ops.eq, ops.ne, ops.lt, ops.le, ops.gt, ops.ge].map((f) => f(randn([2, 3]), randn([3])))],
  ['compare (scalar)', () => void ops.lt(tensor([1, 2, 3], { dtype: 'int32' }), 2)],
  ['argmax', () => void [ops.argmax(randn([2, 3])), ops.argmax(randn([2, 3]), 1, true), ops.argmax(randn([2, 3]), null, true)]],
  ['asStrided (direct)', () => void ops.asStrided(randn([6]), [2, 2], [1, 2], 1)],
  ['where (scalars)', () => void ops.where(tensor([true, false]), 1, 0)],
  ['mseLoss (int32)', () => void [ops.mseLoss(tensor([1, 2], { dtype: 'int32' }), tensor([2, 2], { dtype: 'int32' }), 'none')]],
  ['clamp (int32, float bound)', () => void ops.clamp(tensor([1, 2], { dtype: 'int32' }), 0.5)],
  ['split (sizes)', () => void ops.split(randn([5, 2]), 2)],
  ['dropoutMask (direct)', () => void callOp('dropoutMask', randn([4]), tensor([true, false, true, true]), 2)],
];

const covered = new Set<string>();

/** Call the op table's op `name` as a user would. */
function callOp(name: string, ...args: unknown[]): unknown {
  return (OPS.get(name) as unknown as (...a: unknown[]) => unknown)(...args);
}

for (const [name, make] of GRAD_CASES) {
  test(`shape rules agree with eager: ${name}`, (t) => {
    manualSeed(0);
    const { fn, inputs } = make();
    const calls = recordCalls(() => {
      const out = fn(...inputs);
      if (out.requiresGrad) out.backward(randn([...out.shape]));
    });
    t.true(calls.length > 0);
    for (const c of calls) {
      covered.add(c.op);
      t.deepEqual(plainMeta(shapeRuleOf(c.op)(NUMBER_ARITH, c.args)), plainMeta(metaOf(c.out)), `${c.op}(${describeArgs(c.args)})`);
    }
  });
}

for (const [name, call] of EXTRA_CASES) {
  test(`shape rules agree with eager: ${name}`, (t) => {
    manualSeed(0);
    const calls = recordCalls(call);
    t.true(calls.length > 0);
    for (const c of calls) {
      covered.add(c.op);
      t.deepEqual(plainMeta(shapeRuleOf(c.op)(NUMBER_ARITH, c.args)), plainMeta(metaOf(c.out)), `${c.op}(${describeArgs(c.args)})`);
    }
  });
}

function describeArgs(args: readonly unknown[]): string {
  return args.map((a) => (a instanceof TensorClass ? `${a.dtype}[${a.shape.join(', ')}]` : JSON.stringify(a))).join(', ');
}

test.after.always('every op of the table was checked against eager by some case', (t) => {
  t.deepEqual(
    [...OPS.keys()].filter((op) => !covered.has(op)),
    [],
  );
});

test('every op of the table has a shape rule, and the closed list of op names is the table', (t) => {
  t.deepEqual(
    [...OPS.keys()].filter((op) => !Object.hasOwn(SHAPE_RULES, op)),
    [],
  );
  t.deepEqual([...OP_NAMES].sort(), [...OPS.keys()].sort());
});

test('shapeRuleOf refuses a name that is no op', (t) => {
  t.throws(() => shapeRuleOf('frobnicate'), { message: /'frobnicate' is not an op of the op table/ });
});

/** Bad calls: the op (called as a user would), and its arguments; the rule must throw the eager error. */
const BAD_CALLS: [string, readonly unknown[], Record<string, unknown>?][] = [
  ['add', [randn([2, 3]), randn([4])]],
  ['mul', [randn([2, 3]), randn([3, 3])]],
  ['where', [tensor([true, false]), randn([3]), 0]],
  ['where', [randn([2]), randn([2]), 0]],
  ['matmul', [randn([2, 3]), randn([4, 5])]],
  ['matmul', [randn([2, 2, 3]), randn([3, 3, 4])]],
  ['matmul', [randn([]), randn([3])]],
  ['mm', [randn([2, 3]), randn([4, 5])]],
  ['addmm', [randn([3]), randn([2, 3]), randn([3, 4])]],
  ['linear', [randn([2, 3]), randn([4, 5])]],
  ['view', [randn([2, 3]), [4, -1]]],
  ['view', [randn([2, 3]), [-1, -1]]],
  ['reshape', [randn([2, 3]), [5]]],
  ['flatten', [randn([2, 3, 4]), 2, 1]],
  ['permute', [randn([2, 3]), [0, 0]]],
  ['transpose', [randn([2, 3]), 0, 2]],
  ['t', [randn([2, 3, 4])]],
  ['expand', [randn([2, 3]), [4, 3, 4]]],
  ['expand', [randn([3]), [2]]],
  ['slice', [randn([4]), 0, 0, 2, 0]],
  ['narrow', [randn([4]), 0, 3, 2]],
  ['select', [randn([2, 3]), 1, 3]],
  ['split', [randn([5]), [2, 2]]],
  ['unbind', [randn([])]],
  ['cat', [[randn([2, 3]), randn([2, 4])], 0]],
  ['stack', [[randn([2, 3]), randn([3, 2])]]],
  ['gather', [randn([2, 3]), 1, tensor([[0], [1], [2]], { dtype: 'int32' })]],
  ['indexSelect', [randn([2, 3]), 0, tensor([[0]], { dtype: 'int32' })]],
  ['sliceScatter', [randn([4, 4]), randn([4, 3]), 1, 0, 2]],
  ['sum', [randn([2, 3]), 2]],
  ['mean', [tensor([1, 2], { dtype: 'int32' })]],
  ['max', [randn([0, 3]), 1]],
  ['softmax', [randn([2, 3]), 3]],
  ['conv2d', [randn([1, 3, 5, 5]), randn([4, 2, 3, 3])]],
  ['conv2d', [randn([1, 3, 2, 2]), randn([4, 3, 3, 3])]],
  ['conv2d', [randn([1, 4, 5, 5]), randn([4, 2, 3, 3])], { groups: 3 }],
  ['conv1d', [randn([1, 3, 5, 5]), randn([4, 3, 3])]],
  ['maxPool2d', [randn([1, 1, 2, 2]), 3]],
  ['avgPool2d', [randn([1, 4]), 2]],
  ['adaptiveAvgPool2d', [randn([1, 3, 4, 4]), [0, 2]]],
  ['layerNorm', [randn([2, 3]), [4]]],
  ['batchNorm', [randn([2, 3]), randn([4]), randn([3])]],
  ['nllLoss', [randn([2, 3]), tensor([0, 1, 2], { dtype: 'int32' })]],
  ['crossEntropy', [randn([2, 3]), randn([2, 4])]],
  ['mseLoss', [randn([2, 3]), randn([3, 2])]],
  ['embedding', [tensor([0, 1], { dtype: 'int32' }), randn([4])]],
  ['embeddingBag', [tensor([0, 1], { dtype: 'int32' }), randn([4, 2])]],
  ['dropout', [randn([2]), 1.5]],
];

for (const [name, args, kwargs] of BAD_CALLS) {
  test(`a bad call ${name}(${describeArgs(args)}${kwargs ? `, ${JSON.stringify(kwargs)}` : ''}): the rule throws the eager op's error`, (t) => {
    const eager = t.throws(() => (kwargs ? callOp(name, ...args, kwargs) : callOp(name, ...args)));
    t.true(eager instanceof KilnError, String(eager));
    const rule = t.throws(() => inferMeta(NUMBER_ARITH, name, args, kwargs));
    t.is(rule?.constructor, eager?.constructor);
    t.is(rule?.message, eager?.message);
  });
}

// ---- symbolic sizes: the guards export records ----

/** A polynomial in symbols with integer coefficients: monomial ('' for the constant, 's0*s1', …) → coefficient. */
type Poly = ReadonlyMap<string, number>;

/** A test-only symbolic SizeArith: sizes are polynomials (floorDiv/mod of a non-multiple become atoms); comparisons decide on hints and log guards. */
function symbolic(hints: Record<string, number>) {
  const guards: string[] = [];
  const atoms = new Map<string, { of: Poly; by: number; kind: '//' | '%' }>();
  // a Map printing as its expression (error messages show sizes with String())
  const poly = (entries: [string, number][]): Poly => {
    const p = new Map(entries.filter(([, c]) => c !== 0));
    return Object.assign(p, { toString: () => show(p) });
  };
  const lit = (n: number): Poly => poly([['', n]]);
  const add = (a: Poly, b: Poly, sign = 1): Poly => {
    const out = new Map(a);
    for (const [m, c] of b) out.set(m, (out.get(m) ?? 0) + sign * c);
    return poly([...out]);
  };
  const mulMono = (x: string, y: string) => [...x.split('*'), ...y.split('*')].filter(Boolean).sort().join('*');
  const mul = (a: Poly, b: Poly): Poly => {
    const out = new Map<string, number>();
    for (const [ma, ca] of a) for (const [mb, cb] of b) out.set(mulMono(ma, mb), (out.get(mulMono(ma, mb)) ?? 0) + ca * cb);
    return poly([...out]);
  };
  const show = (a: Poly): string => {
    if (a.size === 0) return '0';
    return [...a]
      .sort(([x], [y]) => (x === '' ? 1 : y === '' ? -1 : x.localeCompare(y)))
      .map(([m, c], i) => {
        const body = m === '' ? String(Math.abs(c)) : Math.abs(c) === 1 ? m : `${Math.abs(c)}*${m}`;
        return i === 0 ? (c < 0 ? `-${body}` : body) : c < 0 ? ` - ${body}` : ` + ${body}`;
      })
      .join('');
  };
  const value = (a: Poly): number =>
    [...a].reduce(
      (acc, [m, c]) =>
        acc +
        c *
          m
            .split('*')
            .filter(Boolean)
            .reduce((p, s) => p * atomValue(s), 1),
      0,
    );
  const atomValue = (s: string): number => {
    const atom = atoms.get(s);
    if (!atom) return hints[s]!;
    const v = value(atom.of);
    return atom.kind === '//' ? Math.floor(v / atom.by) : ((v % atom.by) + atom.by) % atom.by;
  };
  const constant = (a: Poly): number | undefined => ([...a.keys()].every((m) => m === '') ? (a.get('') ?? 0) : undefined);
  const divides = (a: Poly, b: number) => [...a.values()].every((c) => c % b === 0);
  const atom = (of: Poly, by: number, kind: '//' | '%'): Poly => {
    const name = `(${show(of)})${kind}${by}`;
    atoms.set(name, { of, by, kind });
    return poly([[name, 1]]);
  };
  const decide = (a: Poly, b: Poly, op: '==' | '<' | '<=', holds: boolean, negated: string): boolean => {
    // decided at every size (the difference is a constant): no guard, as a simplifying solver records none
    if (constant(add(a, b, -1)) === undefined) guards.push(holds ? `${show(a)} ${op} ${show(b)}` : `${show(a)} ${negated} ${show(b)}`);
    return holds;
  };
  const A: SizeArith<Poly> = {
    lit,
    add: (a, b) => add(a, b),
    sub: (a, b) => add(a, b, -1),
    mul,
    floorDiv: (a, b) => (divides(a, b) ? poly([...a].map(([m, c]) => [m, c / b])) : atom(a, b, '//')),
    mod: (a, b) => (divides(a, b) ? lit(0) : atom(a, b, '%')),
    eq: (a, b) => decide(a, b, '==', value(a) === value(b), '!='),
    lt: (a, b) => decide(a, b, '<', value(a) < value(b), '>='),
    le: (a, b) => decide(a, b, '<=', value(a) <= value(b), '>'),
    hint: value,
    constant,
  };
  const sym = (name: string): Poly => poly([[name, 1]]);
  const shape = (...dims: (string | number)[]) => dims.map((d) => (typeof d === 'number' ? lit(d) : sym(d)));
  return { A, guards, show, shape, value };
}

const metaS = <S>(shape: S[], dtype: 'float32' | 'int32' | 'bool' = 'float32') => ({ shape, dtype });

test('symbolic add [s0, 3] + [s1, 3]: broadcasting decides s0 and s1 are not 1 and are equal', (t) => {
  const { A, guards, show, shape } = symbolic({ s0: 5, s1: 5 });
  const out = inferMeta(A, 'add', [metaS(shape('s0', 3)), metaS(shape('s1', 3))]) as TensorMeta<Poly>;
  t.deepEqual(out.shape.map(show), ['s0', '3']);
  t.deepEqual(guards, ['s0 != 1', 's1 != 1', 's0 == s1']);
});

test('symbolic add [s0] + [1]: a size-1 side broadcasts to the other size without a guard on it', (t) => {
  const { A, guards, show, shape } = symbolic({ s0: 4 });
  const out = inferMeta(A, 'add', [metaS(shape(1)), metaS(shape('s0'))]) as TensorMeta<Poly>;
  t.deepEqual(out.shape.map(show), ['s0']);
  t.deepEqual(guards, []);
});

test('symbolic matmul [s0, s1] @ [s2, 4] records s1 == s2', (t) => {
  const { A, guards, show, shape } = symbolic({ s0: 3, s1: 6, s2: 6 });
  const out = inferMeta(A, 'matmul', [metaS(shape('s0', 's1')), metaS(shape('s2', 4))]) as TensorMeta<Poly>;
  t.deepEqual(out.shape.map(show), ['s0', '4']);
  t.deepEqual(guards, ['s1 == s2']);
});

test('symbolic matmul with unequal inner sizes throws the eager text with the symbols', (t) => {
  const { A, shape } = symbolic({ s0: 3, s1: 6, s2: 5 });
  t.throws(() => inferMeta(A, 'matmul', [metaS(shape('s0', 's1')), metaS(shape('s2', 4))]), {
    message: 'matmul: shapes [s0, s1] and [s2, 4] cannot be multiplied (s1 != s2)',
  });
});

test('symbolic view [s0, 8] as [-1, 4] gives 2*s0 through floorDiv, with no guard', (t) => {
  const { A, guards, show, shape } = symbolic({ s0: 3 });
  const out = inferMeta(A, 'view', [metaS(shape('s0', 8)), [-1, 4]]) as TensorMeta<Poly>;
  t.deepEqual(out.shape.map(show), ['2*s0', '4']);
  t.deepEqual(guards, []);
});

test('symbolic reshape [s0, s1, 4] as [s0, -1]: the -1 cancels s0 and is 4*s1', (t) => {
  const { A, show, shape } = symbolic({ s0: 2, s1: 3 });
  const [s0] = shape('s0');
  const out = inferMeta(A, 'reshape', [metaS(shape('s0', 's1', 4)), [s0, -1]]) as TensorMeta<Poly>;
  t.deepEqual(out.shape.map(show), ['s0', '4*s1']);
});

test('symbolic conv2d output size is (s0 + 2p - k) // s + 1', (t) => {
  const { A, guards, show, shape, value } = symbolic({ s0: 9 });
  const out = inferMeta(A, 'conv2d', [metaS(shape(1, 3, 's0', 's0')), metaS(shape(4, 3, 3, 3))], {
    stride: 2,
    padding: 1,
  }) as TensorMeta<Poly>;
  t.deepEqual(out.shape.map(show).slice(0, 2), ['1', '4']);
  t.is(show(out.shape[2]!), '(s0 - 1)//2 + 1'); // s0 + 2·1 - 3 = s0 - 1
  t.true(guards.includes('(s0 - 1)//2 + 1 > 0'), guards.join('; '));
  // the same size as the eager formula at other sizes
  for (const n of [3, 4, 9, 10, 31]) {
    const { A: B, shape: shapeB, value: valueB } = symbolic({ s0: n });
    const o = inferMeta(B, 'conv2d', [metaS(shapeB(1, 3, 's0', 's0')), metaS(shapeB(4, 3, 3, 3))], {
      stride: 2,
      padding: 1,
    }) as TensorMeta<Poly>;
    t.is(valueB(o.shape[2]!), windowOut(n, 3, 2, 1, 1, false));
  }
  t.is(value(out.shape[3]!), 5);
});

test('symbolic cat adds the sizes along dim; equal symbols need no guard', (t) => {
  const { A, guards, show, shape } = symbolic({ s0: 2, s1: 3, s2: 4 });
  const out = inferMeta(A, 'cat', [[metaS(shape('s0', 's2')), metaS(shape('s1', 's2'))], 0]) as TensorMeta<Poly>;
  t.deepEqual(out.shape.map(show), ['s0 + s1', 's2']);
  t.deepEqual(guards, []);
});

test('symbolic split into pieces of 2 along s0 = 5: three pieces, the last s0 - 4, with the count guarded', (t) => {
  const { A, guards, show, shape } = symbolic({ s0: 5 });
  const out = inferMeta(A, 'split', [metaS(shape('s0', 3)), 2]) as TensorMeta<Poly>[];
  t.deepEqual(
    out.map((m) => m.shape.map(show)),
    [
      ['2', '3'],
      ['2', '3'],
      ['s0 - 4', '3'],
    ],
  );
  t.deepEqual(guards, ['4 < s0', 's0 <= 6']);
});

test('symbolic unbind specialises the unbound size (one output per entry), as a guard', (t) => {
  const { A, guards, shape } = symbolic({ s0: 3 });
  const out = inferMeta(A, 'unbind', [metaS(shape('s0', 2))]) as TensorMeta<Poly>[];
  t.is(out.length, 3);
  t.deepEqual(guards, ['s0 == 3']);
});

test('symbolic slice of [s0] by 1:-1 is s0 - 2 long, guarded by the clamps', (t) => {
  const { A, guards, show, shape } = symbolic({ s0: 6 });
  const out = inferMeta(A, 'slice', [metaS(shape('s0')), 0, 1, -1]) as TensorMeta<Poly>;
  t.deepEqual(out.shape.map(show), ['s0 - 2']);
  t.true(guards.length > 0 && guards.every((g) => g.includes('s0')), guards.join('; '));
});
