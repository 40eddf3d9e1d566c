import test from 'ava';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KilnError, compile, manualSeed, nn, randn, tensor, type Tensor } from '../src/index.js';
import {
  Graph,
  GraphModule,
  Interpreter,
  SerializationError,
  getattr,
  getitem,
  graphModuleFromJSON,
  graphModuleToJSON,
  load,
  symbolicTrace,
  type Node,
} from '../src/fx.js';
import { load as jitLoad, trace } from '../src/jit.js';
import { seal } from '../src/graph/sealed-file.js';
import type { FunctionTarget } from '../src/fx.js';

/**
 * Issue 13, "Files are data, never code": crafted graphs cannot run JavaScript (from a file or built in memory,
 * through generated code, the Interpreter or compile), each corrupt-file finding is a SerializationError, and
 * random corruptions of real fx and jit files are all refused.
 */

const dir = mkdtempSync(join(tmpdir(), 'kiln-load-safety-'));
const file = (name: string, content: string | Buffer) => {
  const p = join(dir, name);
  writeFileSync(p, content);
  return p;
};
type Json = Record<string, unknown>;
/** A changed file with a valid checksum (anyone can compute one): it reaches the checks behind the checksum. */
const resealed = (json: Json) => {
  const { sha256: _, ...payload } = json;
  return JSON.stringify(seal(payload));
};

// ---------------------------------------------------------------------------------------------------------
// The code-execution gadgets. Each payload would set a global flag; the flag must stay unset.

const FLAG = '__kilnLoadSafetyPwned';
const CODE = `globalThis.${FLAG} = true; return 1`;
const pwned = () => (globalThis as Record<string, unknown>)[FLAG] === true;

/** Each gadget appends its nodes after placeholder `x` and returns the node whose value would run the payload. */
const GADGETS: Record<string, (g: Graph, x: Node) => Node> = {
  // The repro: getattr(x, 'add') → g.constructor(code) → f.call().
  'getattr(x, add) → call_method constructor → call_method call': (g, x) => {
    const add = g.callFunction(getattr as FunctionTarget, [x, 'add']);
    const f = g.callMethod('constructor', [add, CODE]);
    return g.callMethod('call', [f]);
  },
  // No payload, but the bound method would escape the graph: refused when generated code or the Interpreter runs it.
  'getattr(x, add) as the output': (g, x) => g.callFunction(getattr as FunctionTarget, [x, 'add']),
  'call_method __lookupGetter__(x, shape) → constructor → call': (g, x) => {
    const getter = g.callMethod('__lookupGetter__', [x, 'shape']);
    const f = g.callMethod('constructor', [getter, CODE]);
    return g.callMethod('call', [f]);
  },
  'getattr chain x.constructor.constructor → apply(F, null, [code]) → call': (g, x) => {
    const cls = g.callFunction(getattr as FunctionTarget, [x, 'constructor']);
    const F = g.callFunction(getattr as FunctionTarget, [cls, 'constructor']);
    const f = g.callMethod('apply', [F, null, [CODE]]);
    return g.callMethod('call', [f]);
  },
  'getattr chain through __proto__ → constructor → call': (g, x) => {
    const proto = g.callFunction(getattr as FunctionTarget, [x, '__proto__']);
    const cls = g.callFunction(getattr as FunctionTarget, [proto, 'constructor']);
    const F = g.callFunction(getattr as FunctionTarget, [cls, 'constructor']);
    const f = g.callMethod('call', [F, null, CODE]);
    return g.callMethod('call', [f]);
  },
  'getitem chain x[constructor][constructor] → call': (g, x) => {
    const cls = g.callFunction(getitem as FunctionTarget, [x, 'constructor']);
    const F = g.callFunction(getitem as FunctionTarget, [cls, 'constructor']);
    const f = g.callMethod('call', [F, null, CODE]);
    return g.callMethod('call', [f]);
  },
  'getattr of a tensor method (x.relu) then bind/call': (g, x) => {
    const relu = g.callFunction(getattr as FunctionTarget, [x, 'relu']);
    const bound = g.callMethod('bind', [relu, null]);
    return g.callMethod('call', [bound]);
  },
  'get_attr constructor.constructor → call': (g) => {
    const F = g.getAttr('constructor.constructor');
    const f = g.callMethod('call', [F, null, CODE]);
    return g.callMethod('call', [f]);
  },
  'call_module constructor.constructor(null, code) → call': (g) => {
    const f = g.callModule('constructor.constructor', [null, CODE]);
    return g.callMethod('call', [f]);
  },
};

