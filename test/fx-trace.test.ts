import test from 'ava';
import { same } from './helpers.js';
import { F, KilnError, manualSeed, nn, ops, rand, randn, tensor, type Tensor } from '../src/index.js';
import { GraphModule, Interpreter, ShapeProp, TraceError, Tracer, Transformer, symbolicTrace, type TensorMeta } from '../src/fx.js';

class AddRand extends nn.Module {
  override forward(a: Tensor, b: Tensor): Tensor {
    return a
      .add(b)
      .add(rand([4]))
      .add(rand([4]));
  }
}

class MLP extends nn.Module {
  body = new nn.Sequential(new nn.Linear(16, 32), new nn.GELU(), new nn.Linear(32, 32));
  head = new nn.Linear(32, 4);
  override forward(x: Tensor): Tensor {
    const h = F.relu(this.body.call(x));
    return F.logSoftmax(this.head.forward(h), { dim: -1 });
  }
}

class SmallCNN extends nn.Module {
  conv1 = new nn.Conv2d(3, 8, 3, { padding: 1 });
  bn1 = new nn.BatchNorm2d(8);
  pool = new nn.MaxPool2d(2);
  conv2 = new nn.Conv2d(8, 8, 3, { padding: 1, bias: false });
  bn2 = new nn.BatchNorm2d(8);
  fc = new nn.Linear(8 * 4 * 4, 10);
  override forward(x: Tensor): Tensor {
    let h = this.pool.call(this.bn1.call(this.conv1.call(x)).relu());
    h = F.relu(this.bn2.call(this.conv2.call(h)).add(h));
    return this.fc.call(h.flatten(1));
  }
}

class Experts extends nn.Module {
  blocks = new nn.ModuleList([new nn.Linear(8, 8), new nn.Linear(8, 8), new nn.Linear(8, 8)]);
  heads = new nn.ModuleDict({ cls: new nn.Linear(8, 3), 'reg-out': new nn.Linear(8, 1) });
  gate = new nn.Parameter(randn([8]));
  override forward(x: Tensor): { cls: Tensor; reg: Tensor } {
    let h = x.mul(this.gate);
    for (const b of this.blocks) h = b.call(h).tanh().add(h);
    return { cls: this.heads.get('cls').call(h), reg: this.heads.get('reg-out').call(h).squeeze(-1) };
  }
}

test('node names for forward(a, b) { return a.add(b).add(rand([4])).add(rand([4])) } are exactly FX’s', (t) => {
  const gm = symbolicTrace(new AddRand());
  t.deepEqual(
    gm.graph.nodes.map((n) => n.name),
    ['a', 'b', 'add', '_tensor_constant0', 'add_1', '_tensor_constant1', 'add_2', 'output'],
  );
  t.deepEqual(
    gm.graph.nodes.map((n) => n.op),
    ['placeholder', 'placeholder', 'call_method', 'get_attr', 'call_method', 'get_attr', 'call_method', 'output'],
  );
  // the constants were captured once and travel with the module as buffers
  const a = randn([4]);
  const b = randn([4]);
  const c0 = gm.resolveTarget('_tensor_constant0') as Tensor;
  const c1 = gm.resolveTarget('_tensor_constant1') as Tensor;
  same(t, gm.call(a, b) as Tensor, a.add(b).add(c0).add(c1));
  t.deepEqual(Object.keys(gm.stateDict()), ['_tensor_constant0', '_tensor_constant1']);
});

test('MLP: leaf layers become call_module, F calls call_function, containers are traced through; output equals eager', (t) => {
  manualSeed(1);
  const m = new MLP();
  const gm = symbolicTrace(m);
  t.deepEqual(
    gm.graph.nodes.map((n) => `${n.op}:${n.name}`),
    [
      'placeholder:x',
      'call_module:body_0',
      'call_module:body_1',
      'call_module:body_2',
      'call_function:relu',
      'call_module:head',
      'call_function:log_softmax',
      'output:output',
    ],
  );
  t.deepEqual(gm.graph.nodes[6]!.kwargs, { dim: -1 });
  t.is(gm.className, 'MLP');
  t.true(gm.code.includes('const log_softmax = ops.logSoftmax(head, { dim: -1 });'));
  t.deepEqual(Object.keys(gm.stateDict()), Object.keys(m.stateDict()));
  const x = randn([5, 16]);
  same(t, gm.call(x) as Tensor, m.call(x) as Tensor);
  // the trace left the model untouched
  t.false(Object.prototype.hasOwnProperty.call(m.head, 'forward'));
  same(t, m.head.call(randn([1, 32]).zero_()), m.head.bias!.unsqueeze(0));
});

