import test, { type ExecutionContext } from 'ava';
import { DTypeError, ShapeError, manualSeed, nn, noGrad, ops, randn, tensor, type Tensor } from '../src/index.js';
import { symbolicTrace } from '../src/fx.js';
import { kernelsBackend, type KernelProgramCallable } from '../src/kernels/index.js';
import { Plan } from '../src/kernels/plan.js';
import { close } from './helpers.js';

/**
 * The kernels backend on the graphs AOT autograd hands it (issue 15, item 7): backward graphs of op-table
 * calls as PyTorch's AOTAutograd makes them for an MLP (`mm(g, w)` for the input gradient, `mm(t(g), x)` for
 * the weight gradient, `sum(g, [0])` for the bias gradient, a ReLU mask), and the forward graphs beside them.
 * Each compiled graph equals the same graph run eagerly (`gm.forward`), and its plan names the kernels it
 * builds: no transposed copy of a GEMM operand, bias gradients inside the weight-gradient GEMM's step,
 * element-wise gradient chains as one kernel.
 */

type Fn = (...xs: Tensor[]) => Tensor[];

const tr = (x: Tensor) => ops.transpose(x, 0, 1);
/** ReLU's backward as AOT graphs spell it until thresholdBackward lands: where(y > 0, g, 0), or g · (y > 0). */
const maskWhere = (g: Tensor, y: Tensor) => ops.where(ops.gt(y, 0), g, 0);
const maskMul = (g: Tensor, y: Tensor) => ops.mul(g, ops.gt(y, 0));

/** The backward graph of Linear → ReLU → Linear → ReLU → Linear, given the saved inputs and the output's gradient. */
function mlpBackward(mask: (g: Tensor, y: Tensor) => Tensor, out: number): Fn {
  return (x, w2, w3, h1, h2, g) => {
    const gw3 = ops.mm(tr(g), h2);
    const gb3 = ops.view(ops.sum(g, [0], true), [out]);
    const ga2 = mask(ops.mm(g, tr(tr(w3))), h2); // t(t(w)): PyTorch's mm(g, t(mat2)) with mat2 = t(w)
    const gw2 = ops.mm(tr(ga2), h1);
    const gb2 = ops.sum(ga2, [0]);
    const ga1 = mask(ops.mm(ga2, w2), h1);
    const gw1 = ops.mm(ops.permute(ga1, [1, 0]), x);
    const gb1 = ops.sum(ga1, [0]);
    return [gw1, gb1, gw2, gb2, gw3, gb3];
  };
}

/** Inputs of mlpBackward for layer sizes [in, h1, h2, out] and a batch. */
function mlpInputs(sizes: readonly [number, number, number, number], batch: number): Tensor[] {
  const [i, a, b, o] = sizes;
  return [randn([batch, i]), randn([b, a]), randn([o, b]), randn([batch, a]).relu(), randn([batch, b]).relu(), randn([batch, o])];
}

interface Compiled {
  readonly run: (...xs: Tensor[]) => Tensor[];
  readonly program: KernelProgramCallable;
  readonly fn: Fn;
}

function compileFn(fn: Fn, args: readonly Tensor[]): Compiled {
  const program = kernelsBackend(symbolicTrace(fn), args);
  return { run: program as unknown as (...xs: Tensor[]) => Tensor[], program, fn };
}

/** Compiled (the planning call, then the plan twice) against the graph run eagerly, output by output. */
function checkAgainstEager(t: ExecutionContext, c: Compiled, args: readonly Tensor[], what: string): void {
  noGrad(() => {
    const want = c.program.program.gm.forward(...args) as Tensor[];
    for (let call = 0; call < 3; call++) {
      const got = c.run(...args);
      t.is(got.length, want.length, `${what}: outputs`);
      got.forEach((g, i) => close(t, g, want[i]!, `${what}: output ${i}, call ${call}`));
    }
  });
}

