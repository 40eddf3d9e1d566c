import { loadPartialConfig, type ConfigItem, type PluginItem, type TransformOptions } from '@babel/core';
import { existsSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import plugin from '../../plugin/index.js';
import { KilnError } from '../errors.js';
import { rewriteRelativeImports } from './import-specifiers.js';

/**
 * The Babel options `kiln build` transforms one file with: the project's own Babel config (babel.config.*,
 * .babelrc, or `--config`), as `babel` would load it, with what a build of TypeScript model code needs
 * added where the config lacks it — kiln/plugin first (its options from the config when it lists it),
 * preset-typescript for TypeScript files, and the rewrite of relative `.ts`/extensionless imports to the
 * emitted `.js` (last, after every other plugin).
 */
export interface FileConfig {
  readonly options: TransformOptions;
  /** kiln/plugin's options as the config gives them ({} when the build added the plugin). */
  readonly pluginOptions: Record<string, unknown>;
  /** Where the project config came from (undefined: none found). */
  readonly configFile: string | undefined;
}

const here = dirname(fileURLToPath(import.meta.url));
/** kiln/plugin's file (built and from source), to recognise it in a config that names it by path. */
const PLUGIN_FILES = [join(here, '../../plugin/index.js'), join(here, '../../plugin/index.ts')];
const TS_SOURCE = /\.[cm]?tsx?$/;

const isKilnPlugin = (item: ConfigItem) =>
  item.value === plugin || item.file?.request === 'kiln/plugin' || (item.file != null && PLUGIN_FILES.includes(item.file.resolved));

const stripsTypeScript = (item: ConfigItem) => /(preset-typescript|plugin-transform-typescript)/.test(item.file?.request ?? '');

/**
 * The options for `file`, or undefined when the project config ignores it (its `ignore`/`only`).
 * `configFile`: `--config`'s path, else the config Babel finds from `cwd`.
 */
export function babelOptionsFor(
  file: string,
  cwd: string,
  configFile: string | undefined,
  map: { sourceFileName: string; sourceMaps: boolean },
  /** Options kiln/plugin gets on top of the config's (the type evidence of `--types`). */
  pluginExtra: Record<string, unknown> = {},
): FileConfig | undefined {
  let partial;
  try {
    partial = loadPartialConfig({
      filename: resolve(file),
      cwd,
      root: cwd,
      ...(configFile !== undefined ? { configFile: resolve(cwd, configFile) } : {}),
      babelrc: true,
      sourceMaps: map.sourceMaps,
      sourceFileName: map.sourceFileName,
    });
  } catch (e) {
    // The project's config is broken (a plugin it names is not installed, bad JSON): no file can build.
    throw new BabelConfigError(
      `kiln build: Babel could not load the project's config for ${relative(cwd, file)}: ${(e as Error).message.split('\n\n')[0]}`,
    );
  }
  if (!partial) return undefined;
  const o = partial.options;
  const plugins = (o.plugins ?? []) as ConfigItem[];
  const presets = (o.presets ?? []) as ConfigItem[];
  const kiln = plugins.find(isKilnPlugin);
  const ts = TS_SOURCE.test(file) && ![...plugins, ...presets].some(stripsTypeScript);
  const require_ = createRequire(import.meta.url);
  const options: TransformOptions = {
    ...o,
    plugins: [
      ...(kiln ? [] : [[plugin, pluginExtra] as PluginItem]),
      ...plugins.map((p) =>
        p === kiln && Object.keys(pluginExtra).length > 0 ? ([plugin, { ...kiln.options, ...pluginExtra }] as PluginItem) : p,
      ),
      rewriteRelativeImports,
    ],
    presets: [...presets, ...(ts ? [[require_.resolve('@babel/preset-typescript'), { allowDeclareFields: true }] as PluginItem] : [])],
  };
  return {
    options,
    pluginOptions: (kiln?.options as Record<string, unknown> | undefined) ?? {},
    configFile: partial.config ?? partial.babelrc,
  };
}

/** The project's Babel config cannot be loaded: the build stops (every file would fail the same way). */
export class BabelConfigError extends KilnError {}

/** A `--config` path that does not name a file is the user's mistake: said before anything is built. */
export function configFileProblem(configFile: string | undefined, cwd: string): string | undefined {
  if (configFile === undefined) return undefined;
  const abs = resolve(cwd, configFile);
  return existsSync(abs) && statSync(abs).isFile() ? undefined : `--config '${configFile}' is not a file`;
}
