import { KilnError, StateDictError, ValueError } from '../../errors.js';
import { noGrad } from '../autograd.js';
import { fmt } from '../shape.js';
import { isPlainObject } from '../plain-object.js';
import { Tensor } from '../tensor.js';
import { checkBoolean, checkOptions, describe } from '../validate.js';
import { Parameter } from './parameter.js';
import { realEntries } from './traced-attributes.js';

export interface RemovableHandle {
  remove(): void;
}

export type ForwardPreHook = (module: Module, args: unknown[]) => unknown[] | void;
export type ForwardHook = (module: Module, args: unknown[], output: unknown) => unknown;

export interface LoadResult {
  missingKeys: string[];
  unexpectedKeys: string[];
}

/** Internal bookkeeping, kept off the instance's enumerable attributes so discovery never sees it. */
interface ModuleState {
  buffers: Map<string, boolean>; // name → persistent
  preHooks: Map<number, ForwardPreHook>;
  hooks: Map<number, ForwardHook>;
}

let nextHookId = 0;
const STATE = new WeakMap<Module, ModuleState>();

function state(m: Module): ModuleState {
  let s = STATE.get(m);
  if (!s) {
    s = { buffers: new Map(), preHooks: new Map(), hooks: new Map() };
    STATE.set(m, s);
  }
  return s;
}

/**
 * Base class of every layer and model. Attributes holding a Module, a Parameter or a registered buffer
 * are discovered in assignment order (the order of the instance's own properties), which gives PyTorch's
 * parameter order and state-dict keys.
 */
export class Module {
  declare training: boolean;

