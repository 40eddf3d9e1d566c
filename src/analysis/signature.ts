/**
 * Parameter names of a function, for the tracer's placeholders, compile's guards and call_module
 * normalisation, read from `Function.prototype.toString()` by a small reader of the parameter list alone.
 * No parser: Babel stays off the run-time path (it loads only where a transform or `kiln explain` runs).
 *
 * What toString gives is the function's own source text, as compiled JS (tsc, esbuild, tsx, Babel output):
 * `function f(a, b = 2) {…}`, `async function* g(…)`, `(a, b) => …`, `x => …`, `async x => …`, and methods
 * as written in a class or object literal (`forward(x) {…}`, `async *gen(…)`, `get x()`, `["k" + 1](a)`,
 * `#priv(a)`). The parameter list is the first parenthesised group outside strings, comments and computed
 * keys; default values are skipped as balanced code (nested parens, brackets, braces, strings, template
 * literals with substitutions, regular expressions, comments). Native and bound functions and classes
 * have no list to read: they get `arg0, arg1, …` from `fn.length`.
 */

/** One parameter of a JS function as written in its source. */
export interface ParamInfo {
  readonly name: string;
  /** Whether the source gives a default (`y = 2`). */
  readonly hasDefault: boolean;
  /** The default when it is a literal (number, string, boolean, null, or an array of those). */
  readonly default?: unknown;
  /** `...rest` or a destructuring pattern: something a single value cannot stand in for. */
  readonly unsupported?: 'rest' | 'pattern';
}

const CACHE = new WeakMap<object, readonly ParamInfo[]>();

/** The parameters of `fn`, read from its source; see the module comment. */
export function functionParams(fn: (...a: never[]) => unknown): readonly ParamInfo[] {
  let cached = CACHE.get(fn);
  if (!cached) {
    cached = readParams(fn);
    CACHE.set(fn, cached);
  }
  return cached;
}

function readParams(fn: (...a: never[]) => unknown): readonly ParamInfo[] {
  const list = parameterList(Function.prototype.toString.call(fn));
  const params = list === undefined ? undefined : splitTopLevel(list).map((p, i) => paramInfo(p, i));
  // fewer names than `fn.length` (the parameters before the first default) means the text was misread
  if (params === undefined || params.length < fn.length) {
    return Array.from({ length: fn.length }, (_v, i) => ({ name: `arg${i}`, hasDefault: false }));
  }
  return params;
}

/** The text between a function's parameter parentheses (or an unparenthesised arrow's one name), if readable. */
function parameterList(src: string): string | undefined {
  if (/\{\s*\[native code\]\s*\}\s*$/.test(src) || /^class\b/.test(src.trimStart())) return undefined;
  for (const tok of codeChars(src, 0)) {
    if (tok.depth !== 0) continue;
    if (tok.ch === '(') {
      const end = closing(src, tok.i);
      return end === undefined ? undefined : src.slice(tok.i + 1, end);
    }
    if (tok.ch === '=' && src[tok.i + 1] === '>') {
      // `x => …` or `async x => …`: the name just before the arrow
      const m = /([A-Za-z_$\u00a0-\uffff][\w$\u00a0-\uffff]*)\s*$/.exec(stripComments(src.slice(0, tok.i)));
      return m ? m[1] : undefined;
    }
    if (tok.ch === '{' || tok.ch === '=') return undefined;
  }
  return undefined;
}

/** Index of the `)` that closes the `(` at `open`. */
function closing(src: string, open: number): number | undefined {
  for (const tok of codeChars(src, open + 1)) if (tok.depth === -1) return tok.i;
  return undefined;
}

/** The parameter list cut at its top-level commas; a trailing comma leaves no empty parameter. */
function splitTopLevel(list: string): string[] {
  const parts: string[] = [];
  let from = 0;
  for (const tok of codeChars(list, 0)) {
    if (tok.depth === 0 && tok.ch === ',') {
      parts.push(list.slice(from, tok.i));
      from = tok.i + 1;
    }
  }
  parts.push(list.slice(from));
  return parts.map((p) => stripComments(p).trim()).filter((p, i, all) => p !== '' || i < all.length - 1);
}

