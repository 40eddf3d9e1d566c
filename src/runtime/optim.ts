import { DTypeError, ValueError } from '../errors.js';
import { noGrad } from './autograd.js';
import { isPlainObject } from './plain-object.js';
import { Tensor } from './tensor.js';
import { checkBoolean, checkNumber, checkOptions, describe } from './validate.js';

/**
 * Optimisers. Updates run on the parameters' float32 storage directly (no tape, no temporaries) and
 * bump each parameter's version, as an in-place op would.
 */

export interface ParamGroup<O> {
  params: Tensor[];
  options: Required<O>;
}

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

abstract class Optimizer<O extends object> {
  readonly paramGroups: ParamGroup<O>[];
  protected readonly state = new Map<Tensor, Record<string, Float32Array | number>>();

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
      return { params: tensors, options };
    });
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

  protected abstract update(w: Float32Array, g: Float32Array, state: Record<string, Float32Array | number>, o: Required<O>): void;
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

  protected update(w: Float32Array, g: Float32Array, st: Record<string, Float32Array | number>, o: Required<SGDOptions>): void {
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

export class Adam extends Optimizer<AdamOptions> {
  constructor(params: Iterable<Tensor> | Iterable<{ params: Iterable<Tensor> } & AdamOptions>, options: AdamOptions = {}) {
    const given = checkOptions('Adam', options, Object.keys(ADAM_RULES));
    const defaults = {
      lr: 1e-3,
      betas: [0.9, 0.999] as [number, number],
      eps: 1e-8,
      weightDecay: 0,
      amsgrad: false,
      maximize: false,
      ...definedOnly(given),
    };
    super(params, defaults as Required<AdamOptions>, ADAM_RULES);
  }

  protected update(w: Float32Array, g: Float32Array, st: Record<string, Float32Array | number>, o: Required<AdamOptions>): void {
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
    const { eps, weightDecay } = o;
    const sign = o.maximize ? -1 : 1;
    const c1 = 1 - b1;
    const c2 = 1 - b2;
    const n = w.length;
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
}