function gadgetGraph(build: (g: Graph, x: Node) => Node): Graph {
  const g = new Graph();
  const x = g.placeholder('x');
  g.output(build(g, x));
  return g;
}

/** The gadget as a `kiln.graph_module` file with a valid checksum. */
function gadgetFile(name: string, build: (g: Graph, x: Node) => Node): string {
  const benign = symbolicTrace((x: Tensor) => x.relu());
  const json = graphModuleToJSON(benign) as unknown as Json;
  json.graph = gadgetGraph(build).toJSON();
  return file(`${name.replace(/\W+/g, '_')}.json`, JSON.stringify(seal(json)));
}

/** The gadget as the forward method of a `kiln.jit` file with a valid checksum. */
function gadgetJitFile(name: string, build: (g: Graph, x: Node) => Node): string {
  const p = file(`${name.replace(/\W+/g, '_')}.jit.json`, '');
  trace((x: Tensor) => x.relu(), [tensor([1, 2])]).save(p);
  const json = JSON.parse(readFileSync(p, 'utf8')) as Json;
  ((json.methods as Record<string, Json>).forward!.module as Json).graph = gadgetGraph(build).toJSON();
  return file(`${name.replace(/\W+/g, '_')}.jit.json`, resealed(json));
}

for (const [name, build] of Object.entries(GADGETS)) {
  test(`gadget refused at load, in forward, in the Interpreter and in compile: ${name}`, (t) => {
    delete (globalThis as Record<string, unknown>)[FLAG];
    const x = tensor([1, -2, 3]);

    // From a file: refused while loading, before anything runs.
    t.throws(() => load(gadgetFile(name, build)), { instanceOf: SerializationError });
    t.false(pwned(), 'load');
    t.throws(() => jitLoad(gadgetJitFile(name, build)), { instanceOf: SerializationError });
    t.false(pwned(), 'jit.load');

    // Built in memory, run through generated code: refused when the code is generated or when it runs.
    const err = t.throws(() => new GraphModule(new nn.Module(), gadgetGraph(build)).call(x));
    t.true(err instanceof KilnError, `forward: ${String(err)}`);
    t.false(pwned(), 'forward');

    // Through the Interpreter: a benign module whose graph is edited in place after its code was generated.
    const gm = symbolicTrace((y: Tensor) => y.relu());
    const out = gm.graph.nodes.find((n) => n.op === 'output')!;
    const xNode = gm.graph.nodes.find((n) => n.op === 'placeholder')!;
    let result!: Node;
    gm.graph.insertBefore(out, () => (result = build(gm.graph, xNode)));
    out.args = [result];
    t.throws(() => new Interpreter(gm).run(x), { instanceOf: KilnError });
    t.false(pwned(), 'Interpreter');

    // Through compile(), on the eager and the kernels backend: the module cannot be built, or its compiled call refuses.
    for (const backend of ['eager', 'kernels'] as const) {
      const cerr = t.throws(() => compile(new GraphModule(new nn.Module(), gadgetGraph(build)), { backend }).call(x));
      t.true(cerr instanceof KilnError, `compile (${backend}): ${String(cerr)}`);
      t.false(pwned(), `compile (${backend})`);
    }
  });
}

test('getattr reads data attributes (shape, dtype, ndim, pair values) and refuses functions at run time', (t) => {
  const x = randn([2, 3]);
  t.deepEqual(getattr(x, 'shape'), [2, 3]);
  t.is(getattr(x, 'dtype'), 'float32');
  t.is(getattr(x, 'ndim'), 2);
  t.is(getattr(x.max(1), 'values') instanceof Object, true);
  t.throws(() => getattr(x, 'add'), { instanceOf: KilnError, message: /getattr: 'add' of a Tensor is a function/ });
  t.throws(() => getattr(x, 'constructor'), { instanceOf: KilnError, message: /not allowed in a graph/ });
  t.throws(() => getitem([() => 1], 0), { instanceOf: KilnError, message: /is a function/ });
  // A traced x.shape / x.ndim still compiles and runs.
  const gm = symbolicTrace((y: Tensor) => y.reshape([getattr(y, 'ndim') as number, -1]));
  t.deepEqual((gm.call(x) as Tensor).shape, [2, 3]);
});

// ---------------------------------------------------------------------------------------------------------
// The corrupt-file findings of issue 13, each a regression test.

