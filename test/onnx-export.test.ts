import test, { type ExecutionContext } from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import onnxProto from 'onnx-proto';
import { Dim, ExportError, exportProgram, onnxBytes, toOnnx, type ExportedProgram } from '../src/export/index.js';
import { ValueError } from '../src/errors.js';
import { Graph, GraphModule, ShapeProp, getitem, symbolicTrace } from '../src/fx.js';
import { F, manualSeed, nn, noGrad, ops, rand, randn, tensor, type Tensor } from '../src/index.js';
import { Parameter } from '../src/runtime/nn/parameter.js';
import { OPS } from '../src/runtime/op.js';
import { ONNX_OPS } from '../src/export/onnx/op-table.js';

/**
 * toOnnx (kiln/export): the exported models run in onnxruntime-node (whose loader checks the model against the ONNX
 * schema and infers its shapes) and give kiln's outputs within 1e-4, at two batch sizes through one dynamic batch dim;
 * ops with no ONNX mapping and bad options are refused with errors that name them.
 */

const { onnx } = onnxProto;
const TOL = 1e-4;

/** Integer ids uniform in [0, high), int32 as kiln's index tensors. */
const randint = (high: number, shape: number[]): Tensor => rand(shape).mul(high).to('int32');

test.beforeEach(() => manualSeed(0));

async function runOrt(bytes: Uint8Array, feeds: Record<string, Tensor>): Promise<ort.Tensor[]> {
  const session = await ort.InferenceSession.create(bytes);
  const inputs = Object.fromEntries(
    Object.entries(feeds).map(([k, v]) => [
      k,
      v.dtype === 'int32'
        ? new ort.Tensor('int32', v.data() as Int32Array, [...v.shape])
        : new ort.Tensor('float32', v.data() as Float32Array, [...v.shape]),
    ]),
  );
  const out = await session.run(inputs);
  const results = session.outputNames.map((n) => out[n]!);
  await session.release();
  return results;
}

/** The largest |onnxruntime − kiln| over the output, after checking the shapes agree. */
function maxAbsDiff(t: ExecutionContext, got: ort.Tensor, want: Tensor, what: string): number {
  t.deepEqual([...got.dims], [...want.shape], `${what}: shape`);
  const g = got.data as Float32Array;
  const w = want.data();
  let err = 0;
  for (let i = 0; i < w.length; i++) err = Math.max(err, Math.abs(g[i]! - w[i]!));
  return err;
}

/** Export once with a dynamic batch dim, then compare onnxruntime with kiln at each batch size. */
async function checkAgainstKiln(
  t: ExecutionContext,
  model: nn.Module,
  example: (batch: number) => Tensor,
  batches: readonly number[],
  options: { decompose?: boolean; opset?: number } = {},
): Promise<ExportedProgram> {
  const batch = Dim('batch', { min: 1, max: 64 });
  let ep = exportProgram(model, [example(3)], { dynamicShapes: [{ 0: batch }] });
  if (options.decompose) ep = ep.runDecompositions();
  const bytes = onnxBytes(ep, options.opset === undefined ? {} : { opset: options.opset });
  const inputName = ep.graphSignature.inputSpecs.find((s) => s.kind === 'USER_INPUT')!.name;
  for (const n of batches) {
    const x = example(n);
    const want = noGrad(() => model.call(x) as Tensor);
    const [got] = await runOrt(bytes, { [inputName]: x });
    const err = maxAbsDiff(t, got!, want, `batch ${n}`);
    t.true(err <= TOL, `batch ${n}: max abs error ${err}`);
  }
  return ep;
}

function mlp(): nn.Module {
  return new nn.Sequential(new nn.Linear(16, 32), new nn.ReLU(), new nn.Linear(32, 32), new nn.ReLU(), new nn.Linear(32, 5)).eval();
}

function cnn(): nn.Module {
  const m = new nn.Sequential(
    new nn.Conv2d(3, 8, 3, { padding: 1 }),
    new nn.BatchNorm2d(8),
    new nn.ReLU(),
    new nn.MaxPool2d(2),
    new nn.Conv2d(8, 8, 3, { stride: 1 }),
    new nn.BatchNorm2d(8),
    new nn.ReLU(),
    new nn.AvgPool2d(2),
    new nn.AdaptiveAvgPool2d(1),
    new nn.Flatten(),
    new nn.Linear(8, 4),
  );
  // running statistics away from 0 and 1, so that eval-mode batch norm is not the identity
  noGrad(() => {
    for (const [name, b] of m.namedBuffers()) {
      if (name.endsWith('running_mean')) b.copy_(randn(b.shape as number[]).mul(0.2));
      if (name.endsWith('running_var'))
        b.copy_(
          randn(b.shape as number[])
            .abs()
            .add(0.5),
        );
    }
  });
  return m.eval();
}

