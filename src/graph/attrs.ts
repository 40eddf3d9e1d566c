import { KilnError } from '../errors.js';
import { Module } from '../runtime/nn/module.js';
import { Parameter } from '../runtime/nn/parameter.js';
import { Tensor } from '../runtime/tensor.js';

/** A module's member called `name`: a child (keyed containers included), a parameter, a buffer or a plain attribute. */
export function member(m: Module, name: string): unknown {
  const child = m.namedChildren().find(([n]) => n === name);
  if (child) return child[1];
  const own = m.namedParameters('', false).find(([n]) => n === name) ?? m.namedBuffers('', false).find(([n]) => n === name);
  if (own) return own[1];
  if (Object.prototype.hasOwnProperty.call(m, name)) return (m as unknown as Record<string, unknown>)[name];
  return undefined;
}

/** Follow a dotted path (`layers.0.fc.weight`) from `root`; throws naming the missing part. */
export function lookupAttr(root: Module, path: string): unknown {
  if (path === '') return root;
  let cur: unknown = root;
  const segs = path.split('.');
  segs.forEach((seg, i) => {
    const v = cur instanceof Module ? member(cur, seg) : undefined;
    if (v === undefined) {
      const at = segs.slice(0, i).join('.') || '<root>';
      const owner = cur instanceof Module ? cur.constructor.name : typeof cur;
      throw new KilnError(`'${path}' does not exist: ${at} (${owner}) has no attribute '${seg}'`);
    }
    cur = v;
  });
  return cur;
}

/**
 * Copy what `path` names in `from` into `to` under the same path, creating empty Modules for missing
 * intermediate levels (FX's `_copy_attr`). A plain tensor becomes a buffer so it is saved with the module.
 */
export function copyAttr(from: Module, to: Module, path: string, value = lookupAttr(from, path)): void {
  const segs = path.split('.');
  const field = segs.pop()!;
  let src: unknown = from;
  let dst = to;
  for (const seg of segs) {
    src = src instanceof Module ? member(src, seg) : undefined;
    let next = member(dst, seg);
    if (next !== undefined && next === src) {
      dst = next as Module;
      continue;
    }
    if (next === undefined) {
      next = new Module();
      (dst as unknown as Record<string, unknown>)[seg] = next;
    }
    if (!(next instanceof Module)) throw new KilnError(`cannot copy '${path}': '${seg}' is already a ${typeof next} on the target`);
    dst = next;
  }
  if (value instanceof Tensor && !(value instanceof Parameter)) dst.registerBuffer(field, value);
  else (dst as unknown as Record<string, unknown>)[field] = value;
}
