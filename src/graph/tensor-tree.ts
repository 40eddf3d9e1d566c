import { Tensor } from '../runtime/tensor.js';
import { isPlainObject } from './node.js';

/**
 * Pytree arguments (TorchDynamo flattens lists, tuples and dicts of tensors): a list or plain object that
 * holds tensors is traced as one placeholder per tensor, and the traced code gets the same structure (its
 * lengths, keys and other leaves, `null` included) rebuilt as plain data around them. So `xs.length`,
 * `xs.slice(1)`, `xs[0]`, `const [a, b] = xs` and `input.x.a[2]` work while tracing; the compiler guards
 * the structure, and at run time passes the tensors in the same (depth-first, key-order) order.
 */

/** One step into a tree: an array index or an object key. */
export type TreeStep = number | string;

/** Whether `v` is an array or plain object with a tensor somewhere under it (through arrays and plain objects only). */
export function holdsTensors(v: unknown): boolean {
  if (Array.isArray(v)) return v.some((x) => x instanceof Tensor || holdsTensors(x));
  if (isPlainObject(v)) return Object.values(v).some((x) => x instanceof Tensor || holdsTensors(x));
  return false;
}

/** Calls `leaf(tensor, path)` for every tensor under `v`, depth-first in index and key order. */
export function eachTensor(v: unknown, leaf: (t: Tensor, path: readonly TreeStep[]) => void, path: TreeStep[] = []): void {
  if (v instanceof Tensor) leaf(v, path);
  else if (Array.isArray(v)) v.forEach((x, i) => eachTensor(x, leaf, [...path, i]));
  else if (isPlainObject(v)) for (const [k, x] of Object.entries(v)) eachTensor(x, leaf, [...path, k]);
}

/** The tensors under `v`, in the order placeholders are made for them. */
export function tensorLeaves(v: unknown): Tensor[] {
  const out: Tensor[] = [];
  eachTensor(v, (t) => out.push(t));
  return out;
}

/** `[0].a` for a path, as guard texts and messages write it. */
export function pathText(path: readonly TreeStep[]): string {
  return path.map((s) => (typeof s === 'number' ? `[${s}]` : /^[A-Za-z_$][\w$]*$/.test(s) ? `.${s}` : `[${JSON.stringify(s)}]`)).join('');
}

/** The value at `path` under `v` (the caller has checked the structure). */
export function at(v: unknown, path: readonly TreeStep[]): unknown {
  let cur = v;
  for (const s of path) cur = (cur as Record<TreeStep, unknown>)[s];
  return cur;
}

/** A copy of the arrays and plain objects of `v` whose leaves are the same values (to compare with later). */
function skeleton(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(skeleton);
  if (isPlainObject(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, skeleton(x)]));
  return v;
}

/** Where `now` differs from `then` (a skeleton), as a path, or undefined when it does not. */
function difference(now: unknown, then: unknown, path: TreeStep[] = []): string | undefined {
  if (Array.isArray(then)) {
    if (!Array.isArray(now) || now.length !== then.length) return pathText(path) || '(the list itself)';
    for (let i = 0; i < then.length; i++) {
      const d = difference(now[i], then[i], [...path, i]);
      if (d !== undefined) return d;
    }
    return undefined;
  }
  if (isPlainObject(then)) {
    const keys = Object.keys(then);
    if (!isPlainObject(now) || Object.keys(now).join('\0') !== keys.join('\0')) return pathText(path) || '(the object itself)';
    for (const k of keys) {
      const d = difference(now[k], then[k], [...path, k]);
      if (d !== undefined) return d;
    }
    return undefined;
  }
  return Object.is(now, then) ? undefined : pathText(path);
}

/**
 * A tensor-holding argument as a trace takes it (pass it in a trace's `concreteArgs`): `build` makes one
 * placeholder per tensor leaf, named after the parameter and the path (`xs_0`, `input_x_a_1`).
 */
export class TensorTree {
  /** The structure handed to the traced code, once built. */
  private built: unknown;
  private snapshot: unknown;

  constructor(
    readonly name: string,
    readonly value: unknown,
  ) {}

  build(placeholder: (name: string) => unknown): unknown {
    const copy = (v: unknown, path: TreeStep[]): unknown => {
      if (v instanceof Tensor) return placeholder([this.name, ...path].join('_').replace(/[^A-Za-z0-9_$]+/g, '_'));
      if (Array.isArray(v)) return v.map((x, i) => copy(x, [...path, i]));
      if (isPlainObject(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, copy(x, [...path, k])]));
      return v;
    };
    this.built = copy(this.value, []);
    this.snapshot = skeleton(this.built);
    return this.built;
  }

  /**
   * Where the traced code changed the structure it was given (`xs.push(y)`, `input.a = y`), or undefined.
   * Eagerly that change would reach the caller's own list, which a graph cannot do: such code runs eagerly.
   */
  changed(): string | undefined {
    return this.snapshot === undefined ? undefined : difference(this.built, this.snapshot);
  }
}
