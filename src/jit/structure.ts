import { KilnError } from '../errors.js';
import { isPlainObject } from '../runtime/plain-object.js';
import { Tensor } from '../runtime/tensor.js';

/**
 * The shape of a traced program's inputs or outputs: tensors inside (nested) arrays and plain objects.
 * A traced program works on the flat list of tensors; the structure maps calls onto it and back.
 */
export type Structure = { kind: 'tensor' } | { kind: 'array'; items: Structure[] } | { kind: 'object'; keys: string[]; items: Structure[] };

export class TracingError extends KilnError {}

/** The structure of `v` and its tensors in order; `what` names the value for errors. */
export function flatten(
  v: unknown,
  what: string,
  onOther: (where: string, v: unknown) => never,
): { structure: Structure; tensors: Tensor[] } {
  const tensors: Tensor[] = [];
  const walk = (x: unknown, where: string): Structure => {
    if (x instanceof Tensor) {
      tensors.push(x);
      return { kind: 'tensor' };
    }
    if (Array.isArray(x)) return { kind: 'array', items: x.map((e, i) => walk(e, `${where}[${i}]`)) };
    if (isPlainObject(x)) {
      const keys = Object.keys(x).sort();
      return { kind: 'object', keys, items: keys.map((k) => walk((x as Record<string, unknown>)[k], `${where}.${k}`)) };
    }
    return onOther(where, x);
  };
  return { structure: walk(v, what), tensors };
}

/** The tensors of `v` in the order `structure` gives (object keys by name, whatever their order in `v`). */
export function flattenAs(structure: Structure, v: unknown, what: string): Tensor[] {
  const out: Tensor[] = [];
  const walk = (s: Structure, x: unknown, where: string): void => {
    switch (s.kind) {
      case 'tensor':
        if (!(x instanceof Tensor)) throw new TracingError(`${where}: expected a Tensor, got ${describe(x)}`);
        out.push(x);
        return;
      case 'array':
        if (!Array.isArray(x) || x.length !== s.items.length) {
          throw new TracingError(
            `${where}: expected an array of ${s.items.length}, got ${Array.isArray(x) ? `an array of ${x.length}` : describe(x)}`,
          );
        }
        s.items.forEach((item, i) => walk(item, x[i], `${where}[${i}]`));
        return;
      case 'object': {
        if (!isPlainObject(x)) throw new TracingError(`${where}: expected an object with keys ${s.keys.join(', ')}, got ${describe(x)}`);
        const obj = x as Record<string, unknown>;
        s.keys.forEach((k, i) => {
          if (!(k in obj)) throw new TracingError(`${where}: key '${k}' is missing (the trace was made with keys ${s.keys.join(', ')})`);
          walk(s.items[i]!, obj[k], `${where}.${k}`);
        });
        return;
      }
      default:
        s satisfies never;
    }
  };
  walk(structure, v, what);
  return out;
}

/** Rebuild a value of `structure` from its tensors in order. */
export function unflatten(structure: Structure, tensors: readonly unknown[]): unknown {
  let i = 0;
  const build = (s: Structure): unknown => {
    switch (s.kind) {
      case 'tensor':
        return tensors[i++];
      case 'array':
        return s.items.map(build);
      case 'object':
        return Object.fromEntries(s.keys.map((k, j) => [k, build(s.items[j]!)]));
      default:
        return s satisfies never;
    }
  };
  return build(structure);
}

/** Whether `x` is a well-formed Structure (for files read back). */
export function isStructure(x: unknown): x is Structure {
  if (!isPlainObject(x)) return false;
  const s = x as Record<string, unknown>;
  if (s.kind === 'tensor') return true;
  if (s.kind === 'array') return Array.isArray(s.items) && s.items.every(isStructure);
  if (s.kind === 'object') {
    return (
      Array.isArray(s.keys) &&
      s.keys.every((k) => typeof k === 'string') &&
      Array.isArray(s.items) &&
      s.items.length === s.keys.length &&
      s.items.every(isStructure)
    );
  }
  return false;
}

function describe(x: unknown): string {
  if (x === null || x === undefined) return String(x);
  if (Array.isArray(x)) return `an array of ${x.length}`;
  return typeof x === 'object' ? `a ${x.constructor?.name ?? 'object'}` : `a ${typeof x} (${String(x)})`;
}