class EmbeddingModel extends nn.Module {
  emb = new nn.Embedding(50, 12);
  fc = new nn.Linear(12, 3);
  override forward(ids: Tensor): Tensor {
    return this.fc.call(this.emb.call(ids).mean(1).relu());
  }
}

class LayerNormGeluBlock extends nn.Module {
  ln = new nn.LayerNorm(16);
  fc1 = new nn.Linear(16, 64);
  act = new nn.GELU();
  fc2 = new nn.Linear(64, 16);
  override forward(x: Tensor): Tensor {
    return x.add(this.fc2.call(this.act.call(this.fc1.call(this.ln.call(x)))));
  }
}

test('an MLP runs in onnxruntime with kiln’s outputs at batch 2 and 9', async (t) => {
  await checkAgainstKiln(t, mlp(), (n) => randn([n, 16]), [2, 9]);
});

test('the dynamic batch dim is a dim_param named after its Dim; lifted parameters are initializers named by state-dict key', (t) => {
  const model = mlp();
  const ep = exportProgram(model, [randn([4, 16])], { dynamicShapes: [{ 0: Dim('batch', { max: 64 }) }] });
  for (const [route, program] of [
    ['exported', ep],
    ['decomposed', ep.runDecompositions()],
  ] as const) {
    const graph = onnx.ModelProto.decode(onnxBytes(program)).graph!;
    const input = graph.input![0]!;
    t.is(input.name, 'input', route);
    const dims = input.type!.tensorType!.shape!.dim!;
    t.is(dims[0]!.dimParam, 'batch', route);
    t.is(Number(dims[1]!.dimValue), 16, route);
    t.deepEqual(
      graph.initializer!.map((i) => i.name!).filter((n) => !n.startsWith('const') && !n.startsWith('ints')),
      Object.keys(model.stateDict()),
      route,
    );
  }
  t.is(onnx.ModelProto.decode(onnxBytes(ep)).opsetImport[0]!.version.toString(), '17');
});

test('a derived dim becomes a dim_param with its expression', (t) => {
  class Pair extends nn.Module {
    override forward(a: Tensor, b: Tensor): Tensor {
      return a.sum(0).add(b.sum(0));
    }
  }
  const n = Dim('n', { max: 32 });
  const ep = exportProgram(new Pair(), [randn([3, 2]), randn([7, 2])], { dynamicShapes: [{ 0: n }, { 0: n.mul(2).add(1) }] });
  const graph = onnx.ModelProto.decode(onnxBytes(ep)).graph!;
  t.deepEqual(
    graph.input!.map((i) => i.type!.tensorType!.shape!.dim![0]!.dimParam),
    ['n', '2*n + 1'],
  );
});

test('a CNN with BatchNorm in eval mode (conv, batch norm, relu, max/avg/adaptive pooling, flatten, linear) matches kiln', async (t) => {
  await checkAgainstKiln(t, cnn(), (n) => randn([n, 3, 12, 12]), [2, 5]);
});

test('the same CNN after runDecompositions() (batch norm as arithmetic, adaptive pooling as a mean) matches kiln', async (t) => {
  await checkAgainstKiln(t, cnn(), (n) => randn([n, 3, 12, 12]), [1, 4], { decompose: true });
});

test('an embedding model with int32 ids matches kiln', async (t) => {
  await checkAgainstKiln(t, new EmbeddingModel().eval(), (n) => randint(50, [n, 7]), [2, 6]);
});

test('a LayerNorm/GELU block matches kiln (LayerNormalization at opset 17)', async (t) => {
  await checkAgainstKiln(t, new LayerNormGeluBlock().eval(), (n) => randn([n, 5, 16]), [2, 4]);
});

