import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * Names for a trace's values, as PyTorch's tracer gives them: graph inputs after the traced function's
 * parameters, and values after the variable the user's source line assigns them to.
 */

/** The parameter names of `fn` in order (undefined for a destructured one); a rest parameter is marked `...name`. */
export function parameterNames(fn: (...a: never[]) => unknown): (string | undefined)[] {
  let src: string;
  try {
    src = Function.prototype.toString.call(fn);
  } catch {
    return [];
  }
  const bare = /^\s*(?:async\s+)?([A-Za-z_$][\w$]*)\s*=>/.exec(src);
  if (bare) return [bare[1]];
  const open = src.indexOf('(');
  if (open < 0 || /\[native code\]/.test(src)) return [];
  const params: string[] = [];
  let depth = 0;
  let quote = '';
  let current = '';
  for (let i = open + 1; i < src.length; i++) {
    const c = src[i]!;
    if (quote) {
      if (c === '\\') current += c + (src[++i] ?? '');
      else if (c === quote) quote = '';
      if (c !== '\\') current += c;
      continue;
    }
    if (c === '"' || c === "'" || c === '`') quote = c;
    else if (c === '(' || c === '[' || c === '{') depth++;
    else if (c === ')' || c === ']' || c === '}') {
      if (depth === 0) break;
      depth--;
    } else if (c === ',' && depth === 0) {
      params.push(current);
      current = '';
      continue;
    }
    current += c;
  }
  if (current.trim()) params.push(current);
  return params.map((p) => {
    const m = /^\s*(\.\.\.)?\s*([A-Za-z_$][\w$]*)\s*(?:=|$)/.exec(p);
    return m ? `${m[1] ?? ''}${m[2]}` : undefined;
  });
}

/**
 * The name of the `index`-th argument from `names`: its parameter, or the rest parameter numbered from
 * where it starts; undefined when the source does not show one.
 */
export function argumentName(names: readonly (string | undefined)[], index: number): string | undefined {
  const restAt = names.findIndex((n) => n?.startsWith('...'));
  if (restAt >= 0 && index >= restAt) return `${names[restAt]!.slice(3)}_${index - restAt}`;
  return names[index];
}

const sources = new Map<string, string[] | null>();

function sourceLines(file: string): string[] | null {
  let lines = sources.get(file);
  if (lines === undefined) {
    try {
      lines = readFileSync(file.startsWith('file:') ? fileURLToPath(file) : file, 'utf8').split('\n');
    } catch {
      lines = null;
    }
    if (sources.size > 64) sources.clear(); // a bound, not a cache policy
    sources.set(file, lines);
  }
  return lines;
}

/** A user frame's position: `at f (file:line:col)` or `at file:line:col`. */
export function framePosition(frame: string): { file: string; line: number; column: number } | undefined {
  const m = /\(?((?:file:\/\/)?[^()\s]+):(\d+):(\d+)\)?\s*$/.exec(frame.trim());
  return m ? { file: m[1]!, line: Number(m[2]), column: Number(m[3]) } : undefined;
}

/**
 * The variable a source line assigns (`const h = …`, `y = …`) with the call at `column` on its right-hand
 * side, if the line is such a statement (not when the call is inside a function written there: `const f = (x) => x.add(1)`).
 */
export function assignedName(file: string, line: number, column: number): string | undefined {
  const text = sourceLines(file)?.[line - 1];
  if (text === undefined) return undefined;
  const m = /^\s*(?:(?:const|let|var)\s+)?([A-Za-z_$][\w$]*)\s*(?::[^=]+)?=(?![=>])/.exec(text);
  if (!m || column - 1 < m[0].length) return undefined;
  return /=>|\bfunction\b/.test(text.slice(m[0].length, column - 1)) ? undefined : m[1];
}
