import test, { type ExecutionContext } from 'ava';
import { StateDictError, ValueError, allclose, compile, manualSeed, nn, ops, optim, randn, tensor, type Tensor } from '../src/index.js';
import { closeTo, decodeStateDict, golden, makeOptimizer, param, sameStateDict, stepWith, type RoundTripCase } from './train-golden.js';

/**
 * AdamW, RMSprop (and Adam, SGD) against PyTorch 1.13 (scripts/golden_train.py): a few steps with fixed
 * gradients, the parameters after every step within 1e-5, and the optimizer's stateDict after the last step
 * equal to PyTorch's state_dict in kiln's names. Then stateDict()/loadStateDict() round trips, and bad input.
 */

for (const c of golden.optimizers) {
  test(`${c.optimizer}: ${c.name} follows PyTorch's trajectory and state_dict`, (t) => {
    const params = c.params.map(param);
    const groups = c.groups?.map(({ params: ids, ...o }) => ({ ...o, params: ids.map((i) => params[i]!) }));
    const opt = makeOptimizer(c.optimizer, groups ?? params, c.options);
    c.grads.forEach((grads, step) => {
      stepWith(opt, params, grads);
      params.forEach((p, i) => closeTo(t, p, c.after[step]![i]!, `param ${i} after step ${step + 1}`));
    });
    sameStateDict(t, opt.stateDict(), c.stateDict, 'stateDict');
  });
}

/** The case's first `split` steps taken by an optimizer of its own; returns the parameters and the optimizer. */
function firstSteps(c: RoundTripCase) {
  const params = c.params.map(param);
  const opt = makeOptimizer(c.optimizer, params, c.options);
  c.grads.slice(0, c.split).forEach((g) => stepWith(opt, params, g));
  return { params, opt };
}

/** A fresh optimizer on copies of `params`, loaded with `sd`, takes the remaining steps: PyTorch's trajectory. */
function resumeMatches(t: ExecutionContext, c: RoundTripCase, params: Tensor[], sd: optim.OptimizerStateDict) {
  const resumed = params.map((p) => new nn.Parameter(p.detach().clone()));
  const fresh = makeOptimizer(c.optimizer, resumed, c.options);
  fresh.loadStateDict(sd);
  c.grads.slice(c.split).forEach((g, step) => {
    stepWith(fresh, resumed, g);
    resumed.forEach((p, i) => closeTo(t, p, c.after[step]![i]!, `param ${i} after resumed step ${step + 1}`));
  });
}

for (const c of golden.roundTrip) {
  test(`${c.optimizer} (${c.name}): stateDict() after ${c.split} steps equals PyTorch's state_dict`, (t) => {
    sameStateDict(t, firstSteps(c).opt.stateDict(), c.stateDict, 'stateDict');
  });

  test(`${c.optimizer} (${c.name}): loading PyTorch's state_dict resumes PyTorch's trajectory`, (t) => {
    resumeMatches(t, c, firstSteps(c).params, decodeStateDict(c.stateDict));
  });

  test(`${c.optimizer} (${c.name}): loading kiln's own stateDict resumes PyTorch's trajectory`, (t) => {
    const { params, opt } = firstSteps(c);
    resumeMatches(t, c, params, opt.stateDict());
  });
}

test('stateDict() returns copies: changing them, or stepping on, leaves the other side alone', (t) => {
  const p = new nn.Parameter(tensor([1, 2]));
  const opt = new optim.RMSprop([p], { momentum: 0.9 });
  p.grad = tensor([0.5, -0.5]);
  opt.step();
  const sd = opt.stateDict();
  const saved = (sd.state[0]!.squareAvg as Tensor).toArray();
  (sd.state[0]!.squareAvg as Tensor).mul_(0);
  sd.paramGroups[0]!.lr = 5;
  t.is(opt.paramGroups[0]!.options.lr, 1e-2);
  t.deepEqual((opt.stateDict().state[0]!.squareAvg as Tensor).toArray(), saved);
  opt.step();
  t.is(sd.state[0]!.step, 1);
});