test('the LayerNorm/GELU block at opset 13 (layer norm written out) and after runDecompositions matches kiln', async (t) => {
  await checkAgainstKiln(t, new LayerNormGeluBlock().eval(), (n) => randn([n, 5, 16]), [2, 4], { opset: 13 });
  await checkAgainstKiln(t, new LayerNormGeluBlock().eval(), (n) => randn([n, 5, 16]), [2, 4], { decompose: true });
});

test('toOnnx writes the model to the path and returns its bytes', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-onnx-'));
  try {
    const model = mlp();
    const ep = exportProgram(model, [randn([3, 16])], { dynamicShapes: [{ 0: Dim('batch') }] });
    const path = join(dir, 'mlp.onnx');
    const bytes = toOnnx(ep, path);
    t.deepEqual(new Uint8Array(readFileSync(path)), bytes);
    const x = randn([6, 16]);
    const [got] = await runOrt(readFileSync(path), { input: x });
    t.true(
      maxAbsDiff(
        t,
        got!,
        noGrad(() => model.call(x) as Tensor),
        'file',
      ) <= TOL,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an fx GraphModule with submodule calls and ShapeProp metadata exports with its static shapes', async (t) => {
  const model = mlp();
  const gm = symbolicTrace(model);
  const x = randn([4, 16]);
  new ShapeProp(gm).propagate(x);
  const bytes = onnxBytes(gm);
  const [got] = await runOrt(bytes, { input: x });
  t.true(
    maxAbsDiff(
      t,
      got!,
      noGrad(() => model.call(x) as Tensor),
      'GraphModule',
    ) <= TOL,
  );
  const dims = onnx.ModelProto.decode(bytes).graph!.input![0]!.type!.tensorType!.shape!.dim!.map((d) => Number(d.dimValue));
  t.deepEqual(dims, [4, 16]);
});

class AttrModel extends nn.Module {
  w = new Parameter(randn([6, 3]));
  override forward(x: Tensor): Tensor {
    return x.matmul(this.w).tanh().add(1);
  }
}

test('an op-level GraphModule: get_attr parameters become initializers, method calls map to their ops', async (t) => {
  const model = new AttrModel();
  const gm = symbolicTrace(model);
  t.true(gm.graph.nodes.some((n) => n.op === 'get_attr'));
  t.true(gm.graph.nodes.some((n) => n.op === 'call_method'));
  const x = randn([5, 6]);
  new ShapeProp(gm).propagate(x);
  const bytes = onnxBytes(gm);
  t.true(onnx.ModelProto.decode(bytes).graph!.initializer!.some((i) => i.name === 'w'));
  const [got] = await runOrt(bytes, { x });
  t.true(
    maxAbsDiff(
      t,
      got!,
      noGrad(() => model.call(x) as Tensor),
      'op-level GraphModule',
    ) <= TOL,
  );
});

test('a GraphModule without input shapes is refused with what to do', (t) => {
  const gm = symbolicTrace(mlp());
  t.throws(() => onnxBytes(gm), { instanceOf: ExportError, message: /GraphModule input 'input' has no tensorMeta; run new ShapeProp/ });
});

class BagModel extends nn.Module {
  bag = new nn.EmbeddingBag(10, 4);
  override forward(ids: Tensor): Tensor {
    return this.bag.call(ids);
  }
}

test('an op with no ONNX mapping is refused naming the op, the opset, the node and the reason', (t) => {
  const ep = exportProgram(new BagModel(), [randint(10, [2, 3])]);
  const node = ep.graphModule.graph.nodes.find((n) => n.op === 'call_function')!.name;
  t.throws(() => onnxBytes(ep), {
    instanceOf: ExportError,
    message: `toOnnx: node '${node}': cannot export op embeddingBag to ONNX (opset 17): bags by offsets are not mapped to ONNX yet (use embedding and a reduction)`,
  });
});

test('batch norm in training mode is refused: an inference graph has batch statistics and no state to update', (t) => {
  const m = new nn.Sequential(new nn.Conv2d(1, 2, 3), new nn.BatchNorm2d(2));
  const ep = exportProgram(m, [randn([2, 1, 5, 5])]);
  t.throws(() => onnxBytes(ep), {
    instanceOf: ExportError,
    message:
      /cannot export op nativeBatchNorm to ONNX \(opset 17\): batch norm in training mode .*call \.eval\(\) on the model before exporting/,
  });
});

test('reading an output that the export does not write (max-pool indices) is refused naming the node', (t) => {
  const g = new Graph();
  const x = g.placeholder('x');
  const pooled = g.callFunction(ops.maxPool2dWithIndices as never, [x, 2]);
  g.output(g.callFunction(getitem as never, [pooled, 1]));
  const gm = new GraphModule({}, g);
  new ShapeProp(gm).propagate(randn([1, 1, 4, 4]));
  t.throws(() => onnxBytes(gm), {
    instanceOf: ExportError,
    message:
      /node 'getitem': cannot export op getitem to ONNX \(opset 17\): it reads output 1, which is not exported: ONNX's MaxPool indices/,
  });
});

test('every op of the op table has an ONNX emitter or a stated reason it is not exportable', (t) => {
  for (const name of OPS.keys()) {
    const mapping = (ONNX_OPS as Record<string, { emit?: unknown; notExportable?: string } | undefined>)[name];
    t.truthy(mapping, `${name}: no ONNX entry`);
    t.true(typeof mapping?.emit === 'function' || (typeof mapping?.notExportable === 'string' && mapping.notExportable.length > 10), name);
  }
});

test('a bad opset is a ValueError naming the supported range', (t) => {
  const ep = exportProgram(mlp(), [randn([2, 16])]);
  for (const opset of [12, 19, 17.5, Number.NaN]) {
    t.throws(() => onnxBytes(ep, { opset }), {
      instanceOf: ValueError,
      message: /toOnnx: opset .* is not supported \(kiln writes ai\.onnx opsets 13 to 18\)/,
    });
  }
  t.throws(() => onnxBytes({} as ExportedProgram), {
    instanceOf: ValueError,
    message: /expected an ExportedProgram or a GraphModule, got Object/,
  });
});

test('every exported opset from 13 to 18 loads in onnxruntime', async (t) => {
  const model = new LayerNormGeluBlock().eval();
  const x = randn([2, 5, 16]);
  const ep = exportProgram(model, [x]);
  const want = noGrad(() => model.call(x) as Tensor);
  for (let opset = 13; opset <= 18; opset++) {
    const [got] = await runOrt(onnxBytes(ep, { opset }), { x });
    t.true(maxAbsDiff(t, got!, want, `opset ${opset}`) <= TOL, `opset ${opset}`);
  }
});

/** A module whose forward is `f` on one batch-dynamic input `x` (and an optional fixed second input). */
function fnModule(f: (x: Tensor) => Tensor): nn.Module {
  return new (class extends nn.Module {
    override forward(x: Tensor): Tensor {
      return f(x);
    }
  })();
}

/** Fixed weights the cases close over (lifted as constants by the export). */
const conv1dWeight = (() => {
  manualSeed(7);
  return randn([5, 4, 3]);
})();
const pickColumns = tensor([5, 0, 2], { dtype: 'int32' });

/** One op (or a short chain) per case, on an input [batch, 4, 6], so each emitter is checked by onnxruntime. */
const OP_CASES: [string, (x: Tensor) => Tensor][] = [
  ['sub with alpha, div, pow, neg', (x) => ops.pow(ops.div(ops.sub(x, 0.5, 2), 3).neg(), 2)],
  ['exp, log, sqrt, abs, sin, cos, exp2', (x) => x.abs().add(1).log().sqrt().add(x.sin()).add(x.cos()).add(ops.exp2(x)).add(x.exp())],
  ['sigmoid, tanh, gelu (tanh form)', (x) => F.gelu(x.sigmoid().add(x.tanh()), 'tanh')],
  ['clamp, where, comparisons', (x) => ops.where(ops.gt(x, 0.1), x.clamp(-0.5, 0.5), ops.mul(x, ops.le(x, -0.2).to('float32')))],
  [
    'eq, ne, lt, ge as float',
    (x) => ops.eq(x, x).to('float32').add(ops.ne(x, 0).to('float32')).add(ops.lt(x, 0).to('float32')).add(ops.ge(x, 0).to('float32')),
  ],
  ['softmax and logSoftmax', (x) => ops.softmax(x, 2).add(ops.logSoftmax(x, 1))],
  ['sum, mean with keepdim', (x) => x.sub(ops.sum(x, [1], true)).add(ops.mean(x, 2, true))],
  ['amax, amin broadcast back', (x) => x.sub(ops.max(x)).add(ops.min(x))],
  ['max and min along a dim (values)', (x) => ops.max(x, 2).values.add(ops.min(x, 1, true).values.sum())],
  ['argmax along a dim, as float', (x) => ops.argmax(x, 2).to('float32')],
  [
    'transpose, permute, t of a slice',
    (x) =>
      x
        .transpose(1, 2)
        .permute([0, 2, 1])
        .add(ops.t(ops.select(x, 0, 0)).sum()),
  ],
  ['unsqueeze, squeeze, expand', (x) => ops.squeeze(ops.unsqueeze(x, 1), 1).add(ops.expand(ops.slice(x, 2, 0, 1), [-1, -1, 6]))],
  [
    'slice with step, narrow, select',
    (x) =>
      ops
        .slice(x, 2, 1, null, 2)
        .add(ops.narrow(x, 2, 0, 3))
        .add(ops.select(x, 2, -1).unsqueeze(2)),
  ],
  ['split and unbind along static dims', (x) => ops.split(x, 2, 2)[1]!.add(ops.unbind(x, 1)[3]!.unsqueeze(1).narrow(2, 0, 2))],
  ['cat and stack', (x) => ops.cat([x, x.mul(2)], 2).add(ops.stack([x, x.neg()], 3).sum(3).sum(2, true))],
  ['gather and indexSelect with int32 indices', (x) => ops.indexSelect(x, 2, pickColumns).add(ops.gather(x, 2, ops.argmax(x, 2, true)))],
  ['reshape with the batch size, flatten of the middle', (x) => x.reshape([x.shape[0], 24]).reshape([-1, 6, 4]).flatten(1, 2)],
  ['conv1d with padding "same" and dilation', (x) => F.conv1d(x, conv1dWeight, null, { padding: 'same', dilation: 2 })],
  ['mseLoss (mean)', (x) => F.mseLoss(x, x.mul(0.5))],
  ['crossEntropy over 4 classes, targets from argmax', (x) => F.crossEntropy(x, ops.argmax(x.neg(), 1))],
  ['nllLoss summed, with ignoreIndex', (x) => F.nllLoss(ops.logSoftmax(x, 1), ops.argmax(x, 1), { reduction: 'sum', ignoreIndex: 2 })],
];

const conv2dWeight = (() => {
  manualSeed(8);
  return randn([4, 2, 3, 3]);
})();
const gemmWeight = (() => {
  manualSeed(9);
  return randn([6, 5]);
})();
const gemmBias = randn([1, 5]);

/** Cases on an image batch [batch, 4, 6, 6]. */
const IMAGE_CASES: [string, (x: Tensor) => Tensor][] = [
  ['conv2d with stride 2 and groups 2', (x) => F.conv2d(x, conv2dWeight, null, { stride: 2, padding: 1, groups: 2 })],
  ['adaptive average pooling 6x6 to 2x3', (x) => F.adaptiveAvgPool2d(x, [2, 3])],
  [
    'average pooling with padding, ceil mode, padding not counted',
    (x) => F.avgPool2d(x, 3, { stride: 2, padding: 1, ceilMode: true, countIncludePad: false }),
  ],
  ['max pooling 3x3, stride 2, ceil mode', (x) => F.maxPool2d(x, 3, { stride: 2, ceilMode: true })],
  ['layer norm over two dims without weight', (x) => F.layerNorm(x, [6, 6])],
  [
    'addmm and mm on the flattened batch',
    (x) => ops.addmm(gemmBias, x.flatten(0, 2), gemmWeight, { beta: 0.5, alpha: 2 }).add(ops.mm(x.flatten(0, 2), gemmWeight)),
  ],
  [
    'scatterAdd along the last dim, clone, toDType',
    (x) => ops.scatterAdd(x.clone(), 3, ops.argmax(x, 3, true), ops.max(x, 3, true).values).to('float32'),
  ],
];

for (const [name, f] of IMAGE_CASES) {
  test(`image ops in onnxruntime match kiln: ${name}`, async (t) => {
    await checkAgainstKiln(t, fnModule(f), (n) => randn([n, 4, 6, 6]), [2, 3]);
  });
}

for (const [name, f] of OP_CASES) {
  test(`ops in onnxruntime match kiln: ${name}`, async (t) => {
    await checkAgainstKiln(t, fnModule(f), (n) => randn([n, 4, 6]), [2, 5]);
  });
}
