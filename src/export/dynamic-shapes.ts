import { ValueError } from '../errors.js';
import { isPlainObject } from '../runtime/plain-object.js';
import { Tensor } from '../runtime/tensor.js';
import type { DimEntry, DimSpec } from './dim.js';

/**
 * The `dynamicShapes` option walked beside the arguments it mirrors (API §6): an array with one entry per
 * positional argument, nested like the argument; a tensor's entry is `{ [dim]: Dim | number }` or an array of
 * `Dim | number | null` with one entry per dim; `null` or a missing entry leaves a whole subtree static. The
 * result is one entry per dim of every tensor, in flattening order, for `bindInputDims`.
 */
export function dimEntries(args: readonly unknown[], spec: unknown, argName: (i: number) => string): DimEntry[] {
  const out: DimEntry[] = [];
  const walk = (value: unknown, s: unknown, path: string): void => {
    if (value instanceof Tensor) {
      tensorEntries(value, s, path).forEach((e) => out.push(e));
      return;
    }
    if (Array.isArray(value)) {
      if (s !== null && s !== undefined && (!Array.isArray(s) || s.length !== value.length)) {
        throw new ValueError(
          `dynamicShapes at ${path}: expected null or an array of ${value.length} entries mirroring the argument, got ${describe(s)}`,
        );
      }
      value.forEach((v, i) => walk(v, (s as unknown[] | null | undefined)?.[i], `${path}[${i}]`));
      return;
    }
    if (isPlainObject(value)) {
      if (s !== null && s !== undefined) {
        if (!isPlainObject(s))
          throw new ValueError(`dynamicShapes at ${path}: expected null or an object mirroring the argument, got ${describe(s)}`);
        const extra = Object.keys(s).filter((k) => !(k in value));
        if (extra.length)
          throw new ValueError(`dynamicShapes at ${path}: the argument has no key ${extra.map((k) => JSON.stringify(k)).join(', ')}`);
      }
      for (const [k, v] of Object.entries(value))
        walk(v, (s as Record<string, unknown> | null | undefined)?.[k], `${path}[${JSON.stringify(k)}]`);
      return;
    }
    if (s !== null && s !== undefined) {
      throw new ValueError(
        `dynamicShapes at ${path}: the argument is ${describe(value)}, which has no dims (its entry must be null), got ${describe(s)}`,
      );
    }
  };
  if (spec !== undefined && spec !== null && (!Array.isArray(spec) || spec.length !== args.length)) {
    throw new ValueError(`dynamicShapes must be an array with one entry per positional argument (${args.length}), got ${describe(spec)}`);
  }
  args.forEach((a, i) => walk(a, (spec as unknown[] | null | undefined)?.[i], argName(i)));
  return out;
}

function tensorEntries(t: Tensor, s: unknown, path: string): DimEntry[] {
  const rank = t.shape.length;
  let specs: DimSpec[];
  if (s === null || s === undefined) specs = [];
  else if (Array.isArray(s)) {
    if (s.length !== rank)
      throw new ValueError(`dynamicShapes at ${path}: a tensor of rank ${rank} needs ${rank} entries, got ${s.length}`);
    specs = s as DimSpec[];
  } else if (isPlainObject(s)) {
    specs = [];
    for (const [k, v] of Object.entries(s)) {
      const d = Number(k);
      if (!Number.isInteger(d) || d < 0 || d >= rank) {
        throw new ValueError(
          `dynamicShapes at ${path}: dim ${JSON.stringify(k)} is not a dim of a tensor of rank ${rank} (use 0 to ${rank - 1})`,
        );
      }
      specs[d] = v as DimSpec;
    }
  } else
    throw new ValueError(
      `dynamicShapes at ${path}: expected { [dim]: Dim | number } or an array of Dim | number | null, got ${describe(s)}`,
    );
  return t.shape.map((size, d) => ({ spec: specs[d] ?? null, size, source: `${path}.shape[${d}]` }));
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'nothing';
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (v instanceof Tensor) return `a tensor of shape [${v.shape.join(', ')}]`;
  if (typeof v === 'object') return `a ${v.constructor?.name ?? 'object'}`;
  return `${typeof v} ${JSON.stringify(v)}`;
}
