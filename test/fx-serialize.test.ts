import test from 'ava';
import { same } from './helpers.js';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { F, manualSeed, nn, randn, tensor, type Tensor } from '../src/index.js';
import { seal } from '../src/graph/sealed-file.js';
import { GraphModule, SerializationError, Tracer, graphModuleFromJSON, graphModuleToJSON, load, save, symbolicTrace } from '../src/fx.js';

const dir = mkdtempSync(join(tmpdir(), 'kiln-fx-'));

/** Every standard layer kind in one model, so each one's saved form is exercised. */
class Zoo extends nn.Module {
  emb = new nn.Embedding(10, 6);
  bag = new nn.EmbeddingBag(10, 6, { mode: 'mean' });
  ln = new nn.LayerNorm([6]);
  bn1 = new nn.BatchNorm1d(6);
  conv1 = new nn.Conv1d(6, 4, 3, { padding: 'same' });
  conv2 = new nn.Conv2d(1, 3, 3, { stride: 2, padding: 1, bias: false });
  bn2 = new nn.BatchNorm2d(3, { momentum: null });
  pool = new nn.MaxPool2d(2, { stride: 1 });
  avg = new nn.AvgPool2d(2);
  adapt = new nn.AdaptiveAvgPool2d(1);
  flat = new nn.Flatten();
  seq = new nn.Sequential(new nn.Linear(7, 5), new nn.GELU(), new nn.Dropout(0.25), new nn.Sigmoid(), new nn.Tanh(), new nn.Identity());
  soft = new nn.Softmax(-1);
  act = new nn.ReLU();
  offset = new nn.Parameter(tensor([0.5]), false);

  override forward(tokens: Tensor, image: Tensor): Tensor {
    const e = this.bn1.call(this.ln.call(this.emb.call(tokens)).mean(1).add(this.bag.call(tokens)));
    const c = this.conv1.call(e.unsqueeze(-1)).mean(-1);
    const img = this.bn2.call(this.conv2.call(image));
    const pooled = this.flat.call(this.adapt.call(this.avg.call(this.pool.call(this.act.call(img)))));
    const feats = F.relu(c.sum(1, true).add(pooled.sum(1, true)));
    return this.soft.call(this.seq.call(feats.expand([feats.shape[0]!, 7]).add(this.offset)));
  }
}

test('every standard layer survives save → load with identical outputs (eval mode)', (t) => {
  manualSeed(7);
  const m = new Zoo().eval();
  const gm = symbolicTrace(m);
  const tokens = tensor(
    [
      [1, 2],
      [3, 4],
      [5, 6],
      [7, 8],
    ],
    { dtype: 'int32' },
  );
  const image = randn([4, 1, 8, 8]);
  const path = join(dir, 'zoo.json');
  gm.save(path);
  const back = GraphModule.load(path);
  t.false(back.training);
  t.is(back.code, gm.code);
  t.is(back.className, 'Zoo');
  same(t, back.call(tokens, image) as Tensor, gm.call(tokens, image) as Tensor);
  same(t, back.call(tokens, image) as Tensor, m.call(tokens, image));
  t.deepEqual(Object.keys(back.stateDict()), Object.keys(gm.stateDict()));
  t.is((back.resolveTarget('offset') as Tensor).requiresGrad, false);
  t.is((back.resolveTarget('bn1.num_batches_tracked') as Tensor).dtype, 'int32');
  t.true(back.resolveTarget('seq.0') instanceof nn.Linear);
});

test('train-mode BatchNorm: loaded module keeps running stats and updates them like the original', (t) => {
  manualSeed(8);
  class CNN extends nn.Module {
    conv = new nn.Conv2d(2, 4, 3);
    bn = new nn.BatchNorm2d(4);
    override forward(x: Tensor) {
      return this.bn.call(this.conv.call(x)).relu().mean([2, 3]);
    }
  }
  const gm = symbolicTrace(new CNN());
  gm.call(randn([3, 2, 6, 6]));
  const json = JSON.parse(JSON.stringify(graphModuleToJSON(gm)));
  const back = graphModuleFromJSON(json);
  same(t, back.resolveTarget('bn.running_mean') as Tensor, gm.resolveTarget('bn.running_mean') as Tensor);
  const x = randn([3, 2, 6, 6]);
  same(t, back.call(x) as Tensor, gm.call(x) as Tensor);
  same(t, back.resolveTarget('bn.running_var') as Tensor, gm.resolveTarget('bn.running_var') as Tensor);
  t.deepEqual((back.resolveTarget('bn.num_batches_tracked') as Tensor).toArray(), 2);
});

