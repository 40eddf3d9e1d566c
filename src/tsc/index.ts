/**
 * `kiln/tsc`: kiln's rewrite as a TypeScript 5.x transformer, for tsc users.
 *
 * - ts-patch: `"plugins": [{ "transform": "kiln/tsc" }]` in tsconfig.json's compilerOptions (options such
 *   as `"backend": "eager"` go in the same object), then `npx tspc` (or `ts-patch install` and `tsc`);
 * - the compiler API: `program.emit(undefined, undefined, undefined, false, { before: [kilnTransformer(program)] })`.
 *
 * It emits the same plans as the Babel plugin because it is the Babel plugin: each source file's text goes
 * through kiln/plugin (TypeScript syntax kept, lines retained) and the result replaces the file's
 * statements, so tsc then strips types and emits as usual. Given the program, the analysis also asks tsc's
 * own type checker which values are tensors and modules (src/analysis/types.ts), as `kiln build --types`
 * does. Files without module classes, kiln imports or compile() calls are left exactly as tsc parsed them.
 * Source maps point at the original lines (columns are those of the statement's line start).
 *
 * The output must be ES modules (kiln is ESM): `"module": "NodeNext"` in an ESM package, or `"ESNext"`.
 * TypeScript 7 has no transformer API: there, type-check with `tsc --noEmit` and emit with `kiln build`.
 */
import { transformSync } from '@babel/core';
import { createRequire } from 'node:module';
import type * as TS from 'typescript';
import plugin, { type KilnPluginOptions } from '../../plugin/index.js';
import { CheckerEvidence } from '../analysis/types.js';
import type { FileReport } from '../rewrite/transform.js';

export interface KilnTscOptions extends Omit<KilnPluginOptions, 'types'> {
  /** Let the program's type checker decide tensors and modules where annotations do not (default true). */
  readonly types?: boolean;
  /** Told what the rewrite did to each file (plans, breaks, skipped classes), as Babel's metadata.kiln. */
  readonly onReport?: (fileName: string, report: FileReport) => void;
}

/** Keys ts-patch puts in a plugin entry besides the transformer's own options. */
const TS_PATCH_KEYS = new Set([
  'transform',
  'type',
  'after',
  'afterDeclarations',
  'import',
  'isEsm',
  'name',
  'transformProgram',
  'tsConfig',
]);

/**
 * The transformer factory. `program` gives it type evidence (omit it, or pass `types: false`, for
 * annotations and uses alone); `extras.ts` is the TypeScript module in use (ts-patch passes it).
 */
export default function kilnTransformer(
  program?: TS.Program,
  options: KilnTscOptions & Record<string, unknown> = {},
  extras: { readonly ts?: typeof TS } = {},
): TS.TransformerFactory<TS.SourceFile> {
  const ts = extras.ts ?? loadTypeScript();
  const { types: useTypes = true, onReport, ...rest } = options;
  const pluginOptions = Object.fromEntries(Object.entries(rest).filter(([k]) => !TS_PATCH_KEYS.has(k)));
  const evidence = program && useTypes ? new CheckerEvidence(ts, program) : undefined;
  return () => (sf) => {
    if (sf.isDeclarationFile) return sf;
    const out = rewrite(sf, { ...pluginOptions, ...(evidence ? { types: evidence } : {}) });
    if (!out) return sf;
    onReport?.(sf.fileName, out.report);
    return replaceStatements(ts, sf, out.code, out.mappings);
  };
}

export { kilnTransformer };

function loadTypeScript(): typeof TS {
  // The project's own TypeScript first (the one running tsc), else the one next to kiln.
  for (const from of [`${process.cwd()}/`, import.meta.url]) {
    try {
      return createRequire(from)('typescript') as typeof TS;
    } catch {
      // try the next place
    }
  }
  throw new Error("kiln/tsc: cannot load 'typescript'; pass it as the third argument ({ ts })");
}