class Net extends nn.Module {
  fc = new nn.Linear(4, 3);
  bn = new nn.BatchNorm1d(3);
  override forward(x: Tensor) {
    return this.bn.call(this.fc.call(x)).relu();
  }
}

function savedNet(): { gm: GraphModule; json: Json; path: string } {
  manualSeed(1);
  const gm = symbolicTrace(new Net());
  const path = file('net.json', '');
  gm.save(path);
  return { gm, json: JSON.parse(readFileSync(path, 'utf8')) as Json, path };
}

type Member = [string, Json];
const members = (j: Json): Member[] => (j.root as { members: Member[] }).members;
const member = (j: Json, name: string): Json => members(j).find(([n]) => n === name)![1];
/** The saved weight of `fc` in a saved Net. */
const fcWeight = (j: Json): Json => ((member(j, 'fc').module as Json).members as Member[]).find(([n]) => n === 'weight')![1];
const graphNodes = (j: Json) => (j.graph as { nodes: Json[] }).nodes;

test('a huge shape is a SerializationError before anything is allocated (not a RangeError)', (t) => {
  const { json } = savedNet();
  (fcWeight(json).parameter as Json).shape = [2 ** 40, 2 ** 20];
  t.throws(() => load(file('huge.json', resealed(json))), {
    instanceOf: SerializationError,
    message: /fc\.weight: float32 \[1099511627776,1048576\] needs \d+ bytes, the file has 48/,
  });
  (fcWeight(json).parameter as Json).shape = [2 ** 53];
  t.throws(() => graphModuleFromJSON(json), { instanceOf: SerializationError, message: /fc\.weight/ });
});

test('deeply nested args are a SerializationError, not a stack overflow', (t) => {
  const { json } = savedNet();
  let deep: unknown = 1;
  for (let i = 0; i < 100_000; i++) deep = [deep];
  const relu = graphNodes(json).find((n) => n.op === 'call_method' || n.target === 'relu')!;
  relu.args = [...(relu.args as unknown[]), deep];
  const text = `{"format":"kiln.graph_module","version":1,"className":"x","graph":{"format":"kiln.graph","version":1,"nodes":[{"name":"x","op":"placeholder","target":"x","args":${'['.repeat(100_000)}${']'.repeat(100_000)},"kwargs":{"dict":{}}}]},"root":{}}`;
  t.throws(() => load(file('deep.json', text)), { instanceOf: SerializationError, message: /nested more than 256 levels/ });
  t.throws(() => graphModuleFromJSON(JSON.parse(text)), { instanceOf: SerializationError, message: /nested more than 256 levels/ });
  t.throws(() => Graph.fromJSON(json.graph), { instanceOf: SerializationError, message: /nested more than/ });
  // Deep, but within what the checks allow for a whole file: args deeper than 32 levels are refused by name.
  let d40: unknown = 1;
  for (let i = 0; i < 40; i++) d40 = [d40];
  relu.args = [(relu.args as unknown[])[0], d40];
  t.throws(() => Graph.fromJSON(json.graph), {
    instanceOf: SerializationError,
    message: /\.args\[1\](\[0\])+: arguments are nested more than 32 levels deep/,
  });
});

test('training: "false", a missing training flag and string requiresGrad/persistent flags are refused, not read as true', (t) => {
  const { json } = savedNet();
  const bn = member(json, 'bn').module as Json;
  for (const [label, value] of [
    ['"false"', 'false'],
    ['missing', undefined],
    ['0', 0],
  ] as const) {
    const copy = structuredClone(json);
    const cbn = member(copy, 'bn').module as Json;
    if (value === undefined) delete cbn.training;
    else cbn.training = value;
    t.throws(
      () => load(file('training.json', resealed(copy))),
      { instanceOf: SerializationError, message: /bn: "training" must be true or false/ },
      label,
    );
  }
  t.is(bn.training, true);
  const copy = structuredClone(json);
  fcWeight(copy).requiresGrad = 'false';
  t.throws(() => load(file('rg.json', resealed(copy))), {
    instanceOf: SerializationError,
    message: /fc\.weight: "requiresGrad" must be true or false, got "false"/,
  });
  const copy2 = structuredClone(json);
  const buffers = (member(copy2, 'bn').module as Json).members as Member[];
  delete buffers.find(([, m]) => 'buffer' in m)![1].persistent;
  t.throws(() => load(file('persistent.json', resealed(copy2))), {
    instanceOf: SerializationError,
    message: /"persistent" must be true or false, got nothing/,
  });
  // And the real eval-mode flag round-trips as false.
  const { gm } = savedNet();
  gm.eval();
  const p = file('eval.json', '');
  gm.save(p);
  t.false((load(p).resolveTarget('bn') as nn.Module).training);
});

