import { ValueError } from '../errors.js';
import { Optimizer, definedOnly, type OptionRules, type ParamState } from './optimizer.js';
import type { Tensor } from './tensor.js';
import { checkBoolean, checkNumber, checkOptions, describe } from './validate.js';

export { Optimizer, SCHEDULE_KEYS, type OptimizerStateDict, type ParamGroup, type ScheduleKey } from './optimizer.js';
export * as lrScheduler from './lr-scheduler.js';

/**
 * Optimisers. Updates run on the parameters' float32 storage directly (no tape, no temporaries) and
 * bump each parameter's version, as an in-place op would.
 */

const nonNegative = (op: string, name: string, v: unknown) => void checkNumber(op, name, v, { min: 0 });
const finite = (op: string, name: string, v: unknown) => void checkNumber(op, name, v);
const flag = (op: string, name: string, v: unknown) => void checkBoolean(op, name, v);
const betas = (op: string, name: string, v: unknown) => {
  if (!Array.isArray(v) || v.length !== 2) throw new ValueError(`${op}: ${name} must be a pair [beta1, beta2], got ${describe(v)}`);
  v.forEach((b, i) => checkNumber(op, `${name}[${i}]`, b, { min: 0, max: 1, maxExclusive: true }));
};

export interface SGDOptions {
  lr?: number;
  momentum?: number;
  dampening?: number;
  weightDecay?: number;
  nesterov?: boolean;
  maximize?: boolean;
}

const SGD_RULES: OptionRules<SGDOptions> = {
  lr: nonNegative,
  momentum: nonNegative,
  dampening: finite,
  weightDecay: nonNegative,
  nesterov: flag,
  maximize: flag,
};

export class SGD extends Optimizer<SGDOptions> {
  protected readonly bufferNames = ['momentumBuffer'];
  protected readonly countsSteps = false;

  constructor(params: Iterable<Tensor> | Iterable<{ params: Iterable<Tensor> } & SGDOptions>, options: SGDOptions = {}) {
    const given = checkOptions('SGD', options, Object.keys(SGD_RULES));
    const defaults = { lr: 1e-3, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false, maximize: false, ...definedOnly(given) };
    super(params, defaults as Required<SGDOptions>, SGD_RULES);
  }

  protected override checkOptions(o: Partial<SGDOptions>): void {
    if (o.nesterov && ((o.momentum ?? 0) <= 0 || (o.dampening ?? 0) !== 0)) {
      throw new ValueError(
        `SGD: nesterov momentum requires a momentum and zero dampening, got momentum=${o.momentum}, dampening=${o.dampening}`,
      );
    }
  }

  protected update(w: Float32Array, g: Float32Array, st: ParamState, o: Required<SGDOptions>): void {
    const sign = o.maximize ? -1 : 1;
    let buf = st.momentumBuffer as Float32Array | undefined;
    const first = !buf;
    if (o.momentum !== 0 && !buf) buf = st.momentumBuffer = new Float32Array(w.length);
    for (let i = 0; i < w.length; i++) {
      let d = g[i]! + o.weightDecay * w[i]!;
      if (buf) {
        buf[i] = first ? d : o.momentum * buf[i]! + (1 - o.dampening) * d;
        d = o.nesterov ? d + o.momentum * buf[i]! : buf[i]!;
      }
      w[i] = w[i]! - sign * o.lr * d;
    }
  }
}

export interface AdamOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  amsgrad?: boolean;
  maximize?: boolean;
}

const ADAM_RULES: OptionRules<AdamOptions> = {
  lr: nonNegative,
  betas,
  eps: nonNegative,
  weightDecay: nonNegative,
  amsgrad: flag,
  maximize: flag,
};

/** Adam's defaults: AdamW differs only in its weight decay (1e-2). */
function adamDefaults(op: string, options: AdamOptions, weightDecay: number): Required<AdamOptions> {
  const given = checkOptions(op, options, Object.keys(ADAM_RULES));
  return {
    lr: 1e-3,
    betas: [0.9, 0.999] as [number, number],
    eps: 1e-8,
    weightDecay,
    amsgrad: false,
    maximize: false,
    ...definedOnly(given),
  } as Required<AdamOptions>;
}

const ADAM_BUFFERS = ['expAvg', 'expAvgSq', 'maxExpAvgSq'];

/**
 * One Adam step on one parameter (PyTorch 1.13's single-tensor Adam and AdamW). `decoupled` is AdamW's weight
 * decay: the weights shrink by lr·weightDecay before the step instead of weightDecay·w joining the gradient.
 */
