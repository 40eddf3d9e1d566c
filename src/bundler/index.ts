/**
 * `kiln/bundler`: kiln's rewrite as a bundler plugin (built on unplugin), for esbuild, Vite, Rollup,
 * webpack and Rspack:
 *
 *   import kiln from 'kiln/bundler';
 *   esbuild.build({ plugins: [kiln.esbuild()] });      // Vite: plugins: [kiln.vite()]; Rollup: kiln.rollup(); webpack: kiln.webpack()
 *
 * It runs the same transform as `kiln/register` and `kiln build` (kiln/plugin, then Babel's TypeScript
 * preset, with a source map), so it emits the same plans. It runs before the bundler's own TypeScript
 * handling (`enforce: 'pre'`), on `.ts`/`.mts`/`.cts` files and on JavaScript that imports kiln, outside
 * node_modules; options are kiln/plugin's (`backend`, `cacheSizeLimit`, `include`, `exclude`, …).
 */
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { createUnplugin, type UnpluginInstance } from 'unplugin';
import type { KilnPluginOptions } from '../../plugin/index.js';
import { transformSource } from '../register/transform-file.js';
import type { FileReport } from '../rewrite/transform.js';

export interface KilnBundlerOptions extends Omit<KilnPluginOptions, 'types'> {
  /** Told what the rewrite did to each file (plans, breaks, skipped classes). */
  readonly onReport?: (id: string, report: FileReport) => void;
}

const TS = /\.[cm]?ts$/;
const JS = /\.[cm]?js$/;

export const kilnUnplugin: UnpluginInstance<KilnBundlerOptions | undefined, false> = createUnplugin<KilnBundlerOptions | undefined, false>(
  (options) => {
    const { onReport, ...pluginOptions } = options ?? {};
    return {
      name: 'kiln',
      enforce: 'pre',
      // TypeScript's ESM convention (`import './helpers.js'` naming helpers.ts), which Rollup does not resolve itself
      resolveId(id: string, importer: string | undefined) {
        if (!importer || !/^\.\.?\//.test(id) || !TS.test(importer.split('?')[0]!)) return null;
        const ts = resolve(dirname(importer.split('?')[0]!), id.replace(/\.(m|c)?js$/, '.$1ts'));
        return ts !== resolve(dirname(importer), id) && existsSync(ts) ? ts : null;
      },
      transformInclude(id: string) {
        const file = id.split('?')[0]!;
        return (TS.test(file) || JS.test(file)) && !file.endsWith('.d.ts') && !file.includes('/node_modules/');
      },
      transform(code: string, id: string) {
        const file = id.split('?')[0]!;
        if (!TS.test(file) && !/from\s+['"]kiln/.test(code)) return null;
        const out = transformSource(code, file, { sourceMaps: true, pluginOptions: { ...pluginOptions } });
        if (out.report) onReport?.(file, out.report);
        return { code: out.code, map: (out.map ?? null) as never };
      },
    };
  },
);

export const esbuild = kilnUnplugin.esbuild;
export const vite = kilnUnplugin.vite;
export const rollup = kilnUnplugin.rollup;
export const webpack = kilnUnplugin.webpack;
export const rspack = kilnUnplugin.rspack;
export default kilnUnplugin;
