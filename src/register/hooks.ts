import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { transformCached } from './transform-file.js';

/**
 * Node module hooks behind `kiln/register`: `.ts`/`.mts` files load as ES modules with their types
 * stripped and kiln/plugin applied; TypeScript-style imports (`./model.js` for `./model.ts`, or no
 * extension) resolve to the `.ts` file. JavaScript outside node_modules that imports kiln is rewritten too.
 */
type Resolve = (
  specifier: string,
  context: { parentURL?: string },
) => Promise<{ url: string; format?: string | null; shortCircuit?: boolean }>;
type Load = (
  url: string,
  context: { format?: string | null },
) => Promise<{ format: string; source?: string | ArrayBuffer | Uint8Array | null; shortCircuit?: boolean }>;

const TS = /\.(ts|mts)$/;

export async function resolve(specifier: string, context: { parentURL?: string }, next: Resolve) {
  try {
    return await next(specifier, context);
  } catch (e) {
    const relative = specifier.startsWith('./') || specifier.startsWith('../');
    if (!relative || !context.parentURL || (e as { code?: string }).code !== 'ERR_MODULE_NOT_FOUND') throw e;
    for (const alt of [specifier.replace(/\.js$/, '.ts').replace(/\.mjs$/, '.mts'), `${specifier}.ts`, `${specifier}/index.ts`]) {
      if (alt === specifier) continue;
      try {
        return await next(alt, context);
      } catch {
        // try the next spelling
      }
    }
    throw e;
  }
}

export async function load(url: string, context: { format?: string | null }, next: Load) {
  if (!url.startsWith('file:') || url.includes('/node_modules/') || url.endsWith('.d.ts')) return next(url, context);
  const isTs = TS.test(url);
  if (!isTs && !/\.m?js$/.test(url)) return next(url, context);
  const filename = fileURLToPath(url);
  const source = await readFile(filename, 'utf8');
  if (!isTs && !/from\s+['"]kiln/.test(source)) return next(url, context);
  const format = isTs || url.endsWith('.mjs') ? 'module' : (context.format ?? (await next(url, context)).format);
  if (format !== 'module') return next(url, context);
  return { format: 'module', source: transformCached(source, filename), shortCircuit: true };
}
