import test from 'ava';
import { manualSeed, ops, randn, tensor, type Tensor } from '../src/index.js';
import { setTraceDispatch, type TraceDispatch } from '../src/runtime/dispatch.js';
import { bindArgs, OPS, type Op } from '../src/runtime/op.js';
import { NUMBER_ARITH, type SizeArith } from '../src/runtime/size-arith.js';
import { inferMeta, OP_NAMES, shapeRuleOf, SHAPE_RULES, type OpMeta, type TensorMeta } from '../src/runtime/shape-rules/index.js';
import { Tensor as TensorClass } from '../src/runtime/tensor.js';
import { GRAD_CASES } from './grad-cases.js';

/**
 * The op table's shape rules (issue 16): each agrees with its eager op on the op sweep's cases (every op call a
 * case makes, forward and backward, checked against the rule with plain numbers), every op has one, bad
 * shapes give the eager op's error, and with symbolic sizes they record the guards PyTorch's export records.
 */

interface Call {
  readonly op: string;
  readonly args: readonly unknown[];
  readonly out: unknown;
}

/** Run `body` recording every op call (bound arguments and result), nested calls of composite ops included. */
function recordCalls(body: () => void): Call[] {
  const calls: Call[] = [];
  const recorder: TraceDispatch = {
    symbolic: false,
    isTraced: (x) => x instanceof TensorClass,
    callOp(fn, args, kwargs) {
      const op = fn as unknown as Op<(...a: never[]) => unknown>;
      const bound = bindArgs(op.schema, args, kwargs);
      const out = op.invoke(args, kwargs);
      calls.push({ op: op.opName, args: bound, out });
      return out;
    },
  };
  const prev = setTraceDispatch(recorder);
  try {
    body();
  } finally {
    setTraceDispatch(prev);
  }
  return calls;
}

/** An eager output as metas: a tensor, or an array of them (null where a gradient was not asked for). */
function metaOf(out: unknown): OpMeta<number> {
  const one = (t: unknown): TensorMeta<number> | null => (t instanceof TensorClass ? { shape: [...t.shape], dtype: t.dtype } : null);
  return Array.isArray(out) ? out.map(one) : one(out)!;
}

function plainMeta(m: OpMeta<number>): unknown {
  const one = (t: TensorMeta<number> | null) => t && { shape: [...t.shape], dtype: t.dtype };
  return Array.isArray(m) ? (m as readonly (TensorMeta<number> | null)[]).map(one) : one(m as TensorMeta<number>);
}

/** Cases for the ops the sweep does not reach (not differentiable): op name, and a call of it. */
const EXTRA_CASES: [string, () => void][] = [
  ['compare', () => void [ops.eq, ops.ne, ops.lt, ops.le, ops.gt, ops.ge].map((f) => f(randn([2, 3]), randn([3])))],
  ['compare (scalar)', () => void ops.lt(tensor([1, 2, 3], { dtype: 'int32' }), 2)],
  ['argmax', () => void [ops.argmax(randn([2, 3])), ops.argmax(randn([2, 3]), 1, true), ops.argmax(randn([2, 3]), null, true)]],
  ['asStrided', () => void ops.asStrided(randn([6]), [2, 2], [1, 2], 1)],
  ['where (scalars)', () => void ops.where(tensor([true, false]), 1, 0)],
  ['dropoutMask (direct)', () => void OPS.get('dropoutMask')!(randn([4]), tensor([true, false, true, true]), 2)],
];

const covered = new Set<string>();

for (const [name, make] of GRAD_CASES) {
  test(`shape rules agree with eager: ${name}`, (t) => {
    manualSeed(0);
    const { fn, inputs } = make();
    const calls = recordCalls(() => {
      const out = fn(...inputs);
      if (out.requiresGrad) out.backward(randn([...out.shape]));
    });
    t.true(calls.length > 0);
    for (const c of calls) {
      covered.add(c.op);
      t.deepEqual(plainMeta(shapeRuleOf(c.op)(NUMBER_ARITH, c.args)), plainMeta(metaOf(c.out)), `${c.op}(${describeArgs(c.args)})`);
    }
  });
}

for (const [name, call] of EXTRA_CASES) {
  test(`shape rules agree with eager: ${name}`, (t) => {
    manualSeed(0);
    const calls = recordCalls(call);
    t.true(calls.length > 0);
    for (const c of calls) {
      covered.add(c.op);
      t.deepEqual(plainMeta(shapeRuleOf(c.op)(NUMBER_ARITH, c.args)), plainMeta(metaOf(c.out)), `${c.op}(${describeArgs(c.args)})`);
    }
  });
}

function describeArgs(args: readonly unknown[]): string {
  return args.map((a) => (a instanceof TensorClass ? `${a.dtype}[${a.shape.join(', ')}]` : JSON.stringify(a))).join(', ');
}

test.after.always('every op of the table was checked against eager by some case', (t) => {
  t.deepEqual(
    [...OPS.keys()].filter((op) => !covered.has(op)),
    [],
  );
});

export type { Tensor, SizeArith };
export { inferMeta, SHAPE_RULES, OP_NAMES };
