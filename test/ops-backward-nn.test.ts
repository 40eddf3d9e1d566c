import test from 'ava';
import { readFileSync } from 'node:fs';
import { DTypeError, F, IndexError, ShapeError, ValueError, manualSeed, ops, rand, randn, tensor, Tensor } from '../src/index.js';
import { setTraceDispatch, type TraceDispatch } from '../src/runtime/dispatch.js';
import type { Op } from '../src/runtime/op.js';
import { close, same } from './helpers.js';

/**
 * The native and backward ops that the nn, convolution and pooling gradient rules are written with
 * (issue 15, item 1), against PyTorch 1.13's ATen ops (scripts/golden_backward.py), and the rules calling them.
 */

interface EncodedTensor {
  t: { shape: number[]; dtype: 'float32' | 'int32' | 'bool'; data: number[] };
}
type Encoded = EncodedTensor | Encoded[] | number | string | boolean | null;
interface GoldenCase {
  name: string;
  op: string;
  args: Encoded[];
  out: Encoded;
  argsAfter?: Encoded[];
  /** The gradient of the output, and the gradient autograd gives each argument for it. */
  gradOut?: Encoded;
  grads?: Encoded[];
}

const CASES = JSON.parse(readFileSync(new URL('./fixtures/golden/backward-ops.json', import.meta.url), 'utf8')) as GoldenCase[];
const isTensor = (v: unknown): v is EncodedTensor => typeof v === 'object' && v !== null && !Array.isArray(v) && 't' in v;

function decode(v: Encoded): unknown {
  if (isTensor(v)) {
    const { shape, dtype, data } = v.t;
    if (dtype === 'float32') return tensor(Float32Array.from(data), { shape, dtype });
    if (dtype === 'int32') return tensor(Int32Array.from(data), { shape, dtype });
    return tensor(data.map(Boolean), { shape, dtype });
  }
  if (Array.isArray(v)) return v.map(decode);
  return v;
}

function compare(t: Parameters<typeof close>[0], got: unknown, want: Encoded, what: string): void {
  if (want === null) {
    t.is(got ?? null, null, `${what}: no output`);
    return;
  }
  if (Array.isArray(want)) {
    t.true(Array.isArray(got), `${what}: a list`);
    want.forEach((w, i) => compare(t, (got as unknown[])[i], w, `${what}[${i}]`));
    return;
  }
  const w = decode(want) as Tensor;
  t.true(got instanceof Tensor, `${what}: a tensor`);
  if (w.dtype === 'float32') close(t, got as Tensor, w, what);
  else same(t, got as Tensor, w);
}

for (const c of CASES) {
  test(`${c.name} matches PyTorch`, (t) => {
    const op = ops.registry.get(c.op) as Op<(...a: unknown[]) => unknown> | undefined;
    t.truthy(op, `kiln has ${c.op}`);
    const args = c.args.map(decode);
    compare(t, op!(...args), c.out, c.op);
    c.argsAfter?.forEach((after, i) => {
      if (after !== null) compare(t, args[i], after, `${c.op} argument ${i} after the call`);
    });
    if (c.gradOut !== undefined) {
      const inputs = c.args.map(decode).map((a) => (a instanceof Tensor && a.dtype === 'float32' ? a.requiresGrad_(true) : a));
      (op!(...inputs) as Tensor).backward(decode(c.gradOut) as Tensor);
      c.grads!.forEach((want, i) => compare(t, (inputs[i] as Tensor).grad, want, `${c.op} gradient of argument ${i}`));
    }
  });
}

/** Records the names of the ops called while it is active (running each as usual). */
function opsCalledBy(fn: () => void): string[] {
  const names: string[] = [];
  const recorder: TraceDispatch = {
    symbolic: false,
    recordsEveryOp: true,
    isTraced: () => false,
    callOp(op, args, kwargs) {
      const o = op as unknown as Op<(...a: unknown[]) => unknown>;
      names.push(o.opName ?? o.name);
      const prev = setTraceDispatch(null);
      try {
        return o.invoke ? o.invoke(args, kwargs) : (o as (...a: unknown[]) => unknown)(...args, ...(kwargs ? [kwargs] : []));
      } finally {
        setTraceDispatch(prev);
      }
    },
  };
  const prev = setTraceDispatch(recorder);
  try {
    fn();
  } finally {
    setTraceDispatch(prev);
  }
  return names;
}

