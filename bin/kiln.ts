#!/usr/bin/env node
/**
 * The `kiln` command: `build` (Babel + kiln/plugin over a folder), `explain` (what the plugin does to a
 * file: graph segments, breaks with code frames), `check` (compiled against eager on random inputs),
 * `export` / `run` (kiln/export: a model saved as a program with dynamic dims, and that program run) and
 * `bench` (the benchmark suite, from a checkout).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BUILD_HELP, build, parseBuildArgs, watchBuild, type BuildArgs } from '../src/cli/build.js';
import { CHECK_HELP, checkFile, parseCheckArgs } from '../src/cli/check.js';
import { explainFile } from '../src/cli/explain.js';
import { EXPLAIN_HELP, ExplainUsageError, parseExplainArgs, type ExplainArgs } from '../src/cli/explain-args.js';
import { explainRun } from '../src/cli/explain-run.js';
import { EXPORT_HELP, exportFile, parseExportArgs } from '../src/cli/export.js';
import { parseRunArgs, RUN_HELP, runFile } from '../src/cli/run.js';
import { KilnError } from '../src/errors.js';

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
  kiln build <src...> -d <out> [--config file] [--copy-files] [--ignore glob]... [--report out.json] [--watch] [--types]
                                  compile folders (or files) with the project's Babel config, kiln/plugin
                                  and TypeScript into <out>, one line per graph break (kiln build --help)
  kiln explain <file.ts> [--export Name] [--json] [--no-types]
                                  report each rewritten function's graph segments and breaks, and what
                                  the plugin skipped and why
  kiln explain <file.ts> --export Name --input 2x4[,3x4] [--eval] [--dtype float32|int32] [--args JSON] [--json]
                                  run it once on random inputs: graphs, ops, breaks with code frames,
                                  guards per segment (kiln explain --help)
  kiln check <file.ts> --export Name --input 8x4 [--input 8x4 ...] [--dtype float32|int32] [--seed 0]
                                  run it compiled (each backend, grad on and off, train and eval) against
                                  eager on seeded random inputs; report mismatches, exit 1 on any
  kiln export <file.ts> --export Name --input 8x4[,8x3] [--dynamic [input.]dim:name[:min[:max]]]...
              [--dtype float32|int32] [--seed 0] -o out.kiln
                                  export the class (eval mode, grad off) with kiln/export on random inputs,
                                  e.g. --dynamic 0:batch:1:64 for a batch of 1 to 64; save the program and
                                  print its signature, graph and range constraints (kiln export --help)
  kiln run <file.kiln> --input 8x4[,8x3] [--dtype float32|int32] [--seed 0]
                                  load a saved program and run it on random inputs: each output's shape and
                                  values; inputs outside its ranges exit 1 with its check (kiln run --help)
  kiln <command> --help           that command's options
  kiln --version | --help`;

const BENCH_HELP = `usage: kiln bench

Runs the benchmark suite (bench/run.mts, from a kiln checkout: npm ci && npx kiln bench) and writes
bench/results.json.`;

/** \`kiln <command> --help\`: each command's own text. */
const HELP: Record<string, string> = {
  bench: BENCH_HELP,
  build: BUILD_HELP,
  explain: EXPLAIN_HELP,
  check: CHECK_HELP,
  export: EXPORT_HELP,
  run: RUN_HELP,
};

/** Run a command; a KilnError (bad input) is printed without a stack and exits 1. */
async function reportErrors(f: () => unknown): Promise<number> {
  try {
    await f();
    return 0;
  } catch (e) {
    if (!(e instanceof KilnError)) throw e;
    console.error(e.message);
    return 1;
  }
}

async function main(argv: string[]): Promise<number> {
  const [cmd] = argv;
  if (cmd === undefined) {
    // As git and npm: no command is a usage error, not a successful run.
    console.error(USAGE);
    return 2;
  }
  const help = HELP[cmd];
  if (help && argv.slice(1).some((a) => a === '--help' || a === '-h')) {
    console.log(help);
    return 0;
  }
  switch (cmd) {
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
    case 'build': {
      let args: BuildArgs;
      try {
        args = parseBuildArgs(argv.slice(1));
      } catch (e) {
        if (!(e instanceof KilnError)) throw e;
        console.error(e.message);
        return 2;
      }
      if (args.watch) return reportErrors(() => watchBuild(args));
      let failed = 0;
      const status = await reportErrors(() => void (failed = build(args).failed));
      return status !== 0 ? status : failed > 0 ? 1 : 0;
    }
    case 'explain': {
      let args: ExplainArgs;
      try {
        args = parseExplainArgs(argv.slice(1));
      } catch (e) {
        if (!(e instanceof KilnError)) throw e;
        console.error(e.message);
        return e instanceof ExplainUsageError ? 2 : 1;
      }
      if (args.shapes) return reportErrors(async () => console.log(await explainRun(args)));
      return reportErrors(() =>
        console.log(explainFile(args.file, args.name, args.json, args.types !== undefined ? { types: args.types } : {})),
      );
    }
    case 'check': {
      let parsed;
      try {
        parsed = parseCheckArgs(argv.slice(1));
      } catch (e) {
        if (!(e instanceof KilnError)) throw e;
        console.error(e.message);
        return 2;
      }
      const args = parsed;
      let ok = false;
      const status = await reportErrors(async () => {
        const r = await checkFile(args);
        console.log(r.text);
        ok = r.ok;
      });
      return status !== 0 ? status : ok ? 0 : 1;
    }
    case 'export':
    case 'run': {
      const rest = argv.slice(1);
      let report: () => Promise<string>;
      try {
        if (cmd === 'export') {
          const args = parseExportArgs(rest);
          report = () => exportFile(args);
        } else {
          const args = parseRunArgs(rest);
          report = () => runFile(args);
        }
      } catch (e) {
        if (!(e instanceof KilnError)) throw e;
        console.error(e.message);
        return 2;
      }
      return reportErrors(async () => console.log(await report()));
    }
    default:
      console.error(`kiln: unknown command '${cmd}'\n\n${USAGE}`);
      return 2;
  }
}

process.exitCode = await main(process.argv.slice(2));
