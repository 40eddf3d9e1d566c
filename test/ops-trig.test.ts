import test from 'ava';
import { DTypeError, KilnError, ValueError, manualSeed, noGrad, ops, randn, tensor, testing, type Tensor } from '../src/index.js';
import { symbolicTrace } from '../src/fx.js';
import { kernelsBackend } from '../src/kernels/index.js';
import { close } from './helpers.js';

/**
 * sin, cos and exp2: the proof that an element-wise op is its definition (schema, eager forward, gradient,
 * lowering) and its test. Values as torch.sin/torch.cos/torch.exp2 give them (float32), gradients by finite
 * differences, and the kernels backend lowering them to primitives fused with their neighbours.
 */

const f32 = (v: number) => Math.fround(v);

test('sin, cos and exp2 match PyTorch at known points (torch.sin(pi/2) = 1, torch.exp2(3) = 8)', (t) => {
  const x = tensor([0, Math.PI / 6, Math.PI / 2, Math.PI, -Math.PI / 2, 10]);
  const xs = Array.from(x.data());
  t.deepEqual(
    Array.from(ops.sin(x).data()),
    xs.map((v) => f32(Math.sin(v))),
  );
  t.deepEqual(
    Array.from(x.cos().data()),
    xs.map((v) => f32(Math.cos(v))),
  );
  t.is(x.sin().data()[2], 1);
  t.is(x.cos().data()[0], 1);
  t.deepEqual(Array.from(ops.exp2(tensor([3, 0, -1, 0.5, -149, 128, -200])).data()), [8, 1, 0.5, f32(Math.SQRT2), 2 ** -149, Infinity, 0]);
});

test('sin, cos and exp2 of integer tensors compute float32, as in PyTorch', (t) => {
  const i = tensor([0, 1, 2], { dtype: 'int32' });
  for (const y of [i.sin(), i.cos(), i.exp2()]) t.is(y.dtype, 'float32');
  t.deepEqual(Array.from(i.exp2().data()), [1, 2, 4]);
});

test('gradients of sin, cos and exp2 (gradcheck): cos x, -sin x, 2^x ln 2', (t) => {
  manualSeed(3);
  for (const [name, fn] of [
    ['sin', ops.sin],
    ['cos', ops.cos],
    ['exp2', ops.exp2],
  ] as const) {
    const x = randn([7]).mul(2).requiresGrad_(true);
    t.notThrows(() => testing.gradcheck((a) => fn(a), [x], { name }));
  }
  const x = tensor([0, Math.PI / 2, 1]).requiresGrad_(true);
  x.sin().add(x.cos()).add(x.exp2()).sum().backward();
  const want = [0, Math.PI / 2, 1].map((v) => f32(Math.cos(v) - Math.sin(v) + 2 ** v * Math.LN2));
  t.deepEqual(
    Array.from(x.grad!.data()).map((v, k) => Math.abs(v - want[k]!) < 1e-6),
    [true, true, true],
  );
});

test('sin, cos and exp2 lower to primitives and fuse with their neighbours into one kernel', (t) => {
  manualSeed(4);
  const fn = (x: Tensor, y: Tensor) => x.sin().mul(y.cos()).add(x.mul(0.5).exp2()).relu();
  const program = kernelsBackend(symbolicTrace(fn));
  const compiled = program as unknown as (x: Tensor, y: Tensor) => Tensor;
  const x = randn([9, 5]).mul(3);
  const y = randn([5]);
  noGrad(() => {
    close(t, compiled(x, y), fn(x, y), 'first call');
    close(t, compiled(x, y), fn(x, y), 'cached plan');
  });
  const plan = program.pprint();
  t.regex(plan, /: 1 kernel, 0 eager steps/, plan);
  t.notRegex(plan, /not lowered/, plan);
});

test('exp2 in a kernel reaches the ends of the float32 range as eager does', (t) => {
  const fn = (x: Tensor) => x.exp2().mul(1);
  const program = kernelsBackend(symbolicTrace(fn));
  const x = tensor([-200, -149, -126.5, -0.25, 0, 0.75, 60.3, 127.9, 128, 300]);
  const got = noGrad(() => (program as unknown as (x: Tensor) => Tensor)(x)).data();
  const want = fn(x).data();
  t.deepEqual([want[0], want[want.length - 2], want[want.length - 1]], [0, Infinity, Infinity]);
  want.forEach((w, i) => {
    const ok = w === got[i] || Math.abs(got[i]! - w) <= 1e-6 * Math.abs(w);
    t.true(ok, `exp2(${x.data()[i]}): kernel ${got[i]}, eager ${w}`);
  });
});

test('bad arguments: a KilnError naming the op and the argument', (t) => {
  const notTensor = t.throws(() => ops.sin(3 as unknown as Tensor));
  t.true(notTensor instanceof KilnError && notTensor instanceof DTypeError);
  t.regex(notTensor!.message, /^sin: argument 'input' must be a Tensor, got 3/);
  const extra = t.throws(() => (ops.exp2 as unknown as (...a: unknown[]) => Tensor)(tensor([1]), 2), { instanceOf: ValueError });
  t.regex(extra!.message, /^exp2: takes at most 1 arguments/);
  // @ts-expect-error: cos takes no 'alpha' (the options are typed); the run-time check is tested here
  t.throws(() => ops.cos(tensor([1]), { alpha: 2 }), { instanceOf: ValueError, message: /^cos: unexpected option 'alpha'/ });
});