function adamUpdate(w: Float32Array, g: Float32Array, st: ParamState, o: Required<AdamOptions>, decoupled: boolean): void {
  const m = (st.expAvg ??= new Float32Array(w.length)) as Float32Array;
  const v = (st.expAvgSq ??= new Float32Array(w.length)) as Float32Array;
  const vmax = o.amsgrad ? ((st.maxExpAvgSq ??= new Float32Array(w.length)) as Float32Array) : null;
  const step = (st.step = ((st.step as number | undefined) ?? 0) + 1);
  const [b1, b2] = o.betas;
  const bc1 = 1 - b1 ** step;
  const bc2 = 1 - b2 ** step;
  const stepSize = o.lr / bc1;
  const invSqrtBc2 = 1 / Math.sqrt(bc2);
  // options read once into locals: property reads inside the loop kept V8 from optimising it (3× slower)
  const { eps } = o;
  const weightDecay = decoupled ? 0 : o.weightDecay;
  const sign = o.maximize ? -1 : 1;
  const c1 = 1 - b1;
  const c2 = 1 - b2;
  const n = w.length;
  if (decoupled && o.weightDecay !== 0) {
    const decay = 1 - o.lr * o.weightDecay;
    for (let i = 0; i < n; i++) w[i] = w[i]! * decay;
  }
  for (let i = 0; i < n; i++) {
    const wi = w[i]!;
    const gi = sign * g[i]! + weightDecay * wi;
    const mi = b1 * m[i]! + c1 * gi;
    let vi = b2 * v[i]! + c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    if (vmax !== null) vi = vmax[i] = Math.max(vmax[i]!, vi);
    w[i] = wi - (stepSize * mi) / (Math.sqrt(vi) * invSqrtBc2 + eps);
  }
}

export class Adam extends Optimizer<AdamOptions> {
  protected readonly bufferNames = ADAM_BUFFERS;
  protected readonly countsSteps = true;

  constructor(params: Iterable<Tensor> | Iterable<{ params: Iterable<Tensor> } & AdamOptions>, options: AdamOptions = {}) {
    super(params, adamDefaults('Adam', options, 0), ADAM_RULES);
  }

  protected update(w: Float32Array, g: Float32Array, st: ParamState, o: Required<AdamOptions>): void {
    adamUpdate(w, g, st, o, false);
  }
}

/** Adam with decoupled weight decay (Loshchilov & Hutter), PyTorch's `torch.optim.AdamW`: weightDecay defaults to 1e-2. */
export class AdamW extends Optimizer<AdamOptions> {
  protected readonly bufferNames = ADAM_BUFFERS;
  protected readonly countsSteps = true;

  constructor(params: Iterable<Tensor> | Iterable<{ params: Iterable<Tensor> } & AdamOptions>, options: AdamOptions = {}) {
    super(params, adamDefaults('AdamW', options, 1e-2), ADAM_RULES);
  }

  protected update(w: Float32Array, g: Float32Array, st: ParamState, o: Required<AdamOptions>): void {
    adamUpdate(w, g, st, o, true);
  }
}

export interface RMSpropOptions {
  lr?: number;
  alpha?: number;
  eps?: number;
  weightDecay?: number;
  momentum?: number;
  centered?: boolean;
  maximize?: boolean;
}

const RMSPROP_RULES: OptionRules<RMSpropOptions> = {
  lr: nonNegative,
  alpha: nonNegative,
  eps: nonNegative,
  weightDecay: nonNegative,
  momentum: nonNegative,
  centered: flag,
  maximize: flag,
};

/** PyTorch 1.13's `torch.optim.RMSprop` (single-tensor path); `centered` divides by the gradient's running variance. */
export class RMSprop extends Optimizer<RMSpropOptions> {
  protected readonly bufferNames = ['squareAvg', 'momentumBuffer', 'gradAvg'];
  protected readonly countsSteps = true;

  constructor(params: Iterable<Tensor> | Iterable<{ params: Iterable<Tensor> } & RMSpropOptions>, options: RMSpropOptions = {}) {
    const given = checkOptions('RMSprop', options, Object.keys(RMSPROP_RULES));
    const defaults = {
      lr: 1e-2,
      alpha: 0.99,
      eps: 1e-8,
      weightDecay: 0,
      momentum: 0,
      centered: false,
      maximize: false,
      ...definedOnly(given),
    };
    super(params, defaults as Required<RMSpropOptions>, RMSPROP_RULES);
  }

  protected update(w: Float32Array, g: Float32Array, st: ParamState, o: Required<RMSpropOptions>): void {
    const n = w.length;
    st.step = ((st.step as number | undefined) ?? 0) + 1;
    const sq = (st.squareAvg ??= new Float32Array(n)) as Float32Array;
    // buffers made when first needed: a scheduler (OneCycleLR) may turn momentum on after the first step
    const gAvg = o.centered ? ((st.gradAvg ??= new Float32Array(n)) as Float32Array) : null;
    const buf = o.momentum > 0 ? ((st.momentumBuffer ??= new Float32Array(n)) as Float32Array) : null;
    const { lr, alpha, eps, weightDecay, momentum } = o;
    const sign = o.maximize ? -1 : 1;
    const c = 1 - alpha;
    for (let i = 0; i < n; i++) {
      const gi = sign * g[i]! + weightDecay * w[i]!;
      // running averages are read back from their float32 arrays, as PyTorch's float32 buffers hold them
      sq[i] = alpha * sq[i]! + c * gi * gi;
      let avg: number;
      if (gAvg !== null) {
        gAvg[i] = alpha * gAvg[i]! + c * gi;
        avg = Math.sqrt(sq[i]! - gAvg[i]! * gAvg[i]!) + eps;
      } else {
        avg = Math.sqrt(sq[i]!) + eps;
      }
      if (buf !== null) {
        buf[i] = momentum * buf[i]! + gi / avg;
        w[i] = w[i]! - lr * buf[i]!;
      } else {
        w[i] = w[i]! - (lr * gi) / avg;
      }
    }
  }
}
