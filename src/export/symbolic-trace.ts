import type { ShapeTracking } from '../aot/fx-tracer.js';
import { userFrame } from '../graph/tracer.js';
import type { GraphModule } from '../graph/graph-module.js';
import { Node as GraphNode, type FunctionTarget, type Node } from '../graph/node.js';
import type { DType } from '../runtime/dtype.js';
import { isPlainObject } from '../runtime/plain-object.js';
import { setShapeRecorder, type ShapeRecorder } from '../runtime/shape-recording.js';
import type { SizeArith } from '../runtime/size-arith.js';
import { inferMeta, isOpName, type OpMeta, type TensorMeta } from '../runtime/shape-rules/index.js';
import { Tensor } from '../runtime/tensor.js';
import { shapeRecorder, SymSize, type ShapeEnv, type Size } from './symbolic/shape-env.js';

/**
 * Export's symbolic sizes while the program is traced: every traced tensor's sizes as the env knows them
 * (symbols for dynamic dims), propagated op by op through the op table's shape rules, whose size comparisons
 * become the env's guards (`x + y` on `[s0]` and `[s1]` records `s0 == s1`). The plugin's shape helpers read
 * these sizes through the ShapeRecorder, so `if (x.shape[0] <= 6)` in rewritten code records `s0 <= 6`.
 * Op kernels run on the example sizes (`concrete`), and the integers the graph holds are generalised after
 * tracing by tracing again at other sizes (export-program.ts).
 */
export class SymbolicShapes implements ShapeTracking {
  private readonly sizes = new WeakMap<Tensor, readonly Size[]>();
  /** Ops whose rule could not follow the call (it threw, or disagreed with the kernel): their outputs stay static. */
  readonly unfollowed: string[] = [];

  private readonly quiet: SizeArith<Size>;

  constructor(readonly env: ShapeEnv) {
    this.quiet = quietArith(env);
  }

  setSizes(t: Tensor, sizes: readonly Size[]): void {
    this.sizes.set(t, sizes);
  }

  sizesOf(t: Tensor): readonly Size[] | undefined {
    return this.sizes.get(t);
  }

  /** A recorder for the plugin's helpers; comparisons they make are located at the user's line. */
  recorder(): ShapeRecorder<Size> {
    const env = this.env;
    const located =
      (k: 'eq' | 'lt' | 'le') =>
      (a: Size, b: Size): boolean => {
        env.loc = userFrame().trim() || undefined;
        return env[k](a, b);
      };
    const arith: SizeArith<Size> = {
      lit: (n) => env.lit(n),
      add: (a, b) => env.add(a, b),
      sub: (a, b) => env.sub(a, b),
      mul: (a, b) => env.mul(a, b),
      floorDiv: (a, b) => env.floorDiv(a, b),
      mod: (a, b) => env.mod(a, b),
      eq: located('eq'),
      lt: located('lt'),
      le: located('le'),
      hint: (a) => env.hint(a),
      constant: (a) => env.constant(a),
    };
    return { ...shapeRecorder(env, (t) => this.sizes.get(t) ?? [...t.shape]), arith };
  }

  concrete(x: unknown): unknown {
    if (x instanceof SymSize) return this.env.hint(x);
    if (Array.isArray(x)) return x.some(hasSymbolic) ? x.map((v) => this.concrete(v)) : x;
    if (isPlainObject(x) && Object.values(x).some(hasSymbolic)) {
      return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, this.concrete(v)]));
    }
    return x;
  }

  recorded(
    target: FunctionTarget,
    args: readonly unknown[],
    kwargs: Readonly<Record<string, unknown>> | undefined,
    out: unknown,
    _node: Node,
  ): void {
    const name = (target as { opName?: string }).opName;
    if (name === undefined || !isOpName(name)) return this.static(out, name ?? target.name);
    let meta: OpMeta<Size>;
    try {
      // quiet: the guards of the ops are recorded by propagateGraph over the generalised graph, where every
      // integer that follows the inputs is arithmetic on them (here a size read outside the plugin is a number)
      meta = inferMeta(
        this.quiet,
        name,
        args.map((a) => this.metaOf(a)),
        kwargs ? (this.metaOf(kwargs) as Record<string, unknown>) : undefined,
      );
    } catch {
      return this.static(out, name);
    }
    const outs = Array.isArray(out) ? out : [out];
    const metas = (Array.isArray(meta) ? meta : [meta]) as readonly (TensorMeta<Size> | null)[];
    outs.forEach((o, i) => {
      if (!(o instanceof Tensor)) return;
      const m = metas[i];
      if (!m || m.shape.length !== o.shape.length || m.shape.some((d, j) => this.env.hint(d) !== o.shape[j])) {
        this.unfollowed.push(name);
        return;
      }
      this.sizes.set(o, m.shape);
    });
  }

  private static(out: unknown, name: string): void {
    // the output's sizes stay the example's: any symbol in them is lost, which the retrace at other sizes catches
    if (out instanceof Tensor || Array.isArray(out)) this.unfollowed.push(name);
  }

  /** A tensor as its meta (symbolic sizes where known), inside arrays and objects too. */
  private metaOf(a: unknown): unknown {
    if (a instanceof Tensor) return { shape: this.sizes.get(a) ?? [...a.shape], dtype: a.dtype };
    if (Array.isArray(a)) return a.map((v) => this.metaOf(v));
    if (isPlainObject(a)) return Object.fromEntries(Object.entries(a).map(([k, v]) => [k, this.metaOf(v)]));
    return a;
  }
}

