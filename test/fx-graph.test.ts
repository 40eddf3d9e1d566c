import test from 'ava';
import { KilnError, ops, randn, tensor } from '../src/index.js';
import { Graph, GraphLintError, GraphModule, Node, SerializationError, symbolicTrace } from '../src/fx.js';
import { nn, type Tensor } from '../src/index.js';

/** a → relu → add(relu, b) → output, built by hand. */
function small(): { g: Graph; a: Node; b: Node; relu: Node; add: Node; out: Node } {
  const g = new Graph();
  const a = g.placeholder('a');
  const b = g.placeholder('b');
  const relu = g.callFunction(ops.relu, [a]);
  const add = g.callMethod('add', [relu, b]);
  const out = g.output(add);
  return { g, a, b, relu, add, out };
}

test('names derive from targets, snake_cased, numbered per base, and are valid identifiers', (t) => {
  const g = new Graph();
  const x = g.placeholder('x');
  const names = [
    g.callFunction(ops.add, [x, 1]),
    g.callFunction(ops.add, [x, 2]),
    g.callFunction(ops.layerNorm, [x, [4]]),
    g.callModule('layers.0.fc', [x]),
    g.callModule('layers.0.fc', [x]),
    g.getAttr('_tensor_constant0'),
    g.callMethod('relu', [x]),
    g.createNode('call_method', 'relu', [x], {}, 'relu_2'),
    g.callMethod('relu', [x]),
    g.createNode('call_method', 'relu', [x], {}, 'class'),
    g.createNode('call_method', 'relu', [x], {}, '9lives'),
  ].map((n) => n.name);
  t.deepEqual(names, [
    'add',
    'add_1',
    'layer_norm',
    'layers_0_fc',
    'layers_0_fc_1',
    '_tensor_constant0',
    'relu',
    'relu_2',
    'relu_3',
    'class_1',
    '_9lives',
  ]);
});

test('users, allInputNodes and replaceAllUsesWith stay in sync', (t) => {
  const { g, a, b, relu, add } = small();
  t.deepEqual([...a.users.keys()], [relu]);
  t.deepEqual(add.allInputNodes(), [relu, b]);
  const neg = g.insertAfter(relu, () => g.callFunction(ops.neg, [relu]));
  t.deepEqual(
    relu.replaceAllUsesWith(neg, (u) => u !== neg),
    [add],
  );
  t.deepEqual(add.args, [neg, b]);
  t.deepEqual([...relu.users.keys()], [neg]);
  t.deepEqual(
    g.nodes.map((n) => n.name),
    ['a', 'b', 'relu', 'neg', 'add', 'output'],
  );
  g.lint();
});

test('insertBefore/insertAfter are scoped and keep creation order', (t) => {
  const { g, a, relu } = small();
  g.insertBefore(relu, () => {
    g.callFunction(ops.exp, [a]);
    g.callFunction(ops.log, [a]);
  });
  g.insertAfter(relu, () => {
    g.callFunction(ops.sqrt, [relu]);
    g.callFunction(ops.abs, [relu]);
  });
  g.callFunction(ops.tanh, [a]); // the insertion point is back at the end
  t.deepEqual(
    g.nodes.map((n) => n.name),
    ['a', 'b', 'exp', 'log', 'relu', 'sqrt', 'abs', 'add', 'output', 'tanh'],
  );
  t.is(g.insertingBefore(undefined, () => g.placeholder('first')).prev, g.root);
});

test('eraseNode refuses a node with users and names them', (t) => {
  const { g, relu, add, out } = small();
  const e = t.throws(() => g.eraseNode(relu), { instanceOf: KilnError });
  t.regex(e.message, /'relu' still has 1 user\(s\) \(add\)/);
  out.args = [relu];
  g.eraseNode(add);
  t.true(add.erased);
  t.false(g.nodes.includes(add));
  t.is(relu.users.size, 1);
  t.throws(() => g.eraseNode(add), { message: /already erased/ });
});