/** The one plan a program made, and its steps' kinds. */
function planOf(c: Compiled): { plan: Plan; kinds: string[] } {
  const plans = [...c.program.program.plans.values()];
  const plan = plans[0];
  if (plans.length !== 1 || !(plan instanceof Plan)) throw new Error(`expected one plan, got ${c.program.pprint()}`);
  return { plan, kinds: plan.steps.map((s) => s.kind) };
}

test('the MLP backward graph (784-512-512-10, batch 64) compiled equals the graph run eagerly, ReLU mask as where', (t) => {
  manualSeed(0);
  const args = mlpInputs([784, 512, 512, 10], 64);
  const c = compileFn(mlpBackward(maskWhere, 10), args);
  checkAgainstEager(t, c, args, '784-512-512-10');
  const { kinds } = planOf(c);
  // 3 weight gradients with their bias gradients, 2 input gradients with the ReLU mask as their epilogue:
  // 5 GEMM steps, no reduction kernel, no element-wise kernel, no copy
  t.deepEqual(kinds, ['matmul(aT)+sum', 'matmul+mask', 'matmul(aT)+sum', 'matmul+mask', 'matmul(aT)+sum'], c.program.pprint());
  t.regex(c.program.pprint(), /matmul\+mask +\[64, 512\] +mm_1, gt, where\n/);
});

test('ReLU’s mask as a GEMM epilogue keeps where’s NaN semantics: NaN in y or a masked product gives 0', (t) => {
  const g = tensor([NaN, 1, 2, Infinity, -1, 0.5], { shape: [3, 2] });
  const w = tensor([1, 2, 3, 4, 5, 6], { shape: [2, 3] });
  const y = tensor([-1, 2, 3, NaN, 0, 1, 1, 2, -0.5], { shape: [3, 3] });
  const c = compileFn((gg, ww, yy) => [maskWhere(ops.mm(gg, ww), yy)], [g, w, y]);
  checkAgainstEager(t, c, [g, w, y], 'NaN and Inf');
  t.deepEqual(planOf(c).kinds, ['matmul+mask']);
  const out = noGrad(() => c.run(g, w, y))[0]!;
  t.deepEqual(Array.from(out.data()).slice(0, 3), [0, NaN, NaN]); // row 0's product is NaN: masked where y ≤ 0
  t.is(out.data()[3], 0, 'y NaN masks');
});

test('a ReLU mask written g · (y > 0), or read twice, stays an element-wise kernel', (t) => {
  manualSeed(17);
  const g = randn([6, 4]);
  const w = randn([4, 5]);
  const y = randn([6, 5]);
  const mul = compileFn((gg, ww, yy) => [maskMul(ops.mm(gg, ww), yy)], [g, w, y]);
  checkAgainstEager(t, mul, [g, w, y], 'mul form');
  t.deepEqual(planOf(mul).kinds, ['matmul', 'elementwise']);
  const shared = compileFn(
    (gg, ww, yy) => {
      const p = ops.mm(gg, ww);
      return [maskWhere(p, yy), p];
    },
    [g, w, y],
  );
  checkAgainstEager(t, shared, [g, w, y], 'product read twice');
  t.deepEqual(planOf(shared).kinds, ['matmul', 'elementwise']);
});

test('the MLP backward graph with the ReLU mask as g · (y > 0), at odd sizes and batch 1, equals eager', (t) => {
  manualSeed(1);
  for (const [sizes, batch] of [
    [[13, 11, 7, 3], 5],
    [[33, 17, 9, 1], 1],
    [[5, 37, 29, 6], 67],
  ] as const) {
    const args = mlpInputs(sizes, batch);
    const c = compileFn(mlpBackward(maskMul, sizes[3]), args);
    checkAgainstEager(t, c, args, `${sizes.join('-')}, batch ${batch}`);
    t.is(planOf(c).plan.steps.filter((s) => s.kind === 'eager').length, 0, c.program.pprint());
  }
});

