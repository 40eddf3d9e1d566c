import test from 'ava';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { stripVTControlCharacters } from 'node:util';
import { compile, IndexError, nn, noGrad, randn, ShapeError, tensor, type Tensor } from '../src/index.js';
import * as fx from '../src/fx.js';

/** The 1-based line of this file that holds `marker` (so the tests survive reformatting). */
const here = fileURLToPath(import.meta.url);
const lineOf = (marker: string) =>
  readFileSync(here, 'utf8')
    .split('\n')
    .findIndex((l) => l.includes(marker) && !l.includes('lineOf')) + 1;

class Projector extends nn.Module {
  fc = new nn.Linear(4, 3);

  override forward(x: Tensor, w: Tensor): Tensor {
    const h = this.fc.call(x).relu();
    return h.matmul(w); // <- matmul line
  }
}

class Lookup extends nn.Module {
  emb = new nn.Embedding(5, 3);

  override forward(idx: Tensor, x: Tensor): Tensor {
    return this.emb.call(idx).mul(x).sum(-1); // <- embedding line
  }
}

/** Run a fixture under kiln/register; its stderr without colours (CI sets FORCE_COLOR). */
const register = (file: string, ...args: string[]) => {
  const r = spawnSync(process.execPath, ['--import', 'kiln/register', `test/fixtures/source-lines/${file}`, ...args], { encoding: 'utf8' });
  return { status: r.status, stderr: stripVTControlCharacters(r.stderr) };
};

test('kiln/register turns source maps on: an error thrown in a rewritten forward reports its TypeScript line without --enable-source-maps', (t) => {
  const r = register('throws-in-forward.ts');
  t.not(r.status, 0);
  t.regex(r.stderr, /RangeError: limit must be >= 0, got -1/);
  // Line 15 of the .ts file; the stripped interface and type lines would make it line 32 of the generated JavaScript.
  t.regex(r.stderr, /at Checked\.\w+ \(.*test\/fixtures\/source-lines\/throws-in-forward\.ts:15:26\)/);
});

test('kiln/register: an error inside a captured graph keeps its class and names the graph node and its TypeScript line', (t) => {
  for (const mode of ['plugin', 'compiled']) {
    const r = register('throws-in-graph.ts', mode);
    t.not(r.status, 0);
    t.regex(
      r.stderr,
      /ShapeError: matmul: shapes \[2, 3\] and \[5, 2\] cannot be multiplied \(3 != 5\) \(in graph node 'matmul'\)\n {4}at \S+ \(.*throws-in-graph\.ts:14:30\)/,
      mode,
    );
  }
});

test('the tracer records the user stack frame of every call node in node.meta.stackTrace (FX stack_trace)', (t) => {
  const gm = fx.symbolicTrace(new Projector());
  const calls = gm.graph.nodes.filter((n) => n.op.startsWith('call_'));
  t.deepEqual(
    calls.map((n) => n.name),
    ['fc', 'relu', 'matmul'],
  );
  for (const n of calls) t.regex(String(n.meta.stackTrace), /^at Projector\.forward \(.*source-lines\.test\.ts:\d+:\d+\)$/);
  t.regex(String(calls[2]!.meta.stackTrace), new RegExp(`source-lines\\.test\\.ts:${lineOf('<- matmul line')}:\\d+\\)$`));
  t.is(gm.graph.nodes.find((n) => n.op === 'placeholder')!.meta.stackTrace, undefined, 'placeholders get no frame');
});

