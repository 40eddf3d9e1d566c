import type { ExecutionContext } from 'ava';
import { readFileSync } from 'node:fs';
import { Tensor, nn, optim, tensor } from '../src/index.js';

/**
 * PyTorch 1.13's trajectories for the training kit, written by scripts/golden_train.py into
 * test/fixtures/golden/train.json (the format is described at the top of the script), and what the tests
 * need to replay them: decoding, building the named optimizer and schedulers, and the 1e-5 comparison.
 */

export interface EncodedTensor {
  shape: number[];
  data: number[];
}

export interface EncodedStateDict {
  state: Record<string, Record<string, EncodedTensor | number>>;
  paramGroups: (Record<string, unknown> & { params: number[] })[];
}

export interface SchedulerSpec {
  kind: 'StepLR' | 'CosineAnnealingLR' | 'LinearLR' | 'OneCycleLR';
  options: Record<string, unknown>;
}

export interface Trajectory {
  name: string;
  optimizer: OptimizerName;
  options: Record<string, unknown>;
  params: EncodedTensor[];
  grads: (EncodedTensor | null)[][];
  after: EncodedTensor[][];
  stateDict: EncodedStateDict;
}

export interface OptimizerCase extends Trajectory {
  groups: (Record<string, unknown> & { params: number[] })[] | null;
}

export interface SchedulerCase {
  name: string;
  optimizer: OptimizerName;
  optimizerOptions: Record<string, unknown>;
  groupLrs: number[];
  schedulers: SchedulerSpec[];
  steps: number;
  lrs: number[][];
  momentum: number[][];
  stateDict: EncodedStateDict;
}

export interface TrainedCase extends Trajectory {
  schedulers: SchedulerSpec[];
  lrs: number[];
}

export interface RoundTripCase extends Trajectory {
  split: number;
}

export interface ClipNormCase {
  name: string;
  grads: (EncodedTensor | null)[];
  maxNorm: number;
  normType: number | 'inf';
  totalNorm: number;
  gradsAfter: (EncodedTensor | null)[];
}

export interface ClipValueCase {
  name: string;
  grads: EncodedTensor[];
  clipValue: number;
  gradsAfter: EncodedTensor[];
}

export interface TrainGolden {
  torch: string;
  optimizers: OptimizerCase[];
  schedulers: SchedulerCase[];
  trained: TrainedCase[];
  clipGradNorm: ClipNormCase[];
  clipGradValue: ClipValueCase[];
  roundTrip: RoundTripCase[];
}

export const golden = JSON.parse(readFileSync(new URL('./fixtures/golden/train.json', import.meta.url), 'utf8')) as TrainGolden;

/** The acceptance bound: |kiln − PyTorch| ≤ 1e-5 · max(1, |PyTorch|). */
export const TOL = 1e-5;

export const decode = (e: EncodedTensor): Tensor => tensor(Float32Array.from(e.data), { shape: e.shape });

export const param = (e: EncodedTensor): nn.Parameter => new nn.Parameter(decode(e));

export type OptimizerName = 'SGD' | 'Adam' | 'AdamW' | 'RMSprop';

type Params = Tensor[] | ({ params: Tensor[] } & Record<string, unknown>)[];

export function makeOptimizer(name: OptimizerName, params: Params, options: Record<string, unknown>): optim.Optimizer {
  const ctor = { SGD: optim.SGD, Adam: optim.Adam, AdamW: optim.AdamW, RMSprop: optim.RMSprop }[name] as unknown as new (
    p: Params,
    o: Record<string, unknown>,
  ) => optim.Optimizer;
  return new ctor(params, options);
}

export function makeScheduler(opt: optim.Optimizer, spec: SchedulerSpec): optim.lrScheduler.LRScheduler {
  const S = optim.lrScheduler;
  const ctor = { StepLR: S.StepLR, CosineAnnealingLR: S.CosineAnnealingLR, LinearLR: S.LinearLR, OneCycleLR: S.OneCycleLR }[
    spec.kind
  ] as unknown as new (o: optim.Optimizer, options: Record<string, unknown>) => optim.lrScheduler.LRScheduler;
  return new ctor(opt, spec.options);
}

/** Give each parameter the step's gradient (null: none) and step the optimizer, then the schedulers. */
export function stepWith(
  opt: optim.Optimizer,
  params: Tensor[],
  grads: (EncodedTensor | null)[],
  schedulers: optim.lrScheduler.LRScheduler[] = [],
) {
  params.forEach((p, i) => (p.grad = grads[i] ? decode(grads[i]) : null));
  opt.step();
  for (const s of schedulers) s.step();
}

/** The largest |got − want| / max(1, |want|) over the values. */
export function maxRelErr(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let err = 0;
  for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(got[i]! - want[i]!) / Math.max(1, Math.abs(want[i]!)));
  return err;
}

export function closeTo(t: ExecutionContext, got: Tensor, want: EncodedTensor, what: string): void {
  t.deepEqual(got.shape, want.shape, `${what}: shape`);
  const err = maxRelErr(got.data(), want.data);
  t.true(err <= TOL, `${what}: max error ${err} > ${TOL}`);
}

export function numbersClose(t: ExecutionContext, got: number[], want: number[], what: string): void {
  t.is(got.length, want.length, `${what}: length`);
  const err = maxRelErr(got, want);
  t.true(err <= TOL, `${what}: max error ${err} > ${TOL} (got ${got.join(', ')}; want ${want.join(', ')})`);
}

/** A stateDict from the fixture as kiln's optimizers take it (tensors decoded). */
export function decodeStateDict(sd: EncodedStateDict): optim.OptimizerStateDict {
  const state: optim.OptimizerStateDict['state'] = {};
  for (const [k, entry] of Object.entries(sd.state)) {
    state[Number(k)] = Object.fromEntries(Object.entries(entry).map(([n, v]) => [n, typeof v === 'number' ? v : decode(v)]));
  }
  return { state, paramGroups: sd.paramGroups.map((g) => ({ ...g, params: [...g.params] })) };
}

/** kiln's stateDict against PyTorch's: the same groups (options, schedule values, indices) and the same buffers. */
export function sameStateDict(t: ExecutionContext, got: optim.OptimizerStateDict, want: EncodedStateDict, what: string): void {
  t.is(got.paramGroups.length, want.paramGroups.length, `${what}: number of groups`);
  got.paramGroups.forEach((g, i) => {
    const w = want.paramGroups[i]!;
    t.deepEqual(Object.keys(g).sort(), Object.keys(w).sort(), `${what}: keys of paramGroups[${i}]`);
    for (const [k, v] of Object.entries(w)) {
      if (typeof v === 'number') numbersClose(t, [g[k] as number], [v], `${what}: paramGroups[${i}].${k}`);
      else if (k === 'betas') numbersClose(t, g[k] as number[], v as number[], `${what}: paramGroups[${i}].betas`);
      else t.deepEqual(g[k], v, `${what}: paramGroups[${i}].${k}`);
    }
  });
  t.deepEqual(Object.keys(got.state).sort(), Object.keys(want.state).sort(), `${what}: parameters with state`);
  for (const [k, entry] of Object.entries(want.state)) {
    const g = got.state[Number(k)]!;
    t.deepEqual(Object.keys(g).sort(), Object.keys(entry).sort(), `${what}: keys of state[${k}]`);
    for (const [n, v] of Object.entries(entry)) {
      if (typeof v === 'number') t.is(g[n], v, `${what}: state[${k}].${n}`);
      else closeTo(t, g[n] as Tensor, v, `${what}: state[${k}].${n}`);
    }
  }
}