test('mm(t(g), x) is one GEMM step reading the transposed operand in place: no copy or relayout kernel', (t) => {
  manualSeed(2);
  const g = randn([9, 6]);
  const x = randn([9, 4]);
  for (const [name, fn] of [
    ['t via transpose(0, 1)', (a: Tensor, b: Tensor) => [ops.mm(tr(a), b)]],
    ['t via transpose(-1, -2)', (a: Tensor, b: Tensor) => [ops.mm(ops.transpose(a, -1, -2), b)]],
    ['t via permute([1, 0])', (a: Tensor, b: Tensor) => [ops.mm(ops.permute(a, [1, 0]), b)]],
    ['matmul', (a: Tensor, b: Tensor) => [ops.matmul(tr(a), b)]],
  ] as const) {
    const c = compileFn(fn, [g, x]);
    checkAgainstEager(t, c, [g, x], name);
    t.deepEqual(planOf(c).kinds, ['matmul(aT)'], `${name}\n${c.program.pprint()}`);
  }
});

test('mm(g, t(w)) and addmm(b, x, t(w)) pack the transposed weight directly: one GEMM step each', (t) => {
  manualSeed(3);
  const g = randn([8, 5]);
  const w = randn([7, 5]);
  const b = randn([7]);
  const mmT = compileFn((a, ww) => [ops.mm(a, tr(ww))], [g, w]);
  checkAgainstEager(t, mmT, [g, w], 'mm(g, t(w))');
  t.deepEqual(planOf(mmT).kinds, ['matmul']);
  const fwd = compileFn((bb, x, ww) => [ops.relu(ops.addmm(bb, x, tr(ww)))], [b, g, w]);
  checkAgainstEager(t, fwd, [b, g, w], 'relu(addmm(b, x, t(w)))');
  t.deepEqual(planOf(fwd).kinds, ['matmul+bias+relu']);
});

test('the MLP forward graph as AOT makes it (addmm, relu, saved activations as outputs) is one GEMM per layer', (t) => {
  manualSeed(4);
  const fwd: Fn = (x, w1, b1, w2, b2) => {
    const h1 = ops.relu(ops.addmm(b1, x, tr(w1)));
    const out = ops.addmm(b2, h1, tr(w2));
    return [out, x, h1, tr(w2)];
  };
  const args = [randn([64, 784]), randn([512, 784]), randn([512]), randn([10, 512]), randn([10])];
  const c = compileFn(fwd, args);
  checkAgainstEager(t, c, args, 'forward');
  t.deepEqual(planOf(c).kinds, ['matmul+bias+relu', 'matmul+bias']);
});

test('a bias gradient that is a mean, or keeps its dim, is computed in the GEMM step with the right value', (t) => {
  manualSeed(5);
  const g = randn([12, 7]);
  const x = randn([12, 3]);
  const c = compileFn((a, b) => [ops.mm(tr(a), b), ops.mean(a, [0]), ops.sum(a, [0], true)], [g, x]);
  checkAgainstEager(t, c, [g, x], 'mean and keepdim sums');
  // one of the two reductions rides in the GEMM's pass over g; the other stays a reduction kernel
  t.deepEqual(planOf(c).kinds, ['matmul(aT)+sum', 'reduce sum'], c.program.pprint());
});

test('a bias gradient read before its GEMM runs stays a reduction kernel (steps keep their order)', (t) => {
  manualSeed(6);
  const g = randn([10, 6]);
  const x = randn([10, 4]);
  // the sum feeds the GEMM's own operand, so it must exist before the GEMM step
  const fn: Fn = (a, b) => {
    const s = ops.sum(a, [0]);
    const shifted = ops.sub(a, s);
    return [ops.mm(tr(a), ops.mul(b, 2)), ops.mm(tr(shifted), b), s];
  };
  const c = compileFn(fn, [g, x]);
  checkAgainstEager(t, c, [g, x], 'sum read early');
  t.true(planOf(c).kinds.includes('reduce sum'), c.program.pprint());
});

