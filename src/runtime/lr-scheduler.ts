import { StateDictError, ValueError } from '../errors.js';
import { Optimizer, type ParamGroup } from './optimizer.js';
import { checkBoolean, checkChoice, checkNumber, checkOptions, describe } from './validate.js';

/**
 * Learning-rate schedulers with PyTorch 1.13's semantics (`torch.optim.lr_scheduler`). A scheduler sets
 * the lr of every parameter group of its optimizer when it is made (step 0) and at each `step()`. Each
 * computes the next lr from the group's current lr (PyTorch's chainable form), so two schedulers stepping
 * one optimizer compose, as in PyTorch. The first lr of each group is kept in the group as `initialLr`
 * (PyTorch's `initial_lr`), so it is saved with the optimizer's stateDict.
 */

/** The options a scheduler reads or writes in a group, whatever the optimizer. */
type ScheduledOptions = { lr: number; momentum?: number; betas?: [number, number] };

const optionsOf = (g: ParamGroup<{ lr?: number }>) => g.options as ScheduledOptions;

/** A scheduler's progress: PyTorch's `last_epoch`, `_step_count`, `base_lrs` and `_last_lr`. */
export interface SchedulerStateDict {
  lastEpoch: number;
  stepCount: number;
  baseLrs: number[];
  lastLr: number[];
}

export abstract class LRScheduler {
  readonly optimizer: Optimizer;
  /** The index of the last step taken: 0 after construction, as PyTorch's `last_epoch`. */
  lastEpoch = -1;
  /** Each group's initialLr when the scheduler was made (PyTorch's `base_lrs`). */
  baseLrs: number[] = [];
  /** How many times step() has run, counting the one construction makes. */
  protected stepCount = 0;
  private lastLr: number[] = [];

  constructor(optimizer: Optimizer) {
    if (!(optimizer instanceof Optimizer)) {
      throw new ValueError(`${new.target.name}: expects a kiln optimizer (optim.SGD, optim.AdamW, …), got ${describe(optimizer)}`);
    }
    this.optimizer = optimizer;
  }

  /** Each group's lr at the step `lastEpoch` has just become (from the groups' current lrs, PyTorch's get_lr). */
  protected abstract computeLr(): number[];

  /** Records each group's starting lr and takes step 0; each subclass's constructor ends with it, as PyTorch's `_initial_step`. */
  protected initialStep(): void {
    for (const g of this.optimizer.paramGroups) g.schedule.initialLr ??= optionsOf(g).lr;
    this.baseLrs = this.optimizer.paramGroups.map((g) => g.schedule.initialLr!);
    this.step();
  }

  /** Advance the schedule by one step and set every group's lr. Call it after `optimizer.step()`. */
  step(): void {
    this.stepCount++;
    this.lastEpoch++;
    const lrs = this.computeLr();
    this.optimizer.paramGroups.forEach((g, i) => {
      optionsOf(g).lr = lrs[i]!;
    });
    this.lastLr = this.optimizer.paramGroups.map((g) => optionsOf(g).lr);
  }

  /**
   * Where the schedule stands (PyTorch's scheduler `state_dict()` less the options, which the constructor
   * takes): save it with the optimizer's stateDict to resume training.
   */
  stateDict(): SchedulerStateDict {
    return { lastEpoch: this.lastEpoch, stepCount: this.stepCount, baseLrs: [...this.baseLrs], lastLr: [...this.lastLr] };
  }

  /** Resume from stateDict(); the scheduler must have been made with the same options on an optimizer with as many groups. */
  loadStateDict(stateDict: SchedulerStateDict): void {
    const op = `${this.constructor.name}.loadStateDict`;
    const o = checkOptions(op, stateDict, ['lastEpoch', 'stepCount', 'baseLrs', 'lastLr']);
    const groups = this.optimizer.paramGroups.length;
    const lists = (['baseLrs', 'lastLr'] as const).map((k) => {
      const v = o[k];
      if (!Array.isArray(v) || v.length !== groups) {
        throw new StateDictError(`${op}: ${k} must list one lr per parameter group (${groups}), got ${describe(v)}`);
      }
      return v.map((x, i) => checkNumber(op, `${k}[${i}]`, x, { min: 0 }));
    });
    const lastEpoch = checkNumber(op, 'lastEpoch', o.lastEpoch, { min: 0, integer: true });
    this.stepCount = checkNumber(op, 'stepCount', o.stepCount, { min: 1, integer: true });
    this.lastEpoch = lastEpoch;
    [this.baseLrs, this.lastLr] = lists as [number[], number[]];
  }

