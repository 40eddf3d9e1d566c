import test from 'ava';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { allclose, arange, full, nn, randn, type Tensor } from '../src/index.js';
import { TracedModule, TracingCheckError, TracingError, load, trace } from '../src/jit.js';
import { fitSamples, formatExpr } from '../src/jit/shape-fit.js';

/** kiln/jit symbolic shapes: numbers the program computed from shapes follow the inputs, as in PyTorch's traces. */
const close = (a: unknown, b: unknown) => allclose(a as Tensor, b as Tensor, { atol: 1e-5 });
const tmp = () => mkdtempSync(join(tmpdir(), 'kiln-jit-shapes-'));

/** Run `f`, collecting its TracerWarnings (process.emitWarning stubbed: its events arrive a tick later). */
function withWarnings<T>(f: () => T): [T, string[]] {
  const seen: string[] = [];
  const emit = process.emitWarning;
  process.emitWarning = ((w: string, type?: string) => void (type === 'TracerWarning' && seen.push(w))) as typeof process.emitWarning;
  try {
    return [f(), seen];
  } finally {
    process.emitWarning = emit;
  }
}

/** Every shape read the issue lists: x.shape[1] * 2, size(0), numel(), full(x.shape), arange(x.shape[0]), x.shape[2] - i. */
function shapey(x: Tensor): Tensor {
  const flat = x.reshape([x.size(0), x.shape[1] * x.shape[2]]);
  const scaled = flat.add(full(flat.shape, 2)).mul(arange(x.shape[0]).reshape([-1, 1]).float());
  const i = 1;
  const cut = x.narrow(2, 0, x.shape[2] - i).reshape([x.shape[0], -1]);
  return scaled.sum(1).add(cut.sum(1)).add(x.numel());
}

test('a trace made on [5, 2, 4] gives the eager result on [4, 8, 4]: the shape arithmetic is recorded', (t) => {
  const traced = trace(shapey, [randn([5, 2, 4])], { checkInputs: [[randn([3, 6, 4])]] });
  t.regex(traced.code, /fx\.sym_size\(x, 0\)/);
  t.regex(traced.code, /fx\.arange\(sym_size\)/);
  t.regex(traced.code, /fx\.full\(\[sym_size, sym_mul\], 2\)/);
  for (const shape of [
    [4, 8, 4],
    [1, 3, 4],
    [7, 1, 4],
  ]) {
    const x = randn(shape);
    t.true(close(traced(x), shapey(x)), `shape [${shape}]`);
  }
});

test('without checkInputs, the first call at new shapes traces again and generalises; the saved program keeps the arithmetic', (t) => {
  const traced = trace(shapey, [randn([5, 2, 4])]);
  t.notRegex(traced.code, /sym_size/, 'one trace cannot know which numbers came from shapes');
  const x = randn([4, 8, 4]);
  t.true(close(traced(x), shapey(x)));
  t.regex(traced.code, /sym_size/);
  const path = join(tmp(), 'shapey.json');
  traced.save(path);
  const back = load(path) as (x: Tensor) => Tensor;
  const y = randn([6, 3, 4]);
  t.true(close(back(y), shapey(y)));
});

test('a loaded trace called at a dim it was specialised to says which dim, and where the program read shapes', (t) => {
  const traced = trace(shapey, [randn([5, 2, 4])]);
  const path = join(tmp(), 'specialised.json');
  traced.save(path);
  const back = load(path) as (x: Tensor) => Tensor;
  const e = t.throws(() => back(randn([4, 8, 4])), { instanceOf: TracingError });
  t.regex(e!.message, /^shapey\.forward: input 0 dim 0 is 4, but the trace was specialised to 5 \(shape \[4, 8, 4\] vs \[5, 2, 4\]\)/);
  t.regex(e!.message, /read tensor shapes when it was traced[^]*jit-shapes\.test\.ts:\d+/);
  t.regex(e!.message, /Trace it with checkInputs of other shapes/);
  t.true(close(back(randn([5, 2, 4]).mul(0)), shapey(randn([5, 2, 4]).mul(0))), 'the traced shapes still run');
});

test('a program that reads no shape is shape-agnostic: a loaded MLP runs at any batch size', (t) => {
  const mlp = new nn.Sequential(new nn.Linear(4, 8), new nn.ReLU(), new nn.Linear(8, 2));
  const path = join(tmp(), 'mlp.json');
  trace(mlp, [randn([3, 4])]).save(path);
  const back = load(path) as TracedModule;
  const x = randn([17, 4]);
  t.true(close(back.call(x), mlp.call(x)));
});