test('small CNN with BatchNorm: trace equals eager in train mode (same stats updates) and eval mode', (t) => {
  manualSeed(2);
  const eager = new SmallCNN();
  manualSeed(2);
  const traced = symbolicTrace(new SmallCNN());
  const x = randn([4, 3, 8, 8]);
  same(t, traced.call(x) as Tensor, eager.call(x));
  same(t, traced.resolveTarget('bn2.running_var') as Tensor, eager.bn2.running_var as Tensor);
  t.deepEqual((traced.resolveTarget('bn1.num_batches_tracked') as Tensor).toArray(), 1);
  eager.eval();
  traced.eval();
  same(t, traced.call(x) as Tensor, eager.call(x));
  // gradients flow through the generated forward like through the eager one
  const gx = x.clone().requiresGrad_();
  (traced.call(gx) as Tensor).sum().backward();
  const ex = x.clone().requiresGrad_();
  eager.call(ex).sum().backward();
  same(t, gx.grad!, ex.grad!);
});

test('ModuleList and ModuleDict: each entry is its own call_module; dict results keep their keys', (t) => {
  manualSeed(3);
  const m = new Experts();
  const gm = symbolicTrace(m);
  const calls = gm.graph.nodes.filter((n) => n.op === 'call_module').map((n) => n.target);
  t.deepEqual(calls, ['blocks.0', 'blocks.1', 'blocks.2', 'heads.cls', 'heads.reg-out']);
  t.true(gm.code.includes('this.heads["reg-out"].call('));
  t.deepEqual(gm.graph.nodes[1]!.target, 'gate');
  const x = randn([6, 8]);
  const a = gm.call(x) as { cls: Tensor; reg: Tensor };
  const b = m.call(x);
  same(t, a.cls, b.cls);
  same(t, a.reg, b.reg);
  t.deepEqual(Object.keys(gm.stateDict()).sort(), Object.keys(m.stateDict()).sort());
});

test('tensor shapes and pairs: x.shape[0], destructured max(dim) and .values become getattr/getitem nodes', (t) => {
  const fn = function pairs(x: Tensor) {
    const [values, indices] = x.max(1) as unknown as [Tensor, Tensor];
    const flat = x.view([x.shape[0], -1]);
    return [values.add(indices.float()), flat.sum(1), x.min(0).values];
  };
  const gm = symbolicTrace(fn);
  t.is(gm.className, 'pairs');
  const targets = gm.graph.nodes.filter((n) => n.op === 'call_function').map((n) => `${String((n.target as { opName: string }).opName)}`);
  t.deepEqual(targets, ['getitem', 'getitem', 'getattr', 'getitem', 'getattr']);
  const x = randn([3, 4]);
  const got = gm.call(x) as Tensor[];
  const want = fn(x);
  got.forEach((g, i) => same(t, g, want[i]!));
});

test('sub.forward(x) and sub.call(x) both record one call_module; hooks of leaf modules run when the GraphModule runs', (t) => {
  class Twice extends nn.Module {
    fc = new nn.Linear(3, 3);
    override forward(x: Tensor) {
      return this.fc.forward(this.fc.call(x));
    }
  }
  const m = new Twice();
  const gm = symbolicTrace(m);
  t.deepEqual(
    gm.graph.nodes.map((n) => n.name),
    ['x', 'fc', 'fc_1', 'output'],
  );
  let calls = 0;
  m.fc.registerForwardHook(() => void calls++);
  gm.call(randn([2, 3]));
  t.is(calls, 2);
});

test('a custom Tracer can make a user module a leaf; a non-leaf user module is traced through', (t) => {
  class Scale extends nn.Module {
    s = new nn.Parameter(tensor([2]));
    override forward(x: Tensor) {
      return x.mul(this.s);
    }
  }
  class Net extends nn.Module {
    scale = new Scale();
    override forward(x: Tensor) {
      return this.scale.call(x).neg();
    }
  }
  const through = symbolicTrace(new Net());
  t.deepEqual(
    through.graph.nodes.map((n) => `${n.op}:${String(typeof n.target === 'string' ? n.target : n.name)}`),
    ['placeholder:x', 'get_attr:scale.s', 'call_method:mul', 'call_method:neg', 'output:output'],
  );
  class LeafScale extends Tracer {
    override isLeafModule(m: nn.Module, path: string) {
      return m instanceof Scale || super.isLeafModule(m, path);
    }
  }
  const leaf = symbolicTrace(new Net(), { tracer: new LeafScale() });
  t.deepEqual(
    leaf.graph.nodes.map((n) => n.op),
    ['placeholder', 'call_module', 'call_method', 'output'],
  );
  same(t, leaf.call(tensor([1, 2])) as Tensor, tensor([-2, -4]));
});

