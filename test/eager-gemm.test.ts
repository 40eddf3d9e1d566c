import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import test, { type ExecutionContext } from 'ava';
import { DTypeError, ShapeError } from '../src/errors.js';
import { F, manualSeed, ops, randn, tensor, testing, type Tensor } from '../src/index.js';
import { useWasmGemm } from '../src/runtime/cpu/matmul.js';
import { close } from './helpers.js';

/**
 * Eager matmul, linear and conv2d run on kiln's wasm SIMD GEMM (float32 sums) with the plain-JS kernel kept
 * as the fallback (float64 sums). Every case here runs on both kernels, forced, and is compared with a
 * float64 reference written out in the test, and the two kernels' gradients with finite differences.
 */

type Kernel = 'wasm' | 'js';
const KERNELS: Kernel[] = ['wasm', 'js'];

function withKernel<T>(kernel: Kernel, fn: () => T): T {
  useWasmGemm(kernel === 'wasm');
  try {
    return fn();
  } finally {
    useWasmGemm(undefined);
  }
}

/** A float64 matmul of two ≥1-D tensors by PyTorch's rules (1-D operands, broadcast batch dims), from their values. */
function referenceMatmul(a: Tensor, b: Tensor): Tensor {
  const a2 = a.ndim === 1 ? a.unsqueeze(0) : a;
  const b2 = b.ndim === 1 ? b.unsqueeze(1) : b;
  const [M, K] = a2.shape.slice(-2) as [number, number];
  const N = b2.shape[b2.ndim - 1]!;
  const batchA = a2.shape.slice(0, -2);
  const batchB = b2.shape.slice(0, -2);
  const rank = Math.max(batchA.length, batchB.length);
  const pad = (s: readonly number[]) => [...Array<number>(rank - s.length).fill(1), ...s];
  const batch = pad(batchA).map((d, i) => (d === 1 ? pad(batchB)[i]! : d));
  const ad = a2
    .expand([...batch, M, K])
    .contiguous()
    .data();
  const bd = b2
    .expand([...batch, K, N])
    .contiguous()
    .data();
  const count = batch.reduce((p, q) => p * q, 1);
  const out = new Float32Array(count * M * N);
  for (let n = 0; n < count; n++) {
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += ad[n * M * K + i * K + k]! * bd[n * K * N + k * N + j]!;
        out[n * M * N + i * N + j] = s;
      }
    }
  }
  let shape = [...batch, M, N];
  if (a.ndim === 1) shape = [...shape.slice(0, -2), N];
  if (b.ndim === 1) shape = shape.slice(0, -1);
  return tensor(out, { shape });
}

/** A direct float64 conv2d (no im2row, no GEMM), NCHW, with stride, padding, dilation and groups. */
function referenceConv2d(x: Tensor, w: Tensor, bias: Tensor | null, s: number, p: number, d: number, groups: number): Tensor {
  const [N, C, H, W] = x.shape as [number, number, number, number];
  const [O, Cg, kh, kw] = w.shape as [number, number, number, number];
  const OH = Math.floor((H + 2 * p - d * (kh - 1) - 1) / s) + 1;
  const OW = Math.floor((W + 2 * p - d * (kw - 1) - 1) / s) + 1;
  const xd = x.contiguous().data();
  const wd = w.contiguous().data();
  const bd = bias?.data();
  const out = new Float32Array(N * O * OH * OW);
  const Og = O / groups;
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < O; o++) {
      const g = Math.floor(o / Og);
      for (let oh = 0; oh < OH; oh++) {
        for (let ow = 0; ow < OW; ow++) {
          let acc = bd ? bd[o]! : 0;
          for (let c = 0; c < Cg; c++) {
            for (let i = 0; i < kh; i++) {
              for (let j = 0; j < kw; j++) {
                const h = oh * s - p + i * d;
                const v = ow * s - p + j * d;
                if (h < 0 || h >= H || v < 0 || v >= W) continue;
                acc += xd[((n * C + g * Cg + c) * H + h) * W + v]! * wd[((o * Cg + c) * kh + i) * kw + j]!;
              }
            }
          }
          out[((n * O + o) * OH + oh) * OW + ow] = acc;
        }
      }
    }
  }
  return tensor(out, { shape: [N, O, OH, OW] });
}

