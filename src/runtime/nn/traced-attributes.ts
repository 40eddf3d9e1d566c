/**
 * While a symbolic trace runs, the tracer replaces a module's parameters, buffers and plain attributes with
 * recording getters (a parameter reads as a get_attr proxy). `parameters()`, `buffers()`, `modules()` and
 * friends must still hand the traced code the module's own objects, the same ones and as many as eagerly
 * (TorchDynamo: `self.parameters()` in forward is the real list): they list members through `realEntries`,
 * which reads the value each getter stands for instead of calling it.
 */
const REAL = new WeakMap<object, Map<string, unknown>>();

/** Told of each tensor or module handed out for a stand-in (the tracer guards their metadata). */
let onReal: ((v: unknown) => void) | undefined;

/** `Object.entries(o)`, with each traced stand-in's own value. */
export function realEntries(o: object): [string, unknown][] {
  const real = REAL.get(o);
  if (!real) return Object.entries(o);
  return Object.keys(o).map((k): [string, unknown] => {
    if (!real.has(k)) return [k, (o as Record<string, unknown>)[k]];
    const v = real.get(k);
    onReal?.(v);
    return [k, v];
  });
}

/** Record that `o[name]` now reads through a stand-in for `value`; returns the undo. */
export function standIn(o: object, name: string, value: unknown): () => void {
  let real = REAL.get(o);
  if (!real) REAL.set(o, (real = new Map()));
  real.set(name, value);
  return () => {
    real.delete(name);
    if (real.size === 0) REAL.delete(o);
  };
}

/** Run `f` with `listener` told of every real value `realEntries` hands out. */
export function listeningToReal<T>(listener: (v: unknown) => void, f: () => T): T {
  const outer = onReal;
  onReal = listener;
  try {
    return f();
  } finally {
    onReal = outer;
  }
}
