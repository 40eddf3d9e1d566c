import { TraceError } from '../errors.js';
import { isPlainObject } from '../graph/node.js';
import type { Tracer } from '../graph/tracer.js';
import { Module } from '../runtime/nn/module.js';
import { Tensor } from '../runtime/tensor.js';
import { matcher, show, type Guard } from './guards.js';

/**
 * Free variables of captured code: module-level `let`/`var`, imported live bindings, closure variables and the
 * objects they hold. The plugin reads them through a scope object (`_kiln.scope({ temperature: () => temperature })`)
 * whose getters are plain reads when nothing is being captured. While a graph is captured, each variable read is
 * recorded and guarded on what it held then: numbers, strings, booleans and `null` by value; functions, modules
 * and tensors by identity; plain objects and arrays field by field (`cfg.scale == 1`, `layers.length == 2`,
 * `layers[0] is the Linear that was captured`, their keys); Maps, Sets and other objects by identity and content.
 * The values themselves are handed to the code unchanged, so identity (`===`, Map keys) is what it is eagerly.
 * A guard re-reads the variable through its accessor and walks the same path.
 */

type Accessor = () => unknown;
type Key = string | number;

interface Read {
  readonly text: string;
  readonly get: Accessor;
  readonly path: readonly Key[];
  /** `value`: the value there (`matcher`); `keys`: its own keys in order (of an array when `array`); `same`: the very object. */
  readonly kind: 'value' | 'keys' | 'same';
  readonly array?: boolean;
  readonly value: unknown;
}

/** Leaves past which a value is too large to guard field by field (and too costly to compare every call). */
const MAX_GUARDED_LEAVES = 4096;

const isIdentifierName = (k: string) => /^[A-Za-z_$][\w$]*$/.test(k);
const fieldText = (text: string, k: Key) =>
  typeof k === 'number' ? `${text}[${k}]` : isIdentifierName(k) ? `${text}.${k}` : `${text}[${JSON.stringify(k)}]`;

/** The reads of one capture, turned into guards when it ends. */
export class FreeReads {
  private readonly reads = new Map<string, Read>();

  constructor(private readonly tracer: Tracer | undefined) {}

  /** A read of the free variable `name` (through `get`) that gave `value`: guard what it holds. Returns `value`. */
  read(name: string, get: Accessor, value: unknown): unknown {
    const before = this.reads.size;
    let leaves = 0;
    const seen = new Set<object>();
    const walk = (text: string, path: readonly Key[], v: unknown): void => {
      if (++leaves > MAX_GUARDED_LEAVES) {
        throw new TraceError(
          `${name} holds more than ${MAX_GUARDED_LEAVES} values, too many to guard on every call; pass what the graph needs as an argument`,
        );
      }
      if ((v instanceof Map || v instanceof Set) && (leaves += v.size) > MAX_GUARDED_LEAVES) {
        throw new TraceError(
          `${text} holds ${v.size} entries, too many to compare on every call; pass what the graph needs as an argument`,
        );
      }
      const plain = v !== null && typeof v === 'object' && (Array.isArray(v) || isPlainObject(v));
      if (!plain || seen.has(v as object)) {
        this.record({ text, get, path, kind: plain ? 'same' : 'value', value: v });
        if (typeof v === 'function' && !seen.has(v) && Object.keys(v).length > 0) {
          seen.add(v);
          walkFields(text, path, v);
        }
        if (v instanceof Tensor)
          this.record({ text: `${text}.requiresGrad`, get, path: [...path, 'requiresGrad'], kind: 'value', value: v.requiresGrad });
        if (v instanceof Module && this.tracer?.adoptForeignModules && !this.tracer.isKnownModule(v)) this.tracer.adopt(v, text);
        return;
      }
      seen.add(v as object);
      walkFields(text, path, v as object);
    };
    /** A plain object's or array's keys and each field; also a class's static fields (`C.scale`), which can change. */
    const walkFields = (text: string, path: readonly Key[], v: object): void => {
      const keys = Object.keys(v);
      const array = Array.isArray(v);
      this.record({ text: array ? `${text}.length` : `keys(${text})`, get, path, kind: 'keys', value: keys, array });
      for (const k of keys) {
        const key: Key = Array.isArray(v) && /^\d+$/.test(k) ? Number(k) : k;
        walk(fieldText(text, key), [...path, key], (v as Record<Key, unknown>)[key]);
      }
    };
    try {
      walk(name, [], value);
    } catch (e) {
      // Nothing half-recorded: the capture fails as a whole (and that segment runs eagerly).
      for (const k of [...this.reads.keys()].slice(before)) this.reads.delete(k);
      throw e;
    }
    return value;
  }

  guards(): Guard[] {
    return [...this.reads.values()].map(guardOf);
  }

  private record(r: Read): void {
    if (!this.reads.has(r.text)) this.reads.set(r.text, r);
  }
}

const MISSING = Symbol('missing');

/** Follow `path` from the variable's current value; MISSING where something on the way is gone. */
function follow(get: Accessor, path: readonly Key[]): unknown {
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
    const isArray = r.array === true;
    return {
      text: isArray ? `${r.text} == ${(r.value as string[]).length}` : `${r.text} == ${then}`,
      check: () => {
        const v = follow(get, path);
        return (
          v !== null &&
          (typeof v === 'object' || typeof v === 'function') &&
          Array.isArray(v) === isArray &&
          JSON.stringify(Object.keys(v)) === then
        );
      },
    };
  }
  if (r.kind === 'same') return { text: `${r.text} is the object that was captured`, check: () => follow(get, path) === r.value };
  const matches = matcher(r.value);
  const what =
    r.value instanceof Module || r.value instanceof Tensor ? `is the ${r.value.constructor.name} that was captured` : `== ${show(r.value)}`;
  return { text: `${r.text} ${what}`, check: () => matches(follow(get, path)) };
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
