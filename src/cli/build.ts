import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { KilnError } from '../errors.js';
import { loadTypeEvidence } from '../analysis/load-types.js';
import { transformSource } from '../register/transform-file.js';

/** `kiln build <src> -d <out>`: Babel + kiln/plugin (+ TypeScript) over a folder or one file, with source maps. */
const SOURCE = /\.(ts|mts|js|mjs)$/;

function sources(root: string, skip: string): string[] {
  if (statSync(root).isFile()) return [root];
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name);
      if (name === 'node_modules' || name.startsWith('.') || resolve(p) === skip) continue;
      if (statSync(p).isDirectory()) walk(p);
      else if (SOURCE.test(name) && !name.endsWith('.d.ts')) out.push(p);
    }
  };
  walk(root);
  return out;
}

export function build(
  src: string,
  outDir: string,
  log: (line: string) => void = console.log,
  /** `types`: let the project's type checker decide tensors, modules and numbers (`--types`). */
  options: { types?: boolean } = {},
): { files: number; plans: number; breaks: number } {
  if (!existsSync(src)) throw new KilnError(`kiln build: '${src}' does not exist`);
  const files = sources(src, resolve(outDir));
  const base = statSync(src).isFile() ? dirname(src) : src;
  let plans = 0;
  let breaks = 0;
  const types = options.types ? loadTypeEvidence(files, src) : undefined;
  files.forEach((file, i) => {
    const rel = relative(base, file);
    const target = join(outDir, rel.replace(/\.ts$/, '.js').replace(/\.mts$/, '.mjs'));
    const { code, map, report } = transformSource(readFileSync(file, 'utf8'), resolve(file), {
      sourceMaps: true,
      ...(types ? { pluginOptions: { types } } : {}),
    });
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, `${code}\n//# sourceMappingURL=${basename(target)}.map\n`);
    if (map) writeFileSync(`${target}.map`, JSON.stringify(map));
    const p = report?.plans ?? [];
    const b = p.reduce((n, plan) => n + plan.segments.filter((s) => s.kind !== 'graph').length + (plan.unsupported ? 1 : 0), 0);
    plans += p.length;
    breaks += b;
    log(`[${i + 1}/${files.length}] ${rel}${p.length ? `  (${p.length} rewritten, ${b} graph break${b === 1 ? '' : 's'})` : ''}`);
  });
  log(`built ${files.length} file${files.length === 1 ? '' : 's'} into ${outDir}: ${plans} functions rewritten, ${breaks} graph breaks`);
  return { files: files.length, plans, breaks };
}