test('loadStateDict takes the saved options of every group, as PyTorch does', (t) => {
  const [a, b] = [new nn.Parameter(tensor([1])), new nn.Parameter(tensor([2]))];
  const src = new optim.AdamW(
    [
      { params: [a], lr: 0.5 },
      { params: [b], weightDecay: 0 },
    ],
    { lr: 0.1, betas: [0.8, 0.9] },
  );
  const dst = new optim.AdamW([{ params: [new nn.Parameter(tensor([1]))] }, { params: [new nn.Parameter(tensor([2]))] }]);
  dst.loadStateDict(src.stateDict());
  t.deepEqual(
    dst.paramGroups.map((g) => g.options),
    src.paramGroups.map((g) => g.options),
  );
  t.not(dst.paramGroups[0]!.options.betas, src.paramGroups[0]!.options.betas, 'betas are copied, not shared');
});

// ---------------------------------------------------------------------------------------------------
// bad input

test('AdamW and RMSprop reject a negative lr and other bad options, naming them', (t) => {
  const p = () => new nn.Parameter(tensor([1]));
  t.throws(() => new optim.AdamW([p()], { lr: -1 }), { instanceOf: ValueError, message: 'AdamW: lr must be a finite number ≥ 0, got -1' });
  t.throws(() => new optim.RMSprop([p()], { lr: -0.1 }), {
    instanceOf: ValueError,
    message: 'RMSprop: lr must be a finite number ≥ 0, got -0.1',
  });
  t.throws(() => new optim.RMSprop([p()], { alpha: -0.5 }), { message: 'RMSprop: alpha must be a finite number ≥ 0, got -0.5' });
  t.throws(() => new optim.RMSprop([p()], { momentum: -1 }), { message: 'RMSprop: momentum must be a finite number ≥ 0, got -1' });
  t.throws(() => new optim.RMSprop([{ params: [p()], eps: -1 }]), {
    message: 'RMSprop: eps in parameter group 0 must be a finite number ≥ 0, got -1',
  });
  t.throws(() => new optim.AdamW([p()], { betas: [1, 0.9] }), { message: 'AdamW: betas[0] must be a finite number ≥ 0 and < 1, got 1' });
  t.throws(() => new optim.RMSprop([p()], { nesterov: true } as never), { message: /RMSprop: unknown option 'nesterov'/ });
});

/** An Adam with state after one step, and a state dict from it to spoil. */
function adamWithState() {
  const w = new nn.Parameter(tensor([[1, 2, 3]]));
  const b = new nn.Parameter(tensor([0.5]));
  const opt = new optim.Adam([w, b], { lr: 0.1 });
  w.grad = tensor([[0.1, 0.2, 0.3]]);
  b.grad = tensor([1]);
  opt.step();
  return { opt, sd: opt.stateDict() };
}

const BAD_STATE_DICTS: [string, (sd: optim.OptimizerStateDict) => unknown, RegExp][] = [
  [
    'a different number of groups',
    (sd) => ({ ...sd, paramGroups: [...sd.paramGroups, sd.paramGroups[0]] }),
    /has 2 parameter group\(s\), the optimizer has 1/,
  ],
  [
    'a group with another number of parameters',
    (sd) => ({ ...sd, paramGroups: [{ ...sd.paramGroups[0], params: [0] }] }),
    /paramGroups\[0\] of the state dict has 1 parameter\(s\), the optimizer's has 2/,
  ],
  [
    'a buffer of another shape',
    (sd) => ({ ...sd, state: { ...sd.state, 0: { ...sd.state[0], expAvg: tensor([1, 2, 3]) } } }),
    /state\[0\]\.expAvg has shape \[3\], but its parameter has shape \[1, 3\]/,
  ],
  [
    'an unknown state key',
    (sd) => ({ ...sd, state: { ...sd.state, 1: { ...sd.state[1], momentumBuffer: tensor([1]) } } }),
    /unknown key 'momentumBuffer' in state\[1\]/,
  ],
  [
    'state for an index no group lists',
    (sd) => ({ ...sd, state: { ...sd.state, 7: sd.state[0] } }),
    /state for parameter 7, which no parameter group lists/,
  ],
  [
    'a group without an option',
    (sd) => ({ ...sd, paramGroups: [{ ...sd.paramGroups[0], eps: undefined }] }),
    /paramGroups\[0\] lacks 'eps'/,
  ],
  [
    'an unknown group key',
    (sd) => ({ ...sd, paramGroups: [{ ...sd.paramGroups[0], momentum: 0.9 }] }),
    /unknown key 'momentum' in paramGroups\[0\]/,
  ],
  [
    'a repeated parameter index',
    (sd) => ({ ...sd, paramGroups: [{ ...sd.paramGroups[0], params: [0, 0] }] }),
    /paramGroups\[0\]\.params\[1\] must be a parameter index not listed before/,
  ],
  ['not a state dict', () => new Map(), /expected an optimizer state dict \{ state, paramGroups \}, got a Map/],
];

