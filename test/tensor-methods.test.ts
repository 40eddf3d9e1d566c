import test from 'ava';
import { F, nn, ops, randn, tensor, Tensor, type ValuesIndices } from '../src/index.js';
import { trace } from '../src/jit.js';
import { TENSOR_METHODS } from '../src/runtime/tensor-methods.js';

/**
 * Tensor's op methods are installed from the op table (src/runtime/tensor-methods.ts) instead of written in
 * the class. These tests pin what that must not change: the set of methods (loaded graphs may call exactly
 * these), how they sit on the prototype, their types (API.md §1) and the calls they make.
 */

/** Tensor.prototype's methods before the move, in the order the class declared them. */
const METHODS_BEFORE =
  'constructor numel size isContiguous requiresGrad_ retainGrad _gradAccumulator backward detach detach_ data toArray item _writeFrom ' +
  'add sub mul div pow neg exp log sqrt abs tanh sigmoid relu clamp where eq ne lt le gt ge to float int bool clone contiguous ' +
  'sum mean max min argmax softmax logSoftmax matmul reshape view flatten transpose t permute unsqueeze squeeze expand expandAs ' +
  'narrow select index gather add_ sub_ mul_ div_ clamp_ fill_ zero_ copy_ toString';
/** Ops added since: `ops` takes them from their definitions; each method is one typed line in tensor-methods.ts. */
const ADDED_SINCE = 'sin cos exp2 mm addmm unbind scatterAdd sliceScatter selectScatter';
/** Ops that are no Tensor methods (PyTorch's fused backward ops, `torch.ops.aten.*_backward`). */
const OPS_ONLY_SINCE =
  'thresholdBackward tanhBackward sigmoidBackward geluBackward adaptiveAvgPool2dBackward avgPool2dBackward convolutionBackward ' +
  'embeddingBagBackward embeddingDenseBackward maxPool2dWithIndices maxPool2dWithIndicesBackward nativeBatchNorm nativeBatchNormBackward ' +
  'nativeDropout nativeDropoutBackward nativeLayerNorm nativeLayerNormBackward nllLossBackward nllLossForward nllLossWeightBackward asStrided';
/** Methods that became ops since (`t` was a method written with transpose). */
const NOW_OPS = 't';
/** In-place metadata methods (no ops of their own: `self` takes the view op's layout through `_setLayout`). */
const METADATA_METHODS = 't_ transpose_ unsqueeze_ _setLayout dim';

function ownMethods(): string[] {
  return Object.getOwnPropertyNames(Tensor.prototype).filter(
    (n) => typeof Object.getOwnPropertyDescriptor(Tensor.prototype, n)?.value === 'function',
  );
}

test('Tensor.prototype has the same methods as before the op methods moved out of the class', (t) => {
  t.deepEqual(ownMethods().sort(), `${METHODS_BEFORE} ${ADDED_SINCE} ${METADATA_METHODS}`.split(' ').sort());
});

test('installed methods sit on the prototype like class methods: non-enumerable, writable, named', (t) => {
  for (const name of Object.keys(TENSOR_METHODS)) {
    const d = Object.getOwnPropertyDescriptor(Tensor.prototype, name)!;
    t.false(d.enumerable, name);
    t.true(d.writable, name);
    t.is((d.value as { name: string }).name, name);
  }
  const x = tensor([1, 2]);
  t.false(Object.keys(x).includes('add'));
  const inherited: string[] = [];
  for (const k in x) inherited.push(k);
  t.false(inherited.includes('add'));
});

test('every method API.md §1 lists is a Tensor method, and each is also a function on ops', (t) => {
  const listed =
    'add sub mul div neg pow exp log sqrt abs tanh sigmoid relu matmul sum mean max min argmax reshape view flatten transpose permute ' +
    'unsqueeze squeeze expand narrow select index gather clamp where eq ne lt le gt ge softmax logSoftmax add_ mul_ zero_ copy_ fill_';
  const basics = 'numel toArray item data backward detach clone requiresGrad_';
  for (const name of `${listed} ${basics}`.split(' '))
    t.is(typeof (Tensor.prototype as unknown as Record<string, unknown>)[name], 'function', name);
  for (const name of listed.split(' ')) t.is(typeof (ops as unknown as Record<string, unknown>)[name], 'function', `ops.${name}`);
});