test('fx files carry a checksum: one flipped weight byte is refused, as is a file without the checksum', (t) => {
  const { json, path } = savedNet();
  const text = readFileSync(path, 'utf8');
  const weight = fcWeight(json).parameter as Json;
  const data = weight.data as string;
  const flipped = data.slice(0, 4) + (data[4] === 'A' ? 'B' : 'A') + data.slice(5);
  t.throws(() => load(file('flip.json', text.replace(data, flipped))), {
    instanceOf: SerializationError,
    message: /corrupt \(its SHA-256 does not match/,
  });
  const { sha256: _, ...unsealed } = json;
  t.throws(() => load(file('unsealed.json', JSON.stringify(unsealed))), { instanceOf: SerializationError, message: /no 'sha256' field/ });
  t.notThrows(() => load(path));
});

test('an unknown method target and call_module on a Parameter are refused at load, not raw TypeErrors later', (t) => {
  const { json } = savedNet();
  const copy = structuredClone(json);
  const relu = graphNodes(copy).find((n) => n.target === 'relu')!;
  relu.op = 'call_method';
  relu.target = 'notAMethod';
  t.throws(() => load(file('method.json', resealed(copy))), {
    instanceOf: SerializationError,
    message: /call_method target 'notAMethod' is not a tensor method/,
  });
  for (const target of ['backward', 'item', 'toString', 'constructor', '__defineGetter__']) {
    relu.target = target;
    t.throws(() => load(file('method.json', resealed(copy))), {
      instanceOf: SerializationError,
      message: new RegExp(`'${target}' is not a tensor method`),
    });
  }
  const copy2 = structuredClone(json);
  const fc = graphNodes(copy2).find((n) => n.op === 'call_module' && n.target === 'fc')!;
  fc.target = 'fc.weight';
  t.throws(() => load(file('param.json', resealed(copy2))), {
    instanceOf: SerializationError,
    message: /call_module\) calls 'fc\.weight', which is a Parameter, not a module/,
  });
});

test('a placeholder after computation is refused', (t) => {
  const { json } = savedNet();
  const nodes = graphNodes(json);
  nodes.splice(2, 0, { name: 'late', op: 'placeholder', target: 'late', args: [], kwargs: { dict: {} } });
  t.throws(() => load(file('late.json', resealed(json))), {
    instanceOf: SerializationError,
    message: /node 2 'late': a placeholder after computation/,
  });
});

test('fx.load of a missing file is a SerializationError naming the path', (t) => {
  const missing = join(dir, 'no-such-file.json');
  t.throws(() => load(missing), {
    instanceOf: SerializationError,
    message: new RegExp(`fx\\.load: cannot read ${missing.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`),
  });
  t.throws(() => jitLoad(missing), { instanceOf: SerializationError, message: /jit\.load: cannot read/ });
});

test('member names cannot replace what a module has (forward, call, __proto__) and fields have their types', (t) => {
  const { json } = savedNet();
  for (const name of ['forward', 'call', '__proto__', 'constructor', 'a.b']) {
    const copy = structuredClone(json);
    members(copy).push([name, { value: 1 }]);
    t.throws(
      () => load(file('name.json', resealed(copy))),
      { instanceOf: SerializationError, message: /member name .* is not allowed/ },
      name,
    );
  }
  const cases: [string, (j: Json) => void, RegExp][] = [
    ['className a number', (j) => (j.className = 5), /"className" must be a string/],
    ['kwargs missing', (j) => delete graphNodes(j)[1]!.kwargs, /"kwargs" must be/],
    ['node name a number', (j) => (graphNodes(j)[1]!.name = 7), /node 1: "name" must be a string/],
    ['dtype unknown', (j) => ((fcWeight(j).parameter as Json).dtype = 'float64'), /fc\.weight: dtype must be/],
    [
      'getattr of a method',
      (j) =>
        graphNodes(j).splice(2, 0, {
          name: 'g',
          op: 'call_function',
          target: 'getattr',
          args: [{ node: 'x' }, 'relu'],
          kwargs: { dict: {} },
        }),
      /getattr of "relu" is not a data attribute/,
    ],
    [
      'module type ModuleDict',
      (j) => ((member(j, 'fc').module as Json).type = 'ModuleDict'),
      /'ModuleDict' keeps its members in its own storage/,
    ],
  ];
  for (const [label, change, message] of cases) {
    const copy = structuredClone(json);
    change(copy);
    t.throws(() => load(file('field.json', resealed(copy))), { instanceOf: SerializationError, message }, label);
  }
});