test('constants, ModuleDict paths and dict outputs round-trip through the fx save/load functions', (t) => {
  manualSeed(9);
  class Heads extends nn.Module {
    heads = new nn.ModuleDict({ 'a-b': new nn.Linear(3, 2) });
    override forward(x: Tensor) {
      return { out: this.heads.get('a-b').call(x.add(tensor([1, 2, 3]))) };
    }
  }
  const gm = symbolicTrace(new Heads());
  const path = join(dir, 'heads.json');
  save(gm, path);
  const back = load(path);
  const x = randn([2, 3]);
  same(t, (back.call(x) as { out: Tensor }).out, (gm.call(x) as { out: Tensor }).out);
  same(t, back.resolveTarget('_tensor_constant0') as Tensor, tensor([1, 2, 3]));
});

test('a custom leaf module loads when its class is given, and is named when it is not', (t) => {
  class Scale extends nn.Module {
    factor = 3;
    override forward(x: Tensor) {
      return x.mul(this.factor);
    }
  }
  class Net extends nn.Module {
    s = new Scale();
    override forward(x: Tensor) {
      return this.s.call(x).relu();
    }
  }
  const tracer = new (class extends Tracer {
    override isLeafModule(m: nn.Module, p: string) {
      return m instanceof Scale || super.isLeafModule(m, p);
    }
  })();
  const gm = symbolicTrace(new Net(), { tracer });
  const json = graphModuleToJSON(gm);
  t.throws(() => graphModuleFromJSON(json), {
    instanceOf: SerializationError,
    message: /unknown module type 'Scale'.*modules: \{ Scale \}/,
  });
  const back = graphModuleFromJSON(json, { modules: { Scale } });
  same(t, back.call(tensor([-1, 2])) as Tensor, tensor([0, 6]));
});

test('corrupt, truncated, foreign or wrong-version files throw SerializationError', (t) => {
  const gm = symbolicTrace((x: Tensor) => x.relu().add(tensor([1, 2])));
  const path = join(dir, 'ok.json');
  gm.save(path);
  const text = readFileSync(path, 'utf8');
  const bad = (name: string, content: string) => {
    const p = join(dir, name);
    writeFileSync(p, content);
    return p;
  };
  t.throws(() => load(bad('truncated.json', text.slice(0, text.length / 2))), {
    instanceOf: SerializationError,
    message: /not valid JSON/,
  });
  t.throws(() => load(bad('foreign.json', '{"hello": 1}')), { instanceOf: SerializationError, message: /format 'kiln.graph_module'/ });
  const json = JSON.parse(text);
  t.throws(() => load(bad('v2.json', JSON.stringify({ ...json, version: 2 }))), { instanceOf: SerializationError, message: /version 2/ });
  // Changed contents need a new checksum to reach the checks behind it.
  const resealed = (changed: Record<string, unknown>) => {
    const { sha256: _, ...payload } = changed;
    return JSON.stringify(seal(payload));
  };
  const short = structuredClone(json);
  short.root.members[0][1].buffer.data = 'AAAA';
  t.throws(() => load(bad('short.json', resealed(short))), {
    instanceOf: SerializationError,
    message: /needs 8 bytes, the file has 3/,
  });
  const missing = structuredClone(json);
  missing.root.members = [];
  t.throws(() => load(bad('missing.json', resealed(missing))), {
    instanceOf: SerializationError,
    message: /does not fit its graph.*_tensor_constant0/,
  });
  t.throws(() => symbolicTrace((x: Tensor) => x).save(join(dir, 'no-such-dir', 'x.json')), { code: 'ENOENT' });
});

test('a module attribute with no saved form is refused at save time', (t) => {
  class Odd extends nn.Module {
    cache = new Map<string, number>();
    override forward(x: Tensor) {
      return x;
    }
  }
  class Outer extends nn.Module {
    odd = new Odd();
    override forward(x: Tensor) {
      return this.odd.call(x);
    }
  }
  const tracer = new (class extends Tracer {
    override isLeafModule(m: nn.Module) {
      return m instanceof Odd;
    }
  })();
  const gm = symbolicTrace(new Outer(), { tracer });
  t.throws(() => graphModuleToJSON(gm), { instanceOf: SerializationError, message: /Odd at 'odd': attribute 'cache' holds a Map/ });
});
