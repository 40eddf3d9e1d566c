import { TraceError } from '../errors.js';
import { isPlainObject } from '../graph/node.js';
import type { Tracer } from '../graph/tracer.js';
import { Module } from '../runtime/nn/module.js';
import { Tensor } from '../runtime/tensor.js';
import { matcher, show, type Guard } from './guards.js';

/**
 * Free variables of captured code: module-level `let`/`var`, imported live bindings, closure variables and the
 * objects they hold. The plugin reads them through a scope object (`_kiln.scope({ temperature: () => temperature })`)
 * whose getters are plain reads when nothing is being captured. While a graph is captured, each read is
 * recorded, and plain objects and arrays come back wrapped so that the fields read through them are recorded
 * too (`cfg.scale`, `layers[0]`, `layers.length`). Every recorded read becomes a guard that reads the variable
 * again through its accessor: numbers, strings, booleans and `null` by value, functions, modules and tensors
 * by identity, other objects by identity and content.
 */

type Accessor = () => unknown;
type Key = string | number;

interface Read {
  readonly text: string;
  readonly get: Accessor;
  readonly path: readonly Key[];
  /** `value`: the value there; `keys`: its own keys in order (Object.keys, for…in); `has`: whether a key is there. */
  readonly kind: 'value' | 'keys' | 'has';
  readonly value: unknown;
  readonly key?: Key;
}

/** The reads of one capture, turned into guards when it ends. */
export class FreeReads {
  private readonly reads = new Map<string, Read>();
  /** Wrapped objects, so a value read twice is wrapped once (and compares equal to itself). */
  private readonly wrapped = new WeakMap<object, object>();

  constructor(private readonly tracer: Tracer | undefined) {}

  /** A read of the free variable `name` (through `get`) that gave `value`: record it, and wrap plain objects. */
  read(name: string, get: Accessor, value: unknown): unknown {
    return this.at(name, get, [], value);
  }

  guards(): Guard[] {
    return [...this.reads.values()].map(guardOf);
  }

  get size(): number {
    return this.reads.size;
  }

  private record(r: Read): void {
    if (!this.reads.has(r.text)) this.reads.set(r.text, r);
  }

  private at(text: string, get: Accessor, path: readonly Key[], value: unknown): unknown {
    if (value !== null && typeof value === 'object' && (Array.isArray(value) || isPlainObject(value))) {
      return this.wrap(text, get, path, value);
    }
    this.record({ text, get, path, kind: 'value', value });
    if (value instanceof Tensor)
      this.record({ text: `${text}.requiresGrad`, get, path: [...path, 'requiresGrad'], kind: 'value', value: value.requiresGrad });
    if (value instanceof Module && this.tracer?.adoptForeignModules) this.tracer.adopt(value, text);
    return value;
  }

  /** A stand-in for a plain object or array that records what is read from it and refuses writes. */
  private wrap(text: string, get: Accessor, path: readonly Key[], target: object): object {
    const done = this.wrapped.get(target);
    if (done) return done;
    const field = (k: Key) => (typeof k === 'number' || /^\d+$/.test(String(k)) ? `${text}[${k}]` : `${text}.${k}`);
    const refuse = (k: string | symbol) => {
      throw new TraceError(
        `captured code changes ${typeof k === 'symbol' ? text : field(k)}, which lives outside the graph; the kiln plugin runs such statements eagerly — make it a break (graphBreak()) or move the change out of forward`,
      );
    };
    const proxy = new Proxy(target, {
      get: (t, k, receiver) => {
        const v = Reflect.get(t, k, receiver);
        if (typeof k === 'symbol') return v;
        const own = Object.prototype.hasOwnProperty.call(t, k);
        if (!own && typeof v === 'function') return v; // Array.prototype.map and friends read through the proxy
        const d = own ? Object.getOwnPropertyDescriptor(t, k) : undefined;
        const key: Key = Array.isArray(t) && /^\d+$/.test(k) ? Number(k) : k;
        if (d && !d.configurable && !d.writable) {
          // A frozen field must read as itself (a Proxy invariant): guard its content instead of wrapping it.
          this.record({ text: field(key), get, path: [...path, key], kind: 'value', value: v });
          return v;
        }
        return this.at(field(key), get, [...path, key], v);
      },
      has: (t, k) => {
        const there = Reflect.has(t, k);
        if (typeof k !== 'symbol') this.record({ text: `'${k}' in ${text}`, get, path, kind: 'has', value: there, key: k });
        return there;
      },
      ownKeys: (t) => {
        const keys = Reflect.ownKeys(t);
        this.record({ text: `keys(${text})`, get, path, kind: 'keys', value: keys.filter((k) => typeof k === 'string') });
        return keys;
      },
      set: (_t, k) => refuse(k),
      deleteProperty: (_t, k) => refuse(k),
      defineProperty: (_t, k) => refuse(k),
      setPrototypeOf: () => refuse(Symbol()),
    });
    this.wrapped.set(target, proxy);
    return proxy;
  }
}

const MISSING = Symbol('missing');

/** Follow `path` from the variable's current value; MISSING where something on the way is gone. */
function walk(get: Accessor, path: readonly Key[]): unknown {
  let v: unknown;
  try {
    v = get();
    for (const k of path) {
      if (v === null || (typeof v !== 'object' && typeof v !== 'function')) return MISSING;
      v = (v as Record<Key, unknown>)[k];
    }
  } catch {
    return MISSING; // a variable not yet initialised, a getter that throws: not what was captured
  }
  return v;
}

function guardOf(r: Read): Guard {
  const { get, path } = r;
  if (r.kind === 'keys') {
    const then = JSON.stringify(r.value);
    return {
      text: `${r.text} == ${then}`,
      check: () => {
        const v = walk(get, path);
        return v !== null && typeof v === 'object' && JSON.stringify(Object.keys(v)) === then;
      },
    };
  }
  if (r.kind === 'has') {
    const key = r.key!;
    return {
      text: `${r.text} == ${String(r.value)}`,
      check: () => {
        const v = walk(get, path);
        return v !== null && typeof v === 'object' && key in v === r.value;
      },
    };
  }
  const matches = matcher(r.value);
  const what =
    r.value instanceof Module || r.value instanceof Tensor ? `is the ${r.value.constructor.name} that was captured` : `== ${show(r.value)}`;
  return { text: `${r.text} ${what}`, check: () => matches(walk(get, path)) };
}

/** The reads of the capture now running, if any (set by CompiledCallable around a trace). */
let active: FreeReads | undefined;

/** Run `f` recording free-variable reads into `reads`. */
export function recordingFreeReads<T>(reads: FreeReads, f: () => T): T {
  const outer = active;
  active = reads;
  try {
    return f();
  } finally {
    active = outer;
  }
}

/**
 * What the plugin emits once per file (and per scope holding closure variables): an object whose getters read
 * each free variable through its accessor, recording the read while a graph is captured.
 */
export function scope(accessors: Readonly<Record<string, Accessor>>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, get] of Object.entries(accessors)) {
    Object.defineProperty(out, name, {
      enumerable: true,
      get: () => {
        const v = get();
        return active === undefined ? v : active.read(name, get, v);
      },
    });
  }
  return Object.freeze(out);
}