test('graph outputs that are inputs or views of inputs come back without copies and with the right values', (t) => {
  manualSeed(7);
  const x = randn([4, 6]);
  const w = randn([5, 6]);
  const g = randn([4, 5]);
  const fn: Fn = (xx, ww, gg) => [xx, tr(ww), ops.view(gg, [20]), ops.mm(gg, ww), gg];
  const c = compileFn(fn, [x, w, g]);
  checkAgainstEager(t, c, [x, w, g], 'passthrough outputs');
  const out = noGrad(() => c.run(x, w, g));
  t.is(out[0], x);
  t.is(out[4], g);
  t.is(out[1]!._storage, w._storage, 't(w) is a view of w');
  t.deepEqual(out[1]!.strides, [1, 6]);
  t.is(out[2]!._storage, g._storage, 'view(g) is a view of g');
  t.deepEqual(planOf(c).kinds, ['matmul']);
});

test("GELU's backward written in element-wise ops, times g, is one kernel", (t) => {
  manualSeed(8);
  const c0 = Math.sqrt(2 / Math.PI);
  const geluBackward: Fn = (g, x) => {
    const x2 = ops.mul(x, x);
    const th = ops.tanh(ops.mul(ops.add(x, ops.mul(ops.mul(x2, x), 0.044715)), c0));
    const left = ops.mul(ops.add(th, 1), 0.5);
    const dth = ops.add(ops.mul(ops.mul(th, th), -1), 1);
    const right = ops.mul(ops.mul(ops.mul(x, 0.5), dth), ops.mul(ops.add(ops.mul(x2, 3 * 0.044715), 1), c0));
    return [ops.mul(g, ops.add(left, right))];
  };
  const args = [randn([64, 512]), randn([64, 512])];
  const c = compileFn(geluBackward, args);
  checkAgainstEager(t, c, args, 'gelu backward');
  t.deepEqual(planOf(c).kinds, ['elementwise']);
});

test('the loss gradient of an MSE (2 · (pred − target) / n · tangent), then the last layer, fuses into the GEMMs', (t) => {
  manualSeed(9);
  const fn: Fn = (pred, target, tangent, h, w) => {
    const g = ops.mul(ops.mul(ops.sub(pred, target), 2 / 640), tangent); // tangent is 0-d
    return [ops.mm(tr(g), h), ops.sum(g, [0]), ops.mm(g, w)];
  };
  const args = [randn([64, 10]), randn([64, 10]), randn([]), randn([64, 512]), randn([10, 512])];
  const c = compileFn(fn, args);
  checkAgainstEager(t, c, args, 'mse backward');
  t.deepEqual(planOf(c).kinds, ['elementwise', 'matmul(aT)+sum', 'matmul'], c.program.pprint());
});

test('the compiled backward graph of an nn MLP gives the gradients eager autograd gives', (t) => {
  manualSeed(10);
  const model = new nn.Sequential(new nn.Linear(20, 16), new nn.ReLU(), new nn.Linear(16, 12), new nn.ReLU(), new nn.Linear(12, 3));
  const x = randn([9, 20]);
  const g = randn([9, 3]);
  const [l1, , l2, , l3] = [...model.children()] as nn.Linear[];
  const h1 = noGrad(() => l1!.call(x).relu());
  const h2 = noGrad(() => l2!.call(h1).relu());
  model.call(x).mul(g).sum().backward();
  const c = compileFn(mlpBackward(maskWhere, 3), [x, l2!.weight, l3!.weight, h1, h2, g]);
  const [gw1, gb1, gw2, gb2, gw3, gb3] = noGrad(() => c.run(x, l2!.weight, l3!.weight, h1, h2, g));
  const want = [l1!.weight.grad, l1!.bias!.grad, l2!.weight.grad, l2!.bias!.grad, l3!.weight.grad, l3!.bias!.grad];
  [gw1, gb1, gw2, gb2, gw3, gb3].forEach((got, i) => close(t, got!, want[i]!, `gradient ${i}`));
});

