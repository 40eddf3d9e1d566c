/**
 * Node names, as torch.fx makes them: derived from the target (`add`, `linear`, `layers_0`), snake_cased,
 * made into valid identifiers and numbered per base (`add`, `add_1`, `add_2`) so each is unique in a graph.
 */

/** Words the generated JavaScript may not use as variable names. */
const RESERVED = new Set(
  (
    'await break case catch class const continue debugger default delete do else enum export extends false finally for ' +
    'function if implements import in instanceof interface let new null package private protected public return static ' +
    'super switch this throw true try typeof var void while with yield arguments eval undefined NaN Infinity ' +
    // names the generated forward itself binds
    'ops fx globals'
  ).split(' '),
);

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** A valid JS variable name for generated code: identifier syntax and not reserved. */
export function isIdentifier(s: string): boolean {
  return IDENTIFIER.test(s) && !RESERVED.has(s);
}

/** An object key or member name as written in source: bare when identifier syntax allows, else a JSON string. */
export function propertyKey(k: string): string {
  return IDENTIFIER.test(k) ? k : JSON.stringify(k);
}

/** `layerNorm` → `layer_norm`, `Conv2d` → `conv2d` (FX's `_snake_case`). */
export function snakeCase(s: string): string {
  let out = '';
  let prevLower = false;
  for (const c of s) {
    if (prevLower && /[A-Z]/.test(c)) out += '_';
    out += c.toLowerCase();
    prevLower = /[a-z]/.test(c);
  }
  return out;
}

/** Hands out unique identifiers for one graph. */
export class Namespace {
  private readonly used = new Set<string>();
  private readonly baseCount = new Map<string, number>();

  create(candidate: string): string {
    let c = candidate.replace(/[^0-9A-Za-z_]/g, '_');
    if (c === '') c = '_unnamed';
    if (/^[0-9]/.test(c)) c = `_${c}`;
    const m = /^(.*)_(\d+)$/.exec(c);
    const base = m ? m[1]! : c;
    let num = m ? Number(m[2]) : 0;
    if (!num) num = this.baseCount.get(base) ?? 0;
    while (this.used.has(c) || RESERVED.has(c)) {
      num++;
      c = `${base}_${num}`;
    }
    this.used.add(c);
    this.baseCount.set(base, num);
    return c;
  }

  /** Claim an exact name (placeholders, deserialised graphs); false when it is taken or invalid. */
  claim(name: string): boolean {
    if (!isIdentifier(name) || this.used.has(name)) return false;
    this.used.add(name);
    return true;
  }

  release(name: string): void {
    this.used.delete(name);
  }
}

/** `.name`, or `["odd-name"]` when the name is not identifier syntax. */
export function memberAccess(name: string): string {
  return IDENTIFIER.test(name) ? `.${name}` : `[${JSON.stringify(name)}]`;
}

/** `obj.a.b` or `obj["0"]["my-layer"]`: a safe JS member chain for a dotted attribute path. */
export function memberChain(object: string, path: string): string {
  if (path === '') return object;
  return path.split('.').reduce((acc, seg) => acc + memberAccess(seg), object);
}
