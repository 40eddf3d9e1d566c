#!/usr/bin/python3
"""Golden trajectories from real PyTorch for kiln's training kit (test/optim-extra.test.ts,
test/lr-scheduler.test.ts, test/clip-grad.test.ts).

Run with Debian's PyTorch 1.13 (apt-get install python3-torch):  /usr/bin/python3 scripts/golden_train.py
Writes test/fixtures/golden/train.json. Never edit the JSON by hand: regenerate it. Everything here is
element-wise float32 arithmetic on one thread (no GEMM, no conv), so the output does not depend on the CPU.

Every case is described in kiln's terms (class names, camelCase options and state keys) so the tests replay
it generically. A tensor is {"shape", "data" (flat, row-major, float32)}.

  optimizers: [{ name, optimizer, groups: [{ params: [i, ...], ...options }], options, params: [T, ...],
                 grads: [[T | null per param] per step], after: [[T per param] per step],
                 stateDict: { state: { i: { key: T | number } }, paramGroups: [...] } (after the last step) }]
  schedulers: [{ name, optimizer, optimizerOptions, groupLrs: [lr per group], schedulers: [{ kind, options }],
                 steps, lrs: [[lr per group] after construction, then after each step],
                 momentum: [[per group] ...] (OneCycleLR's cycled momentum or beta1, same points) }]
  trained:    [{ name, ...scheduler fields, optimizer trajectory fields (params, grads, after) }]: the optimizer
              and the schedulers stepped together (optimizer.step(), then each scheduler.step()).
  clipGradNorm: [{ name, grads: [T | null], maxNorm, normType, totalNorm, gradsAfter: [T | null] }]
  clipGradValue: [{ name, grads: [T], clipValue, gradsAfter: [T] }]
  roundTrip:  [{ name, optimizer, options, params, grads: [[T]] (first `split` steps, then the rest), split,
                 stateDict (after `split` steps), after: [[T]] (params after each of the remaining steps, taken by a
                 fresh optimizer on the params after `split` steps, loaded with stateDict) }]
"""
import os

PINNED_ENV = {'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'OPENBLAS_NUM_THREADS': '1'}
os.environ.update(PINNED_ENV)

import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)
torch.manual_seed(0)
torch.set_default_dtype(torch.float32)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'golden')

# kiln's camelCase names for PyTorch's option, state and param-group keys
CAMEL = {
    'weight_decay': 'weightDecay',
    'exp_avg': 'expAvg',
    'exp_avg_sq': 'expAvgSq',
    'max_exp_avg_sq': 'maxExpAvgSq',
    'square_avg': 'squareAvg',
    'grad_avg': 'gradAvg',
    'momentum_buffer': 'momentumBuffer',
    'initial_lr': 'initialLr',
    'max_lr': 'maxLr',
    'min_lr': 'minLr',
    'max_momentum': 'maxMomentum',
    'base_momentum': 'baseMomentum',
    'step_size': 'stepSize',
    'T_max': 'tMax',
    'eta_min': 'etaMin',
    'start_factor': 'startFactor',
    'end_factor': 'endFactor',
    'total_iters': 'totalIters',
    'total_steps': 'totalSteps',
    'steps_per_epoch': 'stepsPerEpoch',
    'pct_start': 'pctStart',
    'anneal_strategy': 'annealStrategy',
    'cycle_momentum': 'cycleMomentum',
    'div_factor': 'divFactor',
    'final_div_factor': 'finalDivFactor',
    'three_phase': 'threePhase',
    'norm_type': 'normType',
}
SNAKE = {v: k for k, v in CAMEL.items()}
# PyTorch's param-group keys kiln has no counterpart for (implementation switches, not hyperparameters)
TORCH_ONLY = {'foreach', 'capturable', 'differentiable', 'fused'}

