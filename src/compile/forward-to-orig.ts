import type { Module } from '../runtime/nn/module.js';

/**
 * PyTorch's OptimizedModule `__getattr__`/`__setattr__`/`__dir__`: a name the wrapper does not have itself
 * (an own field, or a method of its classes) is read from, written to, defined on and deleted from the
 * original module, and `in` / `Object.keys` see the original's names too. The wrapper's own module
 * bookkeeping (`ownEntries`, so parameters(), stateDict() and guards) keeps seeing its own fields only.
 */
export function forwardingToOrig<T extends { readonly origMod: Module }>(wrapper: T): T {
  const own = (t: T, p: PropertyKey) => p in t;
  const orig = (t: T) => t.origMod as unknown as object;
  return new Proxy(wrapper, {
    get: (t, p, r) => (own(t, p) ? Reflect.get(t, p, r) : Reflect.get(orig(t), p)),
    set: (t, p, v, r) => (own(t, p) ? Reflect.set(t, p, v, r) : Reflect.set(orig(t), p, v)),
    has: (t, p) => own(t, p) || p in orig(t),
    defineProperty: (t, p, d) => (own(t, p) ? Reflect.defineProperty(t, p, d) : Reflect.defineProperty(orig(t), p, d)),
    deleteProperty: (t, p) =>
      Object.prototype.hasOwnProperty.call(t, p) ? Reflect.deleteProperty(t, p) : Reflect.deleteProperty(orig(t), p),
    ownKeys: (t) => {
      const mine = Reflect.ownKeys(t);
      return [...mine, ...Reflect.ownKeys(orig(t)).filter((k) => !mine.includes(k))];
    },
    getOwnPropertyDescriptor: (t, p) => {
      const d = Reflect.getOwnPropertyDescriptor(t, p);
      if (d || own(t, p)) return d;
      const o = Reflect.getOwnPropertyDescriptor(orig(t), p);
      // Reported as the wrapper's own: a proxy may only do that for a configurable property it does not hold.
      return o && { ...o, configurable: true };
    },
  });
}