test('the backward of conv2d, maxPool2d, batchNorm, layerNorm, dropout, embedding and crossEntropy is their named backward op', (t) => {
  manualSeed(0);
  const x = randn([2, 3, 6, 6]).requiresGrad_(true);
  const w = randn([4, 3, 3, 3]).requiresGrad_(true);
  const y = F.conv2d(x, w, null, 1, 1);
  const z = F.maxPool2d(F.batchNorm(y, null, null, null, null, true), 2);
  const loss = F.crossEntropy(F.dropout(F.layerNorm(z.flatten(1), [36]), 0.2), tensor([1, 3], { dtype: 'int32' }));
  const backward = opsCalledBy(() => loss.backward());
  for (const name of [
    'convolutionBackward',
    'maxPool2dWithIndicesBackward',
    'nativeBatchNormBackward',
    'nativeLayerNormBackward',
    'nativeDropoutBackward',
    'nllLossBackward',
  ]) {
    t.true(backward.includes(name), `${name} in ${backward.join(', ')}`);
  }
  const e = randn([4, 2]).requiresGrad_(true);
  t.deepEqual(
    opsCalledBy(() =>
      F.embedding(tensor([0, 3], { dtype: 'int32' }), e)
        .sum()
        .backward(),
    ).includes('embeddingDenseBackward'),
    true,
  );
});

test('conv2d computes only the gradients its inputs need (convolutionBackward output mask)', (t) => {
  const x = randn([1, 2, 4, 4]);
  const w = randn([3, 2, 3, 3]).requiresGrad_(true);
  const b = randn([3]);
  F.conv2d(x, w, b).sum().backward();
  t.deepEqual(w.grad!.shape, [3, 2, 3, 3]);
  t.is(x.grad, null);
  const [gi, gw, gb] = ops.convolutionBackward(randn([1, 3, 2, 2]), x, w.detach(), [3], 1, 0, 1, false, 0, 1, [false, true, false]);
  t.is(gi, null);
  t.is(gb, null);
  t.deepEqual(gw!.shape, [3, 2, 3, 3]);
});

test('dropout draws the same mask as nativeDropout and as eager dropout always did (rand(shape) < 1 - p)', (t) => {
  const x = randn([5, 7]);
  manualSeed(11);
  const out = F.dropout(x, 0.3);
  manualSeed(11);
  const [native, mask] = ops.nativeDropout(x, 0.3, true);
  manualSeed(11);
  const keep = rand([5, 7]).lt(0.7);
  same(t, mask!, keep);
  same(t, native!, out);
  // the value the eager dropout always computed: x · (1 / (1 - p)) where kept, 0 elsewhere
  const want = Float32Array.from(x.data(), (v, i) => (keep.data()[i] ? v * (1 / 0.7) : 0));
  t.deepEqual(Array.from(out.data()), Array.from(want));
});

test('nativeDropout outside training returns a copy and an all-true mask', (t) => {
  const x = randn([3]);
  const [y, mask] = ops.nativeDropout(x, 0.5, false);
  same(t, y!, x);
  t.not(y, x);
  t.deepEqual(Array.from(mask!.data()), [1, 1, 1]);
});

test('batchNorm in training updates the running statistics exactly as before (unbiased running variance)', (t) => {
  manualSeed(2);
  const x = randn([4, 3, 5]);
  const rm = randn([3]);
  const rv = rand([3]).add(0.5);
  const [wantMean, wantVar] = [rm.clone(), rv.clone()];
  F.batchNorm(x, rm, rv, null, null, true, 0.2);
  // the update eager batchNorm always made, with the same ops
  const mu = x.mean([0, 2], true);
  const centered = x.sub(mu);
  const variance = centered.mul(centered).mean([0, 2], true);
  wantMean.mul_(0.8).add_(mu.reshape([3]), 0.2);
  wantVar.mul_(0.8).add_(variance.reshape([3]).mul(20 / 19), 0.2);
  same(t, rm, wantMean);
  same(t, rv, wantVar);
});