OPTIMIZERS = {'SGD': torch.optim.SGD, 'Adam': torch.optim.Adam, 'AdamW': torch.optim.AdamW, 'RMSprop': torch.optim.RMSprop}
SCHEDULERS = {
    'StepLR': torch.optim.lr_scheduler.StepLR,
    'CosineAnnealingLR': torch.optim.lr_scheduler.CosineAnnealingLR,
    'LinearLR': torch.optim.lr_scheduler.LinearLR,
    'OneCycleLR': torch.optim.lr_scheduler.OneCycleLR,
}


def enc(t):
    if t is None:
        return None
    t = t.detach()
    assert t.dtype == torch.float32
    return {'shape': list(t.shape), 'data': t.reshape(-1).tolist()}


def torch_opts(opts):
    return {SNAKE.get(k, k): tuple(v) if isinstance(v, list) else v for k, v in opts.items()}


def kiln_value(v):
    return list(v) if isinstance(v, tuple) else v


def enc_state_dict(sd):
    state = {}
    for i, s in sd['state'].items():
        entry = {}
        for k, v in s.items():
            if k == 'step':
                entry['step'] = float(v.item()) if isinstance(v, torch.Tensor) else v
            elif v is not None:
                entry[CAMEL.get(k, k)] = enc(v)
        state[str(i)] = entry
    groups = []
    for g in sd['param_groups']:
        groups.append({CAMEL.get(k, k): kiln_value(v) for k, v in g.items() if k not in TORCH_ONLY})
    return {'state': state, 'paramGroups': groups}


def make_params(shapes):
    return [torch.randn(*s) for s in shapes]


def leaf(ts):
    return [t.clone().requires_grad_(True) for t in ts]


def torch_groups(params, groups):
    if groups is None:
        return params
    return [dict(torch_opts({k: v for k, v in g.items() if k != 'params'}), params=[params[i] for i in g['params']]) for g in groups]


def run_steps(opt, params, grads, schedulers=()):
    after = []
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else g.clone()
        opt.step()
        for s in schedulers:
            s.step()
        after.append([enc(p) for p in params])
    return after


# ---------------------------------------------------------------------------------------------------
# optimizers: a few steps each, with fixed random gradients

SHAPES = [(3, 4), (5,)]


def optimizer_case(name, optimizer, options, steps=5, groups=None, missing=None):
    """`missing`: (step, param) pairs whose gradient is None (the optimizer skips that parameter)."""
    init = make_params(SHAPES)
    grads = [[torch.randn(*s) for s in SHAPES] for _ in range(steps)]
    for step, i in missing or []:
        grads[step][i] = None
    params = leaf(init)
    opt = OPTIMIZERS[optimizer](torch_groups(params, groups), **torch_opts(options))
    after = run_steps(opt, params, grads)
    return {
        'name': name,
        'optimizer': optimizer,
        'options': options,
        'groups': groups,
        'params': [enc(t) for t in init],
        'grads': [[enc(g) for g in gs] for gs in grads],
        'after': after,
        'stateDict': enc_state_dict(opt.state_dict()),
    }


