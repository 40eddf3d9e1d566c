import { DTypeError, StateDictError, ValueError } from '../errors.js';
import { noGrad } from './autograd.js';
import { tensor } from './ops/creation.js';
import { isPlainObject } from './plain-object.js';
import { Tensor } from './tensor.js';
import { checkBoolean, checkNumber, checkOptions, describe } from './validate.js';

export * as lrScheduler from './lr-scheduler.js';

/**
 * Optimisers. Updates run on the parameters' float32 storage directly (no tape, no temporaries) and
 * bump each parameter's version, as an in-place op would.
 */

export interface ParamGroup<O> {
  params: Tensor[];
  options: Required<O>;
  /**
   * What learning-rate schedulers keep in the group, as PyTorch's keep them in its dict: the lr a schedule
   * starts from (`initialLr`) and OneCycleLR's bounds. Saved and restored by stateDict()/loadStateDict().
   */
  schedule: Partial<Record<ScheduleKey, number>>;
}

/** The keys schedulers add to a parameter group (PyTorch's initial_lr, max_lr, min_lr, max_momentum, base_momentum). */
export const SCHEDULE_KEYS = ['initialLr', 'maxLr', 'minLr', 'maxMomentum', 'baseMomentum'] as const;
export type ScheduleKey = (typeof SCHEDULE_KEYS)[number];

/**
 * An optimizer's state in PyTorch's structure: `state` keyed by the parameter's index (counted through the
 * groups in order), each entry the optimizer's buffers (copies, as Tensors of the parameter's shape) and its
 * step count; `paramGroups` each group's options and schedule values, with `params` its parameters' indices.
 */
export interface OptimizerStateDict {
  state: Record<number, Record<string, Tensor | number>>;
  paramGroups: (Record<string, unknown> & { params: number[] })[];
}

/** What an optimizer keeps per parameter: its buffers (`bufferNames`) and, for some, the step count. */
type ParamState = Record<string, Float32Array | number>;

/** How each option of an optimizer is checked; the optimizer validates its defaults and every group with it. */
type OptionRules<O> = { readonly [K in keyof Required<O>]: (op: string, name: string, v: unknown) => void };

const nonNegative = (op: string, name: string, v: unknown) => void checkNumber(op, name, v, { min: 0 });
const finite = (op: string, name: string, v: unknown) => void checkNumber(op, name, v);
const flag = (op: string, name: string, v: unknown) => void checkBoolean(op, name, v);
const betas = (op: string, name: string, v: unknown) => {
  if (!Array.isArray(v) || v.length !== 2) throw new ValueError(`${op}: ${name} must be a pair [beta1, beta2], got ${describe(v)}`);
  v.forEach((b, i) => checkNumber(op, `${name}[${i}]`, b, { min: 0, max: 1, maxExclusive: true }));
};

