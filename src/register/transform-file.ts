import { transformSync } from '@babel/core';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import plugin from '../../plugin/index.js';
import type { FileReport } from '../rewrite/transform.js';

/**
 * TypeScript (or JavaScript) source → JavaScript with kiln/plugin applied, the way `kiln/register` and
 * `kiln build` both do it: Babel with the plugin, then preset-typescript, inline source maps.
 */
const here = dirname(fileURLToPath(import.meta.url));
/** The plugin's file (dist/plugin/index.js built, plugin/index.ts from source), for the cache fingerprint. */
const pluginPath = [join(here, '../../plugin/index.js'), join(here, '../../plugin/index.ts')].find(existsSync)!;
/** Presets by absolute path, so Babel does not look them up from the user's cwd. */
const require_ = (id: string) => createRequire(import.meta.url).resolve(id);

export interface TransformedFile {
  readonly code: string;
  readonly map?: object | null;
  readonly report: FileReport | undefined;
}

export interface TransformFileOptions {
  readonly cwd?: string;
  readonly sourceMaps?: 'inline' | boolean;
  readonly pluginOptions?: Record<string, unknown>;
}

export function transformSource(source: string, filename: string, options: TransformFileOptions = {}): TransformedFile {
  const r = transformSync(source, {
    filename,
    cwd: options.cwd ?? process.cwd(),
    configFile: false,
    babelrc: false,
    sourceMaps: options.sourceMaps ?? 'inline',
    plugins: [[plugin, options.pluginOptions ?? {}]],
    presets: /\.[cm]?tsx?$/.test(filename) ? [[require_('@babel/preset-typescript'), { allowDeclareFields: true }]] : [],
  });
  if (!r?.code) throw new Error(`kiln: Babel produced no output for ${filename}`);
  return { code: r.code, map: r.map, report: (r.metadata as { kiln?: FileReport } | undefined)?.kiln };
}

/**
 * What the cache key must change with besides the source: the code of the transform itself (the plugin,
 * the analysis and the rewrite, hashed once per process), so a new or rebuilt kiln never reuses old output.
 */
const transformFingerprint = (() => {
  const h = createHash('sha256');
  const files = [pluginPath];
  for (const dir of ['../analysis', '../rewrite']) {
    const abs = join(here, dir);
    for (const f of readdirSync(abs).sort()) if (/\.(js|ts)$/.test(f) && !f.endsWith('.d.ts')) files.push(join(abs, f));
  }
  for (const f of files) h.update(f).update(readFileSync(f));
  return h.digest('hex');
})();

/** Where transformed files are kept between runs: node_modules/.cache/kiln in the cwd, else the temp dir. */
export function cacheDir(cwd = process.cwd()): string {
  const nm = join(cwd, 'node_modules');
  return existsSync(nm) ? join(nm, '.cache', 'kiln') : join(tmpdir(), 'kiln-cache');
}

/**
 * transformSource with a disk cache keyed by the transform's code, the file name, its source and the options;
 * `KILN_CACHE=0` turns the cache off. Writes are atomic (temp file + rename), so parallel runs are safe.
 */
export function transformCached(source: string, filename: string, options: TransformFileOptions = {}): string {
  if (process.env.KILN_CACHE === '0') return transformSource(source, filename, options).code;
  const key = createHash('sha256')
    .update(JSON.stringify([transformFingerprint, filename, options.cwd ?? process.cwd(), options.pluginOptions ?? {}]))
    .update(source)
    .digest('hex');
  const dir = cacheDir(options.cwd);
  const file = join(dir, `${key.slice(0, 32)}.js`);
  if (existsSync(file)) return readFileSync(file, 'utf8');
  const { code } = transformSource(source, filename, options);
  try {
    mkdirSync(dir, { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, code);
    renameSync(tmp, file);
  } catch {
    // A read-only cache is only slower.
  }
  return code;
}
