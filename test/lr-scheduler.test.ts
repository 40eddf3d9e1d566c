import test from 'ava';
import { StateDictError, ValueError, nn, optim, tensor } from '../src/index.js';
import { closeTo, golden, makeOptimizer, makeScheduler, numbersClose, param, sameStateDict, stepWith } from './train-golden.js';

/**
 * optim.lrScheduler against PyTorch 1.13 (scripts/golden_train.py): each scheduler's lr (and OneCycleLR's
 * momentum or beta1) after construction and after every step, for one or two parameter groups and for two
 * schedulers chained on one optimizer; the optimizer's stateDict afterwards (initialLr and OneCycleLR's
 * bounds kept in the groups, as PyTorch keeps them); and optimizers stepped under a schedule.
 */

const { StepLR, CosineAnnealingLR, LinearLR, OneCycleLR } = optim.lrScheduler;

for (const c of golden.schedulers) {
  test(`${c.schedulers.map((s) => s.kind).join(' + ')}: ${c.name} gives PyTorch's lr trajectory`, (t) => {
    const params = c.groupLrs.map(() => new nn.Parameter(tensor([1, 2])));
    const opt = makeOptimizer(
      c.optimizer,
      params.map((p, i) => ({ params: [p], lr: c.groupLrs[i]! })),
      c.optimizerOptions,
    );
    const schedulers = c.schedulers.map((s) => makeScheduler(opt, s));
    const last = schedulers.at(-1)!;
    const momenta = () =>
      opt.paramGroups.map((g) => {
        const o = g.options as { betas?: number[]; momentum?: number };
        return o.betas?.[0] ?? o.momentum!;
      });
    numbersClose(t, last.getLastLr(), c.lrs[0]!, 'lr after construction');
    numbersClose(t, momenta(), c.momentum[0]!, 'momentum after construction');
    for (let step = 1; step <= c.steps; step++) {
      opt.step();
      for (const s of schedulers) s.step();
      numbersClose(t, last.getLastLr(), c.lrs[step]!, `lr after step ${step}`);
      numbersClose(t, momenta(), c.momentum[step]!, `momentum after step ${step}`);
      numbersClose(
        t,
        opt.paramGroups.map((g) => g.options.lr),
        c.lrs[step]!,
        `the groups' lr after step ${step}`,
      );
    }
    sameStateDict(t, opt.stateDict(), c.stateDict, 'optimizer stateDict');
  });
}

for (const c of golden.trained) {
  test(`${c.optimizer} under ${c.schedulers.map((s) => s.kind).join(' + ')}: ${c.name} follows PyTorch's trajectory`, (t) => {
    const params = c.params.map(param);
    const opt = makeOptimizer(c.optimizer, params, c.options);
    const schedulers = c.schedulers.map((s) => makeScheduler(opt, s));
    c.grads.forEach((grads, step) => {
      stepWith(opt, params, grads, schedulers);
      params.forEach((p, i) => closeTo(t, p, c.after[step]![i]!, `param ${i} after step ${step + 1}`));
    });
    numbersClose(t, schedulers.at(-1)!.getLastLr(), c.lrs, 'last lr');
    sameStateDict(t, opt.stateDict(), c.stateDict, 'optimizer stateDict');
  });
}

const sgd = (lr = 0.1) => new optim.SGD([new nn.Parameter(tensor([1]))], { lr });

test('getLastLr returns a copy of the last lrs', (t) => {
  const s = new StepLR(sgd(), { stepSize: 1 });
  s.getLastLr()[0] = 7;
  t.deepEqual(s.getLastLr(), [0.1]);
});

test('a scheduler made on an optimizer that already has initialLr starts from it (a second scheduler chains)', (t) => {
  const opt = sgd(0.1);
  opt.paramGroups[0]!.options.lr = 0.05;
  opt.paramGroups[0]!.schedule.initialLr = 0.2;
  const s = new CosineAnnealingLR(opt, { tMax: 2 });
  t.deepEqual(s.baseLrs, [0.2]);
  s.step();
  // PyTorch: (1 + cos(π/2)) / (1 + cos(0)) · (0.05 − 0) = 0.025
  t.true(Math.abs(s.getLastLr()[0]! - 0.025) < 1e-12);
});

test('OneCycleLR refuses to step past totalSteps, as PyTorch does', (t) => {
  const s = new OneCycleLR(sgd(), { maxLr: 1, totalSteps: 3 });
  s.step();
  s.step();
  s.step(); // step 3 = totalSteps: PyTorch allows it (lastEpoch ≤ totalSteps)
  t.throws(() => s.step(), {
    instanceOf: ValueError,
    message: 'OneCycleLR: tried to step 5 times; the specified number of total steps is 3',
  });
});

