import test from 'ava';
import { manualSeed, ops, randn, testing } from '../src/index.js';
import { GRAD_CASES as cases, NOT_DIFFERENTIABLE } from './grad-cases.js';

/**
 * Finite-difference checks of every differentiable op in the registry (cases in grad-cases.ts). A new op
 * without a case fails `every differentiable op has a gradcheck case`.
 */

const g = (t: ReturnType<typeof randn>) => t.requiresGrad_(true);

for (const [name, make] of cases) {
  test(`gradcheck ${name}`, (t) => {
    manualSeed(0);
    const { fn, inputs } = make();
    t.true(testing.gradcheck(fn, inputs, { name }));
  });
}

test('every differentiable op has a gradcheck case', (t) => {
  const covered = new Set(cases.map(([n]) => n.split(' ')[0]!));
  const missing = [...ops.registry.keys()].filter((op) => !NOT_DIFFERENTIABLE.has(op) && !covered.has(op));
  t.deepEqual(missing, []);
});

test('gradcheck catches a wrong gradient', (t) => {
  // x * x with a backward that forgets the factor 2: built by detaching one operand
  const x = g(randn([3]));
  const err = t.throws(() => testing.gradcheck((a) => a.mul(a.detach()), [x], { name: 'bad square' }));
  t.regex(err!.message, /gradcheck\(bad square\): input 0 \[3\] element 0: analytic gradient/);
  t.is(err!.name, 'GradcheckError');
});