test('a backward graph called with mismatched shapes raises the op’s ShapeError, and the next good call works', (t) => {
  manualSeed(11);
  const args = mlpInputs([13, 11, 7, 3], 5);
  const c = compileFn(mlpBackward(maskWhere, 3), args);
  checkAgainstEager(t, c, args, 'before');
  const bad = [...args];
  bad[0] = randn([4, 13]); // x with another batch than g
  const err = t.throws(() => noGrad(() => c.run(...bad)), { instanceOf: ShapeError });
  t.regex(err!.message, /^mm: self and mat2 shapes cannot be multiplied \(11x5 and 4x13\)/);
  checkAgainstEager(t, c, args, 'after');
});

test('a backward graph given an integer tangent raises mm’s DTypeError', (t) => {
  manualSeed(12);
  const g = randn([6, 4]);
  const x = randn([6, 3]);
  const c = compileFn((a, b) => [ops.mm(tr(a), b), ops.sum(a, [0])], [g, x]);
  checkAgainstEager(t, c, [g, x], 'float');
  const err = t.throws(() => noGrad(() => c.run(g.int(), x)), { instanceOf: DTypeError });
  t.regex(err!.message, /^mm: expected float32 tensors, got self of dtype int32/);
});

test('the weight gradient as t(mm(t(x), g)) (the gradient of a Linear’s t(w)) computes mm(t(g), x): contiguous, bias gradient fused', (t) => {
  manualSeed(13);
  const x = randn([16, 9]);
  const g = randn([16, 5]);
  for (const [name, fn] of [
    ['t(mm(t(x), g))', (xx: Tensor, gg: Tensor) => [tr(ops.mm(tr(xx), gg)), ops.sum(gg, [0])]],
    // eager's gradLike form: the transposed product, transposed back by t's own gradient
    ['t(t(matmul(t(g), t(t(x)))))', (xx: Tensor, gg: Tensor) => [tr(tr(ops.matmul(tr(gg), tr(tr(xx))))), ops.sum(gg, [0])]],
    ['t(mm(t(x), g)) with g used twice', (xx: Tensor, gg: Tensor) => [tr(ops.mm(tr(xx), gg)), ops.sum(gg, [0]), ops.mul(gg, 2)]],
  ] as const) {
    const c = compileFn(fn, [x, g]);
    checkAgainstEager(t, c, [x, g], name);
    t.is(planOf(c).kinds[0], 'matmul(aT)+sum', `${name}\n${c.program.pprint()}`);
    const [gw] = noGrad(() => c.run(x, g));
    t.deepEqual(gw!.shape, [5, 9]);
    t.deepEqual(gw!.strides, [9, 1], `${name}: stored as the weight is`);
  }
});

test('a matmul read both directly and through its transpose is not rewritten', (t) => {
  manualSeed(14);
  const a = randn([4, 6]);
  const b = randn([6, 3]);
  const c = compileFn(
    (x, y) => {
      const p = ops.mm(x, y);
      return [tr(p), ops.mul(p, 2)];
    },
    [a, b],
  );
  checkAgainstEager(t, c, [a, b], 'both readers');
  t.deepEqual(planOf(c).kinds, ['matmul', 'elementwise']);
  const odd = compileFn((x, y) => [tr(tr(tr(ops.mm(x, y))))], [a, b]);
  checkAgainstEager(t, odd, [a, b], 't(t(t(a · b)))');
});

