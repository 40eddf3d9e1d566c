import { transformSync } from '@babel/core';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, watch, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import picomatch from 'picomatch';
import { KilnError } from '../errors.js';
import { loadTypeEvidence } from '../analysis/load-types.js';
import type { FileReport } from '../rewrite/transform.js';
import { BabelConfigError, babelOptionsFor, configFileProblem } from './babel-config.js';

/**
 * `kiln build <src...> -d <out>`: the Babel route over folders or files — the project's Babel config with
 * kiln/plugin (and TypeScript) — writing JavaScript with source maps of the originals, relative imports
 * pointing at the emitted files, one line per graph break, and a summary. A file that fails is reported and
 * skipped; the build goes on and exits non-zero at the end.
 */
export const BUILD_USAGE =
  'kiln build <src...> -d <out> [--config babel.config.json] [--copy-files] [--ignore glob]... [--report out.json] [--watch] [--types]';

export const BUILD_HELP = `usage: ${BUILD_USAGE}

Compiles TypeScript and JavaScript (.ts .mts .cts .js .mjs .cjs, not .d.ts) under each <src> folder (or each
<src> file) into <out>, through the project's Babel config (babel.config.*, .babelrc; --config names one),
with kiln/plugin and its options from that config (added with defaults when it is not listed) and
@babel/preset-typescript for TypeScript files when the config has none. Every file gets a source map
(sources relative to the original, with sourcesContent); relative imports of .ts files or without an
extension are rewritten to the emitted .js. Declarations are not emitted: run \`tsc --emitDeclarationOnly\`.

options:
  -d, --out-dir <out>   where the output goes (required); folders keep their layout
  --config <file>       the Babel config file to use instead of the one Babel finds
  --copy-files          copy the files that are not compiled (JSON, .d.ts, assets) too
  --ignore <glob>       files not to compile or copy, relative to the current folder (repeatable,
                        or comma-separated), e.g. --ignore '**/*.test.ts'; node_modules and dotfiles
                        are always skipped
  --report <file.json>  also write each file's rewritten functions, graph breaks and errors as JSON
  --types               let the project's type checker (ts-morph) decide which values are tensors,
                        modules and numbers, across files
  --watch               build, then rebuild each file that changes until stopped (Ctrl-C)
  -h, --help            this text

Each file prints one line, then one line per graph break (file:line:col, the function, the reason). A file
that fails (syntax error: its code frame) is reported and skipped; the build exits 1 after the summary.`;

export interface BuildArgs {
  readonly sources: readonly string[];
  readonly outDir: string;
  readonly config?: string;
  readonly copyFiles: boolean;
  readonly ignore: readonly string[];
  readonly report?: string;
  readonly watch: boolean;
  /** Let the project's type checker decide tensors, modules and numbers (`--types`, loaded with ts-morph). */
  readonly types?: boolean;
}

const usage = (why: string) => new KilnError(`kiln build: ${why}\nusage: ${BUILD_USAGE}`);

/** Parse `build`'s arguments; a usage error is a KilnError whose message ends with the usage line. */
export function parseBuildArgs(argv: readonly string[]): BuildArgs {
  const sources: string[] = [];
  const ignore: string[] = [];
  let outDir: string | undefined;
  let config: string | undefined;
  let report: string | undefined;
  let copyFiles = false;
  let watchMode = false;
  let types = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const [flag, inline] =
      arg.startsWith('--') && arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg];
    const value = () => {
      const v = inline ?? argv[++i];
      if (v === undefined || (inline === undefined && v.startsWith('-'))) throw usage(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '-d':
      case '--out-dir':
        outDir = value();
        break;
      case '--config':
      case '--config-file':
        config = value();
        break;
      case '--ignore':
        ignore.push(...value().split(',').filter(Boolean));
        break;
      case '--report':
        report = value();
        break;
      case '--copy-files':
        copyFiles = true;
        break;
      case '--types':
        types = true;
        break;
      case '--watch':
      case '-w':
        watchMode = true;
        break;
      default:
        if (flag.startsWith('-')) throw usage(`unknown option '${flag}'`);
        sources.push(arg);
    }
  }
  if (sources.length === 0) throw usage('no source folder or file given');
  if (outDir === undefined) throw usage('-d <out> (--out-dir) is required');
  const problem = configFileProblem(config, process.cwd());
  if (problem) throw usage(problem);
  return {
    sources,
    outDir,
    ...(types && { types }),
    ...(config !== undefined && { config }),
    copyFiles,
    ignore,
    ...(report !== undefined && { report }),
    watch: watchMode,
  };
}

const SOURCE = /\.(ts|mts|cts|js|mjs|cjs)$/;
const isSource = (name: string) => SOURCE.test(name) && !/\.d\.[cm]?ts$/.test(name);
const OUT_EXT: Record<string, string> = { ts: 'js', mts: 'mjs', cts: 'cjs' };
const posix = (p: string) => p.split(sep).join('/');

/** One input file: where it is, where its output goes, and whether it is compiled or copied. */
interface Entry {
  readonly file: string;
  /** Relative to its source root (what the output path and the progress line use). */
  readonly rel: string;
  readonly target: string;
  readonly compile: boolean;
}

