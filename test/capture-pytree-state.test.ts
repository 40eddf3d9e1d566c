import test from 'ava';
import { allclose, compile, explain, nn, ones, randn, testing, type Tensor } from 'kiln';
import { loadRewritten } from './plugin-helpers.js';

/**
 * Issue 17, capture items 1, 4 and 5, kiln's own edge cases, on both routes: test/fixtures/capture/pytree-state.ts
 * rewritten by the plugin, and the same file as tsx loads it, without the plugin (run-time capture). Every
 * case compares with eager.
 */

type Module = InstanceType<typeof nn.Module>;
type Ctor = new (...a: never[]) => Module;
const close = (a: unknown, b: unknown) => allclose(a as Tensor, b as Tensor, { atol: 1e-5 });
const eager = <T>(f: () => T): T => testing.eagerly(f);

const routes: [string, () => Promise<Record<string, Ctor>>][] = [
  ['run-time capture', async () => (await import('./fixtures/capture/pytree-state.js')) as unknown as Record<string, Ctor>],
  ['plugin', async () => (await loadRewritten<Record<string, Ctor>>('test/fixtures/capture/pytree-state.ts')).mod],
];

for (const [route, load] of routes) {
  test(`${route}: a list of tensors is one placeholder per tensor, guarded on its length`, async (t) => {
    const { SumList } = await load();
    const m = new SumList!();
    const counter = new testing.CompileCounter();
    const c = compile(m, { backend: counter, fullgraph: true });
    const xs = [randn([2, 3]), randn([2, 3]), randn([2, 3])];
    t.true(
      close(
        c.call(xs),
        eager(() => m.call(xs)),
      ),
    );
    const ys = [randn([2, 3]), randn([2, 3]), randn([2, 3])];
    t.true(
      close(
        c.call(ys),
        eager(() => m.call(ys)),
      ),
      'new tensors, same structure',
    );
    t.is(counter.frameCount, 1, 'new tensors in the same structure reuse the graph');
    const zs = [randn([2, 3]), randn([2, 3])];
    t.true(
      close(
        c.call(zs),
        eager(() => m.call(zs)),
      ),
      'a shorter list',
    );
    t.is(counter.frameCount, 2, 'another length is another graph');
  });

  test(`${route}: slice, index and destructuring of a list argument are captured`, async (t) => {
    const { SliceDestructure } = await load();
    const m = new SliceDestructure!();
    const counter = new testing.CompileCounter();
    const c = compile(m, { backend: counter, fullgraph: true });
    const xs = [randn([3]), randn([3]), randn([3]), randn([3])];
    t.true(
      close(
        c.call(xs),
        eager(() => m.call(xs)),
      ),
    );
    t.is(counter.frameCount, 1);
    t.is(counter.opCount, 3);
  });

  test(`${route}: a nested object argument with a null leaf; a changed leaf value or key recompiles`, async (t) => {
    const { NestedInput } = await load();
    const m = new NestedInput!();
    const counter = new testing.CompileCounter();
    const failures: string[] = [];
    const c = compile(m, { backend: counter, fullgraph: true, onGuardFail: (f) => failures.push(f) });
    const make = () => ({ x: { a: [randn([2]), randn([2]), randn([2])], b: randn([2]) }, y: randn([2]), skip: null });
    for (let i = 0; i < 2; i++) {
      const input = make();
      t.true(
        close(
          c.call(input),
          eager(() => m.call(input)),
        ),
      );
    }
    t.is(counter.frameCount, 1);
    const other = { ...make(), skip: 0 as unknown as null };
    t.true(
      close(
        c.call(other),
        eager(() => m.call(other)),
      ),
    );
    t.is(counter.frameCount, 2);
    t.regex(failures[0]!, /^input has the structure \{x: \{a: \[Tensor, Tensor, Tensor\], b: Tensor\}, y: Tensor, skip: null\}$/);
    const ok = make();
    ok.x.b = randn([1]);
    t.true(
      close(
        c.call(ok),
        eager(() => m.call(ok)),
      ),
      'a leaf of another shape fails its own guard',
    );
    t.regex(failures[failures.length - 1]!, /^input\.x\.b\.shape\[0\] == 2$/);
  });

  test(`${route}: traced code that changes its list argument runs eagerly, and the caller sees the change`, async (t) => {
    const { PushesArg } = await load();
    const m = new PushesArg!();
    const c = compile(m, { backend: 'eager' });
    const xs = [randn([2]), randn([2])];
    const ref = [...xs];
    const want = eager(() => m.call(ref));
    const got = c.call(xs);
    t.true(close(got, want));
    t.is(xs.length, 3, 'the push happened on the caller list, as eagerly');
    t.throws(() => compile(new PushesArg!(), { fullgraph: true }).call([randn([2]), randn([2])]), { message: /changes its argument xs/ });
  });

  test(`${route}: a counter written in forward is replayed after the graph, under fullgraph`, async (t) => {
    const { Counter } = await load();
    const ref = new Counter!() as Module & { counter: number };
    const m = new Counter!() as Module & { counter: number };
    m.loadStateDict(ref.stateDict());
    const c = compile(m, { backend: 'eager', fullgraph: true });
    const x = randn([2, 4]);
    for (let i = 0; i < 3; i++) {
      const want = eager(() => ref.call(x));
      t.true(close(c.call(x), want), `call ${i}`);
      t.is(m.counter, ref.counter, `counter after call ${i}`);
    }
    t.is(m.counter, 3);
  });

  test(`${route}: a tensor written to an attribute is the graph's value, and no guard fails on it`, async (t) => {
    const { Remembers } = await load();
    const m = new Remembers!() as Module & { last: Tensor | null; fc: Module };
    const counter = new testing.CompileCounter();
    const c = compile(m, { backend: counter, fullgraph: true });
    for (let i = 0; i < 3; i++) {
      const x = randn([2, 4]);
      const out = c.call(x);
      t.true(
        close(
          out,
          eager(() => (m.fc.call(x) as Tensor).sigmoid()),
        ),
      );
      t.true(
        close(
          m.last,
          eager(() => m.fc.call(x)),
        ),
        `self.last after call ${i}`,
      );
    }
    t.is(counter.frameCount, 1);
  });

  test(`${route}: a new attribute assigned in forward holds the returned tensor itself (test_assign_does_not_exist)`, async (t) => {
    const { NewAttribute } = await load();
    const m = new NewAttribute!() as Module & { encoding?: Tensor };
    const c = compile(m, { backend: 'eager', fullgraph: true });
    const out = c.call(ones([3]));
    t.is(m.encoding, out);
    const out2 = c.call(ones([3]).mul(2));
    t.is(m.encoding, out2);
    t.deepEqual(out2.toArray(), [3, 3, 3]);
  });

  test(`${route}: a read after a write in the same call sees the written value`, async (t) => {
    const { ReadAfterWrite } = await load();
    const m = new ReadAfterWrite!() as Module & { scale: number };
    const c = compile(m, { backend: 'eager', fullgraph: true });
    t.deepEqual(c.call(ones([2])).toArray(), [3, 3]);
    t.is(m.scale, 3);
    const r = explain(new ReadAfterWrite!())(ones([2]));
    t.is(r.graphBreakCount, 0);
  });

  test(`${route}: assigning through a class setter runs eagerly, so the setter runs every call`, async (t) => {
    const { WithSetter } = await load();
    const ref = new WithSetter!() as Module & { log: string[] };
    const m = new WithSetter!() as Module & { log: string[] };
    const c = compile(m, { backend: 'eager' });
    for (let i = 0; i < 3; i++) {
      const x = randn([2]);
      t.true(
        close(
          c.call(x),
          eager(() => ref.call(x)),
        ),
      );
    }
    t.deepEqual(m.log, ref.log);
    t.throws(() => compile(new WithSetter!(), { backend: 'eager', fullgraph: true }).call(randn([2])), { message: /setter|mode/ });
  });

  test(`${route}: a write deeper than this.name stays a break, and the object changes every call as eagerly`, async (t) => {
    const { DeepWrite } = await load();
    const m = new DeepWrite!() as Module & { cfg: { scale: number } };
    const c = compile(m, { backend: 'eager' });
    for (let i = 0; i < 3; i++) c.call(randn([2]));
    t.is(m.cfg.scale, 4);
    t.throws(() => compile(new DeepWrite!(), { backend: 'eager', fullgraph: true }).call(randn([2])), { message: /cfg\.scale/ });
  });

  test(`${route}: a module written to an attribute runs eagerly and holds the same module as eagerly`, async (t) => {
    const { WritesModule } = await load();
    const m = new WritesModule!() as Module & { a: Module; last?: Module };
    const c = compile(m, { backend: 'eager' });
    const x = randn([2, 2]);
    t.true(
      close(
        c.call(x),
        eager(() => m.a.call(x)),
      ),
    );
    t.is(m.last, m.a);
  });

  test(`${route}: a trace that gives up after a write leaves no trace value in the module`, async (t) => {
    const { WriteThenGiveUp } = await load();
    const m = new WriteThenGiveUp!() as Module & { tmp: Tensor | null };
    const c = compile(m, { backend: 'eager' });
    const x = ones([2, 3]);
    const got = c.call(x);
    t.deepEqual(got.toArray(), eager(() => new WriteThenGiveUp!().call(x)).toArray());
    t.deepEqual(m.tmp!.toArray(), [
      [2, 2, 2],
      [2, 2, 2],
    ]);
  });

  test(`${route}: a submodule that logs runs alone between captured pieces; state written around it is replayed`, async (t) => {
    const { Caller } = await load();
    const ref = new Caller!() as Module & { seen: number };
    const m = new Caller!() as Module & { seen: number };
    m.loadStateDict(ref.stateDict());
    const logs: string[] = [];
    const orig = console.log;
    console.log = (...a: unknown[]) => void logs.push(a.join(' '));
    const counter = new testing.CompileCounter();
    try {
      const c = compile(m, { backend: counter });
      for (let i = 0; i < 3; i++) {
        const x = randn([2, 4]);
        t.true(
          close(
            c.call(x),
            eager(() => ref.call(x)),
          ),
          `call ${i}`,
        );
      }
    } finally {
      console.log = orig;
    }
    t.is(logs.length, 6, 'the logging submodule ran every call, compiled and eagerly');
    t.is(m.seen, ref.seen);
    t.true(counter.opCount >= 5, `add, mul | linear, relu, sub captured (got ${counter.opCount})`);
    t.throws(() => compile(new Caller!(), { backend: 'eager', fullgraph: true }).call(randn([2, 4])), {
      message: /Logs\.forward|console\.log/,
    });
  });

  for (const backend of ['kernels', 'aot_eager'] as const) {
    test(`${route}: backend ${backend}: a list input, a replayed write (the returned object itself) and a cut at a submodule`, async (t) => {
      const { SumList, NewAttribute, Caller } = await load();
      const xs = [randn([2, 3]), randn([2, 3]), randn([2, 3])];
      const s = new SumList!();
      t.true(
        close(
          compile(s, { backend }).call(xs),
          eager(() => s.call(xs)),
        ),
      );
      const n = new NewAttribute!() as Module & { encoding?: Tensor };
      const out = compile(n, { backend }).call(randn([3]));
      t.is(n.encoding, out);
      const ref = new Caller!();
      const c = new Caller!();
      c.loadStateDict(ref.stateDict());
      const orig = console.log;
      console.log = () => undefined;
      try {
        const cc = compile(c, { backend });
        for (let i = 0; i < 2; i++) {
          const x = randn([2, 4]);
          t.true(
            close(
              cc.call(x),
              eager(() => ref.call(x)),
            ),
            `Caller call ${i}`,
          );
        }
      } finally {
        console.log = orig;
      }
    });
  }
}