  constructor() {
    Object.defineProperty(this, 'training', { value: true, writable: true, enumerable: false, configurable: true });
    state(this);
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  forward(..._args: any[]): any {
    throw new KilnError(`${this.constructor.name}: forward() is not defined; subclasses of nn.Module must implement it`);
  }

  /** Run forward pre-hooks, `forward`, then forward hooks (PyTorch's `module(x)`). */
  call(...args: Parameters<this['forward']>): ReturnType<this['forward']> {
    return this.callWithHooks(args, (a) => this.forward(...a));
  }

  /** Run this module's pre-hooks, then `body` on the (possibly replaced) arguments, then its forward hooks. */
  callWithHooks<R>(args: unknown[], body: (args: unknown[]) => R): R {
    const s = state(this);
    let a = args;
    for (const hook of s.preHooks.values()) {
      const r = hook(this, a);
      if (r !== undefined) a = Array.isArray(r) ? r : [r];
    }
    let out = body(a);
    for (const hook of s.hooks.values()) {
      const r = hook(this, a, out);
      if (r !== undefined) out = r as R;
    }
    return out;
  }

  /** The attributes that may hold members, in order; containers override this. */
  protected ownEntries(): [string, unknown][] {
    return realEntries(this);
  }

  private ownMembers<T>(pick: (name: string, v: unknown) => v is T): [string, T][] {
    return this.ownEntries().filter((e): e is [string, T] => pick(e[0], e[1]));
  }

  namedChildren(): [string, Module][] {
    return this.ownMembers((_n, v): v is Module => v instanceof Module);
  }

  children(): Module[] {
    return this.namedChildren().map(([, m]) => m);
  }

  /** This module and every descendant, depth first, each once. */
  namedModules(prefix = '', seen = new Set<Module>()): [string, Module][] {
    if (seen.has(this)) return [];
    seen.add(this);
    const out: [string, Module][] = [[prefix, this]];
    for (const [name, child] of this.namedChildren()) out.push(...child.namedModules(join(prefix, name), seen));
    return out;
  }

  modules(): Module[] {
    return this.namedModules().map(([, m]) => m);
  }

  private ownParameters(): [string, Parameter][] {
    return this.ownMembers((_n, v): v is Parameter => v instanceof Parameter);
  }

  private ownBuffers(persistentOnly = false): [string, Tensor][] {
    const reg = state(this).buffers;
    return this.ownMembers(
      (n, v): v is Tensor => v instanceof Tensor && reg.has(n) && !(v instanceof Parameter) && (!persistentOnly || reg.get(n)!),
    );
  }

  /** Parameters with dotted names; a parameter shared by two attributes is listed once. */
  namedParameters(prefix = '', recurse = true): [string, Parameter][] {
    const seen = new Set<Tensor>();
    const mods: [string, Module][] = recurse ? this.namedModules(prefix) : [[prefix, this]];
    const out: [string, Parameter][] = [];
    for (const [mp, m] of mods) {
      for (const [n, p] of m.ownParameters()) {
        if (seen.has(p)) continue;
        seen.add(p);
        out.push([join(mp, n), p]);
      }
    }
    return out;
  }

  parameters(recurse = true): Parameter[] {
    return this.namedParameters('', recurse).map(([, p]) => p);
  }

  namedBuffers(prefix = '', recurse = true): [string, Tensor][] {
    const mods: [string, Module][] = recurse ? this.namedModules(prefix) : [[prefix, this]];
    return mods.flatMap(([mp, m]) => m.ownBuffers().map(([n, b]): [string, Tensor] => [join(mp, n), b]));
  }

  buffers(recurse = true): Tensor[] {
    return this.namedBuffers('', recurse).map(([, b]) => b);
  }

  getSubmodule(path: string): Module {
    if (path === '') return this;
    return path.split('.').reduce<Module>((m, part) => {
      const next = m.namedChildren().find(([n]) => n === part)?.[1];
      if (!next) throw new ValueError(`getSubmodule: ${m.constructor.name} has no submodule '${part}' (in path '${path}')`);
      return next;
    }, this);
  }

  /** Register a tensor (or null) as a buffer: saved in the state dict when `persistent`, never trained. */
  registerBuffer(name: string, tensor: Tensor | null, persistent = true): void {
    if (name.includes('.') || name === '') throw new ValueError(`registerBuffer: invalid buffer name '${name}'`);
    if (tensor !== null && !(tensor instanceof Tensor)) {
      throw new ValueError(`registerBuffer: buffer '${name}' must be a Tensor or null`);
    }
    state(this).buffers.set(name, persistent);
    (this as Record<string, unknown>)[name] = tensor;
  }

  registerParameter(name: string, param: Parameter | null): void {
    if (name.includes('.') || name === '') throw new ValueError(`registerParameter: invalid parameter name '${name}'`);
    (this as Record<string, unknown>)[name] = param;
  }

  registerForwardPreHook(hook: ForwardPreHook): RemovableHandle {
    return addHook(state(this).preHooks, hook);
  }

  registerForwardHook(hook: ForwardHook): RemovableHandle {
    return addHook(state(this).hooks, hook);
  }

  /** Whether any forward hook or pre-hook is registered (allocation-free, for hot paths). */
  hasForwardHooks(): boolean {
    const s = state(this);
    return s.preHooks.size + s.hooks.size > 0;
  }

  /** The hooks currently registered (pre-hooks, then forward hooks), for guards and tracing. */
  forwardHooks(): { pre: ForwardPreHook[]; post: ForwardHook[] } {
    const s = state(this);
    return { pre: [...s.preHooks.values()], post: [...s.hooks.values()] };
  }

  train(mode = true): this {
    // train('false') would be truthy: BatchNorm and Dropout silently in training mode
    checkBoolean(`${this.constructor.name}.train`, 'mode', mode);
    for (const m of this.modules()) m.training = mode;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Parameters and persistent buffers by PyTorch key (`0.weight`, `bn.running_mean`), detached, sharing storage. */
  stateDict(prefix = ''): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    const visit = (m: Module, p: string) => {
      for (const [n, t] of m.ownParameters()) out[join(p, n)] = t.detach();
      for (const [n, t] of m.ownBuffers(true)) out[join(p, n)] = t.detach();
      for (const [n, c] of m.namedChildren()) visit(c, join(p, n));
    };
    visit(this, prefix);
    return out;
  }

  /** Copy values from `stateDict` into this module's parameters and buffers. */
  loadStateDict(stateDict: Record<string, Tensor>, options: { strict?: boolean } = {}): LoadResult {
    const name = this.constructor.name;
    if (!isPlainObject(stateDict)) {
      throw new StateDictError(`loadStateDict: ${name} expects a state dict (a plain object of key → Tensor), got ${describe(stateDict)}`);
    }
    const { strict = true } = checkOptions(`${name}.loadStateDict`, options, ['strict']);
    checkBoolean(`${name}.loadStateDict`, 'strict', strict);
    const own = this.stateDict();
    const missingKeys = Object.keys(own).filter((k) => !(k in stateDict));
    const unexpectedKeys = Object.keys(stateDict).filter((k) => !(k in own));
    const errors: string[] = [];
    if (strict && missingKeys.length) errors.push(`Missing key(s) in state_dict: ${missingKeys.map((k) => `"${k}"`).join(', ')}.`);
    if (strict && unexpectedKeys.length) errors.push(`Unexpected key(s) in state_dict: ${unexpectedKeys.map((k) => `"${k}"`).join(', ')}.`);
    for (const [k, dst] of Object.entries(own)) {
      if (!(k in stateDict)) continue;
      const src = stateDict[k];
      if (!(src instanceof Tensor)) errors.push(`While copying the parameter named "${k}", expected a Tensor, got ${describe(src)}.`);
      else if (src.shape.join() !== dst.shape.join()) {
        errors.push(
          `size mismatch for ${k}: copying a param with shape ${fmt(src.shape)} from checkpoint, the shape in current model is ${fmt(dst.shape)}.`,
        );
      }
    }
    if (errors.length) {
      throw new StateDictError(`Error(s) in loading state_dict for ${this.constructor.name}:\n\t${errors.join('\n\t')}`);
    }
    noGrad(() => {
      for (const [k, dst] of Object.entries(own)) if (k in stateDict) dst.copy_(stateDict[k]!);
    });
    return { missingKeys, unexpectedKeys };
  }

  /** Call `fn` on every submodule (children first) and then on this module. */
  apply(fn: (m: Module) => void): this {
    for (const c of this.children()) c.apply(fn);
    fn(this);
    return this;
  }

  zeroGrad(): void {
    for (const p of this.parameters()) p.grad = null;
  }

  /** PyTorch-style one-line summary of this layer's settings (`in_features=4, out_features=8, bias=True`). */
  extraRepr(): string {
    return '';
  }

  toString(): string {
    const kids = this.namedChildren();
    const head = `${this.constructor.name}(${this.extraRepr()}`;
    if (!kids.length) return `${head})`;
    const lines = kids.map(([n, c]) => `  (${n}): ${c.toString().split('\n').join('\n  ')}`);
    return `${head}\n${lines.join('\n')}\n)`;
  }
}

function join(prefix: string, name: string): string {
  return prefix ? `${prefix}.${name}` : name;
}

function addHook<T>(map: Map<number, T>, hook: T): RemovableHandle {
  const id = nextHookId++;
  map.set(id, hook);
  return { remove: () => void map.delete(id) };
}