/** Every file under the sources (compiled ones, and with --copy-files the rest), minus ignored ones and the output. */
function collect(args: BuildArgs, cwd: string): Entry[] {
  const out = resolve(cwd, args.outDir);
  const ignored = args.ignore.length ? picomatch(args.ignore as string[], { dot: true }) : () => false;
  const entries: Entry[] = [];
  const add = (file: string, root: string) => {
    const rel = relative(root, file);
    if (ignored(posix(relative(cwd, file)))) return;
    const compile = isSource(file);
    if (!compile && !args.copyFiles) return;
    const target = join(out, compile ? rel.replace(/\.([cm]?)ts$/, (_, m: string) => `.${OUT_EXT[`${m}ts`]}`) : rel);
    entries.push({ file, rel, target, compile });
  };
  for (const src of args.sources) {
    const abs = resolve(cwd, src);
    if (!existsSync(abs)) throw new KilnError(`kiln build: '${src}' does not exist`);
    if (statSync(abs).isFile()) {
      add(abs, dirname(abs));
      continue;
    }
    const walk = (dir: string) => {
      for (const name of readdirSync(dir).sort()) {
        const p = join(dir, name);
        if (name === 'node_modules' || name.startsWith('.') || p === out) continue;
        if (statSync(p).isDirectory()) walk(p);
        else add(p, abs);
      }
    };
    walk(abs);
  }
  return entries;
}

/** One graph break as the build reports it: `file:line:col`, the function it is in, the reason. */
export interface BuildBreak {
  readonly loc: string;
  readonly function: string;
  readonly reason: string;
  /** `break` (runs eagerly between graphs), `branch` (an if on a tensor value) or `eager` (the whole function). */
  readonly kind: 'break' | 'branch' | 'eager';
}

export interface BuiltFile {
  /** The source, relative to the current folder. */
  readonly file: string;
  readonly output: string;
  readonly copied?: boolean;
  /** Set when the project's Babel config ignores the file (not compiled). */
  readonly ignoredByConfig?: boolean;
  readonly rewritten: string[];
  readonly breaks: BuildBreak[];
  readonly skipped: FileReport['skipped'];
  readonly error?: string;
}

export interface BuildResult {
  readonly files: BuiltFile[];
  readonly plans: number;
  readonly breaks: number;
  readonly failed: number;
}

/** A build error as the user should see it: Babel's message (with its code frame) without Babel's internals. */
function errorText(e: unknown, file: string, cwd: string): string {
  if (!(e instanceof Error)) return String(e);
  const code = (e as { code?: unknown }).code;
  const babel = typeof code === 'string' && code.startsWith('BABEL_');
  if (!babel && !(e instanceof KilnError)) return e.stack ?? e.message;
  // Babel prefixes the absolute file name; the summary names the file relative to the current folder.
  return e.message.startsWith(`${file}: `) ? `${relative(cwd, file)}: ${e.message.slice(file.length + 2)}` : e.message;
}

function breaksOf(report: FileReport | undefined, file: string): BuildBreak[] {
  const out: BuildBreak[] = [];
  for (const p of report?.plans ?? []) {
    if (p.unsupported)
      out.push({ loc: `${file}:${p.unsupported.loc}`, function: p.name, reason: `runs eagerly: ${p.unsupported.reason}`, kind: 'eager' });
    for (const s of p.segments) {
      if (s.kind !== 'graph') out.push({ loc: `${file}:${s.loc}`, function: p.name, reason: s.reason ?? 'graph break', kind: s.kind });
    }
  }
  return out;
}

