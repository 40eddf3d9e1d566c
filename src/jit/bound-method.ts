import { Session } from 'node:inspector';

/**
 * What a bound function (`m.forward.bind(m)`) was bound to. JavaScript keeps a bound function's receiver and
 * target internal; V8's inspector protocol shows them (`[[BoundThis]]`, `[[TargetFunction]]`), and a session on
 * the main thread answers synchronously. Used only to tell what `trace(m.forward.bind(m))` means, as PyTorch
 * reads `fn.__self__` of a bound method.
 */
export function boundParts(fn: (...a: never[]) => unknown): { self: unknown; target: unknown } | undefined {
  if (typeof fn !== 'function' || !fn.name.startsWith('bound ')) return undefined;
  const key = `__kilnBoundProbe${Math.random().toString(36).slice(2)}`;
  const holder: { fn: unknown; self?: unknown; target?: unknown } = { fn };
  const g = globalThis as Record<string, unknown>;
  g[key] = holder;
  const session = new Session();
  try {
    session.connect();
    let objectId: string | undefined;
    session.post('Runtime.evaluate', { expression: `globalThis.${key}.fn` }, (_e, r) => (objectId = r?.result?.objectId));
    if (!objectId) return undefined;
    let internal: { name: string; value?: { objectId?: string } }[] = [];
    session.post('Runtime.getProperties', { objectId, ownProperties: true }, (_e, r) => (internal = r?.internalProperties ?? []));
    const idOf = (name: string) => internal.find((p) => p.name === name)?.value?.objectId;
    const put = (id: string | undefined, field: 'self' | 'target') => {
      if (id)
        session.post('Runtime.callFunctionOn', { objectId: id, functionDeclaration: `function () { globalThis.${key}.${field} = this; }` });
    };
    put(idOf('[[BoundThis]]'), 'self');
    put(idOf('[[TargetFunction]]'), 'target');
    return 'target' in holder ? { self: holder.self, target: holder.target } : undefined;
  } catch {
    return undefined;
  } finally {
    delete g[key];
    try {
      session.disconnect();
    } catch {
      // already closed
    }
  }
}