test('control flow on a shape: the first call where the program takes another path is a clear error, never a wrong result', (t) => {
  const branchy = (x: Tensor) => (x.shape[0] > 3 ? x.relu() : x.neg());
  const [traced] = withWarnings(() => trace(branchy, [randn([5])]));
  const six = randn([6]);
  t.true(close(traced(six), six.relu()), 'same path at another size: traced again, same program');
  const e = t.throws(() => traced(randn([2])), { instanceOf: TracingError });
  t.regex(
    e!.message,
    /^branchy\.forward: the program compares shapes, and input shapes \[\[2\]\] are none of those it was traced at \(\[\[5\]\], \[\[6\]\]\), and tracing it again at these shapes does not give the same program: Graphs differed across invocations!/,
  );
  t.regex(e!.message, /^- .*relu/m);
  t.regex(e!.message, /^\+ .*neg/m);
  t.throws(() => withWarnings(() => trace(branchy, [randn([5])], { checkInputs: [[randn([2])]] })), {
    instanceOf: TracingCheckError,
    message: /^Graphs differed across invocations!/,
  });
});

test('a shape compared in a branch test warns at trace time; a saved trace then runs only at the shapes it was traced at', (t) => {
  const branchy = (x: Tensor) => (x.shape[0] > 3 ? x.relu() : x.neg());
  const [traced, warnings] = withWarnings(() => trace(branchy, [randn([5])], { checkInputs: [[randn([6])]] }));
  t.is(warnings.length, 1);
  t.regex(warnings[0]!, /^shape: Comparing a shape might cause the trace to be incorrect\.[^]*jit-shapes\.test\.ts:\d+/);
  const path = join(tmp(), 'branchy.json');
  traced.save(path);
  const back = load(path) as (x: Tensor) => Tensor;
  const six = randn([6]);
  t.true(close(back(six), six.relu()), 'a traced shape runs');
  t.throws(() => back(randn([2])), {
    instanceOf: TracingError,
    message: /the program compares shapes, and input shapes \[\[2\]\] are none of those it was traced at \(\[\[5\]\], \[\[6\]\]\)/,
  });
  // Arithmetic on a shape is no branch: no warning.
  const [, quiet] = withWarnings(() => trace(shapey, [randn([5, 2, 4])]));
  t.deepEqual(quiet, []);
});

test('fits two samples cannot tell apart are told apart by the trace at independently moved sizes; a live trace traces again', (t) => {
  // narrow's length is x.shape[0]; [3, 5] → [4, 6] also fits x.shape[1] - 2, which the confirming trace rules out.
  const f = (x: Tensor) => x.narrow(1, 0, x.shape[0]);
  const traced = trace(f, [randn([3, 5])], { checkInputs: [[randn([4, 6])]] });
  const path = join(tmp(), 'ambiguous.json');
  traced.save(path);
  const back = load(path) as (x: Tensor) => Tensor;
  const same = randn([6, 8]); // both fits give 6
  t.true(close(back(same), f(same)));
  const apart = randn([5, 9]); // they differ here: only s0_0 is left
  t.true(close(back(apart), f(apart)));
  const x = randn([5, 9]);
  t.true(close(traced(x), f(x)), 'in memory a third trace settles it');
  const y = randn([2, 9]);
  t.true(close(traced(y), f(y)));
});

test('fitSamples: offsets, multiples, floor division, products and numel; numbers no shape explains are refused', (t) => {
  const samples = (values: number[], shapes: number[][][]) => shapes.map((s, k) => ({ shapes: s, leaves: [values[k]!] }));
  const fit = (values: number[], shapes: number[][][]) => {
    const r = fitSamples(samples(values, shapes));
    return r.ok ? r.exprs.map(([, e]) => formatExpr(e)).join(' ') : r.why;
  };
  const two = [[[5, 2, 4]], [[3, 6, 4]]];
  t.is(fit([5, 3], two), 's0_0');
  t.is(fit([4, 12], two), '2·s0_1');
  t.is(fit([1, 5], two), 's0_1 - 1');
  t.is(fit([1, 3], two), 's0_1 // 2');
  t.is(fit([40, 72], two), 's0_0·s0_1·s0_2');
  t.is(fit([8, 24], two), 's0_1·s0_2');
  t.regex(
    fit([2, 1000], two),
    /a number in the graph changed \(2 at \[\[5, 2, 4\]\]; 1000 at \[\[3, 6, 4\]\]\) and is no simple function of the input shapes/,
  );
});

test('a live trace runs the program again only at shapes it has not seen (the traced ones included as seen)', (t) => {
  let runs = 0;
  const counted = (x: Tensor) => {
    runs++;
    return x.reshape([x.shape[0] * x.shape[1]]);
  };
  const traced = trace(counted, [randn([2, 3])], { checkTrace: false });
  t.is(runs, 1);
  traced(randn([2, 3]));
  t.is(runs, 1, 'the traced shape runs the graph only');
  const x = randn([4, 5]);
  t.true(close(traced(x), counted(x)));
  t.is(runs, 4, 'a new shape: traced once more, once more at independently moved sizes to confirm the fit (plus the eager call here)');
  traced(randn([4, 5]));
  traced(randn([2, 3]));
  t.is(runs, 4);
  traced(randn([3, 7]));
  t.is(runs, 4, 'a shape the confirmed fit already explains: the graph runs, the program is not traced again');
});