  /** The lr of each group that the last step() set (PyTorch's `get_last_lr()`). */
  getLastLr(): number[] {
    return [...this.lastLr];
  }

  protected get groups(): ScheduledOptions[] {
    return this.optimizer.paramGroups.map(optionsOf);
  }
}

export interface StepLROptions {
  /** Steps between decays. */
  stepSize: number;
  /** The factor each decay multiplies the lr by (default 0.1). */
  gamma?: number;
}

/** Multiplies each group's lr by `gamma` every `stepSize` steps. */
export class StepLR extends LRScheduler {
  readonly stepSize: number;
  readonly gamma: number;

  constructor(optimizer: Optimizer, options: StepLROptions) {
    super(optimizer);
    const o = checkOptions('StepLR', options, ['stepSize', 'gamma']);
    this.stepSize = checkNumber('StepLR', 'stepSize', o.stepSize, { min: 1, integer: true });
    this.gamma = checkNumber('StepLR', 'gamma', o.gamma ?? 0.1, { min: 0 });
    this.initialStep();
  }

  protected computeLr(): number[] {
    const decay = this.lastEpoch !== 0 && this.lastEpoch % this.stepSize === 0;
    return this.groups.map((g) => (decay ? g.lr * this.gamma : g.lr));
  }
}

export interface CosineAnnealingLROptions {
  /** Steps from the initial lr down to `etaMin` (half a cosine period). */
  tMax: number;
  /** The lowest lr (default 0). */
  etaMin?: number;
}

/** Anneals each group's lr from its initial value to `etaMin` along a cosine over `tMax` steps, then back up (SGDR without restarts). */
export class CosineAnnealingLR extends LRScheduler {
  readonly tMax: number;
  readonly etaMin: number;

  constructor(optimizer: Optimizer, options: CosineAnnealingLROptions) {
    super(optimizer);
    const o = checkOptions('CosineAnnealingLR', options, ['tMax', 'etaMin']);
    this.tMax = checkNumber('CosineAnnealingLR', 'tMax', o.tMax, { min: 1, integer: true });
    this.etaMin = checkNumber('CosineAnnealingLR', 'etaMin', o.etaMin ?? 0, { min: 0 });
    this.initialStep();
  }

  protected computeLr(): number[] {
    const { lastEpoch: e, tMax, etaMin } = this;
    if (e === 0) return this.groups.map((g) => g.lr);
    // the step after a trough: PyTorch's formula for the rise (JS's % is zero exactly where Python's is)
    if ((e - 1 - tMax) % (2 * tMax) === 0) {
      return this.groups.map((g, i) => g.lr + ((this.baseLrs[i]! - etaMin) * (1 - Math.cos(Math.PI / tMax))) / 2);
    }
    const ratio = (1 + Math.cos((Math.PI * e) / tMax)) / (1 + Math.cos((Math.PI * (e - 1)) / tMax));
    return this.groups.map((g) => ratio * (g.lr - etaMin) + etaMin);
  }
}

export interface LinearLROptions {
  /** The factor the lr is multiplied by at step 0 (default 1/3). */
  startFactor?: number;
  /** The factor reached after `totalIters` steps (default 1). */
  endFactor?: number;
  /** Steps the factor takes to go from startFactor to endFactor (default 5). */
  totalIters?: number;
}

/** Scales each group's lr by a factor moving linearly from `startFactor` to `endFactor` over `totalIters` steps (a warm-up, or a linear decay). */
export class LinearLR extends LRScheduler {
  readonly startFactor: number;
  readonly endFactor: number;
  readonly totalIters: number;

  constructor(optimizer: Optimizer, options: LinearLROptions = {}) {
    super(optimizer);
    const o = checkOptions('LinearLR', options, ['startFactor', 'endFactor', 'totalIters']);
    const startFactor = checkNumber('LinearLR', 'startFactor', o.startFactor ?? 1 / 3, { min: 0, max: 1 });
    // a zero start would divide by zero at step 1 (PyTorch 2 refuses it too)
    if (startFactor === 0) throw new ValueError('LinearLR: startFactor must be > 0 and ≤ 1, got 0');
    this.startFactor = startFactor;
    this.endFactor = checkNumber('LinearLR', 'endFactor', o.endFactor ?? 1, { min: 0, max: 1 });
    this.totalIters = checkNumber('LinearLR', 'totalIters', o.totalIters ?? 5, { min: 1, integer: true });
    this.initialStep();
  }

