#!/usr/bin/env node
/**
 * The `kiln` command. `kiln bench` runs the benchmark suite from a kiln checkout. `build` and `explain`
 * belong to the ahead-of-time capture (the Babel plugin), which this version does not ship yet; they
 * say so instead of pretending to work.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root: the nearest folder above this file with a package.json (bin/ in source, dist/bin/ built). */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}

const root = packageRoot();
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };

const USAGE = `kiln ${pkg.version}

usage:
  kiln bench                      run the benchmarks (from a kiln checkout) and write bench/results.json
  kiln build <src> -d <out>       compile a folder with the kiln Babel plugin   (needs kiln/plugin)
  kiln explain <file.ts>          report graphs, breaks and guards              (needs kiln/plugin)
  kiln --version | --help`;

function main(argv: string[]): number {
  const [cmd] = argv;
  switch (cmd) {
    case undefined:
    case '-h':
    case '--help':
      console.log(USAGE);
      return 0;
    case '-v':
    case '--version':
      console.log(pkg.version);
      return 0;
    case 'bench': {
      const script = join(root, 'bench', 'run.mts');
      if (!existsSync(script)) {
        console.error('kiln bench: bench/run.mts not found; run it from a kiln checkout (npm ci && npx kiln bench)');
        return 1;
      }
      const r = spawnSync(process.execPath, ['--import', 'tsx', script], { stdio: 'inherit', cwd: root });
      return r.status ?? 1;
    }
    case 'build':
    case 'explain':
      console.error(`kiln ${cmd}: this kiln version has no Babel plugin (kiln/plugin) yet, so there is nothing to ${cmd}`);
      return 2;
    default:
      console.error(`kiln: unknown command '${cmd}'\n\n${USAGE}`);
      return 2;
  }
}

process.exitCode = main(process.argv.slice(2));
