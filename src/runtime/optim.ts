import { ValueError } from '../errors.js';
import { noGrad } from './autograd.js';
import type { Tensor } from './tensor.js';

/**
 * Optimisers. Updates run on the parameters' float32 storage directly (no tape, no temporaries) and
 * bump each parameter's version, as an in-place op would.
 */

export interface ParamGroup<O> {
  params: Tensor[];
  options: Required<O>;
}

abstract class Optimizer<O extends object> {
  readonly paramGroups: ParamGroup<O>[];
  protected readonly state = new Map<Tensor, Record<string, Float32Array | number>>();

  constructor(params: Iterable<Tensor> | Iterable<{ params: Iterable<Tensor> } & Partial<O>>, defaults: Required<O>) {
    const list = [...params] as unknown[];
    if (list.length === 0) throw new ValueError(`${this.constructor.name}: got an empty parameter list`);
    const groups =
      (list[0] as { params?: unknown }).params !== undefined
        ? (list as ({ params: Iterable<Tensor> } & Partial<O>)[])
        : [{ params: list as Tensor[] }];
    this.paramGroups = groups.map((g) => {
      const { params: ps, ...opts } = g;
      return { params: [...ps], options: { ...defaults, ...opts } as Required<O> };
    });
    for (const g of this.paramGroups) {
      for (const p of g.params) {
        if (!p.isLeaf) throw new ValueError(`${this.constructor.name}: can't optimize a non-leaf tensor of shape [${p.shape.join(', ')}]`);
      }
    }
  }

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
          const grad = p.grad.contiguous().data() as Float32Array;
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

export class SGD extends Optimizer<SGDOptions> {
  constructor(params: Iterable<Tensor> | Iterable<{ params: Iterable<Tensor> } & SGDOptions>, options: SGDOptions = {}) {
    const defaults = { lr: 1e-3, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false, maximize: false, ...options };
    if (defaults.lr < 0) throw new ValueError(`SGD: invalid learning rate ${defaults.lr}`);
    if (defaults.momentum < 0) throw new ValueError(`SGD: invalid momentum ${defaults.momentum}`);
    if (defaults.nesterov && (defaults.momentum <= 0 || defaults.dampening !== 0)) {
      throw new ValueError('SGD: nesterov momentum requires a momentum and zero dampening');
    }
    super(params, defaults);
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

export class Adam extends Optimizer<AdamOptions> {
  constructor(params: Iterable<Tensor> | Iterable<{ params: Iterable<Tensor> } & AdamOptions>, options: AdamOptions = {}) {
    const defaults = {
      lr: 1e-3,
      betas: [0.9, 0.999] as [number, number],
      eps: 1e-8,
      weightDecay: 0,
      amsgrad: false,
      maximize: false,
      ...options,
    };
    if (defaults.lr < 0) throw new ValueError(`Adam: invalid learning rate ${defaults.lr}`);
    if (defaults.betas.some((b) => b < 0 || b >= 1)) throw new ValueError(`Adam: invalid betas ${JSON.stringify(defaults.betas)}`);
    if (defaults.eps < 0) throw new ValueError(`Adam: invalid epsilon ${defaults.eps}`);
    super(params, defaults);
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
    const sqrtBc2 = Math.sqrt(bc2);
    for (let i = 0; i < w.length; i++) {
      let gi = o.maximize ? -g[i]! : g[i]!;
      if (o.weightDecay) gi += o.weightDecay * w[i]!;
      m[i] = b1 * m[i]! + (1 - b1) * gi;
      v[i] = b2 * v[i]! + (1 - b2) * gi * gi;
      let vi = v[i]!;
      if (vmax) vi = vmax[i] = Math.max(vmax[i]!, vi);
      w[i] = w[i]! - (stepSize * m[i]!) / (Math.sqrt(vi) / sqrtBc2 + o.eps);
    }
  }
}
