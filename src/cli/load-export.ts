import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { KilnError } from '../errors.js';

type Kiln = typeof import('../index.js');

/**
 * What `kiln explain --export` and `kiln check` run: the model file loaded through kiln/register (so the
 * plugin rewrites it), the `kiln` it imports, and an instance of the exported class (or the exported function).
 */
export async function loadExport(
  command: string,
  file: string,
  name: string,
  /** Seeds kiln's generator before the module is built, so its weights follow the seed. */
  seed?: number,
  /** The constructor's arguments (`kiln explain --args`). */
  ctorArgs: readonly unknown[] = [],
): Promise<{ kiln: Kiln; target: unknown; isModule: boolean }> {
  if (!existsSync(file)) throw new KilnError(`${command}: '${file}' does not exist`);
  await import('../register/index.js');
  // The same `kiln` the loaded file imports (the package), so its modules and tensors are ours.
  const kiln = (await import('kiln')) as Kiln;
  const mod = (await import(pathToFileURL(resolve(file)).href)) as Record<string, unknown>;
  const Export = mod[name];
  if (typeof Export !== 'function') {
    const found = Object.keys(mod).filter((k) => typeof mod[k] === 'function');
    throw new KilnError(`${command}: ${file} exports no class or function '${name}' (found: ${found.join(', ') || 'none'})`);
  }
  if (seed !== undefined) kiln.manualSeed(seed);
  const isModule = Export.prototype instanceof kiln.nn.Module;
  let target: unknown = Export;
  if (isModule) {
    try {
      target = new (Export as new (...a: unknown[]) => InstanceType<Kiln['nn']['Module']>)(...ctorArgs);
    } catch (e) {
      // A constructor that needs arguments it was not given fails in user code: say how to give them.
      const given = ctorArgs.length ? `with --args ${JSON.stringify(ctorArgs)}` : 'without arguments';
      throw new KilnError(
        `${command}: new ${name}() ${given} threw ${(e as Error)?.message ?? String(e)}; pass the constructor's arguments with --args '[...]'`,
      );
    }
  }
  return { kiln, target, isModule };
}