test("jit files: method names cannot replace the program's own members, and graph arity must match the structures", (t) => {
  const path = file('mlp.jit.json', '');
  trace(mlp(), [randn([2, 4])]).save(path);
  const json = JSON.parse(readFileSync(path, 'utf8')) as Json;
  const methods = json.methods as Record<string, Json>;
  for (const name of ['call', 'save', 'methods', 'constructor']) {
    const copy = structuredClone(json);
    (copy.methods as Record<string, Json>)[name] = methods.forward!;
    t.throws(
      () => jitLoad(file('jit-name.json', resealed(copy))),
      { instanceOf: SerializationError, message: /is not a method name a traced program can have/ },
      name,
    );
  }
  const copy = structuredClone(json);
  (copy.methods as Record<string, Json>).forward!.inputs = { kind: 'array', items: [{ kind: 'tensor' }, { kind: 'tensor' }] };
  t.throws(() => jitLoad(file('jit-arity.json', resealed(copy))), {
    instanceOf: SerializationError,
    message: /its graph takes 1 inputs, its input structure holds 2 tensors/,
  });
});

// ---------------------------------------------------------------------------------------------------------
// Seeded fuzz: random corruptions of real saved files.

function mlp(): nn.Module {
  manualSeed(3);
  return new nn.Sequential(new nn.Linear(4, 8), new nn.ReLU(), new nn.Linear(8, 2));
}

class SmallCNN extends nn.Module {
  conv = new nn.Conv2d(1, 2, 3, { padding: 1 });
  bn = new nn.BatchNorm2d(2);
  fc = new nn.Linear(8, 3);
  override forward(x: Tensor) {
    return this.fc.call(this.bn.call(this.conv.call(x)).relu().reshape([x.shape[0]!, -1]).narrow(1, 0, 8));
  }
}

interface Saved {
  readonly name: string;
  readonly bytes: Buffer;
  readonly load: (p: string) => unknown;
}

function savedFiles(): Saved[] {
  manualSeed(4);
  const cnn = new SmallCNN();
  const out: Saved[] = [];
  const fxMlp = file('fuzz-mlp.fx.json', '');
  symbolicTrace(mlp()).save(fxMlp);
  const fxCnn = file('fuzz-cnn.fx.json', '');
  symbolicTrace(cnn).save(fxCnn);
  const jitMlp = file('fuzz-mlp.jit.json', '');
  trace(mlp(), [randn([2, 4])]).save(jitMlp);
  const jitCnn = file('fuzz-cnn.jit.json', '');
  trace(cnn, [randn([2, 1, 4, 4])]).save(jitCnn);
  for (const [name, p, loader] of [
    ['fx MLP', fxMlp, load],
    ['fx CNN', fxCnn, load],
    ['jit MLP', jitMlp, jitLoad],
    ['jit CNN', jitCnn, jitLoad],
  ] as const) {
    out.push({ name, bytes: readFileSync(p), load: loader as (p: string) => unknown });
  }
  return out;
}

/** Every [container, key] in a JSON value, iteratively. */
function slots(json: unknown): [Record<string | number, unknown>, string | number][] {
  const out: [Record<string | number, unknown>, string | number][] = [];
  const stack = [json];
  while (stack.length > 0) {
    const v = stack.pop();
    if (v === null || typeof v !== 'object') continue;
    for (const k of Array.isArray(v) ? v.keys() : Object.keys(v)) {
      out.push([v as Record<string | number, unknown>, k]);
      stack.push((v as Record<string | number, unknown>)[k]);
    }
  }
  return out;
}

const SWAPS: unknown[] = [null, true, 'false', 0, -1, 1.5, 1e308, 2 ** 53, [], {}, 'x', [[[]]], { node: 'nope' }];