function buildOne(e: Entry, args: BuildArgs, cwd: string, pluginExtra: Record<string, unknown> = {}): BuiltFile {
  const file = posix(relative(cwd, e.file));
  const output = posix(relative(cwd, e.target));
  const base = { file, output, rewritten: [], breaks: [], skipped: [] };
  mkdirSync(dirname(e.target), { recursive: true });
  if (!e.compile) {
    copyFileSync(e.file, e.target);
    return { ...base, copied: true };
  }
  try {
    const config = babelOptionsFor(
      e.file,
      cwd,
      args.config,
      { sourceMaps: true, sourceFileName: posix(relative(dirname(e.target), e.file)) },
      pluginExtra,
    );
    if (!config) {
      // The project's Babel config leaves this file alone: as `babel` does, it is copied as it is only with --copy-files.
      if (args.copyFiles) copyFileSync(e.file, e.target);
      return { ...base, ignoredByConfig: true, ...(args.copyFiles && { copied: true }) };
    }
    const r = transformSync(readFileSync(e.file, 'utf8'), config.options);
    if (r?.code == null) throw new KilnError(`kiln build: Babel produced no output for ${file}`);
    const report = (r.metadata as { kiln?: FileReport } | undefined)?.kiln;
    writeFileSync(e.target, `${r.code}\n//# sourceMappingURL=${basename(e.target)}.map\n`);
    if (r.map) writeFileSync(`${e.target}.map`, JSON.stringify({ ...r.map, file: basename(e.target) }));
    return { ...base, rewritten: report?.plans.map((p) => p.name) ?? [], breaks: breaksOf(report, file), skipped: report?.skipped ?? [] };
  } catch (err) {
    if (err instanceof BabelConfigError) throw err;
    return { ...base, error: errorText(err, e.file, cwd) };
  }
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

/** The progress line and the per-break lines of one file. */
function fileLines(f: BuiltFile, rel: string, i: number, n: number): string[] {
  const head = `[${i + 1}/${n}] ${rel}`;
  if (f.error !== undefined) return [`${head}  FAILED`];
  if (f.ignoredByConfig) return [`${head}  (ignored by the Babel config${f.copied ? '; copied' : ''})`];
  if (f.copied) return [`${head}  (copied)`];
  const graphBreaks = f.breaks.length;
  const lines = [f.rewritten.length ? `${head}  (${f.rewritten.length} rewritten, ${plural(graphBreaks, 'graph break')})` : head];
  for (const b of f.breaks) lines.push(`    ${b.loc}  ${b.function}: ${b.reason}`);
  for (const s of f.skipped) lines.push(`    ${f.file}:${s.line}  ${s.name} not rewritten: ${s.reason}`);
  return lines;
}

export interface BuildIO {
  readonly log: (line: string) => void;
  readonly error: (text: string) => void;
}

const CONSOLE: BuildIO = { log: (l) => console.log(l), error: (t) => console.error(t) };

/** Build everything once; returns the result (the caller exits non-zero when `failed > 0`). */
export function build(args: BuildArgs, io: BuildIO = CONSOLE, cwd = process.cwd()): BuildResult {
  const problem = configFileProblem(args.config, cwd);
  if (problem) throw usage(problem);
  const entries = collect(args, cwd);
  const evidence = args.types
    ? loadTypeEvidence(
        entries.filter((e) => e.compile).map((e) => e.file),
        resolve(cwd, args.sources[0]!),
      )
    : undefined;
  const files = entries.map((e, i) => {
    const f = buildOne(e, args, cwd, evidence ? { types: evidence } : {});
    for (const l of fileLines(f, e.rel, i, entries.length)) io.log(l);
    if (f.error !== undefined) io.error(f.error);
    return f;
  });
  const result = summarise(files);
  io.log(summaryLine(result, args));
  if (args.report !== undefined) writeReport(args.report, result, args, cwd);
  return result;
}

function summarise(files: BuiltFile[]): BuildResult {
  return {
    files,
    plans: files.reduce((n, f) => n + f.rewritten.length, 0),
    breaks: files.reduce((n, f) => n + f.breaks.length, 0),
    failed: files.filter((f) => f.error !== undefined).length,
  };
}

function summaryLine(r: BuildResult, args: BuildArgs): string {
  const compiled = r.files.filter((f) => !f.copied && !f.ignoredByConfig).length;
  const copied = r.files.filter((f) => f.copied).length;
  const line = `built ${plural(compiled - r.failed, 'file')} into ${args.outDir}: ${r.plans} functions rewritten, ${r.breaks} graph breaks${copied ? `; ${copied} copied` : ''}`;
  if (r.failed === 0) return line;
  const names = r.files.filter((f) => f.error !== undefined).map((f) => f.file);
  return `${line}\n${plural(r.failed, 'file')} failed: ${names.join(', ')}`;
}

function writeReport(path: string, r: BuildResult, args: BuildArgs, cwd: string): void {
  const abs = resolve(cwd, path);
  mkdirSync(dirname(abs), { recursive: true });
  const { files, plans, breaks, failed } = r;
  writeFileSync(abs, `${JSON.stringify({ outDir: args.outDir, plans, breaks, failed, files }, null, 2)}\n`);
}

/**
 * `--watch`: build once, then rebuild each source that changes (and copy changed files with --copy-files)
 * until the process is stopped. Resolves never; errors in a rebuilt file are printed as in a build.
 */
export function watchBuild(args: BuildArgs, io: BuildIO = CONSOLE, cwd = process.cwd()): Promise<never> {
  build(args, io, cwd);
  io.log('watching for changes (Ctrl-C to stop)');
  const pending = new Set<string>();
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    timer = undefined;
    const changed = new Set([...pending].map((p) => resolve(p)));
    pending.clear();
    const entries = collect(args, cwd).filter((e) => changed.has(e.file));
    entries.forEach((e, i) => {
      const f = buildOne(e, args, cwd);
      for (const l of fileLines(f, e.rel, i, entries.length)) io.log(l);
      if (f.error !== undefined) io.error(f.error);
    });
  };
  for (const src of args.sources) {
    const abs = resolve(cwd, src);
    const dir = statSync(abs).isFile() ? dirname(abs) : abs;
    watch(dir, { recursive: true }, (_event, name) => {
      if (!name) return;
      const file = join(dir, name.toString());
      if (statSync(abs).isFile() && file !== abs) return;
      if (!existsSync(file) || !statSync(file).isFile()) return;
      pending.add(file);
      // Editors write a file in several steps: one rebuild per burst.
      timer ??= setTimeout(flush, 50);
    });
  }
  return new Promise<never>(() => {});
}