function hasSymbolic(x: unknown): boolean {
  if (x instanceof SymSize) return true;
  if (Array.isArray(x)) return x.some(hasSymbolic);
  if (isPlainObject(x)) return Object.values(x).some(hasSymbolic);
  return false;
}

/** Run `f` (which traces with `shapes` on its tracer) with the recorder the plugin's helpers answer through. */
export function withSymbolicShapes<T>(shapes: SymbolicShapes, f: () => T): T {
  const prev = setShapeRecorder(shapes.recorder() as ShapeRecorder);
  try {
    return f();
  } finally {
    setShapeRecorder(prev);
  }
}

/** The env's arithmetic with comparisons decided on the example values and recorded nowhere. */
function quietArith(env: ShapeEnv): SizeArith<Size> {
  return {
    lit: (n) => env.lit(n),
    add: (a, b) => env.add(a, b),
    sub: (a, b) => env.sub(a, b),
    mul: (a, b) => env.mul(a, b),
    floorDiv: (a, b) => env.floorDiv(a, b),
    mod: (a, b) => env.mod(a, b),
    eq: (a, b) => env.hint(a) === env.hint(b),
    lt: (a, b) => env.hint(a) < env.hint(b),
    le: (a, b) => env.hint(a) <= env.hint(b),
    hint: (a) => env.hint(a),
    constant: (a) => env.constant(a),
  };
}

const SYM_OPS: Readonly<Record<string, (env: ShapeEnv, a: Size, b: Size) => Size>> = {
  sym_add: (env, a, b) => env.add(a, b),
  sym_sub: (env, a, b) => env.sub(a, b),
  sym_mul: (env, a, b) => env.mul(a, b),
  sym_floordiv: (env, a, b) => env.floorDiv(a, env.hint(b)),
};

/**
 * The op table's shape rules run over `gm`'s nodes with `env` (PyTorch's fake-tensor propagation): each
 * size comparison a rule makes is recorded as a guard, so `x + y` on `[s0]` and `[s1]` records `s0 == s1`.
 * `inputs` gives each placeholder's sizes.
 */
export function propagateGraph(gm: GraphModule, env: ShapeEnv, inputs: readonly (readonly Size[])[]): void {
  const sizes = new Map<Node, unknown>();
  let p = 0;
  const value = (a: unknown): unknown => {
    if (a instanceof GraphNode) return sizes.get(a);
    if (Array.isArray(a)) return a.map(value);
    if (isPlainObject(a)) return Object.fromEntries(Object.entries(a).map(([k, v]) => [k, value(v)]));
    return a;
  };
  const tensorMeta = (n: Node) => n.meta.tensorMeta as { shape: number[]; dtype: DType } | undefined;
  for (const n of gm.graph.nodes) {
    if (n.op === 'placeholder') {
      const meta = tensorMeta(n);
      sizes.set(n, { shape: inputs[p++] ?? meta?.shape ?? [], dtype: meta?.dtype ?? 'float32' });
      continue;
    }
    if (n.op !== 'call_function') {
      const meta = tensorMeta(n);
      if (meta) sizes.set(n, { shape: meta.shape, dtype: meta.dtype });
      continue;
    }
    const target = n.target as { opName?: string; name: string };
    env.loc = target.opName ?? target.name;
    if (target.name === 'sym_size') {
      const [t, d] = n.args as [Node, number];
      sizes.set(n, (sizes.get(t) as { shape: Size[] } | undefined)?.shape[d]);
    } else if (SYM_OPS[target.name]) {
      const [a, b] = value(n.args) as [Size, Size];
      sizes.set(n, SYM_OPS[target.name]!(env, a, b));
    } else if (target.name === 'getitem') {
      const [o, i] = n.args as [Node, number];
      const outs = sizes.get(o);
      sizes.set(n, Array.isArray(outs) ? outs[i] : undefined);
    } else if (target.opName !== undefined && isOpName(target.opName)) {
      sizes.set(n, inferMeta(env, target.opName, value(n.args) as unknown[], value(n.kwargs) as Record<string, unknown>));
    } else {
      const meta = tensorMeta(n);
      if (meta) sizes.set(n, { shape: meta.shape, dtype: meta.dtype });
    }
  }
}
