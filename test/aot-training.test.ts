import test, { type ExecutionContext } from 'ava';
import { aotModule, minCutRematerializationPartition, type Compiler } from '../src/aot/index.js';
import type { GraphModule } from '../src/fx.js';
import { kernelsBackend, setAotMinElements, type KernelProgram } from '../src/kernels/program.js';
import { allclose, compile, manualSeed, nn, ops, optim, randn, tensor, type Tensor } from '../src/index.js';

// These models are small: compile every training call through AOT autograd, whatever its size.
setAotMinElements(0);

/**
 * Training parity of AOT autograd (issue 15's acceptance): an MLP (Linear-ReLU-Linear) and a CNN with
 * BatchNorm2d in training mode (Conv2d-BatchNorm2d-ReLU-MaxPool2d-Flatten-Linear), each trained 5 Adam steps
 * on a crossEntropy loss (i) eagerly, (ii) under aotModule with the min-cut partitioner, (iii) under
 * compile(m, { backend: 'aot_eager' }) and (iv) under compile(m) (the kernels backend). At every step the loss
 * and every gradient, and after the 5 steps the parameters and the BatchNorm running statistics, equal eager.
 *
 * Tolerances (float32): the AOT graphs on the eager runtime run eager's kernels, possibly in another order
 * after min-cut recomputation, so they agree to rtol 1e-5 / atol 1e-6. The kernels backend sums GEMMs and
 * reductions in another order (wasm GEMM, fused kernels): losses and gradients agree to rtol 1e-4 / atol 1e-5,
 * and parameters and running statistics, after 5 Adam steps that divide each gradient by its running RMS, to
 * rtol 1e-4 / atol 1e-4 (lr 1e-3, so 5 steps move a parameter by at most 5e-3).
 */

const nop: Compiler =
  (gm) =>
  (...args) =>
    gm.forward(...args);

type Tol = { rtol: number; atol: number };
const AOT_TOL: Tol = { rtol: 1e-5, atol: 1e-6 };
const KERNELS_TOL: Tol = { rtol: 1e-4, atol: 1e-5 };
const KERNELS_STATE_TOL: Tol = { rtol: 1e-4, atol: 1e-4 };
const STEPS = 5;

interface Run {
  readonly losses: number[];
  /** Per step, every parameter's gradient. */
  readonly grads: Tensor[][];
  /** After the last step: parameters and buffers by name. */
  readonly state: Record<string, Tensor>;
  /** Per step, the name of the model output's gradient node ('CompiledFunctionBackward' for AOT graphs). */
  readonly gradFns: string[];
}

interface Task {
  readonly make: () => nn.Module;
  readonly batch: (step: number) => { x: Tensor; y: Tensor };
}

const MLP: Task = {
  make: () => new nn.Sequential(new nn.Linear(8, 16), new nn.ReLU(), new nn.Linear(16, 4)),
  batch: (step) => {
    manualSeed(100 + step);
    return { x: randn([6, 8]), y: tensor([0, 1, 2, 3, 1, (step % 4) as number], { dtype: 'int32' }) };
  },
};

const CNN: Task = {
  make: () =>
    new nn.Sequential(
      // No bias before BatchNorm (as in PyTorch models): its gradient is zero up to rounding (~3e-8 here), and
      // Adam scales that noise to ±lr per step, so eager and kernels would move it by different ±1e-3 steps.
      new nn.Conv2d(3, 4, 3, { padding: 1, bias: false }),
      new nn.BatchNorm2d(4),
      new nn.ReLU(),
      new nn.MaxPool2d(2),
      new nn.Flatten(),
      new nn.Linear(4 * 4 * 4, 3),
    ),
  batch: (step) => {
    manualSeed(200 + step);
    return { x: randn([4, 3, 8, 8]), y: tensor([0, 1, 2, step % 3], { dtype: 'int32' }) };
  },
};

/** Train a fresh copy of the task's model (initial weights from seed 0) with `wrap` around it. */
function train(task: Task, wrap: (m: nn.Module) => nn.Module): Run & { model: nn.Module; wrapped: nn.Module } {
  manualSeed(0);
  const model = task.make();
  model.train();
  const wrapped = wrap(model);
  const opt = new optim.Adam(model.parameters(), { lr: 1e-3 });
  const losses: number[] = [];
  const grads: Tensor[][] = [];
  const gradFns: string[] = [];
  for (let step = 0; step < STEPS; step++) {
    const { x, y } = task.batch(step);
    opt.zeroGrad();
    const out = wrapped.call(x) as Tensor;
    gradFns.push(out.gradFn?.name ?? 'none');
    const loss = ops.crossEntropy(out, y);
    loss.backward();
    losses.push(loss.item());
    grads.push(model.parameters().map((p) => p.grad!.clone()));
    opt.step();
  }
  return { losses, grads, state: model.stateDict(), gradFns, model, wrapped };
}