def optimizer_cases():
    return [
        optimizer_case('AdamW with its defaults (weightDecay 1e-2)', 'AdamW', {}),
        optimizer_case('AdamW lr 0.01, weightDecay 0.1, amsgrad', 'AdamW', {'lr': 0.01, 'weightDecay': 0.1, 'amsgrad': True}),
        optimizer_case('AdamW maximize, betas [0.8, 0.99]', 'AdamW', {'lr': 0.005, 'betas': [0.8, 0.99], 'maximize': True}),
        optimizer_case('AdamW skips a parameter without a gradient', 'AdamW', {'lr': 0.01}, missing=[(0, 1), (2, 1)]),
        optimizer_case('RMSprop with its defaults', 'RMSprop', {}),
        optimizer_case('RMSprop momentum 0.9', 'RMSprop', {'lr': 0.001, 'momentum': 0.9}),
        optimizer_case('RMSprop centered, weightDecay 0.01', 'RMSprop', {'centered': True, 'weightDecay': 0.01}),
        optimizer_case(
            'RMSprop centered with momentum, alpha 0.9, eps 1e-6',
            'RMSprop',
            {'lr': 0.003, 'alpha': 0.9, 'eps': 1e-6, 'momentum': 0.5, 'centered': True},
        ),
        optimizer_case('RMSprop maximize', 'RMSprop', {'lr': 0.001, 'maximize': True}),
        optimizer_case(
            'RMSprop with two parameter groups',
            'RMSprop',
            {'lr': 0.01},
            groups=[{'params': [0]}, {'params': [1], 'lr': 0.001, 'momentum': 0.8}],
        ),
        optimizer_case('Adam amsgrad, weightDecay 0.05', 'Adam', {'lr': 0.01, 'weightDecay': 0.05, 'amsgrad': True}),
        optimizer_case('SGD nesterov', 'SGD', {'lr': 0.05, 'momentum': 0.9, 'nesterov': True, 'weightDecay': 0.01}),
    ]


# ---------------------------------------------------------------------------------------------------
# schedulers: the lr (and OneCycleLR's momentum) after construction and after every step


def build_schedulers(opt, specs):
    out = []
    for spec in specs:
        out.append(SCHEDULERS[spec['kind']](opt, **torch_opts(spec['options'])))
    return out


def momenta(opt):
    return [g['betas'][0] if 'betas' in g else g.get('momentum') for g in opt.param_groups]


def scheduler_case(name, optimizer, optimizer_options, group_lrs, specs, steps):
    params = leaf(make_params([(2,)] * len(group_lrs)))
    groups = [{'params': [p], 'lr': lr} for p, lr in zip(params, group_lrs)]
    opt = OPTIMIZERS[optimizer](groups, **torch_opts(optimizer_options))
    scheds = build_schedulers(opt, specs)
    lrs = [scheds[-1].get_last_lr()]
    moms = [momenta(opt)]
    for _ in range(steps):
        opt.step()  # no gradients: PyTorch checks that the optimizer stepped before the scheduler
        for s in scheds:
            s.step()
        lrs.append(scheds[-1].get_last_lr())
        moms.append(momenta(opt))
    return {
        'name': name,
        'optimizer': optimizer,
        'optimizerOptions': optimizer_options,
        'groupLrs': group_lrs,
        'schedulers': specs,
        'steps': steps,
        'lrs': lrs,
        'momentum': moms,
        'stateDict': enc_state_dict(opt.state_dict()),
    }


def one(kind, **options):
    return [{'kind': kind, 'options': options}]


