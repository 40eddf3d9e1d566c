import test from 'ava';
import { allclose, compile, explain, nn, ones, randn, testing, type Tensor } from 'kiln';
import { loadRewritten } from './plugin-helpers.js';

/**
 * Issue 17, capture items 1 and 4, kiln's own edge cases, on both routes: code the plugin rewrote
 * (test/fixtures/plugin/pytree-state) and the same classes here, which tsx loads without the plugin
 * (run-time capture). Every case compares with eager.
 */

type Module = InstanceType<typeof nn.Module>;
type Ctor = new (...a: never[]) => Module;
const close = (a: unknown, b: unknown) => allclose(a as Tensor, b as Tensor, { atol: 1e-5 });
const eager = <T>(f: () => T): T => testing.eagerly(f);

// ---- the classes under test, as run-time capture sees them ----

class SumList extends nn.Module {
  override forward(xs: Tensor[]): Tensor {
    let acc = xs[0]!;
    for (let i = 1; i < xs.length; i++) acc = acc.add(xs[i]!);
    return acc;
  }
}

class SliceDestructure extends nn.Module {
  override forward(xs: Tensor[]): Tensor {
    const [a, b] = xs;
    const rest = xs.slice(2);
    return a!
      .mul(b!)
      .add(rest[0]!)
      .sub(rest[rest.length - 1]!);
  }
}

class NestedInput extends nn.Module {
  override forward(input: { x: { a: Tensor[]; b: Tensor }; y: Tensor; skip: null }): Tensor {
    const a = input.x.a;
    return a[0]!
      .add(a[a.length - 1]!)
      .mul(input.x.b)
      .add(input.y);
  }
}

class PushesArg extends nn.Module {
  override forward(xs: Tensor[]): Tensor {
    xs.push(xs[0]!.add(1));
    return xs[1]!.add(xs[2]!);
  }
}

class Counter extends nn.Module {
  fc = new nn.Linear(4, 4);
  counter = 0;
  override forward(x: Tensor): Tensor {
    const r = this.fc.call(x).add(this.counter);
    this.counter += 1;
    return r.relu();
  }
}

class Remembers extends nn.Module {
  fc = new nn.Linear(4, 4);
  last: Tensor | null = null;
  override forward(x: Tensor): Tensor {
    const h = this.fc.call(x);
    this.last = h;
    return h.sigmoid();
  }
}

class NewAttribute extends nn.Module {
  override forward(x: Tensor): Tensor {
    (this as unknown as { encoding: Tensor }).encoding = x.add(1);
    return (this as unknown as { encoding: Tensor }).encoding;
  }
}

class ReadAfterWrite extends nn.Module {
  scale = 1;
  override forward(x: Tensor): Tensor {
    this.scale = 3;
    return x.mul(this.scale);
  }
}

const RUNTIME: Record<string, Ctor> = {
  SumList,
  SliceDestructure,
  NestedInput,
  PushesArg,
  Counter,
  Remembers,
  NewAttribute,
  ReadAfterWrite,
};

const routes: [string, () => Promise<Record<string, Ctor>>][] = [
  ['run-time capture', async () => RUNTIME],
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
}
