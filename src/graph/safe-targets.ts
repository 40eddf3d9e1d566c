import { Tensor } from '../runtime/tensor.js';

/**
 * What a graph may name, so that no graph (loaded or built in memory) can reach JavaScript's `Function`:
 * the gadgets are `x.constructor.constructor('code')`, `x.__lookupGetter__('shape')` and `f.call()`, so no
 * node may name a member that leads from a value to a function, and getattr/getitem never yield a function.
 */

/** Tensor.prototype methods that are not tensor ops: autograd machinery, host reads and internals. */
const NOT_OPS = new Set(['constructor', 'backward', 'retainGrad', '_gradAccumulator', '_writeFrom', 'data', 'toArray', 'item', 'toString']);

let tensorMethods: ReadonlySet<string> | undefined;

/** The methods a call_method node in a loaded graph may call: Tensor's own op methods (read once, when first asked). */
export function allowedTensorMethods(): ReadonlySet<string> {
  tensorMethods ??= new Set(
    Object.getOwnPropertyNames(Tensor.prototype).filter(
      (n) => typeof Object.getOwnPropertyDescriptor(Tensor.prototype, n)?.value === 'function' && !NOT_OPS.has(n),
    ),
  );
  return tensorMethods;
}

/**
 * The members through which a value leads to a function it was not given: its constructor (and so `Function`),
 * its prototype, accessor lookups, and a function's call/apply/bind. Harmless inherited names (`name`, `length`,
 * `toString`) stay allowed, so a submodule called `name` still works.
 */
const UNSAFE = new Set<string>([
  'constructor',
  'prototype',
  '__proto__',
  '__defineGetter__',
  '__defineSetter__',
  '__lookupGetter__',
  '__lookupSetter__',
  'call',
  'apply',
  'bind',
]);

/** Whether a graph may name `name` as a method, attribute or path segment. */
export function isUnsafeMember(name: unknown): boolean {
  return typeof name === 'string' && UNSAFE.has(name);
}

/** Whether `name` is a method of Tensor, Object or Function (what a getattr in a loaded graph must not read). */
export function isMethodName(name: string): boolean {
  if (UNSAFE.has(name)) return true;
  // Descriptors, not reads: reading a getter such as `shape` on the prototype would run it.
  for (let o: object | null = Tensor.prototype; o; o = Object.getPrototypeOf(o) as object | null) {
    const d = Object.getOwnPropertyDescriptor(o, name);
    if (d) return typeof d.value === 'function';
  }
  return false;
}