def scheduler_cases():
    return [
        scheduler_case('StepLR stepSize 3, gamma 0.5, two groups', 'SGD', {'lr': 0.1}, [0.1, 0.01], one('StepLR', stepSize=3, gamma=0.5), 10),
        scheduler_case('StepLR with its default gamma 0.1', 'SGD', {'lr': 1.0}, [1.0], one('StepLR', stepSize=2), 7),
        scheduler_case(
            'CosineAnnealingLR tMax 5, etaMin 0.001, past tMax (the cosine rises again)',
            'SGD',
            {'lr': 0.1},
            [0.1, 0.05],
            one('CosineAnnealingLR', tMax=5, etaMin=0.001),
            16,
        ),
        scheduler_case('CosineAnnealingLR tMax 10 with its default etaMin 0', 'Adam', {'lr': 0.01}, [0.01], one('CosineAnnealingLR', tMax=10), 12),
        scheduler_case('LinearLR with its defaults (startFactor 1/3, 5 iterations)', 'SGD', {'lr': 0.05}, [0.05, 0.5], one('LinearLR'), 8),
        scheduler_case(
            'LinearLR decaying: startFactor 1, endFactor 0.1, totalIters 4',
            'AdamW',
            {'lr': 0.01},
            [0.01],
            one('LinearLR', startFactor=1.0, endFactor=0.1, totalIters=4),
            6,
        ),
        scheduler_case(
            'OneCycleLR with its defaults (cos, cycled momentum) on SGD',
            'SGD',
            {'lr': 0.1, 'momentum': 0.9},
            [0.1],
            one('OneCycleLR', maxLr=0.1, totalSteps=20),
            19,
        ),
        scheduler_case(
            'OneCycleLR linear anneal, epochs x stepsPerEpoch, per-group maxLr, on Adam (cycles beta1)',
            'Adam',
            {'lr': 0.01},
            [0.01, 0.01],
            one('OneCycleLR', maxLr=[0.1, 0.05], epochs=2, stepsPerEpoch=6, annealStrategy='linear'),
            11,
        ),
        scheduler_case(
            'OneCycleLR three phases, pctStart 0.25, divFactor 10, finalDivFactor 100',
            'RMSprop',
            {'lr': 0.01, 'momentum': 0.9},
            [0.01],
            one('OneCycleLR', maxLr=0.2, totalSteps=16, pctStart=0.25, divFactor=10.0, finalDivFactor=100.0, threePhase=True),
            15,
        ),
        scheduler_case(
            'OneCycleLR without cycled momentum, custom momentum range ignored',
            'SGD',
            {'lr': 0.1},
            [0.1],
            one('OneCycleLR', maxLr=1.0, totalSteps=10, cycleMomentum=False, baseMomentum=0.5, maxMomentum=0.6),
            9,
        ),
        scheduler_case(
            'LinearLR warm-up chained with StepLR (both step the same param groups)',
            'SGD',
            {'lr': 0.1},
            [0.1],
            [{'kind': 'LinearLR', 'options': {'startFactor': 0.25, 'totalIters': 4}}, {'kind': 'StepLR', 'options': {'stepSize': 3, 'gamma': 0.5}}],
            10,
        ),
        scheduler_case(
            'CosineAnnealingLR chained with StepLR',
            'SGD',
            {'lr': 0.1},
            [0.1],
            [{'kind': 'StepLR', 'options': {'stepSize': 4, 'gamma': 0.3}}, {'kind': 'CosineAnnealingLR', 'options': {'tMax': 6}}],
            9,
        ),
    ]


def trained_case(name, optimizer, optimizer_options, specs, steps):
    init = make_params(SHAPES)
    grads = [[torch.randn(*s) for s in SHAPES] for _ in range(steps)]
    params = leaf(init)
    opt = OPTIMIZERS[optimizer](params, **torch_opts(optimizer_options))
    scheds = build_schedulers(opt, specs)
    after = run_steps(opt, params, grads, scheds)
    return {
        'name': name,
        'optimizer': optimizer,
        'options': optimizer_options,
        'schedulers': specs,
        'params': [enc(t) for t in init],
        'grads': [[enc(g) for g in gs] for gs in grads],
        'after': after,
        'lrs': scheds[-1].get_last_lr(),
        'stateDict': enc_state_dict(opt.state_dict()),
    }


def trained_cases():
    return [
        trained_case('AdamW under OneCycleLR (lr and beta1 cycled every step)', 'AdamW', {'lr': 0.01}, one('OneCycleLR', maxLr=0.05, totalSteps=8), 8),
        trained_case('RMSprop momentum under CosineAnnealingLR', 'RMSprop', {'lr': 0.01, 'momentum': 0.9}, one('CosineAnnealingLR', tMax=4), 6),
        trained_case('SGD under OneCycleLR (cycles SGD momentum from 0.95)', 'SGD', {'lr': 0.1}, one('OneCycleLR', maxLr=0.5, totalSteps=6), 6),
    ]


# ---------------------------------------------------------------------------------------------------
# gradient clipping


