import test from 'ava';
import { DTypeError, IndexError, ShapeError, compile, manualSeed, noGrad, ops, randn, tensor, type Tensor } from '../src/index.js';
import { symbolicTrace } from '../src/fx.js';
import { kernelsBackend } from '../src/kernels/index.js';
import { close } from './helpers.js';

/**
 * mm, addmm and unbind (issue 15, item 1: ops PyTorch's test_aotdispatch.py cases need). Values as torch.mm,
 * torch.addmm and torch.unbind give them, hand-computed or from a plain-JS product; errors with PyTorch's
 * wording plus the op and the shapes; mm and addmm compiled by the kernels backend equal eager.
 */

const A = () => tensor([1, 2, 3, 4, 5, 6], { shape: [2, 3] });
const B = () => tensor([7, 8, 9, 10, 11, 12], { shape: [3, 2] });
const rows = (x: Tensor) => x.toArray() as number[][];

/** The float64 product of two row-major matrices, rounded to float32 (a reference for small exact cases). */
function refMm(a: Tensor, b: Tensor): number[][] {
  const [n, k] = a.shape as [number, number];
  const p = b.shape[1]!;
  const ad = rows(a);
  const bd = rows(b);
  return Array.from({ length: n }, (_, i) =>
    Array.from({ length: p }, (_, j) => {
      let s = 0;
      for (let q = 0; q < k; q++) s += ad[i]![q]! * bd[q]![j]!;
      return Math.fround(s);
    }),
  );
}

test('mm multiplies two matrices (torch.mm([[1,2,3],[4,5,6]], [[7,8],[9,10],[11,12]]) = [[58,64],[139,154]])', (t) => {
  t.deepEqual(rows(ops.mm(A(), B())), [
    [58, 64],
    [139, 154],
  ]);
  t.deepEqual(rows(A().mm(B())), rows(ops.mm(A(), B())));
});

test('mm reads strided operands (a transposed view) like contiguous ones', (t) => {
  const at = tensor([1, 4, 2, 5, 3, 6], { shape: [3, 2] }).t(); // [[1,2,3],[4,5,6]] as a view
  t.false(at.isContiguous());
  t.deepEqual(rows(ops.mm(at, B())), refMm(A(), B()));
  manualSeed(1);
  const x = randn([5, 7]);
  const y = randn([7, 4]);
  close(t, ops.mm(x, y), tensor(refMm(x, y).flat(), { shape: [5, 4] }), 'random 5x7 @ 7x4');
});

test('mm with an empty inner dim gives zeros, and with an empty outer dim an empty matrix', (t) => {
  t.deepEqual(rows(ops.mm(tensor([], { shape: [2, 0] }), tensor([], { shape: [0, 3] }))), [
    [0, 0, 0],
    [0, 0, 0],
  ]);
  t.deepEqual(ops.mm(tensor([], { shape: [0, 3] }), B()).shape, [0, 2]);
});

test('mm gradients: dA = G·Bᵀ, dB = Aᵀ·G', (t) => {
  const a = A().requiresGrad_(true);
  const b = B().requiresGrad_(true);
  ops.mm(a, b).sum().backward();
  t.deepEqual(rows(a.grad!), [
    [15, 19, 23],
    [15, 19, 23],
  ]);
  t.deepEqual(rows(b.grad!), [
    [5, 5],
    [7, 7],
    [9, 9],
  ]);
});

test('mm refuses non-matrices and mismatched inner dims with PyTorch wording and the shapes', (t) => {
  const one = t.throws(() => ops.mm(tensor([1, 2, 3]), B()), { instanceOf: ShapeError });
  t.is(one!.message, 'mm: self must be a matrix, got a 1-D tensor of shape [3]');
  const three = t.throws(() => A().mm(tensor([1, 2, 3, 4, 5, 6], { shape: [1, 3, 2] })), { instanceOf: ShapeError });
  t.is(three!.message, 'mm: mat2 must be a matrix, got a 3-D tensor of shape [1, 3, 2]');
  const inner = t.throws(() => ops.mm(A(), tensor([1, 2, 3, 4, 5, 6, 7, 8], { shape: [4, 2] })), { instanceOf: ShapeError });
  t.is(inner!.message, 'mm: self and mat2 shapes cannot be multiplied (2x3 and 4x2)');
  const int = t.throws(() => ops.mm(A().int(), B()), { instanceOf: DTypeError });
  t.is(int!.message, 'mm: expected float32 tensors, got self of dtype int32');
  t.throws(() => ops.mm(A(), 3 as unknown as Tensor), { instanceOf: DTypeError, message: /^mm: argument 'mat2' must be a Tensor/ });
});