/** The options actually given: `{ lr: undefined }` leaves the default in place, as leaving `lr` out does. */
function definedOnly<T extends object>(opts: T): Partial<T> {
  return Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** The tensors of one group's `params`: a Tensor or an iterable of them, each a float32 leaf. */
function groupParams(op: string, ps: unknown): Tensor[] {
  if (ps instanceof Tensor) return [ps];
  if (ps === null || typeof ps !== 'object' || !(Symbol.iterator in ps)) {
    throw new ValueError(`${op}: params must be an iterable of Tensors or of parameter groups, got ${describe(ps)}`);
  }
  const list = [...(ps as Iterable<unknown>)];
  list.forEach((p, i) => {
    if (!(p instanceof Tensor)) throw new ValueError(`${op}: can only optimize Tensors, but params[${i}] is ${describe(p)}`);
    if (p.dtype !== 'float32') throw new DTypeError(`${op}: can only optimize float32 tensors, but params[${i}] is ${p.dtype}`);
    if (!p.isLeaf) throw new ValueError(`${op}: can't optimize a non-leaf tensor of shape [${p.shape.join(', ')}] (params[${i}])`);
  });
  return list as Tensor[];
}

/** A float32 tensor's values, in row-major order, in a new array. */
function copyOf(t: Tensor): Float32Array {
  const c = t.contiguous();
  return (c._storage.data as Float32Array).slice(c.offset, c.offset + c.numel());
}

export abstract class Optimizer<O extends { lr?: number } = { lr?: number }> {
  readonly paramGroups: ParamGroup<O>[];
  /** The options every group starts from (PyTorch's `defaults`; OneCycleLR reads which momentum there is). */
  readonly defaults: Readonly<Required<O>>;
  protected readonly state = new Map<Tensor, ParamState>();
  /** The per-parameter buffers this optimizer keeps, by their stateDict names. */
  protected abstract readonly bufferNames: readonly string[];
  /** Whether the per-parameter state holds a `step` count. */
  protected abstract readonly countsSteps: boolean;
  private readonly rules: OptionRules<O>;

  constructor(
    params: Iterable<Tensor> | Iterable<{ params: Iterable<Tensor> } & Partial<O>>,
    defaults: Required<O>,
    rules: OptionRules<O>,
  ) {
    const op = this.constructor.name;
    const names = Object.keys(rules);
    const check = (opts: Record<string, unknown>, where: string) => {
      for (const [k, v] of Object.entries(opts)) {
        if (!(k in rules)) throw new ValueError(`${op}: unknown option '${k}'${where} (expected ${names.join(', ')})`);
        if (v !== undefined) (rules as Record<string, (op: string, name: string, v: unknown) => void>)[k]!(op, `${k}${where}`, v);
      }
    };
    check(defaults, '');
    this.checkOptions(defaults);
    this.defaults = defaults;
    this.rules = rules;
    if (params instanceof Tensor || params === null || typeof params !== 'object' || !(Symbol.iterator in params)) {
      throw new ValueError(`${op}: params must be an iterable of Tensors or of parameter groups, got ${describe(params)}`);
    }
    const list = [...(params as Iterable<unknown>)];
    if (list.length === 0) throw new ValueError(`${op}: got an empty parameter list`);
    const grouped = isPlainObject(list[0]);
    if (list.some((g) => isPlainObject(g) !== grouped)) {
      throw new ValueError(`${op}: params must be all Tensors or all parameter groups ({ params, ...options }), not a mix`);
    }
    const groups = grouped ? (list as Record<string, unknown>[]) : [{ params: list }];
    const seen = new Set<Tensor>();
    this.paramGroups = groups.map((g, gi) => {
      const { params: ps, ...opts } = g;
      const where = grouped ? ` in parameter group ${gi}` : '';
      if (grouped) check(opts, where);
      const tensors = groupParams(op, ps);
      for (const p of tensors) {
        // PyTorch refuses a parameter in two groups; in one group twice it would be stepped twice per step()
        if (seen.has(p)) throw new ValueError(`${op}: a parameter of shape [${p.shape.join(', ')}] appears more than once${where}`);
        seen.add(p);
      }
      const options = { ...defaults, ...definedOnly(opts) } as Required<O>;
      this.checkOptions(options);
      return { params: tensors, options, schedule: {} };
    });
  }

  /** The optimizer's state in PyTorch's structure (see OptimizerStateDict); tensors are copies. */
  stateDict(): OptimizerStateDict {
    const index = new Map<Tensor, number>();
    const paramGroups = this.paramGroups.map((g) => {
      const options = Object.fromEntries(Object.entries(g.options).map(([k, v]) => [k, Array.isArray(v) ? [...v] : v]));
      const params = g.params.map((p) => {
        if (!index.has(p)) index.set(p, index.size);
        return index.get(p)!;
      });
      return { ...options, ...g.schedule, params };
    });
    const state: OptimizerStateDict['state'] = {};
    for (const [p, st] of this.state) {
      state[index.get(p)!] = Object.fromEntries(
        Object.entries(st).map(([k, v]) => [k, typeof v === 'number' ? v : tensor(Float32Array.from(v), { shape: [...p.shape] })]),
      );
    }
    return { state, paramGroups };
  }

  /**
   * Restore a state from stateDict() (this optimizer's or a PyTorch one's in kiln's names): each group takes
   * the saved options and schedule values, each parameter the saved buffers (copied). The groups must list
   * as many parameters as this optimizer's, and every buffer must have its parameter's shape; anything else
   * is a StateDictError, raised before anything changes.
   */
  loadStateDict(stateDict: OptimizerStateDict): void {
    const op = `${this.constructor.name}.loadStateDict`;
    if (!isPlainObject(stateDict) || !isPlainObject(stateDict.state) || !Array.isArray(stateDict.paramGroups)) {
      throw new StateDictError(`${op}: expected an optimizer state dict { state, paramGroups }, got ${describe(stateDict)}`);
    }
    const saved = stateDict.paramGroups as unknown[];
    if (saved.length !== this.paramGroups.length) {
      throw new StateDictError(
        `${op}: the state dict has ${saved.length} parameter group(s), the optimizer has ${this.paramGroups.length}`,
      );
    }
    const byIndex = new Map<number, Tensor>();
    const groups = this.paramGroups.map((g, gi) => this.loadedGroup(op, g, saved[gi], gi, byIndex));
    const state = new Map<Tensor, ParamState>();
    for (const [key, entry] of Object.entries(stateDict.state)) {
      const p = byIndex.get(Number(key));
      if (!p) throw new StateDictError(`${op}: the state dict has state for parameter ${key}, which no parameter group lists`);
      state.set(p, this.loadedState(op, p, key, entry));
    }
    groups.forEach(({ options, schedule }, gi) => {
      this.paramGroups[gi]!.options = options;
      this.paramGroups[gi]!.schedule = schedule;
    });
    this.state.clear();
    for (const [p, st] of state) this.state.set(p, st);
  }

  /** One saved group's options and schedule values, checked; records which parameter each saved index names. */
  private loadedGroup(op: string, g: ParamGroup<O>, s: unknown, gi: number, byIndex: Map<number, Tensor>) {
    const where = `paramGroups[${gi}]`;
    if (!isPlainObject(s) || !Array.isArray(s.params)) {
      throw new StateDictError(`${op}: ${where} must be an object with a params list of parameter indices, got ${describe(s)}`);
    }
    if (s.params.length !== g.params.length) {
      throw new StateDictError(
        `${op}: ${where} of the state dict has ${s.params.length} parameter(s), the optimizer's has ${g.params.length}`,
      );
    }
    s.params.forEach((id: unknown, j) => {
      if (!Number.isSafeInteger(id) || (id as number) < 0 || byIndex.has(id as number)) {
        throw new StateDictError(`${op}: ${where}.params[${j}] must be a parameter index not listed before, got ${describe(id)}`);
      }
      byIndex.set(id as number, g.params[j]!);
    });
    const rules = this.rules as Record<string, (op: string, name: string, v: unknown) => void>;
    const options: Record<string, unknown> = {};
    const schedule: Partial<Record<ScheduleKey, number>> = {};
    for (const [k, v] of Object.entries(s)) {
      if (k === 'params') continue;
      if (k in rules) {
        rules[k]!(op, `${where}.${k}`, v);
        options[k] = Array.isArray(v) ? [...(v as unknown[])] : v;
      } else if ((SCHEDULE_KEYS as readonly string[]).includes(k)) {
        schedule[k as ScheduleKey] = checkNumber(op, `${where}.${k}`, v, { min: 0 });
      } else {
        throw new StateDictError(
          `${op}: unknown key '${k}' in ${where} (expected params, ${[...Object.keys(rules), ...SCHEDULE_KEYS].join(', ')})`,
        );
      }
    }
    const missing = Object.keys(rules).filter((k) => !(k in options));
    if (missing.length) throw new StateDictError(`${op}: ${where} lacks ${missing.map((k) => `'${k}'`).join(', ')}`);
    this.checkOptions(options as Partial<O>);
    return { options: options as Required<O>, schedule };
  }

  /** One parameter's saved state, checked against the parameter and copied into the optimizer's own arrays. */
  private loadedState(op: string, p: Tensor, key: string, entry: unknown): ParamState {
    const where = `state[${key}]`;
    if (!isPlainObject(entry)) throw new StateDictError(`${op}: ${where} must be an object of buffers, got ${describe(entry)}`);
    const st: ParamState = {};
    for (const [k, v] of Object.entries(entry)) {
      if (k === 'step' && this.countsSteps) {
        // PyTorch 1.13 keeps Adam's step as a one-element tensor
        const n = v instanceof Tensor && v.numel() === 1 ? v.item() : v;
        st.step = checkNumber(op, `${where}.step`, n, { min: 0, integer: true });
      } else if (this.bufferNames.includes(k)) {
        if (v === null) continue; // PyTorch's SGD saves momentum_buffer: None before momentum is used
        if (!(v instanceof Tensor) || v.dtype !== 'float32') {
          throw new StateDictError(`${op}: ${where}.${k} must be a float32 Tensor, got ${describe(v)}`);
        }
        if (v.shape.length !== p.shape.length || v.shape.some((d, i) => d !== p.shape[i])) {
          throw new StateDictError(
            `${op}: ${where}.${k} has shape [${v.shape.join(', ')}], but its parameter has shape [${p.shape.join(', ')}]`,
          );
        }
        st[k] = copyOf(v);
      } else {
        const allowed = [...(this.countsSteps ? ['step'] : []), ...this.bufferNames];
        throw new StateDictError(`${op}: unknown key '${k}' in ${where} (expected ${allowed.join(', ')})`);
      }
    }
    return st;
  }

  /** Checks between options (SGD's nesterov needs momentum); each option's own type and range is checked by its rule. */
  protected checkOptions(_options: Partial<O>): void {}

  /** Drop every gradient (PyTorch's `set_to_none=True` default). */
  zeroGrad(): void {
    for (const g of this.paramGroups) for (const p of g.params) p.grad = null;
  }

  step(): void {
    noGrad(() => {
      for (const group of this.paramGroups) {
        for (const p of group.params) {
          if (!p.grad) continue;
          const param = p.contiguous();
          const data = param._storage.data as Float32Array;
          // the gradient's own memory when it is contiguous (read only), else a contiguous copy
          const gc = p.grad.contiguous();
          const grad = (gc._storage.data as Float32Array).subarray(gc.offset, gc.offset + gc.numel());
          let st = this.state.get(p);
          if (!st) this.state.set(p, (st = {}));
          this.update(data.subarray(param.offset, param.offset + p.numel()), grad, st, group.options);
          if (param !== p) p.copy_(param);
          p._storage.version++;
        }
      }
    });
  }

  protected abstract update(w: Float32Array, g: Float32Array, state: ParamState, o: Required<O>): void;
}

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