def clip_norm_case(name, max_norm, norm_type, scale=1.0, missing=()):
    grads = [torch.randn(*s) * scale for s in [(4, 3), (6,), (2, 2, 2)]]
    for i in missing:
        grads[i] = None
    params = [torch.zeros(*s, requires_grad=True) for s in [(4, 3), (6,), (2, 2, 2)]]
    for p, g in zip(params, grads):
        p.grad = None if g is None else g.clone()
    total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
    return {
        'name': name,
        'grads': [enc(g) for g in grads],
        'maxNorm': max_norm,
        'normType': 'inf' if norm_type == math.inf else norm_type,
        'totalNorm': float(total.item()),
        'gradsAfter': [enc(p.grad) for p in params],
    }


def clip_norm_cases():
    return [
        clip_norm_case('L2 norm above maxNorm: every gradient scaled by maxNorm / (norm + 1e-6)', 1.0, 2.0),
        clip_norm_case('L2 norm below maxNorm: gradients unchanged', 100.0, 2.0),
        clip_norm_case('L1 norm', 2.5, 1.0),
        clip_norm_case('infinity norm (largest absolute value)', 0.5, math.inf),
        clip_norm_case('norm type 3.5', 1.5, 3.5, scale=3.0),
        clip_norm_case('a parameter without a gradient is left out of the norm', 0.7, 2.0, missing=[1]),
    ]


def clip_value_cases():
    out = []
    for name, clip in [('clip at 0.5', 0.5), ('clip at 0 zeroes every gradient', 0.0), ('clip at 2 (most values unchanged)', 2.0)]:
        grads = [torch.randn(3, 5) * 1.5, torch.randn(7)]
        params = [torch.zeros(*g.shape, requires_grad=True) for g in grads]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        torch.nn.utils.clip_grad_value_(params, clip)
        out.append({'name': name, 'grads': [enc(g) for g in grads], 'clipValue': clip, 'gradsAfter': [enc(p.grad) for p in params]})
    return out


# ---------------------------------------------------------------------------------------------------
# optimizer stateDict round trip


def round_trip_case(name, optimizer, options, steps=6, split=3):
    init = make_params(SHAPES)
    grads = [[torch.randn(*s) for s in SHAPES] for _ in range(steps)]
    params = leaf(init)
    opt = OPTIMIZERS[optimizer](params, **torch_opts(options))
    run_steps(opt, params, grads[:split])
    sd = copy.deepcopy(opt.state_dict())
    resumed = leaf([p.detach() for p in params])
    fresh = OPTIMIZERS[optimizer](resumed, **torch_opts(options))
    fresh.load_state_dict(sd)
    after = run_steps(fresh, resumed, grads[split:])
    return {
        'name': name,
        'optimizer': optimizer,
        'options': options,
        'params': [enc(t) for t in init],
        'grads': [[enc(g) for g in gs] for gs in grads],
        'split': split,
        'stateDict': enc_state_dict(sd),
        'after': after,
    }


def round_trip_cases():
    return [
        round_trip_case('Adam amsgrad', 'Adam', {'lr': 0.01, 'amsgrad': True}),
        round_trip_case('AdamW', 'AdamW', {'lr': 0.01, 'weightDecay': 0.1}),
        round_trip_case('RMSprop centered with momentum', 'RMSprop', {'lr': 0.01, 'momentum': 0.9, 'centered': True}),
        round_trip_case('SGD momentum', 'SGD', {'lr': 0.1, 'momentum': 0.9}),
    ]


def main():
    data = {
        'torch': torch.__version__,
        'optimizers': optimizer_cases(),
        'schedulers': scheduler_cases(),
        'trained': trained_cases(),
        'clipGradNorm': clip_norm_cases(),
        'clipGradValue': clip_value_cases(),
        'roundTrip': round_trip_cases(),
    }
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, 'train.json'), 'w') as f:
        json.dump(data, f, separators=(',', ':'))
        f.write('\n')


if __name__ == '__main__':
    main()