test('batchNorm in evaluation mode without running statistics normalises with the batch and updates nothing', (t) => {
  const x = randn([4, 2, 3]);
  const y = F.batchNorm(x, null, null, null, null, false);
  const [z] = ops.nativeBatchNorm(x, null, null, null, null, true, 0.1, 1e-5);
  same(t, y, z!);
});

test('crossEntropy keeps its class-weight gradient (nllLossWeightBackward)', (t) => {
  const x = randn([3, 4]);
  const w = rand([4]).add(0.5).requiresGrad_(true);
  F.crossEntropy(x, tensor([0, 3, 1], { dtype: 'int32' }), w).backward();
  t.deepEqual(w.grad!.shape, [4]);
  t.true(Array.from(w.grad!.data()).some((v) => v !== 0));
});

// ---- bad input: KilnErrors naming the op and the shapes ----

test('convolutionBackward refuses a gradOutput of the wrong shape, a bad mask and transposed convolutions', (t) => {
  const x = randn([1, 2, 5, 5]);
  const w = randn([3, 2, 3, 3]);
  t.throws(() => ops.convolutionBackward(randn([1, 3, 4, 4]), x, w, null, 1, 0, 1, false, 0, 1, [true, true, false]), {
    instanceOf: ShapeError,
    message: 'convolutionBackward: gradOutput must have shape [1, 3, 3, 3] for input [1, 2, 5, 5], got [1, 3, 4, 4]',
  });
  t.throws(() => ops.convolutionBackward(randn([1, 3, 3, 3]), x, w, null, 1, 0, 1, false, 0, 1, [true, true]), {
    instanceOf: ValueError,
    message: 'convolutionBackward: outputMask must be 3 booleans [input, weight, bias], got [true,true]',
  });
  t.throws(() => ops.convolutionBackward(randn([1, 3, 3, 3]), x, w, null, 1, 0, 1, false, 0, 1, [true, true, true]), {
    instanceOf: ValueError,
    message: 'convolutionBackward: outputMask asks for a bias gradient but biasSizes is null',
  });
  t.throws(() => ops.convolutionBackward(randn([1, 3, 3, 3]), x, w, null, 1, 0, 1, true, 0, 1, [true, true, false]), {
    instanceOf: ValueError,
    message: 'convolutionBackward: transposed convolutions are not supported',
  });
  t.throws(() => ops.convolutionBackward(randn([1, 3, 3, 3]), x, randn([3, 4, 3, 3]), null, 1, 0, 1, false, 0, 1, [true, true, false]), {
    instanceOf: ShapeError,
    message: /^convolutionBackward: weight \[3, 4, 3, 3\] expects 4 input channels/,
  });
});

test('pooling backward ops refuse mismatched gradOutput and indices', (t) => {
  const x = randn([1, 2, 5, 5]);
  const [, idx] = ops.maxPool2dWithIndices(x, 3, 2, 1);
  t.throws(() => ops.maxPool2dWithIndicesBackward(randn([1, 2, 2, 2]), x, 3, 2, 1, 1, false, idx!), {
    instanceOf: ShapeError,
    message: 'maxPool2dWithIndicesBackward: gradOutput must have shape [1, 2, 3, 3] for input [1, 2, 5, 5], got [1, 2, 2, 2]',
  });
  t.throws(() => ops.maxPool2dWithIndicesBackward(randn([1, 2, 3, 3]), x, 3, 2, 1, 1, false, idx!.float()), {
    instanceOf: DTypeError,
    message: 'maxPool2dWithIndicesBackward: indices must be an int32 tensor, got float32',
  });
  t.throws(() => ops.maxPool2dWithIndicesBackward(randn([1, 2, 3, 3]), x, 3, 2, 1, 1, false, idx!.add(100)), {
    instanceOf: IndexError,
    message: /^maxPool2dWithIndicesBackward: index 1\d\d is out of range for a 5×5 plane$/,
  });
  t.throws(() => ops.avgPool2dBackward(randn([2, 3, 3]), x, 3, 2, 1, false, true, null), {
    instanceOf: ShapeError,
    message: 'avgPool2dBackward: gradOutput must have shape [1, 2, 3, 3] for input [1, 2, 5, 5], got [2, 3, 3]',
  });
  t.throws(() => ops.adaptiveAvgPool2dBackward(randn([1, 3, 2, 2]), x), {
    instanceOf: ShapeError,
    message: 'adaptiveAvgPool2dBackward: gradOutput [1, 3, 2, 2] must have the leading dims of input [1, 2, 5, 5]',
  });
});

