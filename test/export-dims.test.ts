import test from 'ava';
import { ConstraintViolationError, SerializationError, ValueError } from '../src/errors.js';
import { zeros, type Tensor } from '../src/index.js';
import { checkConstraints, type ConstraintResult } from '../src/export/constraints.js';
import { bindInputDims, declaredDims, Dim, dims, type DimSpec, isDim, readableDim } from '../src/export/dim.js';
import { buildInputChecks, checkValueRange, type InputChecks, type InputSpec, runInputChecks } from '../src/export/input-checks.js';
import { ShapeEnv, type Size } from '../src/export/symbolic/shape-env.js';

/**
 * These cases port test/export/test_export.py's dynamic-shape tests to the symbolic core: each traces
 * the same shape arithmetic PyTorch's ops would (the shape rules call the env as below), then checks
 * the constraints and the run-time input checks.
 */

/** One tensor input: its path (`*args[0]`), example shape and per-dim specs. */
interface Input {
  path: string;
  shape: number[];
  spec?: DimSpec[];
}

interface Exported {
  env: ShapeEnv;
  result: ConstraintResult;
  checks: InputChecks;
  run: (...shapes: number[][]) => void;
}

/** Bind the inputs' dims, run `body` (the model's shape arithmetic), check constraints, build input checks. */
function exportLike(inputs: Input[], body: (env: ShapeEnv, shapes: Size[][]) => void = () => {}): Exported {
  const env = new ShapeEnv();
  const entries = inputs.flatMap((inp) =>
    inp.shape.map((size, j) => ({ spec: inp.spec?.[j] ?? null, size, source: `${inp.path}.shape[${j}]` })),
  );
  const flat = bindInputDims(env, entries);
  const shapes: Size[][] = [];
  let k = 0;
  for (const inp of inputs) shapes.push(inp.shape.map(() => flat[k++]!));
  body(env, shapes);
  const result = checkConstraints(env);
  const specs: InputSpec[] = inputs.map((inp, i) => ({ kind: 'tensor', path: inp.path, shape: shapes[i]!, dtype: 'float32' }));
  const { checks } = buildInputChecks(env, result, specs);
  const saved = JSON.parse(JSON.stringify(checks)) as InputChecks; // the checks travel as JSON
  return {
    env,
    result,
    checks: saved,
    run: (...ss) =>
      runInputChecks(
        saved,
        ss.map((s) => zeros(s)),
      ),
  };
}

const x1 = (path: string, n: number, spec: DimSpec): Input => ({ path, shape: [n], spec: [spec] });

/** `a + b` where both are 1-d: broadcasting's guard that the sizes agree. */
function addSizes(env: ShapeEnv, a: Size, b: Size): void {
  if (!env.eq(a, b)) throw new Error('sizes differ');
}

/** The size of `y[start::step]`. */
function sliceSize(env: ShapeEnv, n: Size, start: number, step = 1): Size {
  return env.floorDiv(env.add(env.sub(n, start), step - 1), step);
}

// ---------------------------------------------------------------------------------------------------
// Dim API

test('Dim: name, range and readable form', (t) => {
  const d = Dim('dim', { min: 3, max: 6 });
  t.true(isDim(d));
  t.false(isDim({ name: 'dim' }));
  t.like(d, { name: 'dim', min: 3, max: 6, scale: 1, offset: 0, isDerived: false });
  t.is(d.root, d);
  t.is(String(d), "Dim('dim', { min: 3, max: 6 })");
  t.is(String(Dim('x')), "Dim('x')");
  t.like(Dim('x'), { min: 0, max: Infinity });
  t.is(readableDim('C', 3, Infinity), "Dim('C', { min: 3 })");
  t.is(readableDim('C', 0, 12), "Dim('C', { max: 12 })");
  t.deepEqual(
    dims(['a', 'b'], { max: 9 }).map((x) => String(x)),
    ["Dim('a', { max: 9 })", "Dim('b', { max: 9 })"],
  );
});

test('Dim: derived dims compose on the root (dx.mul(2).add(1), dy.sub(1))', (t) => {
  const dx = Dim('dimx', { min: 3, max: 6 });
  const d = dx.mul(2).add(1);
  t.like(d, { name: '2*dimx + 1', min: 7, max: 13, scale: 2, offset: 1, isDerived: true });
  t.is(d.root, dx);
  t.is(String(d), '2*dimx + 1');
  t.like(dx.add(1).mul(2), { name: '2*dimx + 2', scale: 2, offset: 2 });
  t.like(Dim('dimy', { min: 5, max: 7 }).sub(1), { name: 'dimy - 1', min: 4, max: 6 });
  t.like(Dim('n').add(1), { min: 1, max: Infinity });
});

