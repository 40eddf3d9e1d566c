import { TraceError } from '../errors.js';
import { getattr, getitem, sym_add, sym_floordiv, sym_mod, sym_mul, sym_size, sym_sub, sym_truediv } from '../graph/builtins.js';
import { Node, type FunctionTarget } from '../graph/node.js';
import { proxyNode, userFrame, type Tracer } from '../graph/tracer.js';
import type { ShapeRecorder } from '../runtime/shape-recording.js';
import type { SizeArith } from '../runtime/size-arith.js';
import { Tensor } from '../runtime/tensor.js';
import type { ExampleValues } from './example-values.js';
import type { Guard } from './guards.js';

/** A tensor argument of the traced call: where it is, its example shape, and which of its dims are dynamic. */
export interface TracedInput {
  readonly index: number;
  readonly shape: readonly number[];
  readonly dynamic: ReadonlySet<number>;
}

/** What is known of a size computed from the arguments' sizes alone: its example value, how to recompute it, its text. */
interface Known {
  readonly hint: number;
  readonly value: (args: readonly unknown[]) => number;
  readonly text: string;
}

type Num = (a: number, b: number) => number;
const OPS: Readonly<Record<'add' | 'sub' | 'mul' | 'floorDiv' | 'mod' | 'div', [Num, (...a: never[]) => unknown, string]>> = {
  add: [(a, b) => a + b, sym_add, '+'],
  sub: [(a, b) => a - b, sym_sub, '-'],
  mul: [(a, b) => a * b, sym_mul, '*'],
  floorDiv: [(a, b) => Math.floor(a / b), sym_floordiv, '//'],
  mod: [(a, b) => ((a % b) + b) % b, sym_mod, '%'],
  div: [(a, b) => a / b, sym_truediv, '/'],
};
const COMPARE: Readonly<Record<'eq' | 'lt' | 'le', [(a: number, b: number) => boolean, string]>> = {
  eq: [(a, b) => a === b, '=='],
  lt: [(a, b) => a < b, '<'],
  le: [(a, b) => a <= b, '<='],
};

/**
 * Sizes in code kiln/plugin rewrote, while compile traces it (the plugin turns `x.shape[0] * 2` into
 * `mul(size(x, 0), 2)`). An argument's static dim is its example value, which the argument's shape guard
 * already pins. A dynamic dim, and any size of a tensor computed inside the trace, is the graph node that
 * computes it from the tensors the graph is given (`sym_size(x, 0)`), and arithmetic on such sizes records
 * `sym_mul`/`sym_add`/… nodes, so the graph is exact at every input size (what automatic dynamic shapes reuse).
 * A comparison on sizes computed from the arguments alone is decided on the example and kept as a guard
 * (`x.shape[0] > 1`), as TorchDynamo guards on SymInts. One that needs the value of a size the trace does not
 * know (of a tensor computed inside it) stops the trace, and that code runs eagerly.
 */
export class TracedSizes implements ShapeRecorder {
  readonly arith: SizeArith<unknown>;
  readonly guards: Guard[] = [];
  private readonly known = new WeakMap<object, Known>();

  /**
   * `inputs`: the tensor arguments by parameter name (their placeholders' targets); `examples`: values at the
   * example arguments, for the rank of a tensor computed inside the trace (the same wherever the guards hold).
   */
  constructor(
    private readonly tracer: Tracer,
    private readonly inputs: ReadonlyMap<string, TracedInput>,
    private readonly examples: ExampleValues,
  ) {
    const arith = (op: keyof typeof OPS) => (a: unknown, b: unknown) => this.arithmetic(op, a, b);
    const compare = (op: keyof typeof COMPARE) => (a: unknown, b: unknown) => this.compare(op, a, b);
    this.arith = {
      lit: (n) => n,
      add: arith('add'),
      sub: arith('sub'),
      mul: arith('mul'),
      floorDiv: arith('floorDiv'),
      mod: arith('mod'),
      eq: compare('eq'),
      lt: compare('lt'),
      le: compare('le'),
      // a dynamic size used as a plain number (`>>`, `Math.sqrt`, a template string) would specialise the graph
      // to one size and recompile at every other: that code runs eagerly instead
      hint: (a) => (typeof a === 'number' ? a : this.needsValue(a, 'using as a plain number')),
      constant: (a) => (typeof a === 'number' ? a : undefined),
    };
  }

  /** `a / b` on sizes: a `sym_truediv` node, so a fraction reaches the op that takes it when the program runs, as eagerly. */
  divide(a: unknown, b: unknown): unknown {
    if ((typeof a !== 'number' && !this.isSymbolic(a)) || (typeof b !== 'number' && !this.isSymbolic(b))) return undefined;
    return this.arithmetic('div', a, b);
  }

  isSymbolic(v: unknown): v is unknown {
    const node = proxyNode(v);
    return node !== undefined && isSizeNode(node);
  }

