import { Module } from '../runtime/nn/module.js';

/** One attribute a traced forward assigned: whose, which, and the last value it assigned (a proxy, a tensor or plain data). */
export interface StateWrite {
  readonly owner: Module;
  readonly name: string;
  /** `counter`, `block.cache`: how messages and the graph's output name it. */
  readonly path: string;
  value: unknown;
}

/**
 * Module state written in a traced `forward` (`this.counter += 1`, `this.textEncoding = x.add(1)`, a new
 * attribute), as TorchDynamo records it: the trace does not change the module, later reads in the same
 * trace see the written value, and the compiler makes the graph output the last value of each attribute
 * and assigns it after every run, so the module holds what it holds eagerly after each call.
 */
export class StateWrites {
  private readonly writes = new Map<Module, Map<string, StateWrite>>();
  /** Attributes read before this trace wrote them: the graph depends on their old value. */
  private readonly readFirst = new Map<Module, Set<string>>();
  /** Own keys of each traced-through module when the trace started, to find attributes it added. */
  private readonly watched = new Map<Module, { readonly path: string; readonly keys: ReadonlySet<string> }>();

  watch(m: Module, path: string): void {
    if (!this.watched.has(m)) this.watched.set(m, { path, keys: new Set(Object.keys(m)) });
  }

  /** The value this trace wrote to `owner[name]`, boxed (it may be undefined), or undefined when it wrote none. */
  lookup(owner: Module, name: string): { readonly value: unknown } | undefined {
    return this.writes.get(owner)?.get(name);
  }

  /** A read of `owner[name]` that this trace had not written yet. */
  noteRead(owner: Module, name: string): void {
    if (this.lookup(owner, name)) return;
    let s = this.readFirst.get(owner);
    if (!s) this.readFirst.set(owner, (s = new Set()));
    s.add(name);
  }

  record(owner: Module, name: string, path: string, value: unknown): void {
    let byName = this.writes.get(owner);
    if (!byName) this.writes.set(owner, (byName = new Map()));
    const w = byName.get(name);
    if (w) w.value = value;
    else byName.set(name, { owner, name, path, value });
  }

  /**
   * Attributes the traced code added to a module (a plain assignment the tracer had no setter for): recorded
   * as writes and removed again, so the module is as it was before the trace. Returns every write, in order.
   */
  finish(): StateWrite[] {
    for (const [m, { path, keys }] of this.watched) {
      for (const k of Object.keys(m)) {
        if (keys.has(k)) continue;
        this.record(m, k, path ? `${path}.${k}` : k, (m as unknown as Record<string, unknown>)[k]);
        delete (m as unknown as Record<string, unknown>)[k];
      }
    }
    return [...this.writes.values()].flatMap((byName) => [...byName.values()]);
  }

  /** After a failed trace: remove the attributes it added. */
  undo(): void {
    for (const [m, { keys }] of this.watched) {
      for (const k of Object.keys(m)) if (!keys.has(k)) delete (m as unknown as Record<string, unknown>)[k];
    }
  }

  /**
   * Attributes written without being read first: their old value does not matter to the graph, so the guards
   * on a module's members leave them out (the value the graph assigns would otherwise fail them next call).
   */
  writtenOnly(): Map<Module, Set<string>> {
    const out = new Map<Module, Set<string>>();
    for (const [m, byName] of this.writes) {
      const read = this.readFirst.get(m);
      const names = [...byName.keys()].filter((n) => !read?.has(n));
      if (names.length) out.set(m, new Set(names));
    }
    return out;
  }
}

/**
 * Setters the user's classes define for `m` (`set mode(v) { … }`), by name: assigning through one runs code a
 * trace would run once and a graph never again, so the tracer refuses it (that code then runs eagerly).
 */
export function userSetters(m: Module): [string, PropertyDescriptor][] {
  const out: [string, PropertyDescriptor][] = [];
  for (let p = Object.getPrototypeOf(m); p !== null && p !== Module.prototype; p = Object.getPrototypeOf(p)) {
    for (const [name, d] of Object.entries(Object.getOwnPropertyDescriptors(p))) {
      if (d.set && !out.some(([n]) => n === name) && !Object.prototype.hasOwnProperty.call(m, name)) out.push([name, d]);
    }
  }
  return out;
}