test('eliminateDeadCode removes unused pure nodes and keeps in-place ops and _assert', async (t) => {
  const { _assert } = await import('../src/fx.js');
  const g = new Graph();
  const x = g.placeholder('x');
  const unused = g.callFunction(ops.exp, [x]);
  g.callFunction(ops.neg, [unused]); // dead chain: neg then exp
  g.callMethod('add_', [x, 1]); // in-place: kept
  g.callFunction(_assert, [true, 'ok']); // kept
  const keep = g.callFunction(ops.relu, [x]);
  g.output(keep);
  t.true(g.eliminateDeadCode());
  t.deepEqual(
    g.nodes.map((n) => n.name),
    ['x', 'add_', '_assert', 'relu', 'output'],
  );
  t.false(g.eliminateDeadCode());
  g.lint();
});

test('lint accepts a well-formed graph and catches each malformed case', (t) => {
  t.notThrows(() => small().g.lint());

  const useBeforeDef = small();
  useBeforeDef.add.prepend(useBeforeDef.out); // output moved before its input: add is used before definition
  t.throws(() => useBeforeDef.g.lint(), { instanceOf: GraphLintError, message: /'output'.*uses 'add' before it is defined/ });

  const dangling = small();
  dangling.relu.users.set(dangling.b, null); // b claims to read relu but does not
  t.throws(() => dangling.g.lint(), { instanceOf: GraphLintError, message: /'relu'.*dangling user 'b'/ });

  const missingUser = small();
  missingUser.relu.users.delete(missingUser.add);
  t.throws(() => missingUser.g.lint(), { instanceOf: GraphLintError, message: /'add'.*missing from its users/ });

  const dup = small();
  dup.relu.name = 'a';
  t.throws(() => dup.g.lint(), { instanceOf: GraphLintError, message: /duplicate name 'a'/ });

  const erased = small();
  const tmp = erased.g.insertBefore(erased.out, () => erased.g.callFunction(ops.exp, [erased.a]));
  erased.add.updateArg(1, tmp);
  erased.add.updateArg(1, erased.b);
  erased.g.eraseNode(tmp);
  erased.add.updateArg(1, tmp);
  t.throws(() => erased.g.lint(), { instanceOf: GraphLintError, message: /uses 'exp', which was erased/ });

  const noOutput = small();
  noOutput.g.eraseNode(noOutput.out);
  t.throws(() => noOutput.g.lint(), { instanceOf: GraphLintError, message: /exactly one output node, found 0/ });

  const twoOutputs = small();
  twoOutputs.g.output(twoOutputs.a);
  t.throws(() => twoOutputs.g.lint(), { instanceOf: GraphLintError, message: /comes after the output node|exactly one output/ });

  const foreign = small();
  const other = small();
  foreign.add.updateArg(1, other.b);
  t.throws(() => foreign.g.lint(), { instanceOf: GraphLintError, message: /from another graph/ });
});

test('lint checks call_module and get_attr targets against the owning module', (t) => {
  class M extends nn.Module {
    fc = new nn.Linear(2, 2);
    override forward(x: Tensor) {
      return this.fc.call(x);
    }
  }
  const gm = symbolicTrace(new M());
  gm.graph.nodes.find((n) => n.op === 'call_module')!.target = 'nope';
  t.throws(() => gm.graph.lint(), { instanceOf: GraphLintError, message: /'nope' does not exist/ });
});

test('toString and printTabular read like torch.fx', (t) => {
  const { g } = small();
  t.is(
    g.toString(),
    [
      'graph(a, b):',
      '    %a : [#users=1] = placeholder[target=a]',
      '    %b : [#users=1] = placeholder[target=b]',
      '    %relu : [#users=1] = call_function[target=relu](args = (%a), kwargs = {})',
      '    %add : [#users=1] = call_method[target=add](args = (%relu, %b), kwargs = {})',
      '    return add',
    ].join('\n'),
  );
  t.snapshot(g.printTabular(false));
});