for (const [what, spoil, message] of BAD_STATE_DICTS) {
  test(`Adam.loadStateDict refuses ${what} with a StateDictError and changes nothing`, (t) => {
    const { opt, sd } = adamWithState();
    const before = JSON.stringify(opt.stateDict(), (_, v: unknown) => ((v as Tensor)?.toArray ? (v as Tensor).toArray() : v));
    const bad = spoil(sd) as optim.OptimizerStateDict;
    if (what === 'a group without an option') delete (bad.paramGroups[0] as Record<string, unknown>).eps;
    t.throws(() => opt.loadStateDict(bad), { instanceOf: StateDictError, message });
    t.is(
      JSON.stringify(opt.stateDict(), (_, v: unknown) => ((v as Tensor)?.toArray ? (v as Tensor).toArray() : v)),
      before,
    );
  });
}

test('loadStateDict checks the saved options with the optimizer’s own rules', (t) => {
  const { opt, sd } = adamWithState();
  t.throws(() => opt.loadStateDict({ ...sd, paramGroups: [{ ...sd.paramGroups[0]!, lr: -1 }] }), {
    instanceOf: ValueError,
    message: 'Adam.loadStateDict: paramGroups[0].lr must be a finite number ≥ 0, got -1',
  });
});

test('loadStateDict accepts PyTorch 1.13’s tensor step and a None momentum buffer', (t) => {
  const { opt, sd } = adamWithState();
  opt.loadStateDict({ ...sd, state: { 0: { ...sd.state[0], step: tensor([1]) }, 1: sd.state[1]! } });
  t.is(opt.stateDict().state[0]!.step, 1);
  const p = new nn.Parameter(tensor([1]));
  const sgd = new optim.SGD([p], { lr: 0.1 });
  sgd.loadStateDict({ state: { 0: { momentumBuffer: null as unknown as number } }, paramGroups: sgd.stateDict().paramGroups });
  t.deepEqual(sgd.stateDict().state, { 0: {} });
});

// ---------------------------------------------------------------------------------------------------
// compiled training: the optimizers step the module's own parameters, which the compiled programs read

for (const [name, make] of [
  ['AdamW', (ps: Tensor[]) => new optim.AdamW(ps, { lr: 0.01 })],
  ['RMSprop (centered, momentum)', (ps: Tensor[]) => new optim.RMSprop(ps, { lr: 0.01, momentum: 0.9, centered: true })],
] as const) {
  test(`${name} trains a compiled (aot_eager) model as it trains the eager one`, (t) => {
    const run = (wrap: (m: nn.Module) => nn.Module) => {
      manualSeed(0);
      const model = new nn.Sequential(new nn.Linear(6, 8), new nn.ReLU(), new nn.Linear(8, 3));
      const opt = make(model.parameters());
      const net = wrap(model);
      const gradFns: string[] = [];
      for (let step = 0; step < 4; step++) {
        manualSeed(10 + step);
        const x = randn([5, 6]);
        opt.zeroGrad();
        const out = net.call(x) as Tensor;
        gradFns.push(out.gradFn?.name ?? 'none');
        ops.crossEntropy(out, tensor([0, 1, 2, 1, 0], { dtype: 'int32' })).backward();
        opt.step();
      }
      return { params: model.parameters().map((p) => p.detach().clone()), gradFns };
    };
    const eager = run((m) => m);
    const compiled = run((m) => compile(m, { backend: 'aot_eager' }));
    t.deepEqual(compiled.gradFns, Array(4).fill('CompiledFunctionBackward'), 'every step ran the AOT graphs');
    // the AOT graphs run eager's kernels, possibly in another order: float32 rounding apart, the same steps
    compiled.params.forEach((p, i) => t.true(allclose(p, eager.params[i]!, { rtol: 1e-5, atol: 1e-6 }), `parameter ${i}`));
  });
}