test('method calls type-check as the hand-written class methods did (API.md §1)', (t) => {
  // Compile-time half: tsc -p tsconfig.json checks these annotations; the run-time half checks the values.
  const x: Tensor = randn([2, 3]);
  const y: Tensor = randn([2, 3]);
  const results: Tensor[] = [
    x.add(y),
    x.add(1, 2),
    x.sub(y, 0.5),
    x.mul(2),
    x.div(y),
    x.pow(2),
    x.neg(),
    x.exp(),
    x.abs().log(),
    x.abs().sqrt(),
    x.tanh(),
    x.sigmoid(),
    x.relu(),
    x.clamp(0),
    x.clamp(null, 1),
    x.where(x.gt(0), 0),
    x.eq(y),
    x.ne(1),
    x.lt(y),
    x.le(0),
    x.gt(y),
    x.ge(0),
    x.to('int32'),
    x.float(),
    x.int(),
    x.bool(),
    x.clone(),
    x.contiguous(),
    x.sum(),
    x.sum(1, true),
    x.mean([0, 1]),
    x.max(),
    x.min(),
    x.argmax(),
    x.argmax(1, true),
    x.softmax(1),
    x.logSoftmax(-1),
    x.matmul(y.t()),
    x.reshape([3, 2]),
    x.view([6]),
    x.flatten(),
    x.transpose(0, 1),
    x.permute([1, 0]),
    x.unsqueeze(0),
    x.unsqueeze(0).squeeze(0),
    x.squeeze(),
    x.sum(0, true).expand([4, 3]),
    x.sum(0, true).expandAs(y),
    x.narrow(1, 0, 2),
    x.select(0, 1),
    x.index([0, '1:3']),
    x.gather(1, tensor([[0], [1]], { dtype: 'int32' })),
  ];
  t.true(results.every((r) => r instanceof Tensor));
  const byDim: ValuesIndices = x.max(1);
  const [values, indices] = x.min(1, true);
  t.deepEqual([byDim.values.shape, byDim.indices.dtype, values.shape, indices.dtype], [[2], 'int32', [2, 1], 'int32']);
  // In-place methods return their receiver's own type, as `this` did.
  const p = new nn.Parameter(randn([2, 3]), false);
  const same: nn.Parameter = p.add_(1).sub_(1).mul_(2).div_(2).clamp_(-1, 1).fill_(0).zero_().copy_(y);
  t.is(same, p);
  // A call the class did not allow is a type error still.
  // @ts-expect-error: matmul takes a tensor
  t.throws(() => x.matmul(2));
});

test('methods call their op with the arguments the hand-written methods passed (a runtime trace records them)', (t) => {
  const traced = trace((x: Tensor) => x.clamp(0).sum().add(x.unsqueeze(0).squeeze().t().sum(1).max()).add(x.argmax(), 2), [randn([2, 2])]);
  const calls = traced.code.split('\n').filter((l) => l.includes('ops.'));
  t.deepEqual(
    calls.map((l) => l.trim().replace(/^const \w+ = /, '')),
    [
      'ops.clamp(x, 0, null);', // the graph input is named after the parameter
      'ops.sum(clamp, null, undefined);',
      'ops.unsqueeze(x, 0);',
      'ops.squeeze(unsqueeze, null);',
      'ops.t(squeeze);', // t is an op of its own since issue 15
      'ops.sum(t, 1, undefined);',
      'ops.amax(sum_1);',
      'ops.add(sum, amax, undefined);',
      'ops.argmax(x, null, undefined);',
      'ops.add(add, argmax, 2);',
    ],
  );
});

/** `ops`'s names when src/ops.ts listed them by hand. */
const OPS_BEFORE =
  'add sub mul div neg pow exp log sqrt abs tanh sigmoid relu gelu clamp where eq ne lt le gt ge clone toDType matmul linear sum mean ' +
  'argmax softmax logSoftmax reshape view flatten transpose permute unsqueeze squeeze expand narrow split viewScatter select slice index ' +
  'gather indexSelect cat stack conv1d conv2d maxPool2d avgPool2d adaptiveAvgPool2d layerNorm batchNorm embedding embeddingBag dropout ' +
  'nllLoss crossEntropy mseLoss max min add_ mul_ zero_ fill_ copy_ contiguous detach registry';

test('ops and F are taken from the op table: the same names and the same functions as the hand-written lists', (t) => {
  t.deepEqual(Object.keys(ops).sort(), `${OPS_BEFORE} ${ADDED_SINCE} ${OPS_ONLY_SINCE} ${NOW_OPS}`.split(' ').sort());
  for (const [name, op] of ops.registry) {
    if (['amax', 'amin', 'max', 'min', 'dropoutMask'].includes(name)) continue; // parts of max/min/dropout
    t.is((ops as unknown as Record<string, unknown>)[name], op, `ops.${name}`);
  }
  t.is(ops.max(tensor([1, 3, 2])).item(), 3); // the dispatching max, not the registry's max along a dim
  t.true(Object.isFrozen(ops));
  t.is(F.conv2d, ops.conv2d);
  t.is(F.crossEntropy, ops.crossEntropy);
  t.is(F.relu, ops.relu);
  const fNames = Object.keys(F).sort();
  t.deepEqual(fNames, [
    'adaptiveAvgPool2d',
    'avgPool2d',
    'batchNorm',
    'conv1d',
    'conv2d',
    'crossEntropy',
    'dropout',
    'embedding',
    'embeddingBag',
    'gelu',
    'layerNorm',
    'linear',
    'logSoftmax',
    'maxPool2d',
    'mseLoss',
    'nllLoss',
    'relu',
    'sigmoid',
    'softmax',
    'tanh',
  ]);
});