const matmulCases: [name: string, make: () => [Tensor, Tensor]][] = [
  ['2-D with ragged edges (37×53 @ 53×29)', () => [randn([37, 53]), randn([53, 29])]],
  ['batched (3×17×20 @ 3×20×9)', () => [randn([3, 17, 20]), randn([3, 20, 9])]],
  ['broadcast batch dims (2×1×5×6 @ 3×6×4)', () => [randn([2, 1, 5, 6]), randn([3, 6, 4])]],
  ['a 2-D right operand folded into rows (4×6×30 @ 30×11)', () => [randn([4, 6, 30]), randn([30, 11])]],
  ['transposed operands (a.t() @ b.t())', () => [randn([20, 13]).t(), randn([7, 20]).t()]],
  ['permuted and sliced operands', () => [randn([5, 6, 8]).permute([2, 0, 1]), ops.slice(randn([6, 9]), 1, 1, 9, 2)]],
  ['an operand expanded over the batch (stride 0)', () => [randn([4, 9, 12]), randn([1, 12, 10]).expand([4, 12, 10])]],
  ['1-D @ 2-D', () => [randn([20]), randn([20, 7])]],
  ['2-D @ 1-D', () => [randn([7, 20]), randn([20])]],
  ['1-D @ 1-D (a dot product)', () => [randn([33]), randn([33])]],
  ['1-D @ batched', () => [randn([6]), randn([2, 6, 3])]],
  ['empty rows (0×5 @ 5×3)', () => [randn([0, 5]), randn([5, 3])]],
  ['empty inner dim (4×0 @ 0×3 is zeros)', () => [randn([4, 0]), randn([0, 3])]],
  ['empty batch (0×2×3 @ 3×4)', () => [randn([0, 2, 3]), randn([3, 4])]],
];

for (const [name, make] of matmulCases) {
  test(`eager matmul on both kernels equals a float64 reference: ${name}`, (t) => {
    manualSeed(1);
    const [a, b] = make();
    const want = referenceMatmul(a, b);
    for (const kernel of KERNELS)
      close(
        t,
        withKernel(kernel, () => ops.matmul(a, b)),
        want,
        `${kernel}: ${name}`,
      );
  });
}

test('eager matmul past the threading threshold (two threads where there are two cores) equals the reference', (t) => {
  manualSeed(2);
  const a = randn([96, 300]);
  const b = randn([300, 200]).t().contiguous().t(); // a transposed layout, packed by the strided path
  close(
    t,
    withKernel('wasm', () => ops.matmul(a, b)),
    referenceMatmul(a, b),
    'threaded',
  );
});

test('eager linear (3-D input, bias) on both kernels equals x·Wᵀ + b', (t) => {
  manualSeed(3);
  const x = randn([2, 5, 24]);
  const w = randn([10, 24]);
  const b = randn([10]);
  const want = referenceMatmul(x, w.t()).add(b);
  for (const kernel of KERNELS)
    close(
      t,
      withKernel(kernel, () => F.linear(x, w, b)),
      want,
      `${kernel}: linear`,
    );
});

const convCases: [name: string, make: () => [Tensor, Tensor, Tensor | null], s: number, p: number, d: number, groups: number][] = [
  ['batched with bias, padding 1', () => [randn([3, 4, 9, 8]), randn([6, 4, 3, 3]), randn([6])], 1, 1, 1, 1],
  ['stride 2, dilation 2, groups 2', () => [randn([2, 4, 11, 10]), randn([6, 2, 3, 2]), null], 2, 1, 2, 2],
  ['a permuted (non-contiguous) input', () => [randn([2, 7, 7, 3]).permute([0, 3, 1, 2]), randn([5, 3, 2, 2]), randn([5])], 1, 0, 1, 1],
];

for (const [name, make, s, p, d, groups] of convCases) {
  test(`eager conv2d on both kernels equals a direct float64 convolution: ${name}`, (t) => {
    manualSeed(4);
    const [x, w, b] = make();
    const want = referenceConv2d(x, w, b, s, p, d, groups);
    for (const kernel of KERNELS) {
      close(
        t,
        withKernel(kernel, () => F.conv2d(x, w, b, { stride: s, padding: p, dilation: d, groups })),
        want,
        `${kernel}: ${name}`,
      );
    }
  });
}

test('eager conv2d of an unbatched [C, H, W] input equals the batched result', (t) => {
  manualSeed(5);
  const x = randn([3, 6, 6]);
  const w = randn([4, 3, 3, 3]);
  const want = referenceConv2d(x.unsqueeze(0), w, null, 1, 1, 1, 1).squeeze(0);
  for (const kernel of KERNELS)
    close(
      t,
      withKernel(kernel, () => F.conv2d(x, w, null, { padding: 1 })),
      want,
      kernel,
    );
});

function gradcheckBoth(t: ExecutionContext, name: string, fn: (...xs: Tensor[]) => Tensor, make: () => Tensor[]): void {
  for (const kernel of KERNELS) {
    manualSeed(6);
    const inputs = make().map((x) => x.requiresGrad_(true));
    t.true(
      withKernel(kernel, () => testing.gradcheck(fn, inputs, { name: `${name} (${kernel})` })),
      `${kernel}: ${name}`,
    );
  }
}