  sizes(t: Tensor): readonly unknown[] | undefined {
    const node = proxyNode(t);
    if (node === undefined) return undefined;
    const input = this.inputOf(t);
    const example = input ? undefined : this.examples.valueOf(node);
    const rank = input?.shape.length ?? (example instanceof Tensor ? example.shape.length : undefined);
    return rank === undefined ? undefined : Array.from({ length: rank }, (_, d) => this.size(t, d));
  }

  size(t: Tensor, d: number): unknown {
    if (proxyNode(t) === undefined) return undefined; // a real tensor (closed over): its size is a number
    const input = this.inputOf(t);
    const rank = input?.shape.length;
    if (input === undefined || rank === undefined) return this.tracer.createProxy('call_function', fn(sym_size), [t, d]);
    const k = d < 0 ? d + rank : d;
    if (k < 0 || k >= rank) return undefined;
    if (!input.dynamic.has(k)) return input.shape[k];
    const p = this.tracer.createProxy('call_function', fn(sym_size), [t, k]);
    const name = String(proxyNode(t)!.target);
    this.known.set(p, { hint: input.shape[k]!, value: (args) => (args[input.index] as Tensor).shape[k]!, text: `${name}.shape[${k}]` });
    return p;
  }

  private inputOf(t: Tensor): TracedInput | undefined {
    const node = proxyNode(t);
    return node?.op === 'placeholder' ? this.inputs.get(String(node.target)) : undefined;
  }

  private arithmetic(op: keyof typeof OPS, a: unknown, b: unknown): unknown {
    const [f, target, sign] = OPS[op];
    if (typeof a === 'number' && typeof b === 'number') return f(a, b);
    const p = this.tracer.createProxy('call_function', fn(target), [a, b]);
    const ka = this.knownOf(a);
    const kb = this.knownOf(b);
    if (ka && kb) {
      this.known.set(p, {
        hint: f(ka.hint, kb.hint),
        value: (args) => f(ka.value(args), kb.value(args)),
        text: `(${ka.text} ${sign} ${kb.text})`,
      });
    }
    return p;
  }

  /** Decide `a OP b` on the example and guard it, when both sides are known from the arguments. */
  private compare(op: keyof typeof COMPARE, a: unknown, b: unknown): boolean {
    const [f, sign] = COMPARE[op];
    if (typeof a === 'number' && typeof b === 'number') return f(a, b);
    if (op === 'le' && typeof a === 'number' && a <= 0 && nonNegative(b)) return true; // sizes are ≥ 0
    const ka = this.knownOf(a);
    const kb = this.knownOf(b);
    if (!ka || !kb) return this.needsValue(ka ? b : a, 'comparing');
    const outcome = f(ka.hint, kb.hint);
    const text = `${ka.text} ${sign} ${kb.text}`;
    this.guards.push({ text: outcome ? text : `not (${text})`, check: (args) => f(ka.value(args), kb.value(args)) === outcome });
    return outcome;
  }

  private knownOf(v: unknown): Known | undefined {
    if (typeof v === 'number') return { hint: v, value: () => v, text: String(v) };
    return v !== null && typeof v === 'object' ? this.known.get(v) : undefined;
  }

  private needsValue(v: unknown, what: string): never {
    const known = this.known.get(v as object);
    const why = known
      ? `would make the graph hold for one value of the dynamic size ${known.text} only`
      : 'needs its value, which the trace does not know (it is computed inside the captured code, and the graph computes it when it runs)';
    throw new TraceError(
      `symbolic tracing: ${what} the size '${proxyNode(v)?.name ?? String(v)}' ${why}, so this part runs eagerly.${userFrame()}`,
    );
  }
}

function fn(f: (...args: never[]) => unknown): FunctionTarget {
  return f as unknown as FunctionTarget;
}

/** Whether `v` (a size proxy, a node argument or a number) is ≥ 0 at every size: a size read, or sums, products and quotients of them. */
function nonNegative(v: unknown): boolean {
  if (typeof v === 'number') return v >= 0;
  const node = v instanceof Node ? v : proxyNode(v);
  if (node === undefined || !isSizeNode(node)) return false;
  if ([sym_add, sym_mul, sym_floordiv, sym_truediv].includes(node.target as never)) return node.args.every(nonNegative);
  return node.target !== sym_sub; // every other size node reads a size, and sym_mod's result is never negative
}

const SIZE_ARITH = new Set<unknown>([sym_size, sym_add, sym_sub, sym_mul, sym_floordiv, sym_mod, sym_truediv]);

/** Whether `node` computes a size: a size read (`x.shape[0]`, `numel()`, `ndim`) or arithmetic on sizes. */
function isSizeNode(node: Node): boolean {
  if (node.op === 'call_function') {
    if (SIZE_ARITH.has(node.target)) return true;
    const [of, key] = node.args as unknown[];
    if (node.target === getitem) return Number.isInteger(key) && of instanceof Node && of.target === getattr && of.args[1] === 'shape';
    return node.target === getattr && key === 'ndim';
  }
  if (node.op === 'call_method') {
    if (node.target === 'numel' || node.target === 'dim') return node.args.length === 1;
    return node.target === 'size' && node.args.length === 2 && Number.isInteger(node.args[1]);
  }
  return false;
}
