import { isGradEnabled } from '../runtime/autograd.js';
import { Module as ModuleClass, type Module } from '../runtime/nn/module.js';
import { Tensor } from '../runtime/tensor.js';
import type { AttributeRead } from '../graph/tracer.js';

/**
 * Guards: the conditions a captured graph was specialised on. Each is a small closure with a text that
 * names what it checks (`x.shape[0] == 3`, `self.scale == 2`, `self.fc.forwardHooks`), so a failure can be
 * reported to `onGuardFail` and in warnings exactly.
 */
export interface Guard {
  readonly text: string;
  check(args: readonly unknown[], self: Module | undefined): boolean;
}

/** The first failing guard's index, or -1 when all hold. */
export function firstFailing(guards: readonly Guard[], args: readonly unknown[], self: Module | undefined): number {
  for (let i = 0; i < guards.length; i++) if (!guards[i]!.check(args, self)) return i;
  return -1;
}

/**
 * A test for "still equal to `v`": identity for primitives, functions, tensors and objects JSON cannot
 * write; for plain data the JSON text taken now, so later in-place edits are noticed.
 */
export function matcher(v: unknown): (x: unknown) => boolean {
  const json = typeof v === 'object' && v !== null && !(v instanceof Tensor) && !(v instanceof ModuleClass) ? tryJSON(v) : undefined;
  if (json === undefined) return (x) => Object.is(x, v);
  return (x) => typeof x === 'object' && x !== null && !(x instanceof Tensor) && !(x instanceof ModuleClass) && tryJSON(x) === json;
}

/** Ids for tensors, modules and functions inside guarded data: they compare by identity, never by content. */
const identities = new WeakMap<object, number>();
const byIdentity = (_key: string, v: unknown) => {
  // JSON writes a Map or Set as {}: their entries are what a guard must see change.
  if (v instanceof Map) return { Map: [...v] };
  if (v instanceof Set) return { Set: [...v] };
  if (isInstance(v)) return { [(v as object).constructor?.name || 'Object']: instanceState(v as object) };
  if (!(v instanceof Tensor || v instanceof ModuleClass || typeof v === 'function')) return v;
  let id = identities.get(v as object);
  if (id === undefined) identities.set(v as object, (id = nextIdentity++));
  return `<${v instanceof Tensor ? 'Tensor' : v instanceof ModuleClass ? v.constructor.name : 'function'}#${id}>`;
};
let nextIdentity = 0;

/** An object of some class (not plain data, a tensor, a module, a Map/Set or a typed array). */
export function isInstance(v: unknown): boolean {
  if (v === null || typeof v !== 'object' || Array.isArray(v) || ArrayBuffer.isView(v)) return false;
  if (v instanceof Tensor || v instanceof ModuleClass || v instanceof Map || v instanceof Set) return false;
  const proto = Object.getPrototypeOf(v);
  return proto !== null && proto !== Object.prototype;
}

/**
 * What a class instance shows: its own fields and the values of its getters (a getter may read a `#private`
 * field, which JSON cannot see). A getter that throws is left out.
 */
function instanceState(v: object): Record<string, unknown> {
  const out: Record<string, unknown> = { ...v };
  for (let p = Object.getPrototypeOf(v); p !== null && p !== Object.prototype; p = Object.getPrototypeOf(p)) {
    for (const [name, d] of Object.entries(Object.getOwnPropertyDescriptors(p))) {
      if (!d.get || name in out) continue;
      try {
        out[name] = (v as Record<string, unknown>)[name];
      } catch {
        /* not part of the state we can compare */
      }
    }
  }
  return out;
}

function tryJSON(v: unknown): string | undefined {
  try {
    return JSON.stringify(v, byIdentity);
  } catch {
    return undefined;
  }
}

export function show(v: unknown): string {
  if (typeof v === 'function') return `<function ${v.name || 'anonymous'}>`;
  try {
    return JSON.stringify(v, byIdentity) ?? String(v);
  } catch {
    return String(v);
  }
}

/** Guards for one argument: shape (dims in `dynamicDims` left free), dtype and requiresGrad for tensors; the value otherwise. */
export function argGuards(name: string, index: number, value: unknown, dynamicDims: ReadonlySet<number> = new Set()): Guard[] {
  if (!(value instanceof Tensor)) {
    const matches = matcher(value);
    return [{ text: `${name} == ${show(value)}`, check: (args) => matches(args[index]) }];
  }
  const { shape, dtype } = value;
  const requiresGrad = value.requiresGrad;
  const at = (args: readonly unknown[]) => args[index] as Tensor;
  const guards: Guard[] = [
    { text: `${name} is a Tensor`, check: (args) => args[index] instanceof Tensor },
    { text: `${name}.ndim == ${shape.length}`, check: (args) => at(args).shape.length === shape.length },
  ];
  shape.forEach((d, i) => {
    if (!dynamicDims.has(i)) guards.push({ text: `${name}.shape[${i}] == ${d}`, check: (args) => at(args).shape[i] === d });
  });
  guards.push(
    { text: `${name}.dtype == ${dtype}`, check: (args) => at(args).dtype === dtype },
    { text: `${name}.requiresGrad == ${requiresGrad}`, check: (args) => at(args).requiresGrad === requiresGrad },
  );
  return guards;
}