test('compile: a ShapeError in the graph stays a ShapeError and names the node and the user line, on both backends', (t) => {
  const m = new Projector();
  for (const backend of ['eager', 'kernels'] as const) {
    const c = compile(m, { backend });
    const e = t.throws(() => c.call(randn([2, 4]), randn([5, 2])), { instanceOf: ShapeError }, backend)!;
    t.true(e.message.startsWith('matmul: shapes [2, 3] and [5, 2] cannot be multiplied (3 != 5)'));
    t.regex(
      e.message,
      new RegExp(
        `\\(in graph node 'matmul'\\)\\n {4}at Projector\\.forward \\(.*source-lines\\.test\\.ts:${lineOf('<- matmul line')}:\\d+\\)`,
      ),
    );
    t.regex(
      e.stack!,
      /^ShapeError: matmul: .*\(in graph node 'matmul'\)\n {4}at Projector\.forward/,
      'the stack printed for an uncaught error says it too',
    );
  }
});

test('the Interpreter names the failing node and its user line before the node it was executing', (t) => {
  const gm = fx.symbolicTrace(new Projector());
  const e = t.throws(() => new fx.Interpreter(gm).run(randn([2, 4]), randn([5, 2])), { instanceOf: ShapeError })!;
  t.regex(
    e.message,
    /\(in graph node 'matmul'\)\n {4}at Projector\.forward \(.*source-lines\.test\.ts:\d+:\d+\)\n {2}while executing %matmul/,
  );
  t.regex(
    e.stack!,
    /^ShapeError: matmul: .*\(in graph node 'matmul'\)\n {4}at Projector\.forward .*\n {2}while executing %matmul/,
    'the stack too',
  );
});

test('kernels: an error in a planned graph (second call, same signature) names the node and user line', (t) => {
  const c = compile(new Lookup(), { backend: 'kernels' });
  noGrad(() => {
    t.deepEqual(c.call(tensor([1, 2], { dtype: 'int32' }), randn([2, 3])).shape, [2]);
    const e = t.throws(() => c.call(tensor([1, 7], { dtype: 'int32' }), randn([2, 3])), { instanceOf: IndexError })!;
    t.regex(
      e.message,
      new RegExp(
        `index 7 is out of range.*\\(in graph node 'emb'\\)\\n {4}at Lookup\\.forward \\(.*:${lineOf('<- embedding line')}:\\d+\\)`,
      ),
    );
  });
  const program = (c._compiled.entries[0]!.run as unknown as { program: { plans: Map<string, unknown> } }).program;
  t.is(program.plans.size, 1, 'the failing call ran the plan made on the first call');
});

test('a nested GraphModule error is annotated once, with the innermost node', (t) => {
  const inner = fx.symbolicTrace(new Projector());
  const outer = new (class extends nn.Module {
    inner = inner;
    override forward(x: Tensor, w: Tensor): Tensor {
      return this.inner.call(x, w).neg();
    }
  })();
  const gm = fx.symbolicTrace(outer, {
    tracer: new (class extends fx.Tracer {
      override isLeafModule(m: nn.Module, path: string): boolean {
        return m instanceof fx.GraphModule || super.isLeafModule(m, path);
      }
    })(),
  });
  const e = t.throws(() => gm.forward(randn([2, 4]), randn([5, 2])), { instanceOf: ShapeError })!;
  t.is(e.message.match(/in graph node/g)?.length, 1);
  t.regex(e.message, /\(in graph node 'matmul'\)/);
});

test('the generated code shown to users is unchanged, and a node named like the failure counter still runs', (t) => {
  const g = new fx.Graph();
  const x = g.placeholder('x');
  const a = g.callMethod('relu', [x]);
  a.name = '$at';
  const b = g.callMethod('neg', [a]);
  b.name = '$failed';
  g.output(b);
  const gm = new fx.GraphModule(new nn.Module(), g);
  t.is(gm.code, 'forward(x) {\n  const $at = x.relu();\n  const $failed = $at.neg();\n  return $failed;\n}');
  t.deepEqual((gm.forward(tensor([-1, 2])) as Tensor).toArray(), [-0, -2]);
  const e = t.throws(() => gm.forward(tensor([1, 2]).reshape([2, 1]).expand([2, 3]).view([7])), { instanceOf: ShapeError });
  t.truthy(e);
});