test('gradients through eager matmul (transposed, broadcast, 1-D operands) pass gradcheck on both kernels', (t) => {
  gradcheckBoth(
    t,
    'matmul transposed',
    (a, b) => ops.matmul(a!.t(), b!.t()),
    () => [randn([5, 4]), randn([3, 5])],
  );
  gradcheckBoth(
    t,
    'matmul broadcast',
    (a, b) => ops.matmul(a!, b!),
    () => [randn([2, 1, 3, 4]), randn([3, 4, 2])],
  );
  gradcheckBoth(
    t,
    'matmul 1-D',
    (a, b) => ops.matmul(a!, b!),
    () => [randn([4]), randn([2, 4, 3])],
  );
});

test('gradients through eager linear and conv2d pass gradcheck on both kernels', (t) => {
  gradcheckBoth(
    t,
    'linear',
    (x, w, b) => F.linear(x!, w!, b!),
    () => [randn([2, 3, 5]), randn([4, 5]), randn([4])],
  );
  gradcheckBoth(
    t,
    'conv2d',
    (x, w, b) => F.conv2d(x!, w!, b!, { stride: 2, padding: 1, groups: 2 }),
    () => [randn([2, 4, 5, 5]), randn([4, 2, 3, 3]), randn([4])],
  );
});

test("a Linear weight's gradient comes back contiguous [out, in], as PyTorch lays it out, and equals the plain-JS one", (t) => {
  manualSeed(7);
  const grads = KERNELS.map((kernel) =>
    withKernel(kernel, () => {
      manualSeed(8);
      const x = randn([16, 40]);
      const w = randn([24, 40]).requiresGrad_(true);
      F.linear(x, w).relu().sum().backward();
      t.true(w.grad!.isContiguous(), `${kernel}: weight gradient is a strided view`);
      return w.grad!;
    }),
  );
  close(t, grads[0]!, grads[1]!, 'wasm vs js weight gradient');
});

test('int32 operands are refused by matmul, linear and conv2d before any GEMM runs (DTypeError naming the op)', (t) => {
  const i = tensor(
    [
      [1, 2],
      [3, 4],
    ],
    { dtype: 'int32' },
  );
  t.throws(() => ops.matmul(i, i), { instanceOf: DTypeError, message: 'matmul: expected float32 tensors, got int32 and int32' });
  t.throws(() => F.linear(randn([2, 2]), i), {
    instanceOf: DTypeError,
    message: /^matmul: expected float32 tensors, got float32 and int32/,
  });
  const x = tensor(new Int32Array(16), { dtype: 'int32', shape: [1, 1, 4, 4] });
  t.throws(() => F.conv2d(x, randn([1, 1, 2, 2])), {
    instanceOf: DTypeError,
    message: /^conv2d: expected float32 input and weight, got int32/,
  });
});

test('bad shapes name the op and both shapes', (t) => {
  t.throws(() => ops.matmul(randn([2, 3]), randn([4, 5])), {
    instanceOf: ShapeError,
    message: 'matmul: shapes [2, 3] and [4, 5] cannot be multiplied (3 != 4)',
  });
  t.throws(() => ops.matmul(randn([2, 2, 3]), randn([3, 3, 4])), {
    instanceOf: ShapeError,
    message: /^matmul: shapes \[2, 2, 3\] and \[3, 3, 4\]/,
  });
  t.throws(() => F.linear(randn([3, 5]), randn([2, 4])), {
    instanceOf: ShapeError,
    message: 'linear: expected input [..., 4] for weight [2, 4], got [3, 5]',
  });
  t.throws(() => F.conv2d(randn([1, 3, 5, 5]), randn([2, 4, 3, 3])), { instanceOf: ShapeError, message: /^conv2d: weight \[2, 4, 3, 3\]/ });
});

test('an eager matmul starts the wasm GEMM (the wasm heap grows from nothing), so eager code gets the fast kernel', (t) => {
  mkdirSync('test/.tmp', { recursive: true });
  const script = 'test/.tmp/eager-gemm-heap.mts';
  writeFileSync(
    script,
    `import { randn } from '../../src/index.js';
import { gemmHeapBytes } from '../../src/kernels/gemm/index.js';
const before = gemmHeapBytes();
randn([64, 128]).matmul(randn([128, 64]));
process.stdout.write(JSON.stringify({ before, after: gemmHeapBytes() }));
`,
  );
  const r = spawnSync(process.execPath, ['--import', 'tsx', script], { encoding: 'utf8', timeout: 60_000 });
  t.is(r.status, 0, r.stderr);
  const { before, after } = JSON.parse(r.stdout) as { before: number; after: number };
  t.is(before, 0);
  t.true(after > 0, 'the eager matmul did not use the wasm GEMM');
});