  protected computeLr(): number[] {
    const { lastEpoch: e, startFactor: s, endFactor: f, totalIters: n } = this;
    if (e === 0) return this.groups.map((g) => g.lr * s);
    if (e > n) return this.groups.map((g) => g.lr);
    const factor = 1 + (f - s) / (n * s + (e - 1) * (f - s));
    return this.groups.map((g) => g.lr * factor);
  }
}

export interface OneCycleLROptions {
  /** The peak lr: one for every group, or one per group. */
  maxLr: number | number[];
  /** Steps in the cycle; or give `epochs` and `stepsPerEpoch`. */
  totalSteps?: number;
  epochs?: number;
  stepsPerEpoch?: number;
  /** The fraction of the cycle spent raising the lr (default 0.3). */
  pctStart?: number;
  /** 'cos' (default) or 'linear'. */
  annealStrategy?: 'cos' | 'linear';
  /** Cycle the momentum (SGD, RMSprop) or beta1 (Adam, AdamW) inversely to the lr (default true). */
  cycleMomentum?: boolean;
  baseMomentum?: number | number[];
  maxMomentum?: number | number[];
  /** initialLr = maxLr / divFactor (default 25). */
  divFactor?: number;
  /** minLr = initialLr / finalDivFactor (default 1e4). */
  finalDivFactor?: number;
  /** A third phase annealing from initialLr to minLr (fastai's schedule) instead of from maxLr (default false). */
  threePhase?: boolean;
}

type LrKey = 'initialLr' | 'maxLr' | 'minLr';
type MomentumKey = 'maxMomentum' | 'baseMomentum';

interface Phase {
  endStep: number;
  startLr: LrKey;
  endLr: LrKey;
  startMomentum: MomentumKey;
  endMomentum: MomentumKey;
}

const ONE_CYCLE_OPTIONS = [
  'maxLr',
  'totalSteps',
  'epochs',
  'stepsPerEpoch',
  'pctStart',
  'annealStrategy',
  'cycleMomentum',
  'baseMomentum',
  'maxMomentum',
  'divFactor',
  'finalDivFactor',
  'threePhase',
];

/**
 * The 1cycle policy (Smith & Topin): the lr rises from maxLr/divFactor to maxLr over pctStart of the steps,
 * then anneals to initialLr/finalDivFactor, while the momentum moves the opposite way. Step it once per
 * batch; stepping past `totalSteps` is an error.
 */
export class OneCycleLR extends LRScheduler {
  readonly totalSteps: number;
  readonly cycleMomentum: boolean;
  private readonly phases: Phase[];
  private readonly anneal: (start: number, end: number, pct: number) => number;
  private readonly useBeta1: boolean;

