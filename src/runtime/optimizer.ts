import { DTypeError, StateDictError, ValueError } from '../errors.js';
import { noGrad } from './autograd.js';
import { tensor } from './ops/creation.js';
import { isPlainObject } from './plain-object.js';
import { Tensor } from './tensor.js';
import { checkNumber, describe } from './validate.js';

/**
 * The optimizers' common base: parameter groups with checked options, the step loop over float32 storage,
 * and the state dict in PyTorch's structure. The optimizers themselves are in optim.ts; this module is apart
 * so that lr-scheduler.ts can check for an Optimizer without an import cycle through optim.ts.
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
export type ParamState = Record<string, Float32Array | number>;

/** How each option of an optimizer is checked; the optimizer validates its defaults and every group with it. */
export type OptionRules<O> = { readonly [K in keyof Required<O>]: (op: string, name: string, v: unknown) => void };

/** The options actually given: `{ lr: undefined }` leaves the default in place, as leaving `lr` out does. */
export function definedOnly<T extends object>(opts: T): Partial<T> {
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