test('Dim: bad names, ranges and derivations are refused with PyTorch texts', (t) => {
  t.throws(() => Dim('a b'), { instanceOf: ValueError, message: 'Dim name must be a valid identifier, got a b' });
  t.throws(() => Dim('3x'), { instanceOf: ValueError, message: /valid identifier/ });
  t.throws(() => Dim('x', { min: 5, max: 5 }), { instanceOf: ValueError, message: 'Cannot create Dim with inconsistent min=5, max=5' });
  t.throws(() => Dim('x', { min: 6, max: 2 }), { instanceOf: ValueError, message: /inconsistent min=6, max=2/ });
  t.throws(() => Dim('x', { min: -1 }), { instanceOf: ValueError, message: /min must be a non-negative integer, got -1/ });
  t.throws(() => Dim('x', { max: 2.5 }), { instanceOf: ValueError, message: /max must be a non-negative integer or Infinity, got 2.5/ });
  const dx = Dim('dx', { min: 2 });
  t.throws(() => dx.add(0.5), {
    instanceOf: ValueError,
    message: /Attempted to add 0.5 to dx, where an integer was expected. \(Only increasing linear/,
  });
  t.throws(() => dx.sub(0.5), { instanceOf: ValueError, message: /Attempted to subtract 0.5 from dx/ });
  t.throws(() => dx.mul(-2), {
    instanceOf: ValueError,
    message: /Attempted to multiply -2 with dx, where a positive integer was expected/,
  });
  t.throws(() => dx.mul(0), { instanceOf: ValueError });
  t.throws(() => Dim('big', { max: 2 ** 52 }).mul(4), {
    instanceOf: ValueError,
    message: /^Expected derived max value of 4\*big to be <= 9007199254740991/,
  });
  t.throws(() => dx.sub(3), {
    instanceOf: ValueError,
    message: 'Expected derived min value of dx - 3 to be >= 0. Please specify an appropriate min value for dx (currently 2).',
  });
});

// ---------------------------------------------------------------------------------------------------
// Binding dynamicShapes entries

test('bind: static entries give numbers, one Dim name gives one symbol', (t) => {
  const env = new ShapeEnv();
  const d = Dim('batch');
  const sizes = bindInputDims(env, [
    { spec: d, size: 8, source: 'x.shape[0]' },
    { spec: 4, size: 4, source: 'x.shape[1]' },
    { spec: null, size: 3, source: 'x.shape[2]' },
    { spec: Dim('batch'), size: 8, source: 'y.shape[0]' },
  ]);
  t.deepEqual(sizes.map(String), ['s0', '4', '3', 's0']);
  t.deepEqual(env.symbol('s0').sources, ['x.shape[0]', 'y.shape[0]']);
  t.is(env.debugName('s0'), 'batch');
  t.deepEqual(env.symbol('s0').declared, { lower: 0, upper: Infinity });
  t.deepEqual(env.symbol('s0').initial, { lower: 2, upper: Infinity }, 'traced as >= 2: 0/1 specialise');
  t.is(declaredDims(env).get('batch')!.symbol, 's0');
});

test('bind: a malformed spec entry is a ValueError', (t) => {
  const env = new ShapeEnv();
  t.throws(() => bindInputDims(env, [{ spec: 'dim' as unknown as DimSpec, size: 3, source: 'x.shape[0]' }]), {
    instanceOf: ValueError,
    message: /x\.shape\[0\]: expected a Dim, a number or null, got dim/,
  });
  t.throws(() => bindInputDims(env, [{ spec: 2.5, size: 3, source: 'x.shape[0]' }]), {
    instanceOf: ValueError,
    message: /static size must be a non-negative integer/,
  });
  t.throws(() => bindInputDims(env, [{ spec: null, size: -1, source: 'x.shape[0]' }]), { instanceOf: ValueError });
});

test('test_export.py: test_export_constraints_error_not_in_range', (t) => {
  t.throws(() => exportLike([x1('x', 3, Dim('dim_x', { min: 6 }))]), {
    instanceOf: ConstraintViolationError,
    message: /^3 not in range \[6, Infinity\]: the example size x\.shape\[0\] = 3 does not fit Dim\('dim_x', \{ min: 6 \}\)/,
  });
  t.throws(() => exportLike([x1('x', 9, Dim('dim_x', { max: 8 }))]), {
    instanceOf: ConstraintViolationError,
    message: /^9 not in range \[0, 8\]/,
  });
});

test('bind: an example of 0 or 1 for a Dim is refused (export specialises 0/1)', (t) => {
  t.throws(() => exportLike([x1('x', 1, Dim('dx', { min: 1, max: 4 }))]), {
    instanceOf: ConstraintViolationError,
    message: /^1 not in range \[2, 4\].*give an example of at least 2/,
  });
});

test('test_export.py: test_static_dim_constraints', (t) => {
  const dx = Dim('dx', { min: 4, max: 256 });
  const dy = dx.add(1);
  const dz = Dim('dz', { min: 3, max: 6 });
  const inputs = (specs: DimSpec[][]): Input[] => [
    { path: '*args[0]', shape: [4, 6], spec: specs[0]! },
    { path: '*args[1]', shape: [5, 4], spec: specs[1]! },
    { path: '*args[2]', shape: [3, 3], spec: specs[2]! },
  ];
  for (const specs of [
    [
      [dx, 6],
      [dy, 4],
      [dz, 3],
    ],
    [
      [dx, null],
      [dy, 4],
      [dz, 3],
    ],
    [
      [null, 6],
      [5, null],
      [null, null],
    ],
    [
      [4, 6],
      [null, 4],
      [null, 3],
    ],
  ] as DimSpec[][][]) {
    t.notThrows(() => exportLike(inputs(specs)));
  }
  const ep = exportLike(
    inputs([
      [dx, null],
      [dy, 4],
      [dz, 3],
    ]),
  );
  t.is(ep.result.rangeConstraints.size, 3, 's0, s1 and the derived s0 + 1');
  for (const r of ep.result.rangeConstraints.values()) t.true(r.lower < r.upper);
  t.throws(
    () =>
      exportLike(
        inputs([
          [5, null],
          [null, null],
          [null, null],
        ]),
      ),
    {
      instanceOf: ConstraintViolationError,
      message: 'Static shape constraint of 5 does not match input size of 4, for *args[0].shape[0]',
    },
  );
  t.throws(
    () =>
      exportLike(
        inputs([
          [dx, 9],
          [dy, 4],
          [3, 3],
        ]),
      ),
    {
      instanceOf: ConstraintViolationError,
      message: /^Static shape constraint of 9 does not match input size of 6, for \*args\[0\]\.shape\[1\]/,
    },
  );
});

test('test_export.py: test_multiple_definitions_same_name_dim', (t) => {
  const A = Dim('C', { min: 3 });
  const B = Dim('C', { max: 12 });
  t.throws(
    () =>
      exportLike([
        { path: 'x', shape: [10, 10], spec: [A, B] },
        { path: 'y', shape: [10, 10], spec: [B, A] },
      ]),
    {
      instanceOf: ValueError,
      message: "Found different definitions Dim('C', { min: 3 }) and Dim('C', { max: 12 }) for the same symbolic dimension C!",
    },
  );
});

test('bind: one Dim on two inputs of different example sizes', (t) => {
  const d = Dim('d');
  t.throws(() => exportLike([x1('x', 5, d), x1('y', 6, d)]), {
    instanceOf: ConstraintViolationError,
    message: 'x.shape[0] = 5 is not equal to y.shape[0] = 6',
  });
});

// ---------------------------------------------------------------------------------------------------
// Constraint violations and suggested fixes

test('test_export.py: test_non_strict_dynamic_shapes_suggested_fixes', (t) => {
  const dim = Dim('dim', { min: 3 });
  const err = t.throws(
    () =>
      exportLike([x1('*args[0]', 5, dim), x1('*args[1]', 4, null)], (env, [[x]]) => {
        env.loc = 'model.ts:3';
        env.le(x!, 6); // if (x.shape[0] <= 6)
      }),
    { instanceOf: ConstraintViolationError },
  );
  t.is(
    err!.message,
    'Constraints violated (dim)!\n' +
      '  - Not all values of dim = *args[0].shape[0] in the specified range 3 <= dim satisfy the generated guard *args[0].shape[0] <= 6 (at model.ts:3).\n' +
      '\n' +
      'Suggested fixes:\n' +
      "  dim = Dim('dim', { min: 3, max: 6 })",
  );
});

test('constraints: the suggested fix works when applied', (t) => {
  const guard = (env: ShapeEnv, [[x]]: Size[][]) => void env.le(x!, 6);
  t.throws(() => exportLike([x1('x', 5, Dim('dim', { min: 3 }))], guard), { instanceOf: ConstraintViolationError });
  const ep = exportLike([x1('x', 5, Dim('dim', { min: 3, max: 6 }))], guard);
  t.deepEqual(ep.result.rangeConstraints.get('s0'), { lower: 3, upper: 6 });
});

test('constraints: a lower-bound guard on a default Dim keeps the max out of the fix', (t) => {
  const err = t.throws(() => exportLike([x1('x', 5, Dim('dx'))], (env, [[x]]) => void env.lt(2, x!)), {
    instanceOf: ConstraintViolationError,
  });
  t.regex(err!.message, /Not all values of dx = x\.shape\[0\] in the specified range satisfy the generated guard x\.shape\[0\] >= 3\./);
  t.regex(err!.message, /Suggested fixes:\n {2}dx = Dim\('dx', \{ min: 3 \}\)$/);
});

test('test_export.py: test_derived_dim_basic', (t) => {
  // x + y[1:]
  const model = (env: ShapeEnv, [[x], [y]]: Size[][]) => addSizes(env, x!, sliceSize(env, y!, 1));
  const dimx = Dim('dimx', { min: 3, max: 6 });
  let dimy = Dim('dimy', { min: 4, max: 7 }); // doesn't work
  const err = t.throws(() => exportLike([x1('*args[0]', 5, dimx), x1('*args[1]', 6, dimy)], model), {
    instanceOf: ConstraintViolationError,
  });
  t.regex(
    err!.message,
    /^Constraints violated \(dimy\)!\n {2}- The values of dimy = \*args\[1\]\.shape\[0\] must always be related to the values of dimx = \*args\[0\]\.shape\[0\] by dimy = dimx \+ 1\.\n\nSuggested fixes:\n {2}dimy = dimx\.add\(1\)$/,
  );

  dimy = dimx.mul(2); // doesn't work
  t.throws(() => exportLike([x1('*args[0]', 5, dimx), x1('*args[1]', 6, dimy)], model), {
    instanceOf: ConstraintViolationError,
    message: 'Expected input *args[1].shape[0] to be equal to 2*dimx, where dimx = 5, but got 6',
  });

  dimy = dimx.add(1); // works
  const ep = exportLike([x1('*args[0]', 5, dimx), x1('*args[1]', 6, dimy)], model);
  t.throws(() => ep.run([4], [6]), { instanceOf: ValueError, message: 'Expected input at *args[1].shape[0] to be equal to 5, but got 6' });
  t.notThrows(() => ep.run([4], [5]));
});

test('test_export.py: test_derived_dim_nested', (t) => {
  const dimx = Dim('dimx', { min: 3, max: 6 });
  // x + y[1::2]
  const ep1 = exportLike([x1('*args[0]', 5, dimx), x1('*args[1]', 11, dimx.mul(2).add(1))], (env, [[x], [y]]) =>
    addSizes(env, x!, sliceSize(env, y!, 1, 2)),
  );
  t.notThrows(() => ep1.run([4], [9]));

  // z[1:] + y[1::2]
  const model = (env: ShapeEnv, [[z], [y]]: Size[][]) => addSizes(env, sliceSize(env, z!, 1), sliceSize(env, y!, 1, 2));
  t.notThrows(() => exportLike([x1('*args[0]', 6, dimx), x1('*args[1]', 11, dimx.mul(2).sub(1))], model).run([5], [9]));
  t.throws(() => exportLike([x1('*args[0]', 6, dimx.add(1)), x1('*args[1]', 11, dimx.mul(2).sub(1))], model), {
    instanceOf: ConstraintViolationError,
    message: 'Expected input *args[1].shape[0] to be equal to 2*dimx - 1, where dimx = 5, but got 11',
  });
  const ep = exportLike([x1('*args[0]', 6, dimx.add(1)), x1('*args[1]', 11, dimx.mul(2).add(1))], model);
  t.throws(() => ep.run([8], [15]), { instanceOf: ValueError, message: 'Expected input at *args[0].shape[0] to be <= 7, but got 8' });
  t.throws(() => ep.run([5], [8]), { instanceOf: ValueError, message: 'Expected input at *args[1].shape[0] to be equal to 9, but got 8' });
  t.notThrows(() => ep.run([5], [9]));
});

test('test_export.py: test_derived_dim_integer', (t) => {
  const dimx = Dim('dimx', { min: 3, max: 6 });
  // if (w.shape[0] % 2 == 0) w[::2] else w[1:-1:2]
  const model = (env: ShapeEnv, [[w]]: Size[][]) => void env.eq(env.mod(w!, 2), 0);
  t.throws(() => exportLike([x1('*args[0]', 10, dimx.mul(2).add(1))], model), {
    instanceOf: ConstraintViolationError,
    message: 'Expected shape[0] = 10 of input Tensor to be of the form 2*dimx + 1, where dimx is an integer (at *args[0].shape[0])',
  });
  const ep = exportLike([x1('*args[0]', 10, dimx.mul(2))], model);
  t.deepEqual(ep.env.guards, [], 'Mod(2*s0, 2) is 0: no guard');
  t.throws(() => ep.run([9]), {
    instanceOf: ValueError,
    message: 'Expected input *args[0].shape[0] = 9 to be of the form 2*s0, where s0 is an integer',
  });
  t.notThrows(() => ep.run([8]));
  t.throws(() => ep.run([14]), { instanceOf: ValueError, message: 'Expected input at *args[0].shape[0] to be <= 12, but got 14' });
});

test('test_export.py: test_derived_dim_repeat_derived', (t) => {
  const dimw = Dim('dimx', { min: 3, max: 6 }).mul(2);
  const ep = exportLike([x1('*args[0]', 10, dimw), x1('*args[1]', 10, dimw)], (env, [[u], [v]]) =>
    addSizes(env, sliceSize(env, u!, 0, 2), sliceSize(env, v!, 0, 2)),
  );
  t.is(ep.env.symbols.size, 1, 'one phantom root');
  t.true(ep.env.symbol('s0').phantom);
  t.notThrows(() => ep.run([8], [8]));
  t.throws(() => ep.run([8], [10]), {
    instanceOf: ValueError,
    message: 'Expected input at *args[1].shape[0] to be equal to 8, but got 10',
  });
});

test('test_export.py: test_derived_dim_out_of_order', (t) => {
  const dimy = Dim('dimy', { min: 5, max: 7 });
  const dimx = dimy.sub(1); // out of order, effectively dimy = dimx + 1
  const dimz = dimy.add(1); // out of order, effectively dimz = dimx + 2
  // x + y[1:] + z[2:]
  const ep = exportLike([x1('*args[0]', 5, dimx), x1('*args[1]', 6, dimy), x1('*args[2]', 7, dimz)], (env, [[x], [y], [z]]) => {
    addSizes(env, x!, sliceSize(env, y!, 1));
    addSizes(env, x!, sliceSize(env, z!, 2));
  });
  t.deepEqual(ep.env.guards, [], 'the derived dims make every guard trivial');
  t.throws(() => ep.run([6], [7], [5]), {
    instanceOf: ValueError,
    message: 'Expected input at *args[2].shape[0] to be equal to 8, but got 5',
  });
  t.notThrows(() => ep.run([6], [7], [8]));
});

test('test_export.py: test_derived_dim_out_of_order_repeat_derived', (t) => {
  const dimy = Dim('dimy', { min: 5, max: 7 });
  const dimx = dimy.sub(1);
  const dimz = dimy.add(1);
  const dimx1 = dimx;
  const dimx2 = dimz.sub(2);
  const specs = [dimx, dimy, dimz, dimx1, dimx2];
  for (const sizes of [
    [5, 6, 7, 5, 5],
    [5, 6, 7, 5, 5],
  ]) {
    const ep = exportLike(
      sizes.map((n, i) => x1(`*args[${i}]`, n, specs[i]!)),
      (env, [[x], [y], [z], [a], [b]]) => {
        addSizes(env, x!, sliceSize(env, y!, 1));
        addSizes(env, x!, sliceSize(env, z!, 2));
        addSizes(env, x!, a!);
        addSizes(env, x!, b!);
      },
    );
    t.throws(() => ep.run([6], [7], [8], [6], [5]), {
      instanceOf: ValueError,
      message: 'Expected input at *args[4].shape[0] to be equal to 6, but got 5',
    });
    t.notThrows(() => ep.run([6], [7], [8], [6], [6]));
  }
});

test('test_export.py: test_dim_1_2', (t) => {
  const dx = Dim('dx', { min: 1, max: 2 });
  const ep = exportLike([{ path: '*args[0]', shape: [2, 2], spec: [dx, null] }]);
  t.notThrows(() => ep.run([1, 2]));
  t.notThrows(() => ep.run([2, 2]));
  t.throws(() => ep.run([3, 2]), { instanceOf: ValueError, message: 'Expected input at *args[0].shape[0] to be <= 2, but got 3' });
  t.deepEqual([...ep.result.rangeConstraints.values()][0], { lower: 1, upper: 2 });
});

test('test_export.py: test_derived_dim_1_2', (t) => {
  const dx = Dim('dx', { min: 1, max: 2 });
  const ep = exportLike(
    [
      { path: '*args[0]', shape: [2, 2], spec: [dx, null] },
      { path: '*args[1]', shape: [3, 2], spec: [dx.add(1), null] },
    ],
    (env, [[x], [y]]) => addSizes(env, x!, sliceSize(env, y!, 1)),
  );
  t.notThrows(() => ep.run([1, 2], [2, 2]));
  const rc = [...ep.result.rangeConstraints.values()];
  t.deepEqual(rc.map((r) => r.lower).sort(), [1, 2]);
  t.deepEqual(rc.map((r) => r.upper).sort(), [2, 3]);
});

test('test_export.py: test_suggested_fixes_new_roots', (t) => {
  const [dx, dy, dz] = dims(['dx', 'dy', 'dz']) as [ReturnType<typeof Dim>, ReturnType<typeof Dim>, ReturnType<typeof Dim>];
  // if (x.shape[0] >= 5 && x.shape[0] <= 36 && y.shape[0] % 3 == 0) return x + y[1:] + z[3:]
  const model = (env: ShapeEnv, [[x], [y], [z]]: Size[][]) => {
    if (env.le(5, x!) && env.le(x!, 36) && env.eq(env.mod(y!, 3), 0)) {
      addSizes(env, x!, sliceSize(env, y!, 1));
      addSizes(env, x!, sliceSize(env, z!, 3));
    }
  };
  const err = t.throws(() => exportLike([x1('x', 11, dx), x1('y', 12, dy), x1('z', 14, dz)], model), {
    instanceOf: ConstraintViolationError,
  });
  t.regex(err!.message, /^Constraints violated \(dx, dy, dz\)!/);
  t.regex(
    err!.message,
    /Suggested fixes:\n {2}_dx = Dim\('_dx', \{ min: 2, max: 12 \}\)\n {2}dx = _dx\.mul\(3\)\.sub\(1\)\n {2}dy = _dx\.mul\(3\)\n {2}dz = _dx\.mul\(3\)\.add\(2\)$/,
  );
  // The fix, applied, exports.
  const _dx = Dim('_dx', { min: 2, max: 12 });
  const ep = exportLike([x1('x', 11, _dx.mul(3).sub(1)), x1('y', 12, _dx.mul(3)), x1('z', 14, _dx.mul(3).add(2))], model);
  t.notThrows(() => ep.run([35], [36], [38]));
  t.throws(() => ep.run([38], [39], [41]), { instanceOf: ValueError, message: /to be <= 35, but got 38/ });
});

test('constraints: divisibility of a Dim suggests a new root (dimw = _dimw.mul(2))', (t) => {
  const err = t.throws(() => exportLike([x1('w', 10, Dim('dimw', { max: 20 }))], (env, [[w]]) => void env.eq(env.mod(w!, 2), 0)), {
    instanceOf: ConstraintViolationError,
  });
  t.is(
    err!.message,
    'Constraints violated (dimw)!\n' +
      '  - Not all values of dimw = w.shape[0] in the specified range dimw <= 20 satisfy the generated guard Mod(w.shape[0], 2) == 0.\n\n' +
      'Suggested fixes:\n' +
      "  _dimw = Dim('_dimw', { min: 1, max: 10 })\n" +
      '  dimw = _dimw.mul(2)',
  );
});

test('constraints: a specialised Dim suggests a static size (dim = 5)', (t) => {
  const err = t.throws(
    () =>
      exportLike([x1('x', 5, Dim('dim'))], (env, [[x]]) => {
        env.loc = 'model.ts:9';
        return void Array.from({ length: x as unknown as number }); // code the plugin never saw reads the size
      }),
    { instanceOf: ConstraintViolationError },
  );
  t.is(
    err!.message,
    'Constraints violated (dim)!\n  - You marked dim as dynamic but your code specialized it to be a constant (5) (at model.ts:9).\n\nSuggested fixes:\n  dim = 5',
  );
});

test('test_export.py: test_disable_forced_specializations_errors (dz = dy; w0*w1 = x0 stays a run-time check)', (t) => {
  // w.reshape([-1]) + x, y + z
  const model = (env: ShapeEnv, [[w0, w1], [x0], [y], [z]]: Size[][]) => {
    addSizes(env, env.mul(w0!, w1!), x0!);
    addSizes(env, y!, z!);
  };
  const inputs = (specs: DimSpec[][]): Input[] => [
    { path: 'w', shape: [3, 4], spec: specs[0]! },
    { path: 'x', shape: [12], spec: specs[1]! },
    { path: 'y', shape: [4], spec: specs[2]! },
    { path: 'z', shape: [4], spec: specs[3]! },
  ];
  const err = t.throws(() => exportLike(inputs([[Dim('dw0'), Dim('dw1')], [Dim('dx0')], [Dim('dy')], [Dim('dz')]]), model), {
    instanceOf: ConstraintViolationError,
  });
  t.is(
    err!.message,
    'Constraints violated (dz)!\n  - The values of dz = z.shape[0] and dy = y.shape[0] must always be equal.\n\nSuggested fixes:\n  dz = dy',
  );
  const dy = Dim('dy');
  const ep = exportLike(inputs([[Dim('dw0'), Dim('dw1')], [Dim('dx0')], [dy], [dy]]), model);
  t.deepEqual(
    ep.checks.guards.map((g) => g.text),
    ['w.shape[0]*w.shape[1] - x.shape[0] == 0 (s0*s1 - s2 == 0)'],
  );
  t.notThrows(() => ep.run([2, 5], [10], [3], [3]));
  t.throws(() => ep.run([2, 5], [12], [3], [3]), {
    instanceOf: ValueError,
    message:
      'Expected the input sizes to satisfy w.shape[0]*w.shape[1] - x.shape[0] == 0 (s0*s1 - s2 == 0), but got s0 = 2, s1 = 5, s2 = 12',
  });
});

// ---------------------------------------------------------------------------------------------------
// Run-time input checks

test('test_export.py: test_non_strict_dynamic_shapes (one Dim across a pytree, input-path errors)', (t) => {
  const dim = Dim('dim', { min: 3 });
  const inputs = (n: number): Input[] => [
    x1('*args[0]', n, dim),
    x1('*args[1][0]', n, dim),
    x1('*args[1][1]', n, dim),
    x1('*args[2]["a"]', n, dim),
    x1('*args[2]["b"]', n, dim),
    x1('*args[3]', 4, null),
  ];
  // foo: x + ys[0] + ys[1] + zs["a"] + zs["b"], c
  const model = (env: ShapeEnv, s: Size[][]) => {
    for (let i = 1; i < 5; i++) addSizes(env, s[0]![0]!, s[i]![0]!);
  };
  const ep = exportLike(inputs(5), model);
  t.throws(() => ep.run([6], [5], [5], [5], [5], [4]), {
    instanceOf: ValueError,
    message: 'Expected input at *args[1][0].shape[0] to be equal to 6, but got 5',
  });
  t.throws(() => ep.run([5], [5], [5], [5], [5], [6]), {
    instanceOf: ValueError,
    message: /^Expected input at \*args\[3\]\.shape\[0\] to be equal to 4, but got 6\. If this dimension should be dynamic/,
  });
  t.notThrows(() => ep.run([7], [7], [7], [7], [7], [4]));
  t.throws(() => exportLike(inputs(2), model), { instanceOf: ConstraintViolationError, message: /^2 not in range \[3, Infinity\]/ });
});

test('test_export.py: test_retrace_graph_level_meta_preservation (>= bound of a Dim min)', (t) => {
  const ep = exportLike([{ path: '*args[0]', shape: [7, 5], spec: [Dim('dim0_x', { min: 3 }), null] }]);
  t.throws(() => ep.run([2, 5]), { instanceOf: ValueError, message: 'Expected input at *args[0].shape[0] to be >= 3, but got 2' });
  t.notThrows(() => ep.run([3, 5]));
});

test('input checks: a Dim min of 2 or less is not checked at run time (PyTorch lets dims be 0/1)', (t) => {
  const ep = exportLike([x1('*args[0]', 4, Dim('d', { min: 2, max: 8 }))]);
  t.notThrows(() => ep.run([1]));
  t.notThrows(() => ep.run([0]));
});

test('test_export.py: test_export_with_wrong_inputs (number baked in and checked)', (t) => {
  const env = new ShapeEnv();
  const [s] = bindInputDims(env, [
    { spec: Dim('dim0_x', { min: 6 }), size: 7, source: '*args[0].shape[0]' },
    { spec: null, size: 5, source: '*args[0].shape[1]' },
  ]);
  const result = checkConstraints(env);
  const { checks } = buildInputChecks(env, result, [
    { kind: 'tensor', path: '*args[0]', shape: [s!, 5] },
    { kind: 'value', path: '*args[1]', value: 5 },
  ]);
  t.notThrows(() => runInputChecks(checks, [zeros([8, 5]), 5]));
  t.throws(() => runInputChecks(checks, [zeros([8, 5]), 6]), {
    instanceOf: ValueError,
    message: 'Expected input at *args[1] to be equal to 5, but got 6',
  });
  t.throws(() => runInputChecks(checks, [zeros([8, 5]), '5']), {
    instanceOf: ValueError,
    message: 'Expected input at *args[1] to be equal to 5, but got "5"',
  });
  const str = buildInputChecks(env, result, [
    { kind: 'tensor', path: '*args[0]', shape: [s!, 5] },
    { kind: 'value', path: '*args[1]', value: 'mean' },
  ]).checks;
  t.throws(() => runInputChecks(str, [zeros([8, 5]), 'sum']), {
    instanceOf: ValueError,
    message: 'Expected input at *args[1] to be equal to "mean", but got "sum"',
  });
  const nan = buildInputChecks(env, result, [
    { kind: 'tensor', path: '*args[0]', shape: [s!, 5] },
    { kind: 'value', path: '*args[1]', value: NaN },
  ]).checks;
  t.notThrows(() => runInputChecks(nan, [zeros([8, 5]), NaN]));
});

test('input checks: wrong count, kind, rank and dtype of inputs', (t) => {
  const ep = exportLike([{ path: '*args[0]', shape: [4, 3], spec: [Dim('b'), null] }]);
  const t0 = zeros([4, 3]);
  t.throws(() => runInputChecks(ep.checks, []), { instanceOf: ValueError, message: 'Unexpected number of inputs (expected 1, got 0)' });
  t.throws(() => runInputChecks(ep.checks, [[1, 2]]), {
    instanceOf: ValueError,
    message: 'Expected input at *args[0] to be a tensor, but got Array',
  });
  t.throws(() => runInputChecks(ep.checks, [3]), {
    instanceOf: ValueError,
    message: 'Expected input at *args[0] to be a tensor, but got number',
  });
  t.throws(() => runInputChecks(ep.checks, [zeros([4])]), {
    instanceOf: ValueError,
    message: 'Unexpected number of dimensions in input at *args[0].shape (expected [s0, 3], got [4])',
  });
  t.throws(() => runInputChecks(ep.checks, [zeros([4, 3], { dtype: 'int32' })]), {
    instanceOf: ValueError,
    message: 'Expected input at *args[0].dtype to be float32, but got int32',
  });
  t.notThrows(() => runInputChecks(ep.checks, [t0 as Tensor]));
});

test('input checks: malformed saved checks are a SerializationError', (t) => {
  const ep = exportLike([x1('*args[0]', 4, Dim('b'))]);
  const bad = [
    null,
    { inputs: 3, ranges: [], guards: [] },
    { ...ep.checks, inputs: [{ kind: 'tensor', shape: [] }] },
    { ...ep.checks, inputs: [{ kind: 'weird', path: 'x' }] },
    { ...ep.checks, inputs: [{ kind: 'tensor', path: 'x', shape: [-1] }] },
    { ...ep.checks, inputs: [{ kind: 'tensor', path: 'x', shape: [{ c: 'x', t: [] }] }] },
    { ...ep.checks, ranges: [{ expr: { c: 0, t: [] }, lower: 'a', upper: null }] },
    { ...ep.checks, guards: [{ rel: '>', expr: { c: 0, t: [] }, text: '' }] },
  ];
  for (const b of bad)
    t.throws(() => runInputChecks(b as unknown as InputChecks, [zeros([4])]), { instanceOf: SerializationError }, JSON.stringify(b));
});

test('test_export.py: test_export_with_inline_constraints (unbacked range, run-time text)', (t) => {
  const env = new ShapeEnv();
  const a = env.createUnbacked('x.item()');
  env.assume('le', 4, a); // check(a >= 4)
  env.assume('le', a, 7); // check(a <= 7)
  const { rangeConstraints, solution } = checkConstraints(env);
  t.deepEqual(rangeConstraints.get('u0'), { lower: 4, upper: 7 });
  t.deepEqual(solution.residual, []);
  const { lower, upper } = solution.ranges.get('u0')!;
  t.notThrows(() => checkValueRange(6, lower, upper));
  t.throws(() => checkValueRange(30, lower, upper), { instanceOf: ValueError, message: 'Invalid value range for 30 between [4, 7].' });
  t.throws(() => checkValueRange(3, 4, 5), { instanceOf: ValueError, message: /Invalid value range for 3 between \[4, 5\]/ });
  t.throws(() => checkValueRange(-1, 0, Infinity), {
    instanceOf: ValueError,
    message: /Invalid value range for -1 between \[0, Infinity\]/,
  });
});

test('input checks: guards on data-dependent values are handed back for the graph to assert', (t) => {
  const env = new ShapeEnv();
  const [s] = bindInputDims(env, [{ spec: Dim('n'), size: 6, source: 'x.shape[0]' }]);
  const u = env.createUnbacked('y.item()');
  env.markSizeLike(u);
  env.assume('le', u, s!); // check(k <= x.shape[0])
  const result = checkConstraints(env);
  const { checks, unchecked } = buildInputChecks(env, result, [{ kind: 'tensor', path: 'x', shape: [s!] }]);
  t.deepEqual(checks.guards, []);
  t.deepEqual(
    unchecked.map((g) => g.expr.toString()),
    ['-s0 + u0'],
  );
});

test('input checks: ranges come from the solution even for symbols made without bindInputDims', (t) => {
  const env = new ShapeEnv();
  const s = env.createSymbol(5, 'x.shape[0]', { range: { lower: 3, upper: 9 }, dimName: 'n' });
  const result = checkConstraints(env);
  const { checks } = buildInputChecks(env, result, [{ kind: 'tensor', path: 'x', shape: [env.add(s, 1)] }]);
  t.throws(() => runInputChecks(checks, [zeros([11])]), {
    instanceOf: ValueError,
    message: 'Expected input at x.shape[0] to be <= 10, but got 11',
  });
  t.throws(() => runInputChecks(checks, [zeros([3])]), {
    instanceOf: ValueError,
    message: 'Expected input at x.shape[0] to be >= 4, but got 3',
  });
  t.notThrows(() => runInputChecks(checks, [zeros([6])]));
});

test('constraints: a guard on one Dim that folds into no range is a violation, with the exact range when it is one', (t) => {
  // n // 2 <= 3 holds for n in [2, 7]
  const err = t.throws(() => exportLike([x1('x', 6, Dim('n', { max: 20 }))], (env, [[x]]) => void env.le(env.floorDiv(x!, 2), 3)), {
    instanceOf: ConstraintViolationError,
  });
  t.is(
    err!.message,
    'Constraints violated (n)!\n' +
      '  - Not all values of n = x.shape[0] in the specified range n <= 20 satisfy the generated guard x.shape[0]//2 <= 3.\n\n' +
      'Suggested fixes:\n' +
      "  n = Dim('n', { max: 7 })",
  );
  // n != 5 inside the range: no single range states it, so no fix is suggested.
  const err2 = t.throws(() => exportLike([x1('x', 6, Dim('n', { max: 9 }))], (env, [[x]]) => void env.eq(x!, 5)), {
    instanceOf: ConstraintViolationError,
  });
  t.is(
    err2!.message,
    'Constraints violated (n)!\n  - Not all values of n = x.shape[0] in the specified range n <= 9 satisfy the generated guard x.shape[0] != 5.',
  );
});

test('bind: calls per tensor on one env share Dims and their checks', (t) => {
  const env = new ShapeEnv();
  const dx = Dim('dx', { max: 10 });
  const [x] = bindInputDims(env, [{ spec: dx, size: 5, source: 'x.shape[0]' }]);
  const [y] = bindInputDims(env, [{ spec: dx.add(1), size: 6, source: 'y.shape[0]' }]);
  t.is(String(x), 's0');
  t.is(String(y), 's0 + 1');
  t.throws(() => bindInputDims(env, [{ spec: dx.mul(2), size: 7, source: 'z.shape[0]' }]), {
    instanceOf: ConstraintViolationError,
    message: 'Expected input z.shape[0] to be equal to 2*dx, where dx = 5, but got 7',
  });
  t.throws(() => bindInputDims(env, [{ spec: Dim('dx', { max: 11 }), size: 5, source: 'w.shape[0]' }]), {
    instanceOf: ValueError,
    message: /Found different definitions Dim\('dx', \{ max: 10 \}\) and Dim\('dx', \{ max: 11 \}\)/,
  });
});

test('test_export.py: test_specialize_derived_dim_roots', (t) => {
  const dy = Dim('dy', { min: 6 });
  // x.reshape([-1]) + y, with x: (dy - 6, 2) and y: (dy,)
  const err = t.throws(
    () =>
      exportLike(
        [
          { path: 'x', shape: [6, 2], spec: [dy.sub(6), 2] },
          { path: 'y', shape: [12], spec: [dy] },
        ],
        (env, [[x0, x1], [y]]) => addSizes(env, env.mul(x0!, x1!), y!),
      ),
    { instanceOf: ConstraintViolationError },
  );
  t.regex(
    err!.message,
    /^Constraints violated \(dy\)!\n {2}- You marked dy as dynamic but your code specialized it to be a constant \(12\)\./,
  );
  t.regex(err!.message, /Suggested fixes:\n {2}dy = 12$/);
  t.false(err!.message.includes('dy - 6 = 6'), 'no fix for the derived dim, only its root');
});