test('addmm is beta·input + alpha·(mat1 @ mat2), input broadcast to [n, p]', (t) => {
  const bias = tensor([1, -1]);
  t.deepEqual(rows(ops.addmm(bias, A(), B())), [
    [59, 63],
    [140, 153],
  ]);
  const want = [
    [116.5, 127.5],
    [278.5, 307.5],
  ];
  t.deepEqual(rows(ops.addmm(bias, A(), B(), 0.5, 2)), want);
  t.deepEqual(rows(ops.addmm(bias, A(), B(), { beta: 0.5, alpha: 2 })), want);
  t.deepEqual(rows(bias.addmm(A(), B(), 0.5, 2)), want);
  t.deepEqual(rows(ops.addmm(tensor([10, 20], { shape: [2, 1] }), A(), B())), [
    [68, 74],
    [159, 174],
  ]);
  t.deepEqual(rows(ops.addmm(tensor(100), A(), B(), { alpha: -1 })), [
    [42, 36],
    [-39, -54],
  ]);
});

test('addmm with beta = 0 ignores NaN and Inf in input, and with alpha = 0 ignores the product, as torch.addmm does', (t) => {
  const bad = tensor([NaN, Infinity]);
  t.deepEqual(rows(ops.addmm(bad, A(), B(), { beta: 0 })), [
    [58, 64],
    [139, 154],
  ]);
  const nanMat = tensor([NaN, 1, 1, 1], { shape: [2, 2] });
  t.deepEqual(rows(ops.addmm(tensor([1, 2]), nanMat, tensor([1, 1, 1, 1], { shape: [2, 2] }), { alpha: 0 })), [
    [1, 2],
    [1, 2],
  ]);
  t.deepEqual(rows(ops.addmm(bad, nanMat, nanMat, { beta: 0, alpha: 0 })), [
    [0, 0],
    [0, 0],
  ]);
});

test('addmm gradients: input gets beta·G summed to its shape (zeros when beta = 0), mat1 and mat2 alpha times mm gradients', (t) => {
  const input = tensor([1, -1]).requiresGrad_(true);
  const m1 = A().requiresGrad_(true);
  const m2 = B().requiresGrad_(true);
  ops.addmm(input, m1, m2, { beta: 0.5, alpha: 2 }).sum().backward();
  t.deepEqual(Array.from(input.grad!.data()), [1, 1]);
  t.deepEqual(rows(m1.grad!), [
    [30, 38, 46],
    [30, 38, 46],
  ]);
  t.deepEqual(rows(m2.grad!), [
    [10, 10],
    [14, 14],
    [18, 18],
  ]);
  const col = tensor([0, 0], { shape: [2, 1] }).requiresGrad_(true);
  ops.addmm(col, A(), B(), { beta: 0 }).sum().backward();
  t.deepEqual(rows(col.grad!), [[0], [0]]);
});

test('addmm refuses an input that does not broadcast, non-matrices and mismatched inner dims, naming the shapes', (t) => {
  const wide = t.throws(() => ops.addmm(tensor([1, 2, 3]), A(), B()), { instanceOf: ShapeError });
  t.is(wide!.message, "addmm: input of shape [3] cannot be broadcast to the product's shape [2, 2] (mat1 [2, 3] @ mat2 [3, 2])");
  const vec = t.throws(() => ops.addmm(tensor([1, 2]), tensor([1, 2, 3]), B()), { instanceOf: ShapeError });
  t.is(vec!.message, 'addmm: mat1 must be a matrix, got a 1-D tensor of shape [3]');
  const inner = t.throws(() => ops.addmm(tensor([1, 2]), A(), A()), { instanceOf: ShapeError });
  t.is(inner!.message, 'addmm: mat1 and mat2 shapes cannot be multiplied (2x3 and 2x3)');
  const int = t.throws(() => ops.addmm(tensor([1, 2], { dtype: 'int32' }), A(), B()), { instanceOf: DTypeError });
  t.is(int!.message, 'addmm: expected float32 tensors, got input of dtype int32');
});

