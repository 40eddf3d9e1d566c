import test from 'ava';
import { manualSeed, ops, randn, tensor, Tensor } from '../src/index.js';
import { setTraceDispatch, type TraceDispatch } from '../src/runtime/dispatch.js';
import type { Op } from '../src/runtime/op.js';
import { isPlainObject } from '../src/runtime/plain-object.js';
import { GRAD_CASES } from './grad-cases.js';

/**
 * Every gradient rule must be written with op-table calls, so that AOT autograd can record a backward as a
 * graph. This checker plays the tracer: it watches every op called during a forward and its backward, and
 * flags an op that receives a tensor no op made (a rule that computed it with a raw kernel, or saved an
 * intermediate of its forward kernel). Composite ops are traced into, as the joint-graph tracer does.
 */

class TraceabilityCheck implements TraceDispatch {
  readonly symbolic = false;
  readonly recordsEveryOp = true;
  readonly problems: string[] = [];
  private readonly known = new WeakSet<Tensor>();
  phase = 'forward';

  know(x: unknown): void {
    if (x instanceof Tensor) this.known.add(x);
    else if (Array.isArray(x)) x.forEach((v) => this.know(v));
    else if (isPlainObject(x)) Object.values(x).forEach((v) => this.know(v));
  }

  isTraced(x: unknown): boolean {
    return x instanceof Tensor && this.known.has(x);
  }

  private check(opName: string, x: unknown): void {
    if (x instanceof Tensor && !this.known.has(x)) {
      this.problems.push(`${this.phase}: ${opName} got a ${x.dtype} [${x.shape.join(', ')}] that no op made`);
    } else if (Array.isArray(x)) x.forEach((v) => this.check(opName, v));
    else if (isPlainObject(x)) Object.values(x).forEach((v) => this.check(opName, v));
  }

  callOp(op: (...args: never[]) => unknown, args: readonly unknown[], kwargs: Readonly<Record<string, unknown>> | undefined): unknown {
    // An op-table op, or one of the recorded factories (`zeros`, `full`, …), which take no tensors.
    const o = op as unknown as Partial<Op<(...a: unknown[]) => unknown>> & ((...a: unknown[]) => unknown);
    const name = o.opName ?? o.name;
    this.check(name, args);
    this.check(name, kwargs);
    const prev = o.composite ? null : setTraceDispatch(null);
    try {
      const out = o.invoke ? o.invoke(args, kwargs) : o(...args, ...(kwargs ? [kwargs] : []));
      this.know(out);
      return out;
    } finally {
      if (!o.composite) setTraceDispatch(prev);
    }
  }

  derived(from: unknown, to: unknown): void {
    if (this.isTraced(from)) this.know(to);
  }

  wroteInPlace(self: unknown, result: unknown): void {
    if (this.isTraced(result)) this.know(self);
  }
}

/** Gradient rules not yet written with op-table calls. Only shrinks; issue 15 item 1 empties it. */
const NOT_YET_TRACEABLE = new Set<string>([
  'abs',
  'clamp',
  'clone',
  'cos',
  'div',
  'exp',
  'exp2',
  'expand',
  'flatten',
  'gather',
  'gelu',
  'index',
  'indexSelect',
  'linear',
  'log',
  'matmul',
  'max',
  'min',
  'neg',
  'permute',
  'pow',
  'relu',
  'reshape',
  'sigmoid',
  'sin',
  'split',
  'sqrt',
  'squeeze',
  'tanh',
  'transpose',
  'unbind',
  'unsqueeze',
  'view',
  'where',
]);

function traceProblems(make: (typeof GRAD_CASES)[number][1]): string[] {
  manualSeed(0);
  const { fn, inputs } = make();
  const checker = new TraceabilityCheck();
  checker.know(inputs);
  const prev = setTraceDispatch(checker);
  try {
    const out = fn(...inputs);
    const gradOut = randn([...out.shape]);
    checker.know(gradOut);
    checker.phase = 'backward';
    out.backward(gradOut);
  } finally {
    setTraceDispatch(prev);
  }
  inputs.forEach((x, i) => {
    if (x.grad && !checker.isTraced(x.grad)) checker.problems.push(`the gradient of input ${i} was not made by an op`);
  });
  return checker.problems;
}

for (const [name, make] of GRAD_CASES) {
  const op = name.split(' ')[0]!;
  test(`gradient rule of ${name} is written with op-table calls`, (t) => {
    const problems = traceProblems(make);
    if (NOT_YET_TRACEABLE.has(op)) {
      t.not(problems.length, 0, `${op} is traceable now: remove it from NOT_YET_TRACEABLE`);
    } else t.deepEqual(problems, []);
  });
}

test('the checker flags a gradient computed outside the op table', (t) => {
  const problems = traceProblems(() => ({
    fn: (a: Tensor) => ops.mul(a, tensor(Array.from(a.detach().data()))),
    inputs: [randn([3]).requiresGrad_(true)],
  }));
  t.true(problems.some((p) => /forward: mul got a float32 \[3\] that no op made/.test(p)));
});