/** kiln/plugin over the file's text; undefined when it changes nothing. */
function rewrite(
  sf: TS.SourceFile,
  pluginOptions: Record<string, unknown>,
): { code: string; report: FileReport; mappings: string } | undefined {
  const tsx = /\.[cm]?tsx$|\.jsx$/.test(sf.fileName);
  const r = transformSync(sf.text, {
    filename: sf.fileName,
    cwd: process.cwd(),
    configFile: false,
    babelrc: false,
    sourceMaps: true,
    parserOpts: { plugins: ['decorators-legacy'] },
    plugins: [[plugin, pluginOptions]],
    // Types are stripped here, as on the Babel route, so tsc gets plain JavaScript statements (see below).
    presets: /\.[cm]?tsx?$/.test(sf.fileName)
      ? [[requireHere.resolve('@babel/preset-typescript'), { allowDeclareFields: true, isTSX: tsx, allExtensions: true }]]
      : [],
  });
  const report = (r?.metadata as { kiln?: FileReport } | undefined)?.kiln;
  if (!r?.code || !report) return undefined;
  const runtime = typeof pluginOptions.runtime === 'string' ? pluginOptions.runtime : 'kiln/plugin/runtime';
  if (report.plans.length === 0 && !r.code.includes(`'${runtime}'`) && !r.code.includes(`"${runtime}"`)) return undefined;
  return { code: r.code, report, mappings: (r.map as { mappings?: string } | null)?.mappings ?? '' };
}

const requireHere = createRequire(import.meta.url);

/**
 * `sf` with its statements parsed from `code`. The new nodes are made synthesized (no text range), so the
 * printer prints them from their own contents rather than from `sf`'s text, and each gets the source-map
 * range Babel's map gives its start in the original. They are parsed as JavaScript (the types are gone
 * already: tsc keeps a JavaScript file's imports as written) and flagged synthesized, so tsc never asks
 * its checker, which did not bind them, about them.
 */
function replaceStatements(ts: typeof TS, sf: TS.SourceFile, code: string, mappings: string): TS.SourceFile {
  const kind = /\.[cm]?tsx$/.test(sf.fileName) ? ts.ScriptKind.JSX : ts.ScriptKind.JS;
  const parsed = ts.createSourceFile(sf.fileName, code, sf.languageVersion, true, kind);
  const lines = decodeMappings(mappings);
  const place = (n: TS.Node): void => {
    const { line, character } = parsed.getLineAndCharacterOfPosition(n.getStart(parsed));
    const segs = lines[line] ?? [];
    let seg = segs[0];
    for (const s of segs) if (s[0] <= character) seg = s;
    ts.forEachChild(n, place);
    if (seg) {
      const pos = Math.min(
        ts.getPositionOfLineAndCharacter(sf, Math.min(seg[1], sf.getLineStarts().length - 1), 0) + seg[2],
        sf.text.length,
      );
      ts.setSourceMapRange(n, { pos, end: pos });
    }
    ts.setTextRange(n, { pos: -1, end: -1 });
    // Synthesized: tsc's transforms then do not ask the checker about nodes it never bound.
    (n as { flags: TS.NodeFlags }).flags |= ts.NodeFlags.Synthesized;
  };
  parsed.statements.forEach(place);
  return ts.factory.updateSourceFile(sf, parsed.statements);
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** A source map's mappings, per generated line: [generated column, original line, original column] (one source). */
export function decodeMappings(mappings: string): [number, number, number][][] {
  const state = [0, 0, 0, 0];
  return mappings.split(';').map((line) => {
    state[0] = 0;
    const out: [number, number, number][] = [];
    for (const seg of line.split(',')) {
      if (!seg) continue;
      const values: number[] = [];
      let shift = 0;
      let value = 0;
      for (const ch of seg) {
        const d = B64.indexOf(ch);
        value += (d & 31) << shift;
        if (d & 32) shift += 5;
        else {
          values.push(value & 1 ? -(value >> 1) : value >> 1);
          value = shift = 0;
        }
      }
      values.forEach((v, i) => (state[i] = i < 4 ? state[i]! + v : state[i]!));
      if (values.length >= 4) out.push([state[0]!, state[2]!, state[3]!]);
    }
    return out;
  });
}