test('concreteArgs specialise the trace; the placeholder stays so the signature does not change', (t) => {
  class Gated extends nn.Module {
    override forward(x: Tensor, useRelu: boolean) {
      return useRelu ? x.relu() : x.tanh();
    }
  }
  const gm = symbolicTrace(new Gated(), { concreteArgs: { useRelu: true } });
  t.true(gm.code.startsWith('forward(x, useRelu = true) {'));
  t.true(gm.graph.nodes.some((n) => n.target === 'relu'));
  same(t, gm.call(tensor([-1, 2]), true) as Tensor, tensor([0, 2]));
  t.throws(() => symbolicTrace(new Gated(), { concreteArgs: { nope: 1 } }), {
    instanceOf: TraceError,
    message: /forward's parameters are \(x, useRelu\)/,
  });
});

test('a size used as a number in a trace is named as the code reads it (x.shape[0], h.shape), not getitem', (t) => {
  class Sized extends nn.Module {
    override forward(x: Tensor) {
      return x.reshape([(x.shape[0] as unknown as number) * 2, -1]);
    }
  }
  const e = t.throws(() => symbolicTrace(new Sized()), { instanceOf: TraceError });
  t.regex(e.message, /needs the value of 'x\.shape\[0\]'/);
  class Destructured extends nn.Module {
    override forward(x: Tensor) {
      const h = x.relu();
      const [b] = h.shape;
      return h.view([b!, -1]);
    }
  }
  const e2 = t.throws(() => symbolicTrace(new Destructured()), { instanceOf: TraceError });
  t.regex(e2.message, /needs the value of 'relu\.shape'/);
});

test('control flow or value reads on a traced tensor throw TraceError that says why and how to fix it', (t) => {
  class Branchy extends nn.Module {
    override forward(x: Tensor) {
      if (x.sum().item() > 0) return x;
      return x.neg();
    }
  }
  const e = t.throws(() => symbolicTrace(new Branchy()), { instanceOf: TraceError });
  t.regex(e.message, /\.item\(\) needs the value of traced tensor 'sum'/);
  t.regex(e.message, /concreteArgs/);
  t.regex(e.message, /isLeafModule/);
  t.regex(e.message, /kiln plugin/);
  t.regex(e.message, /fx-trace\.test\.ts:\d+/);

  const shapeIf = (x: Tensor) => (x.shape[0]! > 3 ? x : x.neg());
  t.throws(() => symbolicTrace(shapeIf), { instanceOf: TraceError, message: /as a number, string or condition.*'x\.shape\[0\]'/s });
  t.throws(
    () =>
      symbolicTrace((x: Tensor) => {
        const [a, b] = x as unknown as Tensor[];
        return a!.add(b!);
      }),
    { instanceOf: TraceError, message: /iterating or destructuring/ },
  );
  t.throws(() => symbolicTrace((...xs: Tensor[]) => xs[0]!), { instanceOf: TraceError, message: /rest parameter/ });
});

test('tracing a submodule that is not registered, or passing a module as a value, is a TraceError', (t) => {
  class Stray extends nn.Module {
    override forward(x: Tensor) {
      return new nn.Linear(2, 2).call(x);
    }
  }
  t.throws(() => symbolicTrace(new Stray()), { instanceOf: TraceError, message: /Linear is called in forward but is not a submodule/ });
  t.throws(() => symbolicTrace((x: Tensor) => ops.add(x, new nn.ReLU() as never)), {
    instanceOf: TraceError,
    message: /a module \(ReLU\)/,
  });
});

test('Interpreter runs the graph like the generated code and frees values early; errors name the node', (t) => {
  manualSeed(4);
  const m = new SmallCNN().eval();
  const gm = symbolicTrace(m);
  const x = randn([2, 3, 8, 8]);
  const interp = new Interpreter(gm);
  same(t, interp.run(x) as Tensor, gm.call(x) as Tensor);
  t.is(interp.env.size <= 2, true);

  class Spy extends Interpreter {
    seen: string[] = [];
    override callModule(target: string, args: unknown[], kwargs: Record<string, unknown>) {
      this.seen.push(target);
      return super.callModule(target, args, kwargs);
    }
  }
  const spy = new Spy(gm);
  spy.run(x);
  t.deepEqual(spy.seen, ['conv1', 'bn1', 'pool', 'conv2', 'bn2', 'fc']);
  const e = t.throws(() => new Interpreter(gm).run(randn([2, 5, 8, 8])), { instanceOf: KilnError });
  t.regex(e.message, /while executing %conv1/);
  t.throws(() => new Interpreter(gm).run(), { message: /missing argument 'x'/ });
});

