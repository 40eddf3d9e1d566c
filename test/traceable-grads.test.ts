import test from 'ava';
import { manualSeed, ops, randn, tensor, Tensor } from '../src/index.js';
import { setTraceDispatch } from '../src/runtime/dispatch.js';
import { GRAD_CASES } from './grad-cases.js';
import { TraceabilityCheck } from './traceability-check.js';

/**
 * Every gradient rule must be written with op-table calls, so that AOT autograd can record a backward as a
 * graph. The checker (traceability-check.ts) plays the tracer during each case's forward and backward.
 */

/** Gradient rules not yet written with op-table calls. Only shrinks; issue 15 item 1 empties it. */
const NOT_YET_TRACEABLE = new Set<string>([]);

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