/** One random corruption of `bytes`, described for the failure message. */
function corrupt(bytes: Buffer, rnd: () => number): { content: Buffer | string; what: string } {
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rnd() * xs.length)]!;
  const kind = pick(['flip', 'truncate', 'swap', 'delete', 'huge'] as const);
  if (kind === 'flip') {
    const copy = Buffer.from(bytes);
    const at = Math.floor(rnd() * copy.length);
    copy[at] = (copy[at]! + 1 + Math.floor(rnd() * 255)) % 256;
    return { content: copy, what: `byte ${at} flipped` };
  }
  if (kind === 'truncate') {
    const at = Math.floor(rnd() * bytes.length);
    return { content: bytes.subarray(0, at), what: `truncated at ${at}` };
  }
  const json = JSON.parse(bytes.toString('utf8')) as unknown;
  const all = slots(json);
  if (kind === 'huge') {
    const numbers = all.filter(([o, k]) => typeof o[k] === 'number');
    const [o, k] = pick(numbers);
    o[k] = pick([1e308, 2 ** 53, -(2 ** 31), 2 ** 40, -1]);
    return { content: JSON.stringify(json), what: `number at ${String(k)} made huge` };
  }
  const [o, k] = pick(all);
  if (kind === 'swap') {
    o[k] = pick(SWAPS.filter((v) => JSON.stringify(v) !== JSON.stringify(o[k])));
    return { content: JSON.stringify(json), what: `field ${String(k)} swapped to ${JSON.stringify(o[k])}` };
  }
  if (Array.isArray(o)) o.splice(k as number, 1);
  else delete o[k];
  return { content: JSON.stringify(json), what: `field ${String(k)} deleted` };
}

/** The canonical JSON of a file's contents, or undefined when it is not JSON. */
function canonical(content: Buffer | string): string | undefined {
  try {
    return JSON.stringify(JSON.parse(content.toString()));
  } catch {
    return undefined;
  }
}

test('fuzz: 300 seeded corruptions of saved fx and jit files (MLP, CNN) each give SerializationError, never another error or changed content', (t) => {
  const files = savedFiles();
  for (const f of files) t.notThrows(() => f.load(file('fuzz-ok.json', f.bytes)), `${f.name} loads unchanged`);
  let seed = 20261204;
  const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const refused = new Map<string, number>();
  const start = Date.now();
  for (let i = 0; i < 300; i++) {
    const f = files[i % files.length]!;
    const { content, what } = corrupt(f.bytes, rnd);
    try {
      f.load(file('fuzz.json', content));
      // Only a change that leaves the contents as they were (same JSON) may load.
      t.is(canonical(content), canonical(f.bytes), `${f.name}: ${what} loaded changed content`);
    } catch (e) {
      if (!(e instanceof SerializationError)) {
        t.fail(`${f.name}: ${what} threw ${(e as Error).constructor.name}: ${(e as Error).message}`);
        continue;
      }
      refused.set(f.name, (refused.get(f.name) ?? 0) + 1);
    }
  }
  t.true(Date.now() - start < 20_000, `took ${Date.now() - start} ms`);
  t.true(
    [...refused.values()].every((n) => n >= 70),
    JSON.stringify([...refused]),
  );
});

test('fuzz behind the checksum: 200 re-sealed field corruptions load or give SerializationError, never another error', (t) => {
  const files = savedFiles();
  let seed = 4242;
  const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  for (let i = 0; i < 200; i++) {
    const f = files[i % files.length]!;
    let content: Buffer | string;
    let what: string;
    do ({ content, what } = corrupt(f.bytes, rnd));
    while (canonical(content) === undefined);
    const json = JSON.parse(content.toString()) as unknown;
    if (json === null || typeof json !== 'object' || Array.isArray(json)) continue;
    try {
      f.load(file('fuzz-sealed.json', resealed(json as Json)));
    } catch (e) {
      if (!(e instanceof SerializationError))
        t.fail(`${f.name}: ${what} (re-sealed) threw ${(e as Error).constructor.name}: ${(e as Error).message}`);
    }
  }
  t.pass();
});

test('harmless inherited names stay usable: submodules called name and length save, load and run', (t) => {
  manualSeed(5);
  class Named extends nn.Module {
    name = new nn.Linear(3, 3);
    length = new nn.Linear(3, 2);
    override forward(x: Tensor) {
      return this.length.call(this.name.call(x).relu());
    }
  }
  const m = new Named();
  const gm = symbolicTrace(m);
  const p = file('named.json', '');
  gm.save(p);
  const x = randn([2, 3]);
  t.deepEqual((load(p).call(x) as Tensor).toArray(), (m.call(x) as Tensor).toArray());
});
