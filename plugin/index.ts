/**
 * `kiln/plugin`: the Babel plugin. Add it to a Babel config —
 *   plugins: [['kiln/plugin', { backend: 'kernels', cacheSizeLimit: 8, include: ['src/**'], exclude: [] }]]
 * — and every nn.Module subclass's `forward` runs as captured graphs with guards, split at graph breaks
 * (see src/rewrite/transform.ts). Files outside `include` / inside `exclude` are left as they are.
 * `transform(source, filename, options)` runs it (with TypeScript stripped) on one source, for snapshot tests.
 */
import { declare } from '@babel/helper-plugin-utils';
import { transformSync, type NodePath, type PluginObj, type PluginPass } from '@babel/core';
import { createRequire } from 'node:module';
import type * as t from '@babel/types';
import picomatch from 'picomatch';
import { relative } from 'node:path';
import { ValueError } from '../src/errors.js';
import { transformProgram, type FileReport, type TransformOptions } from '../src/rewrite/transform.js';

export type { FileReport, PlanReport } from '../src/rewrite/transform.js';

export interface KilnPluginOptions extends TransformOptions {
  /** Globs (relative to Babel's cwd) of files to rewrite; default: all. */
  readonly include?: string | readonly string[];
  /** Globs of files to leave alone. */
  readonly exclude?: string | readonly string[];
}

const KNOWN = ['backend', 'cacheSizeLimit', 'include', 'exclude', 'runtime', 'kilnSources', 'types'];
const BACKENDS = ['kernels', 'eager', 'aot_eager'];

function validate(o: KilnPluginOptions): void {
  for (const k of Object.keys(o)) {
    if (!KNOWN.includes(k)) throw new ValueError(`kiln/plugin: unknown option '${k}' (expected one of ${KNOWN.join(', ')})`);
  }
  if (o.backend !== undefined && !BACKENDS.includes(o.backend)) {
    throw new ValueError(
      `kiln/plugin: backend must be one of ${BACKENDS.map((b) => `'${b}'`).join(', ')} in a Babel config, got ${JSON.stringify(o.backend)}`,
    );
  }
  if (o.cacheSizeLimit !== undefined && (!Number.isInteger(o.cacheSizeLimit) || o.cacheSizeLimit < 0)) {
    throw new ValueError(`kiln/plugin: cacheSizeLimit must be a non-negative integer, got ${JSON.stringify(o.cacheSizeLimit)}`);
  }
}

const globs = (g: string | readonly string[] | undefined) =>
  g === undefined ? undefined : picomatch(typeof g === 'string' ? g : [...g], { dot: true });

const plugin = declare((api, options: KilnPluginOptions) => {
  api.assertVersion(7);
  validate(options);
  const include = globs(options.include);
  const exclude = globs(options.exclude);
  return {
    name: 'kiln',
    visitor: {
      Program: {
        // All work happens on entry, before other plugins and presets (e.g. TypeScript's) see the file.
        enter(path: NodePath<t.Program>, state: PluginPass) {
          const filename = state.filename;
          const rel = filename ? relative(state.cwd, filename) : undefined;
          if (rel !== undefined && ((include && !include(rel)) || (exclude && exclude(rel)))) return;
          const report = transformProgram(path, filename, state.cwd, options);
          (state.file.metadata as unknown as Record<string, unknown>).kiln = report;
        },
      },
    },
  } satisfies PluginObj;
});

export interface TransformSourceOptions extends KilnPluginOptions {
  /** What `include`/`exclude` and the plans' file names are relative to (default: `process.cwd()`). */
  readonly cwd?: string;
  /** Babel's `sourceMaps` (default false: the code alone, stable for snapshots). */
  readonly sourceMaps?: boolean | 'inline';
}

export interface TransformResult {
  /** The rewritten JavaScript (TypeScript stripped for `.ts`/`.mts`/`.cts`/`.tsx` files). */
  readonly code: string;
  readonly map: object | null;
  /** Each rewritten function's segments and breaks, and the module classes left alone with the reason. */
  readonly report: FileReport;
}

/**
 * The plugin over one source, as `kiln build` and `kiln/register` apply it (no Babel config files read):
 * for users' snapshot tests of rewritten code. `filename` decides whether TypeScript is stripped and is
 * the file name plans report; relative imports are followed from it, as in a build.
 */
export function transform(source: string, filename: string, options: TransformSourceOptions = {}): TransformResult {
  const { cwd = process.cwd(), sourceMaps = false, ...pluginOptions } = options;
  const r = transformSync(source, {
    filename,
    cwd,
    configFile: false,
    babelrc: false,
    sourceMaps,
    plugins: [[plugin, pluginOptions]],
    presets: /\.[cm]?tsx?$/.test(filename)
      ? [[createRequire(import.meta.url).resolve('@babel/preset-typescript'), { allowDeclareFields: true }]]
      : [],
  });
  if (r?.code == null) throw new ValueError(`kiln/plugin transform: Babel produced no output for ${filename}`);
  const report = (r.metadata as { kiln?: FileReport } | undefined)?.kiln ?? { plans: [], skipped: [] };
  return { code: r.code, map: r.map ?? null, report };
}

export default plugin;
