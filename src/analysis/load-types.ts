import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import type { TypeEvidence } from './classify.js';

type ProjectModule = typeof import('./project.js');

/**
 * Type evidence for `files` from the project of the nearest tsconfig.json above `from` (strict defaults
 * without one), loaded on demand: ts-morph and the project are only read when a command asks for types.
 */
export function loadTypeEvidence(files: readonly string[], from: string): TypeEvidence {
  const project = createRequire(import.meta.url)('./project.js') as ProjectModule;
  return project.projectEvidence(files, findTsconfig(from));
}

/** The nearest tsconfig.json at or above `from` (a file or a folder), or undefined. */
export function findTsconfig(from: string): string | undefined {
  let dir = resolve(from);
  if (/\.[cm]?[jt]sx?$/.test(dir)) dir = dirname(dir);
  for (;;) {
    const candidate = join(dir, 'tsconfig.json');
    if (existsSync(candidate)) return candidate;
    const up = dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}