test('schedulers reject bad options with ValueErrors naming them', (t) => {
  t.throws(() => new StepLR(sgd(), { stepSize: 0 }), { instanceOf: ValueError, message: 'StepLR: stepSize must be an integer ≥ 1, got 0' });
  t.throws(() => new StepLR(sgd(), { stepSize: 2, gamma: -1 }), { message: 'StepLR: gamma must be a finite number ≥ 0, got -1' });
  t.throws(() => new StepLR(sgd(), { stepSize: 2, step: 3 } as never), { message: /StepLR: unknown option 'step'/ });
  t.throws(() => new CosineAnnealingLR(sgd(), { tMax: 0 }), { message: 'CosineAnnealingLR: tMax must be an integer ≥ 1, got 0' });
  t.throws(() => new LinearLR(sgd(), { startFactor: 0 }), { message: 'LinearLR: startFactor must be > 0 and ≤ 1, got 0' });
  t.throws(() => new LinearLR(sgd(), { endFactor: 1.5 }), { message: 'LinearLR: endFactor must be a finite number ≥ 0 and ≤ 1, got 1.5' });
  t.throws(() => new OneCycleLR(sgd(), { maxLr: 1 }), { message: 'OneCycleLR: give totalSteps, or epochs and stepsPerEpoch' });
  t.throws(() => new OneCycleLR(sgd(), { maxLr: 1, epochs: 2 }), {
    message: 'OneCycleLR: stepsPerEpoch must be an integer ≥ 1, got undefined',
  });
  t.throws(() => new OneCycleLR(sgd(), { maxLr: [1, 2], totalSteps: 5 }), {
    message: 'OneCycleLR: expected 1 values for maxLr (one per parameter group), got 2',
  });
  t.throws(() => new OneCycleLR(sgd(), { maxLr: 1, totalSteps: 5, annealStrategy: 'exp' as never }), {
    message: "OneCycleLR: annealStrategy must be one of 'cos', 'linear', got 'exp'",
  });
  t.throws(() => new StepLR({ paramGroups: [] } as never, { stepSize: 1 }), {
    message: 'StepLR: expects a kiln optimizer (optim.SGD, optim.AdamW, …), got an object',
  });
});

test('a OneCycleLR that fails its checks leaves the optimizer as it was', (t) => {
  const opt = sgd(0.1);
  t.throws(() => new OneCycleLR(opt, { maxLr: 1, totalSteps: 5, maxMomentum: [0.9, 0.8] }));
  t.deepEqual(opt.paramGroups[0]!.schedule, {});
  t.is(opt.paramGroups[0]!.options.momentum, 0);
  t.is(opt.paramGroups[0]!.options.lr, 0.1);
});

test('a scheduler and its optimizer resumed from their state dicts continue the schedule where it stopped', (t) => {
  const make = () => {
    const opt = new optim.SGD([new nn.Parameter(tensor([1]))], { lr: 0.1, momentum: 0.9 });
    return { opt, sched: new OneCycleLR(opt, { maxLr: 1, totalSteps: 10 }) };
  };
  const straight = make();
  const lrs: number[] = [];
  for (let i = 0; i < 8; i++) {
    straight.sched.step();
    lrs.push(straight.sched.getLastLr()[0]!);
  }
  const first = make();
  for (let i = 0; i < 3; i++) first.sched.step();
  const [optState, schedState] = [first.opt.stateDict(), first.sched.stateDict()];
  const resumed = make();
  resumed.opt.loadStateDict(optState);
  resumed.sched.loadStateDict(schedState);
  t.deepEqual(resumed.sched.getLastLr(), [lrs[2]!]);
  const rest: number[] = [];
  for (let i = 3; i < 8; i++) {
    resumed.sched.step();
    rest.push(resumed.sched.getLastLr()[0]!);
  }
  t.deepEqual(rest, lrs.slice(3));
  t.is(resumed.opt.paramGroups[0]!.options.momentum, straight.opt.paramGroups[0]!.options.momentum);
});

test('a scheduler refuses a state dict for another number of groups', (t) => {
  const s = new StepLR(sgd(), { stepSize: 2 });
  t.throws(() => s.loadStateDict({ ...s.stateDict(), baseLrs: [0.1, 0.2] }), {
    instanceOf: StateDictError,
    message: 'StepLR.loadStateDict: baseLrs must list one lr per parameter group (1), got [0.1, 0.2]',
  });
  t.throws(() => s.loadStateDict({ ...s.stateDict(), last: 1 } as never), { instanceOf: ValueError, message: /unknown option 'last'/ });
});
