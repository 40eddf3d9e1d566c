import { transformFileSync, type BabelFileResult } from '@babel/core';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import plugin, { type KilnPluginOptions } from '../plugin/index.js';
import type { FileReport } from '../src/rewrite/transform.js';

/**
 * Helpers for plugin tests: transform a file with kiln/plugin (+ TypeScript), and load the result as a
 * module. Loaded code imports `kiln` and `kiln/plugin/runtime`, which resolve to the built package
 * (`npm test` builds first), so tests compare it with the same source loaded without the plugin.
 */
export const FIXTURES = resolve('test/fixtures/plugin');

export function transform(file: string, options: KilnPluginOptions = {}): { code: string; report: FileReport } {
  const r = transformFileSync(file, {
    configFile: false,
    babelrc: false,
    cwd: process.cwd(),
    plugins: [[plugin, options]],
    presets: [['@babel/preset-typescript', { onlyRemoveTypeImports: false }]],
  }) as BabelFileResult & { metadata: { kiln: FileReport } };
  return { code: r.code!, report: r.metadata.kiln };
}

/**
 * Transform `file` and import the result, written next to it (`.rewritten-*.mjs`, git-ignored) so its
 * relative imports still resolve, and inside this package so `kiln` resolves to it.
 */
export async function loadRewritten<T = Record<string, unknown>>(
  file: string,
  options: KilnPluginOptions = {},
): Promise<{ mod: T; code: string; report: FileReport }> {
  const { code, report } = transform(file, options);
  const hash = createHash('sha1')
    .update(file + code)
    .digest('hex')
    .slice(0, 12);
  const out = join(dirname(resolve(file)), `.rewritten-${hash}.mjs`);
  writeFileSync(out, code);
  return { mod: (await import(pathToFileURL(out).href)) as T, code, report };
}

/** The fixture's source file. */
export const fixture = (name: string) => join(FIXTURES, name, 'input.ts');