export function gradModeGuard(): Guard {
  const enabled = isGradEnabled();
  return { text: `isGradEnabled() == ${enabled}`, check: () => isGradEnabled() === enabled };
}

const ownEntriesOf = Object.getOwnPropertyDescriptor(ModuleClass.prototype, 'ownEntries')!.value as () => [string, unknown][];

/** A module's members in order, flattened to [name, value, name, value, …]; names in `skip` left out. */
function memberList(m: Module, skip?: ReadonlySet<string>): unknown[] {
  const out: unknown[] = [];
  const own = (m as unknown as { ownEntries(): [string, unknown][] }).ownEntries;
  if (own !== ownEntriesOf) {
    for (const [k, v] of own.call(m)) if ((v instanceof ModuleClass || v instanceof Tensor) && !skip?.has(k)) out.push(k, v);
    return out;
  }
  for (const k in m) {
    const v = (m as unknown as Record<string, unknown>)[k];
    if ((v instanceof ModuleClass || v instanceof Tensor) && !skip?.has(k)) out.push(k, v);
  }
  return out;
}

/** Whether `m`'s members are still exactly `then` (allocation-free for plain modules). */
function sameMembers(m: Module, then: readonly unknown[], skip?: ReadonlySet<string>): boolean {
  const own = (m as unknown as { ownEntries(): [string, unknown][] }).ownEntries;
  if (own !== ownEntriesOf) {
    const now = memberList(m, skip);
    return now.length === then.length && now.every((v, i) => v === then[i]);
  }
  let i = 0;
  for (const k in m) {
    const v = (m as unknown as Record<string, unknown>)[k];
    if (!(v instanceof ModuleClass || v instanceof Tensor) || skip?.has(k)) continue;
    if (k !== then[i] || v !== then[i + 1]) return false;
    i += 2;
  }
  return i === then.length;
}

/** `self` or `self.block.fc` (or `layers[0].fc` for a module reached another way): how guard texts name a module path. */
const underLabel = (label: string, path: string) => (path ? `${label}.${path}` : label);

/**
 * Guards on a module: the identity of `forward`, the identity and order of every submodule, parameter
 * and buffer, each module's forward hooks and `training` flag, and the plain attributes the trace read.
 * `label` names the module in guard texts: `self` for the compiled module, the way it was reached otherwise.
 */
export function moduleGuards(
  root: Module,
  attributeReads: Iterable<[string, AttributeRead]>,
  label = 'self',
  /** Attributes the graph assigns without reading them first (state-writes.ts): their identity is not guarded. */
  writtenOnly?: ReadonlyMap<Module, ReadonlySet<string>>,
): Guard[] {
  const forward = root.forward;
  const modules = root.namedModules();
  const guards: Guard[] = [{ text: `${label}.forward is the function that was captured`, check: () => root.forward === forward }];
  // One cheap check per module: its member submodules, parameters and buffers, by name and identity, in order.
  for (const [path, m] of modules) {
    const skip = writtenOnly?.get(m);
    const members = memberList(m, skip);
    guards.push({
      text: `${underLabel(label, path)} submodules, parameters and buffers (identity and order)`,
      check: () => sameMembers(m, members, skip),
    });
  }
  // Past the structure guards the module list is the captured one, so these may index it directly.
  for (const [path, m] of modules) {
    const hooks = m.forwardHooks();
    const ids = [...hooks.pre, ...hooks.post];
    guards.push({
      text: `${underLabel(label, path)}.forwardHooks`,
      check: () => {
        if (ids.length === 0) return !m.hasForwardHooks();
        const now = m.forwardHooks();
        return now.pre.length + now.post.length === ids.length && [...now.pre, ...now.post].every((h, i) => h === ids[i]);
      },
    });
    const training = m.training;
    guards.push({ text: `${underLabel(label, path)}.training == ${training}`, check: () => m.training === training });
  }
  for (const [path, { owner, name, value }] of attributeReads) {
    const matches = matcher(value);
    guards.push({
      text: `${underLabel(label, path)} == ${show(value)}`,
      check: () => matches((owner as unknown as Record<string, unknown>)[name]),
    });
  }
  return guards;
}