  constructor(optimizer: Optimizer, options: OneCycleLROptions) {
    super(optimizer);
    const op = 'OneCycleLR';
    const o = checkOptions(op, options, ONE_CYCLE_OPTIONS);
    if (o.totalSteps !== undefined) {
      this.totalSteps = checkNumber(op, 'totalSteps', o.totalSteps, { min: 1, integer: true });
    } else if (o.epochs !== undefined || o.stepsPerEpoch !== undefined) {
      const epochs = checkNumber(op, 'epochs', o.epochs, { min: 1, integer: true });
      this.totalSteps = epochs * checkNumber(op, 'stepsPerEpoch', o.stepsPerEpoch, { min: 1, integer: true });
    } else {
      throw new ValueError(`${op}: give totalSteps, or epochs and stepsPerEpoch`);
    }
    const pct = checkNumber(op, 'pctStart', o.pctStart ?? 0.3, { min: 0, max: 1 });
    const n = this.totalSteps;
    this.phases = checkBoolean(op, 'threePhase', o.threePhase ?? false)
      ? [
          { endStep: pct * n - 1, startLr: 'initialLr', endLr: 'maxLr', startMomentum: 'maxMomentum', endMomentum: 'baseMomentum' },
          { endStep: 2 * pct * n - 2, startLr: 'maxLr', endLr: 'initialLr', startMomentum: 'baseMomentum', endMomentum: 'maxMomentum' },
          { endStep: n - 1, startLr: 'initialLr', endLr: 'minLr', startMomentum: 'maxMomentum', endMomentum: 'maxMomentum' },
        ]
      : [
          { endStep: pct * n - 1, startLr: 'initialLr', endLr: 'maxLr', startMomentum: 'maxMomentum', endMomentum: 'baseMomentum' },
          { endStep: n - 1, startLr: 'maxLr', endLr: 'minLr', startMomentum: 'baseMomentum', endMomentum: 'maxMomentum' },
        ];
    this.anneal =
      checkChoice(op, 'annealStrategy', o.annealStrategy ?? 'cos', ['cos', 'linear']) === 'cos'
        ? (start, end, p) => end + ((start - end) / 2) * (Math.cos(Math.PI * p) + 1)
        : (start, end, p) => (end - start) * p + start;
    const divFactor = checkNumber(op, 'divFactor', o.divFactor ?? 25, { min: 0 });
    const finalDivFactor = checkNumber(op, 'finalDivFactor', o.finalDivFactor ?? 1e4, { min: 0 });
    const groups = optimizer.paramGroups;
    const maxLrs = perGroup(op, 'maxLr', o.maxLr, groups.length);
    this.cycleMomentum = checkBoolean(op, 'cycleMomentum', o.cycleMomentum ?? true);
    this.useBeta1 = 'betas' in optimizer.defaults;
    let momenta: [number[], number[]] | null = null;
    if (this.cycleMomentum) {
      if (!('momentum' in optimizer.defaults) && !this.useBeta1) {
        throw new ValueError(`${op}: cycleMomentum needs an optimizer with momentum or betas; ${optimizer.constructor.name} has neither`);
      }
      momenta = [
        perGroup(op, 'maxMomentum', o.maxMomentum ?? 0.95, groups.length),
        perGroup(op, 'baseMomentum', o.baseMomentum ?? 0.85, groups.length),
      ];
    }
    // everything is checked: now the groups take the cycle's bounds (before the base's step 0 reads them)
    groups.forEach((g, i) => {
      const initialLr = maxLrs[i]! / divFactor;
      Object.assign(g.schedule, { initialLr, maxLr: maxLrs[i]!, minLr: initialLr / finalDivFactor });
      if (momenta) {
        const [maxM, baseM] = [momenta[0][i]!, momenta[1][i]!];
        this.setMomentum(optionsOf(g), maxM);
        Object.assign(g.schedule, { maxMomentum: maxM, baseMomentum: baseM });
      }
    });
    this.initialStep();
  }

  private setMomentum(g: ScheduledOptions, m: number): void {
    if (this.useBeta1) g.betas = [m, g.betas![1]];
    else g.momentum = m;
  }

  protected computeLr(): number[] {
    const stepNum = this.lastEpoch;
    if (stepNum > this.totalSteps) {
      throw new ValueError(`OneCycleLR: tried to step ${stepNum + 1} times; the specified number of total steps is ${this.totalSteps}`);
    }
    return this.optimizer.paramGroups.map((group) => {
      const s = group.schedule as Record<LrKey | MomentumKey, number>;
      // the first phase not yet over (the last one past its end), and the step it started at
      let i = 0;
      let startStep = 0;
      while (i < this.phases.length - 1 && stepNum > this.phases[i]!.endStep) startStep = this.phases[i++]!.endStep;
      const phase = this.phases[i]!;
      const pct = (stepNum - startStep) / (phase.endStep - startStep);
      if (this.cycleMomentum) this.setMomentum(optionsOf(group), this.anneal(s[phase.startMomentum], s[phase.endMomentum], pct));
      return this.anneal(s[phase.startLr], s[phase.endLr], pct);
    });
  }
}

/** One value per parameter group: a number for every group, or a list with one per group (PyTorch's `_format_param`). */
function perGroup(op: string, name: string, v: unknown, groups: number): number[] {
  if (Array.isArray(v)) {
    if (v.length !== groups)
      throw new ValueError(`${op}: expected ${groups} values for ${name} (one per parameter group), got ${v.length}`);
    return v.map((x, i) => checkNumber(op, `${name}[${i}]`, x, { min: 0 }));
  }
  return Array(groups).fill(checkNumber(op, name, v, { min: 0 }));
}