function eager(task: Task): Run {
  return train(task, (m) => m);
}

function sameRun(t: ExecutionContext, got: Run, want: Run, tol: Tol, stateTol: Tol): void {
  got.losses.forEach((l, i) => {
    const w = want.losses[i]!;
    t.true(Math.abs(l - w) <= tol.atol + tol.rtol * Math.abs(w), `loss at step ${i}: ${l} vs eager ${w}`);
  });
  got.grads.forEach((gs, step) =>
    gs.forEach((g, i) => t.true(allclose(g, want.grads[step]![i]!, tol), `gradient of parameter ${i} at step ${step}`)),
  );
  t.deepEqual(Object.keys(got.state), Object.keys(want.state));
  for (const [k, v] of Object.entries(want.state)) {
    const g = got.state[k]!;
    if (v.dtype === 'int32') t.deepEqual(g.toArray(), v.toArray(), k);
    else t.true(allclose(g, v, stateTol), `${k} after ${STEPS} steps`);
  }
}

const VARIANTS: [string, (m: nn.Module) => nn.Module, Tol, Tol][] = [
  ['aotModule (nop, min-cut)', (m) => aotModule(m, { fwCompiler: nop, partitionFn: minCutRematerializationPartition }), AOT_TOL, AOT_TOL],
  ["compile(m, { backend: 'aot_eager' })", (m) => compile(m, { backend: 'aot_eager' }), AOT_TOL, AOT_TOL],
  ['compile(m) (kernels)', (m) => compile(m), KERNELS_TOL, KERNELS_STATE_TOL],
];

for (const [taskName, task] of [
  ['MLP', MLP],
  ['CNN with BatchNorm2d (training)', CNN],
] as const) {
  for (const [name, wrap, tol, stateTol] of VARIANTS) {
    test(`${taskName}: 5 Adam steps under ${name} equal eager (loss, gradients, parameters, running statistics)`, (t) => {
      const want = eager(task);
      const got = train(task, wrap);
      sameRun(t, got, want, tol, stateTol);
      t.deepEqual(got.gradFns, Array(STEPS).fill('CompiledFunctionBackward'), 'every step ran the AOT graphs, not the eager tape');
      if (task === CNN) {
        const bn = got.model.modules().find((m) => m instanceof nn.BatchNorm2d) as nn.BatchNorm2d;
        t.is(bn.num_batches_tracked!.item(), STEPS, 'num_batches_tracked counts every compiled training step');
      }
    });
  }
}

/** The kernels backend, keeping each KernelProgram it makes (compile's own path, observed). */
function recordingKernels(programs: KernelProgram[]) {
  return (gm: GraphModule, inputs: Tensor[]) => {
    const compiled = kernelsBackend(gm, inputs);
    programs.push(compiled.program);
    return compiled as unknown as (...a: Tensor[]) => unknown;
  };
}

for (const [taskName, task] of [
  ['MLP', MLP],
  ['CNN with BatchNorm2d (training)', CNN],
] as const) {
  test(`${taskName}: the kernels backend trains through compiled forward and backward graphs, not eagerly`, (t) => {
    const programs: KernelProgram[] = [];
    const got = train(task, (m) => compile(m, { backend: recordingKernels(programs) }));
    sameRun(t, got, eager(task), KERNELS_TOL, KERNELS_STATE_TOL);
    t.is(programs.length, 1, 'one captured graph');
    const program = programs[0]!;
    t.is(program.trainingEagerReason, undefined, 'AOT autograd traced the joint graph');
    const [fw, bw, ...rest] = program.trainingPrograms;
    t.deepEqual(rest, [], 'one forward and one backward graph serve every step');
    for (const [what, p] of [
      ['forward', fw],
      ['backward', bw],
    ] as const) {
      t.truthy(p, `the ${what} graph was compiled`);
      const plans = [...p!.plans.values()];
      t.true(plans.length > 0 && plans.every((plan) => typeof plan !== 'string'), `the ${what} graph ran planned kernels: ${p!.pprint()}`);
    }
  });
}
