import { IndexError, KilnError, ValueError } from '../../errors.js';
import { isPlainObject } from '../plain-object.js';
import { Tensor } from '../tensor.js';
import { describe } from '../validate.js';
import { Module } from './module.js';
import { Parameter } from './parameter.js';
import { realEntries } from './traced-attributes.js';

/** Containers. List-like ones keep members as numeric properties (`seq[0]`), dict-like ones in a Map. */

function wrapIndex(op: string, i: number, n: number): number {
  if (!Number.isInteger(i) || i < -n || i >= n) throw new IndexError(`${op}: index ${i} is out of range for length ${n}`);
  return i < 0 ? i + n : i;
}

abstract class IndexedContainer<T> extends Module {
  [index: number]: T;

  get length(): number {
    let n = 0;
    while (Object.prototype.hasOwnProperty.call(this, n)) n++;
    return n;
  }

  at(i: number): T {
    return this[wrapIndex(`${this.constructor.name}.at`, i, this.length)]!;
  }

  *[Symbol.iterator](): IterableIterator<T> {
    for (let i = 0; i < this.length; i++) yield this[i]!;
  }

  protected abstract accept(v: unknown): T;

  append(item: unknown): this {
    this[this.length] = this.accept(item);
    return this;
  }

  extend(items: Iterable<unknown>): this {
    for (const it of items) this.append(it);
    return this;
  }

  insert(index: number, item: unknown): this {
    const items = [...this];
    const at = index < 0 ? Math.max(0, items.length + index) : Math.min(index, items.length);
    items.splice(at, 0, this.accept(item));
    items.forEach((v, i) => (this[i] = v));
    return this;
  }
}

export class Sequential extends IndexedContainer<Module> {
  constructor(...modules: (Module | Record<string, Module>)[]) {
    super();
    const first = modules[0];
    if (modules.length === 1 && isPlainObject(first)) {
      // named children: new Sequential({ conv: …, relu: … })
      for (const [k, m] of Object.entries(first)) (this as Record<string, unknown>)[k] = this.accept(m);
    } else this.extend(modules);
  }

  protected accept(v: unknown): Module {
    if (!(v instanceof Module)) throw new ValueError(`Sequential: expected a Module or a record of them, got ${describe(v)}`);
    return v;
  }

  /** Chain the children. Typed for the common tensor-in, tensor-out case; any value is passed along. */
  override forward(input: Tensor): Tensor {
    let x = input;
    for (const m of this.children()) x = m.call(x);
    return x;
  }
}

export class ModuleList extends IndexedContainer<Module> {
  constructor(modules: Iterable<Module> = []) {
    super();
    this.extend(modules);
  }

  protected accept(v: unknown): Module {
    if (!(v instanceof Module)) throw new ValueError(`ModuleList: expected a Module, got ${typeof v}`);
    return v;
  }

  override forward(): never {
    throw new KilnError('ModuleList is a container and has no forward(); iterate over it in your own forward');
  }
}

export class ParameterList extends IndexedContainer<Parameter> {
  constructor(params: Iterable<Tensor> = []) {
    super();
    this.extend(params);
  }

  protected accept(v: unknown): Parameter {
    if (!(v instanceof Tensor)) throw new ValueError(`ParameterList: expected a Tensor, got ${typeof v}`);
    return v instanceof Parameter ? v : new Parameter(v);
  }
}

abstract class KeyedContainer<T> extends Module {
  declare private readonly items: Map<string, T>;

  constructor(entries: Record<string, unknown> | Iterable<[string, unknown]> = {}) {
    super();
    Object.defineProperty(this, 'items', { value: new Map<string, T>(), enumerable: false });
    const list = Symbol.iterator in Object(entries) ? [...(entries as Iterable<[string, unknown]>)] : Object.entries(entries);
    for (const [k, v] of list) this.set(k, v);
  }

  protected abstract accept(v: unknown): T;

  protected override ownEntries(): [string, unknown][] {
    return [...this.items.entries(), ...realEntries(this)];
  }

  get size(): number {
    return this.items.size;
  }

  get(key: string): T {
    const v = this.items.get(key);
    if (v === undefined) throw new IndexError(`${this.constructor.name}: no entry '${key}' (keys: ${[...this.items.keys()].join(', ')})`);
    return v;
  }

  set(key: string, value: unknown): this {
    if (key.includes('.') || key === '') throw new ValueError(`${this.constructor.name}: invalid key '${key}'`);
    this.items.set(key, this.accept(value));
    return this;
  }

  has(key: string): boolean {
    return this.items.has(key);
  }

  delete(key: string): boolean {
    return this.items.delete(key);
  }

  keys(): IterableIterator<string> {
    return this.items.keys();
  }

  values(): IterableIterator<T> {
    return this.items.values();
  }

  entries(): IterableIterator<[string, T]> {
    return this.items.entries();
  }

  [Symbol.iterator](): IterableIterator<[string, T]> {
    return this.items.entries();
  }
}

export class ModuleDict extends KeyedContainer<Module> {
  protected accept(v: unknown): Module {
    if (!(v instanceof Module)) throw new ValueError(`ModuleDict: expected a Module, got ${typeof v}`);
    return v;
  }

  override forward(): never {
    throw new KilnError('ModuleDict is a container and has no forward(); look modules up by key in your own forward');
  }
}

export class ParameterDict extends KeyedContainer<Parameter> {
  protected accept(v: unknown): Parameter {
    if (!(v instanceof Tensor)) throw new ValueError(`ParameterDict: expected a Tensor, got ${typeof v}`);
    return v instanceof Parameter ? v : new Parameter(v);
  }
}