test('Transformer: identity round-trip keeps code and outputs; overriding callFunction rewrites the graph', (t) => {
  manualSeed(5);
  const m = new MLP();
  const gm = symbolicTrace(m);
  new ShapeProp(gm).propagate(randn([2, 16]));
  const copy = new Transformer(gm).transform();
  t.is(copy.code, gm.code);
  t.deepEqual(copy.graph.nodes[1]!.meta.tensorMeta, gm.graph.nodes[1]!.meta.tensorMeta);
  const x = randn([3, 16]);
  same(t, copy.call(x) as Tensor, gm.call(x) as Tensor);

  class ReluToGelu extends Transformer {
    override callFunction(target: never, args: unknown[], kwargs: Record<string, unknown>) {
      return (target as unknown) === ops.relu ? ops.gelu(args[0] as Tensor) : super.callFunction(target, args, kwargs);
    }
  }
  const swapped = new ReluToGelu(gm).transform();
  t.true(swapped.code.includes('ops.gelu('));
  t.false(swapped.code.includes('ops.relu('));
  swapped.graph.lint();
  same(t, swapped.call(x) as Tensor, F.logSoftmax(m.head.call(F.gelu(m.body.call(x))), { dim: -1 }));
});

test('ShapeProp records shape, dtype and requiresGrad for every node of a CNN, tuples included', (t) => {
  manualSeed(6);
  const gm = symbolicTrace(new SmallCNN());
  new ShapeProp(gm).propagate(randn([2, 3, 8, 8]));
  const shapes = Object.fromEntries(gm.graph.nodes.map((n) => [n.name, (n.meta.tensorMeta as TensorMeta).shape]));
  t.deepEqual(shapes, {
    x: [2, 3, 8, 8],
    conv1: [2, 8, 8, 8],
    bn1: [2, 8, 8, 8],
    relu: [2, 8, 8, 8],
    pool: [2, 8, 4, 4],
    conv2: [2, 8, 4, 4],
    bn2: [2, 8, 4, 4],
    add: [2, 8, 4, 4],
    relu_1: [2, 8, 4, 4],
    flatten: [2, 128],
    fc: [2, 10],
    output: [2, 10],
  });
  t.deepEqual(gm.graph.nodes[0]!.meta.tensorMeta, { shape: [2, 3, 8, 8], dtype: 'float32', requiresGrad: false });
  t.true((gm.graph.nodes[1]!.meta.tensorMeta as TensorMeta).requiresGrad);

  const pair = symbolicTrace((x: Tensor) => x.max(1));
  new ShapeProp(pair).propagate(randn([3, 5]));
  t.deepEqual(pair.graph.nodes[1]!.meta.tensorMeta, [
    { shape: [3], dtype: 'float32', requiresGrad: false },
    { shape: [3], dtype: 'int32', requiresGrad: false },
  ]);
});

test('normalizedArguments binds args to names by op schema or forward signature', (t) => {
  const gm = symbolicTrace(new MLP());
  const ls = gm.graph.nodes.find((n) => n.name === 'log_softmax')!;
  t.deepEqual(Object.keys(ls.normalizedArguments()!.kwargs), ['input', 'dim']);
  t.is(ls.normalizedArguments()!.kwargs.dim, -1);
  const head = gm.graph.nodes.find((n) => n.name === 'head')!;
  t.deepEqual(Object.keys(head.normalizedArguments(gm)!.kwargs), ['x']);
  t.is(gm.graph.nodes[0]!.normalizedArguments(), undefined);
});

test('GraphModule(root, graph) built by hand; recompile after editing the graph', (t) => {
  const root = new MLP();
  const gm = symbolicTrace(root);
  const relu = gm.graph.nodes.find((n) => n.name === 'relu')!;
  const neg = gm.graph.insertAfter(relu, () => gm.graph.callMethod('neg', [relu]));
  relu.replaceAllUsesWith(neg, (u) => u !== neg);
  gm.recompile();
  t.true(gm.code.includes('const neg = relu.neg();'));
  const x = randn([2, 16]);
  same(t, gm.call(x) as Tensor, F.logSoftmax(root.head.call(F.relu(root.body.call(x)).neg()), { dim: -1 }));
  const again = new GraphModule(root, gm.graph, 'Again');
  t.is(again.className, 'Again');
  t.is(again.resolveTarget('head'), root.head);
  t.throws(() => new GraphModule({}, gm.graph), { instanceOf: KilnError, message: /'body.0'/ });
  t.true(gm.printReadable(false).startsWith('class MLP extends GraphModule {\n  forward(x) {'));
});