test('unbind returns every slice along dim as a view of the input', (t) => {
  const x = A();
  const cols = x.unbind(1);
  t.deepEqual(
    cols.map((c) => Array.from(c.data())),
    [
      [1, 4],
      [2, 5],
      [3, 6],
    ],
  );
  t.deepEqual(
    ops.unbind(x).map((r) => Array.from(r.data())),
    [
      [1, 2, 3],
      [4, 5, 6],
    ],
  );
  t.deepEqual(
    ops.unbind(x, -1).map((c) => c.shape),
    [[2], [2], [2]],
  );
  cols[2]!.fill_(0);
  t.deepEqual(rows(x), [
    [1, 2, 0],
    [4, 5, 0],
  ]);
  t.deepEqual(ops.unbind(tensor([], { shape: [0, 3] })), []);
});

test('unbind gradients flow through each view into one input gradient', (t) => {
  const x = A().requiresGrad_(true);
  const [p, q, r] = x.unbind(1);
  p!.mul(2).add(r!.mul(q!)).sum().backward();
  t.deepEqual(rows(x.grad!), [
    [2, 3, 2],
    [2, 6, 5],
  ]);
});

test('unbind of a 0-d tensor and out-of-range dims are IndexErrors, as in PyTorch', (t) => {
  const scalar = t.throws(() => ops.unbind(tensor(1)), { instanceOf: IndexError });
  t.is(scalar!.message, 'unbind: dimension specified as 0 but tensor has no dimensions');
  t.throws(() => A().unbind(2), { message: /^unbind: .*2/ });
});

test('mm and addmm lower to the GEMM: compiled under noGrad they equal eager, with no eager step', (t) => {
  manualSeed(5);
  const x = randn([6, 5]);
  const w = randn([5, 4]);
  const bias = randn([4]);
  const col = randn([6, 1]);
  // [name, fn, args, the plan's first kernel: the GEMM with the epilogue it took in]
  const fns: [string, (...xs: Tensor[]) => Tensor, Tensor[], RegExp][] = [
    ['mm', (a, b) => ops.mm(a, b).relu(), [x, w], /matmul\+relu /],
    ['addmm (bias folded)', (c, a, b) => ops.addmm(c, a, b).relu(), [bias, x, w], /matmul\+bias\+relu /],
    ['addmm (beta, alpha, [n, 1] input)', (c, a, b) => ops.addmm(c, a, b, { beta: 0.5, alpha: -2 }).mul(3), [col, x, w], /matmul /],
    ['addmm (beta = 0)', (c, a, b) => c.addmm(a, b, 0, 1.5), [tensor([NaN, 1, 2, 3]), x, w], /matmul /],
  ];
  for (const [name, fn, args, gemm] of fns) {
    const program = kernelsBackend(symbolicTrace(fn));
    const compiled = program as unknown as (...xs: Tensor[]) => Tensor;
    noGrad(() => {
      close(t, compiled(...args), fn(...args), `${name}: first call`);
      close(t, compiled(...args), fn(...args), `${name}: cached plan`);
    });
    const plan = program.pprint();
    t.regex(plan, / 0 eager steps/, `${name}\n${plan}`);
    t.notRegex(plan, /not lowered/, `${name}\n${plan}`);
    t.regex(plan, new RegExp(`\\n +1 +${gemm.source}`), `${name}\n${plan}`);
  }
  const viaCompile = compile((a: Tensor, b: Tensor, c: Tensor) => a.addmm(b, c).mm(c.t()));
  noGrad(() => close(t, viaCompile(bias, x, w), bias.addmm(x, w).mm(w.t()), 'compile(fn)'));
});

test('addmm with alpha = 0 runs eagerly in a compiled program and says why', (t) => {
  const fn = (c: Tensor, a: Tensor, b: Tensor) => ops.addmm(c, a, b, { alpha: 0 }).add(1);
  const program = kernelsBackend(symbolicTrace(fn));
  const nanMat = tensor([NaN, 1, 1, 1], { shape: [2, 2] });
  const args = [tensor([1, 2]), nanMat, nanMat] as const;
  noGrad(() => t.deepEqual(rows((program as unknown as typeof fn)(...args)), rows(fn(...args))));
  t.regex(program.pprint(), /alpha = 0/);
});
