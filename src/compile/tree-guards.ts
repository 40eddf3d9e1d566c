import { isPlainObject } from '../graph/node.js';
import { at, eachTensor, pathText } from '../graph/tensor-tree.js';
import { Tensor } from '../runtime/tensor.js';
import { argGuards, matcher, show, type Guard } from './guards.js';

/**
 * Guards for a pytree argument (a list or plain object holding tensors, traced as one placeholder per
 * tensor): first its structure (the same arrays with the same lengths, the same keys in order, a tensor
 * where there was one, every other leaf equal to what it was: `null`, numbers, strings, modules by
 * identity), then each tensor's own guards under its path (`xs[1].shape[0] == 5`). They run in order,
 * so the leaf guards may assume the structure.
 */
export function treeArgGuards(name: string, index: number, value: unknown, allDims: boolean): Guard[] {
  const matches = structureMatcher(value);
  const guards: Guard[] = [{ text: `${name} has the structure ${structureText(value)}`, check: (args) => matches(args[index]) }];
  eachTensor(value, (t, path) => {
    const steps = [...path];
    const dims = allDims ? new Set(t.shape.keys()) : undefined;
    for (const g of argGuards(`${name}${pathText(steps)}`, 0, t, dims)) {
      guards.push({ text: g.text, check: (args, self) => g.check([at(args[index], steps)], self) });
    }
  });
  return guards;
}

/** A test for "has the same structure as `v`" (tensor leaves: any tensor). */
function structureMatcher(v: unknown): (x: unknown) => boolean {
  if (v instanceof Tensor) return (x) => x instanceof Tensor;
  if (Array.isArray(v)) {
    const items = v.map(structureMatcher);
    return (x) => Array.isArray(x) && x.length === items.length && items.every((m, i) => m(x[i]));
  }
  if (isPlainObject(v)) {
    const keys = Object.keys(v);
    const items = keys.map((k) => structureMatcher(v[k]));
    return (x) => {
      if (!isPlainObject(x)) return false;
      const now = Object.keys(x);
      return now.length === keys.length && keys.every((k, i) => now[i] === k && items[i]!(x[k]));
    };
  }
  return matcher(v);
}

/** `[Tensor, Tensor, null]`, `{x: {a: [Tensor]}, y: Tensor}`: the structure as guard texts show it. */
function structureText(v: unknown): string {
  if (v instanceof Tensor) return 'Tensor';
  if (Array.isArray(v)) return `[${v.map(structureText).join(', ')}]`;
  if (isPlainObject(v))
    return `{${Object.entries(v)
      .map(([k, x]) => `${k}: ${structureText(x)}`)
      .join(', ')}}`;
  return show(v);
}