test('normalisation backward ops refuse statistics and masks of the wrong shape', (t) => {
  const x = randn([2, 3, 4]);
  const [, mean, rstd] = ops.nativeLayerNorm(x, [4], null, null, 1e-5);
  t.throws(() => ops.nativeLayerNormBackward(randn([2, 3, 4]), x, [4], mean!.reshape([6]), rstd!, null, null, [true, false, false]), {
    instanceOf: ShapeError,
    message: 'nativeLayerNormBackward: mean must have shape [2, 3, 1], got [6]',
  });
  t.throws(() => ops.nativeLayerNormBackward(randn([2, 3]), x, [4], mean!, rstd!, null, null, [true, false, false]), {
    instanceOf: ShapeError,
    message: 'nativeLayerNormBackward: gradOutput must have shape [2, 3, 4] for input [2, 3, 4], got [2, 3]',
  });
  t.throws(() => ops.nativeBatchNormBackward(randn([2, 3, 4]), x, null, null, null, null, null, false, 1e-5, [true, true, true]), {
    instanceOf: ValueError,
    message: 'nativeBatchNormBackward: runningMean and runningVar must be given when training=false',
  });
  t.throws(
    () => ops.nativeBatchNormBackward(randn([2, 3, 4]), x, null, null, null, randn([4]), randn([3]), true, 1e-5, [true, true, true]),
    {
      instanceOf: ShapeError,
      message: 'nativeBatchNormBackward: saveMean must have shape [3] for input [2, 3, 4], got [4]',
    },
  );
  t.throws(() => ops.nativeBatchNorm(x, null, null, null, null, false, 0.1, 1e-5), {
    instanceOf: ValueError,
    message: 'nativeBatchNorm: runningMean and runningVar must be defined in evaluation mode',
  });
});

test('dropout, embedding and loss backward ops refuse bad masks, indices and gradients', (t) => {
  t.throws(() => ops.nativeDropoutBackward(randn([3]), randn([3]), 2), {
    instanceOf: DTypeError,
    message: 'nativeDropoutBackward: mask must be a bool tensor, got float32',
  });
  t.throws(() => ops.nativeDropoutBackward(randn([4]), rand([3]).lt(0.5), 2), {
    instanceOf: ShapeError,
    message: 'nativeDropoutBackward: gradOutput must have shape [3] for mask [3], got [4]',
  });
  const idx = tensor([0, 4], { dtype: 'int32' });
  t.throws(() => ops.embeddingDenseBackward(randn([2, 3]), idx, 4), {
    instanceOf: IndexError,
    message: 'embeddingDenseBackward: index 4 is out of range for an embedding table of 4 rows',
  });
  t.throws(() => ops.embeddingDenseBackward(randn([3, 3]), tensor([0, 1], { dtype: 'int32' }), 4), {
    instanceOf: ShapeError,
    message: 'embeddingDenseBackward: gradOutput must have shape [2, dim] for indices [2], got [3, 3]',
  });
  const x = randn([3, 4]);
  const target = tensor([0, 1, 3], { dtype: 'int32' });
  const [, total] = ops.nllLossForward(x, target, null, 'mean', -100);
  t.throws(() => ops.nllLossBackward(randn([3]), x, target, null, 'mean', -100, total!), {
    instanceOf: ShapeError,
    message: "nllLossBackward: gradOutput must have shape [] for input [3, 4] with reduction 'mean', got [3]",
  });
  t.throws(() => ops.nllLossForward(x, tensor([0, 1, 4], { dtype: 'int32' }), null, 'mean', -100), {
    instanceOf: IndexError,
    message: 'nllLossForward: target 4 is out of bounds for 4 classes',
  });
  t.throws(
    () =>
      ops.embeddingBagBackward(
        randn([3, 2]),
        tensor([0, 1], { dtype: 'int32' }),
        randn([3, 2]),
        tensor([0, 1], { dtype: 'int32' }),
        'sum',
        null,
        [true, false],
      ),
    {
      instanceOf: ShapeError,
      message: 'embeddingBagBackward: gradOutput must have shape [2, 2] for 2 bags of a [3, 2] table, got [3, 2]',
    },
  );
});