test('the cross-entropy gradient (softmax − one-hot) · tangent / n, then the last layer: the softmax reductions, one element-wise kernel, the GEMMs', (t) => {
  manualSeed(15);
  const fn: Fn = (logits, onehot, tangent, h, w) => {
    const g = ops.mul(ops.sub(ops.softmax(logits, 1), onehot), ops.mul(tangent, 1 / 64));
    return [ops.mm(tr(g), h), ops.sum(g, [0]), ops.mm(g, w)];
  };
  const labels = Array.from({ length: 64 }, (_, i) => (i * 7) % 10);
  const onehot = tensor(
    labels.flatMap((l) => Array.from({ length: 10 }, (_, j) => Number(j === l))),
    { shape: [64, 10] },
  );
  const args = [randn([64, 10]), onehot, randn([]), randn([64, 512]), randn([10, 512])];
  const c = compileFn(fn, args);
  checkAgainstEager(t, c, args, 'cross-entropy backward');
  const kinds = planOf(c).kinds;
  t.deepEqual(kinds.slice(-3), ['elementwise', 'matmul(aT)+sum', 'matmul'], c.program.pprint());
  t.true(
    kinds.slice(0, -3).every((k) => k.startsWith('reduce')),
    c.program.pprint(),
  );
});

test('a GEMM left operand in other strided layouts (a column slice, every other row, the transpose of a slice) equals eager', (t) => {
  manualSeed(16);
  const a = randn([12, 9]);
  const b = randn([5, 4]);
  const c6 = randn([6, 4]);
  for (const [name, fn, args] of [
    ['mm(a[:, 2:7], b)', (x: Tensor, y: Tensor) => [ops.mm(ops.slice(x, 1, 2, 7), y)], [a, b]],
    ['mm(a[::2, :5], b)', (x: Tensor, y: Tensor) => [ops.mm(ops.slice(ops.slice(x, 0, 0, 12, 2), 1, 0, 5), y)], [a, b]],
    [
      'mm(t(a[::2]), c) with the sum of a[::2] fused',
      (x: Tensor, y: Tensor) => {
        const v = ops.slice(x, 0, 0, 12, 2);
        return [ops.mm(tr(v), y), ops.sum(v, [0])];
      },
      [a, c6],
    ],
  ] as const) {
    const c = compileFn(fn, args);
    checkAgainstEager(t, c, args, name);
    t.is(planOf(c).plan.steps.length, 1, `${name}\n${c.program.pprint()}`);
  }
});

test('backward-graph patterns at random sizes (1 to 40) equal eager', (t) => {
  manualSeed(18);
  let seed = 7;
  const size = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return 1 + (seed % 40);
  };
  const fn: Fn = (x, g, w, y) => {
    const ga = maskWhere(ops.mm(g, w), y); // [B, I]
    return [tr(ops.mm(tr(x), g)), ops.sum(g, [0], true), ops.mm(tr(ga), x), ops.mean(ga, [0]), ga];
  };
  for (let i = 0; i < 8; i++) {
    const [B, I, O] = [size(), size(), size()];
    const args = [randn([B, I]), randn([B, O]), randn([O, I]), randn([B, I])];
    const c = compileFn(fn, args);
    checkAgainstEager(t, c, args, `B=${B} I=${I} O=${O}`);
    t.false(planOf(c).kinds.includes('eager'), c.program.pprint());
  }
});

test('a parameter passed to a compiled graph as an input is packed once per version: updated in place, the next call sees it', (t) => {
  manualSeed(19);
  const w = randn([7, 5]).requiresGrad_(true);
  const b = randn([7]).requiresGrad_(true);
  const x = randn([4, 5]);
  const fwd: Fn = (xx, ww, bb) => [ops.relu(ops.addmm(bb, xx, tr(ww))), ops.mm(xx, tr(ww))];
  const c = compileFn(fwd, [x, w, b]);
  checkAgainstEager(t, c, [x, w, b], 'first weights');
  noGrad(() => w.mul_(-0.5)); // an optimizer step: in place, bumping the version
  checkAgainstEager(t, c, [x, w, b], 'after an in-place update');
  noGrad(() => w.copy_(randn([7, 5])));
  checkAgainstEager(t, c, [x, w, b], 'after copy_');
});