function paramInfo(text: string, i: number): ParamInfo {
  if (text.startsWith('...')) {
    const name = /^\.\.\.\s*([A-Za-z_$\u00a0-\uffff][\w$\u00a0-\uffff]*)$/.exec(text)?.[1];
    return { name: name ?? `arg${i}`, hasDefault: false, unsupported: 'rest' };
  }
  const m = /^([A-Za-z_$\u00a0-\uffff][\w$\u00a0-\uffff]*)\s*(?:=([^]*))?$/.exec(text);
  if (!m) return { name: `arg${i}`, hasDefault: false, unsupported: 'pattern' };
  const [, name, init] = m as unknown as [string, string, string | undefined];
  if (init === undefined) return { name, hasDefault: false };
  const value = literalValue(init.trim());
  return value.ok ? { name, hasDefault: true, default: value.value } : { name, hasDefault: true };
}

type Literal = { ok: true; value: unknown } | { ok: false };
const NOT: Literal = { ok: false };

/** A default written as a literal: number (possibly negated), string, boolean, null, or an array of those. */
function literalValue(text: string): Literal {
  const e = unwrapParens(text);
  if (e === 'true' || e === 'false') return { ok: true, value: e === 'true' };
  if (e === 'null') return { ok: true, value: null };
  if (e.startsWith('-')) {
    const v = literalValue(e.slice(1).trim());
    return v.ok && typeof v.value === 'number' ? { ok: true, value: -v.value } : NOT;
  }
  if (/^(?:0[xX][\da-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d[\d_]*)?)$/.test(e)) {
    const v = Number(e.replace(/_/g, ''));
    return Number.isNaN(v) ? NOT : { ok: true, value: v };
  }
  if ((e.startsWith('"') || e.startsWith("'")) && stringEnd(e, 0) === e.length) return stringValue(e);
  if (e.startsWith('[') && closingBracket(e) === e.length - 1) {
    const items = splitTopLevel(e.slice(1, -1)).map((x) => (x === '' ? NOT : literalValue(x)));
    return items.every((x) => x.ok) ? { ok: true, value: items.map((x) => (x as { value: unknown }).value) } : NOT;
  }
  return NOT;
}

function unwrapParens(e: string): string {
  while (e.startsWith('(') && closing(e, 0) === e.length - 1) e = e.slice(1, -1).trim();
  return e;
}

function closingBracket(e: string): number | undefined {
  for (const tok of codeChars(e, 1)) if (tok.depth === -1) return tok.i;
  return undefined;
}

const ESCAPES: Record<string, string> = { n: '\n', t: '\t', r: '\r', b: '\b', f: '\f', v: '\v', 0: '\0' };

/** The value of a quoted string literal (`e` is exactly one). */
function stringValue(e: string): Literal {
  let out = '';
  for (let i = 1; i < e.length - 1; i++) {
    const c = e[i]!;
    if (c !== '\\') {
      out += c;
      continue;
    }
    const n = e[++i]!;
    if (n in ESCAPES && !(n === '0' && /\d/.test(e[i + 1]!))) out += ESCAPES[n];
    else if (n === 'x' && /^[\da-fA-F]{2}$/.test(e.slice(i + 1, i + 3))) {
      out += String.fromCharCode(parseInt(e.slice(i + 1, i + 3), 16));
      i += 2;
    } else if (n === 'u') {
      const m = /^(?:\{([\da-fA-F]+)\}|([\da-fA-F]{4}))/.exec(e.slice(i + 1));
      if (!m) return NOT;
      out += String.fromCodePoint(parseInt(m[1] ?? m[2]!, 16));
      i += m[0].length;
    } else if (n === '\r' && e[i + 1] === '\n') i++;
    else if (n === '\n' || n === '\r' || n === '\u2028' || n === '\u2029') continue;
    else if (/\d/.test(n))
      return NOT; // legacy octal escapes: not worth guessing
    else out += n;
  }
  return { ok: true, value: out };
}