test('codegen escapes strings and refuses names that are not identifiers: no graph content becomes code', (t) => {
  const g = new Graph();
  const x = g.placeholder('x');
  const evil = '"); globalThis.pwned = 1; ("';
  const idx = g.callMethod('index', [x, [0]]);
  const weird = g.callFunction(ops.add, [idx, 1], { alpha: 2 });
  g.output({ [evil]: weird, s: evil, nums: [NaN, -0, Infinity] });
  const gm = new GraphModule(new nn.Module(), g);
  t.false(gm.code.includes('globalThis.pwned = 1;\n'));
  const out = gm.forward(tensor([1, 2, 3])) as Record<string, unknown>;
  t.is((out[evil] as Tensor).item(), 3);
  t.is(out.s, evil);
  t.deepEqual(out.nums, [NaN, -0, Infinity]);
  t.is((globalThis as Record<string, unknown>).pwned, undefined);
  // method names and module paths go through JSON.stringify
  const g2 = new Graph();
  const y = g2.placeholder('y');
  g2.output(g2.callMethod('a"]();globalThis.pwned=2;//', [y]));
  const gm2 = new GraphModule(new nn.Module(), g2);
  t.throws(() => gm2.forward(randn([2])), { instanceOf: TypeError });
  t.is((globalThis as Record<string, unknown>).pwned, undefined);
  // a node renamed to something that is not an identifier is refused
  g2.nodes[1]!.name = 'x; globalThis.pwned = 3';
  t.throws(() => gm2.recompile(), { instanceOf: KilnError, message: /not a valid JavaScript identifier/ });
});

test('nodes refuse arguments a graph cannot hold', (t) => {
  const g = new Graph();
  const x = g.placeholder('x');
  t.throws(() => g.callFunction(ops.add, [x, randn([2]) as never]), { instanceOf: KilnError, message: /Tensor cannot be stored/ });
  t.throws(() => g.callFunction(ops.add, [x, (() => 1) as never]), { message: /function cannot be stored/ });
  t.throws(() => g.createNode('call_function', 'add', [x]), { message: /must be a function/ });
});

test('graph JSON round-trips exactly, and bad input gives SerializationError', (t) => {
  const { g } = small();
  const json = JSON.parse(JSON.stringify(g.toJSON()));
  const back = Graph.fromJSON(json);
  t.is(back.toString(), g.toString());
  t.is(back.nodes[2]!.target, ops.relu);
  t.throws(() => Graph.fromJSON({ ...json, version: 99 }), { instanceOf: SerializationError, message: /version 99/ });
  t.throws(() => Graph.fromJSON({ nodes: [] }), { instanceOf: SerializationError, message: /format 'kiln.graph'/ });
  const badOp = structuredClone(json);
  badOp.nodes[2].target = 'noSuchOp';
  t.throws(() => Graph.fromJSON(badOp), { instanceOf: SerializationError, message: /unknown op 'noSuchOp'/ });
  const badRef = structuredClone(json);
  badRef.nodes[3].args[0] = { node: 'ghost' };
  t.throws(() => Graph.fromJSON(badRef), { instanceOf: SerializationError, message: /node 'ghost'/ });
  const custom = new Graph();
  custom.output(custom.callFunction(function myHelper() {}, []));
  t.throws(() => custom.toJSON(), { instanceOf: SerializationError, message: /'myHelper' is not an op/ });
});

test('the built package exposes the graph IR as kiln/fx', async (t) => {
  const fx = await import('kiln/fx');
  for (const name of ['Graph', 'Node', 'GraphModule', 'symbolicTrace', 'Tracer', 'Interpreter', 'Transformer', 'ShapeProp', 'TraceError']) {
    t.is(typeof (fx as Record<string, unknown>)[name], 'function', name);
  }
});
