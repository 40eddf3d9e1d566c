import { isPlainObject } from '../runtime/plain-object.js';
import { Tensor } from '../runtime/tensor.js';
import { AotError } from './errors.js';

/**
 * Pytrees: a program's arguments and results as a flat list of tensors plus the structure around them
 * (arrays, plain objects, and constants such as numbers, strings, booleans and null, kept in the tree).
 */
export type Tree =
  | { readonly kind: 'tensor' }
  | { readonly kind: 'const'; readonly value: unknown }
  | { readonly kind: 'array'; readonly items: readonly Tree[] }
  | { readonly kind: 'object'; readonly keys: readonly string[]; readonly items: readonly Tree[] };

export function flattenTensors(v: unknown, what: string): { tensors: Tensor[]; tree: Tree } {
  const tensors: Tensor[] = [];
  const walk = (x: unknown, where: string): Tree => {
    if (x instanceof Tensor) {
      tensors.push(x);
      return { kind: 'tensor' };
    }
    if (Array.isArray(x)) return { kind: 'array', items: x.map((e, i) => walk(e, `${where}[${i}]`)) };
    if (isPlainObject(x)) {
      const keys = Object.keys(x);
      return { kind: 'object', keys, items: keys.map((k) => walk((x as Record<string, unknown>)[k], `${where}.${k}`)) };
    }
    if (x === null || x === undefined || typeof x === 'number' || typeof x === 'string' || typeof x === 'boolean') {
      return { kind: 'const', value: x };
    }
    throw new AotError(
      `${where}: expected tensors, arrays, plain objects, numbers, strings or booleans, got ${typeof x} ${describeValue(x)}`,
    );
  };
  return { tensors, tree: walk(v, what) };
}

export function unflattenTensors(tree: Tree, values: readonly unknown[]): unknown {
  let i = 0;
  const build = (t: Tree): unknown => {
    switch (t.kind) {
      case 'tensor':
        return values[i++];
      case 'const':
        return t.value;
      case 'array':
        return t.items.map(build);
      case 'object':
        return Object.fromEntries(t.keys.map((k, j) => [k, build(t.items[j]!)]));
      default:
        return t satisfies never;
    }
  };
  return build(tree);
}

function describeValue(x: unknown): string {
  return typeof x === 'function' ? `(${(x as { name?: string }).name || 'anonymous'})` : `(${Object.prototype.toString.call(x)})`;
}