function stripComments(s: string): string {
  let out = '';
  let from = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '"' || c === "'" || c === '`') {
      i = (c === '`' ? templateEnd(s, i) : stringEnd(s, i)) - 1;
    } else if (c === '/' && (s[i + 1] === '/' || s[i + 1] === '*')) {
      out += s.slice(from, i) + ' ';
      i = commentEnd(s, i) - 1;
      from = i + 1;
    }
  }
  return out + s.slice(from);
}

/** A code character outside strings, templates, comments and regular expressions, with its bracket depth. */
interface CodeChar {
  readonly ch: string;
  readonly i: number;
  /** Depth of `(`, `[`, `{` around it, counted from where the walk started; a closer that leaves the start is -1. */
  readonly depth: number;
}

/** Characters after which a `/` starts a regular expression rather than dividing. */
const BEFORE_REGEX = new Set([...'(,=:[!&|?{};+-*%<>~^'].concat(''));

function* codeChars(src: string, from: number): Generator<CodeChar> {
  let depth = 0;
  let prev = '';
  let beforePrev = '';
  for (let i = from; i < src.length; i++) {
    const ch = src[i]!;
    if (/\s/.test(ch)) continue;
    if (ch === '"' || ch === "'") {
      i = stringEnd(src, i) - 1;
      prev = ch;
      continue;
    }
    if (ch === '`') {
      i = templateEnd(src, i) - 1;
      prev = ch;
      continue;
    }
    if (ch === '/' && (src[i + 1] === '/' || src[i + 1] === '*')) {
      i = commentEnd(src, i) - 1;
      continue;
    }
    // after `x++` or `x--` a `/` divides
    if (ch === '/' && BEFORE_REGEX.has(prev) && !((prev === '+' || prev === '-') && beforePrev === prev)) {
      i = regexEnd(src, i) - 1;
      prev = 'x';
      continue;
    }
    if (ch === '(' || ch === '[' || ch === '{') {
      yield { ch, i, depth };
      depth++;
    } else if (ch === ')' || ch === ']' || ch === '}') {
      depth--;
      yield { ch, i, depth: depth < 0 ? -1 : depth };
      if (depth < 0) return;
    } else yield { ch, i, depth };
    beforePrev = prev;
    prev = ch;
  }
}

/** Index just past the quoted string starting at `i` (or the end of `s`). */
function stringEnd(s: string, i: number): number {
  const q = s[i];
  for (let j = i + 1; j < s.length; j++) {
    if (s[j] === '\\') j++;
    else if (s[j] === q) return j + 1;
  }
  return s.length;
}

/** Index just past the template literal starting at `i`, its `${…}` substitutions skipped as code. */
function templateEnd(s: string, i: number): number {
  for (let j = i + 1; j < s.length; j++) {
    if (s[j] === '\\') j++;
    else if (s[j] === '`') return j + 1;
    else if (s[j] === '$' && s[j + 1] === '{') {
      let end = s.length;
      for (const tok of codeChars(s, j + 2)) {
        if (tok.depth === -1) {
          end = tok.i;
          break;
        }
      }
      j = end;
    }
  }
  return s.length;
}

function commentEnd(s: string, i: number): number {
  if (s[i + 1] === '/') {
    const nl = s.slice(i).search(/[\n\r\u2028\u2029]/);
    return nl < 0 ? s.length : i + nl;
  }
  const close = s.indexOf('*/', i + 2);
  return close < 0 ? s.length : close + 2;
}

/** Index just past the regular expression literal starting at `i` (its flags included). */
function regexEnd(s: string, i: number): number {
  let inClass = false;
  for (let j = i + 1; j < s.length; j++) {
    const c = s[j];
    if (c === '\\') j++;
    else if (c === '[') inClass = true;
    else if (c === ']') inClass = false;
    else if (c === '/' && !inClass) {
      let k = j + 1;
      while (k < s.length && /[a-z]/i.test(s[k]!)) k++;
      return k;
    } else if (c === '\n') return j;
  }
  return s.length;
}
