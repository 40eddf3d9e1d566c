import test from 'ava';
import { readFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import ts from 'typescript';
import { PARAM_NAMES_FILE, renderParamNames } from '../scripts/gen-op-param-names.js';

/**
 * Op options are typed from the op schemas (issue 18, item 7): `F.conv2d(x, w, null, { strid: 2 })` fails
 * `tsc`. The fixtures are type-checked with the compiler API, as a user's code would be.
 */
const DIR = resolve('test/fixtures/typed-options');
const VALID = join(DIR, 'valid.ts');
const MISTAKES = join(DIR, 'mistakes.ts');
/** mistakes.ts with its `@ts-expect-error` lines removed, served from memory next to it. */
const STRIPPED = join(DIR, 'mistakes.stripped.ts');
const DIRECTIVE = /^\s*\/\/ @ts-expect-error/;

function compilerOptions(): ts.CompilerOptions {
  const { config } = ts.readConfigFile(resolve('tsconfig.json'), (f) => ts.sys.readFile(f));
  const { options } = ts.parseJsonConfigFileContent(config, ts.sys, resolve('.'));
  return { ...options, noEmit: true, noUnusedLocals: false };
}

interface Checked {
  readonly errors: (file: string) => readonly ts.Diagnostic[];
  readonly strippedLines: readonly number[];
}

/** One program for all three files (type-checking kiln's sources once). */
const checked = ((): Checked => {
  const lines = readFileSync(MISTAKES, 'utf8').split('\n');
  const kept: string[] = [];
  const strippedLines: number[] = [];
  lines.forEach((line) => {
    if (DIRECTIVE.test(line))
      strippedLines.push(kept.length); // the next kept line is the mistake
    else kept.push(line);
  });
  const options = compilerOptions();
  const host = ts.createCompilerHost(options);
  const readFile = host.readFile.bind(host);
  const getSourceFile = host.getSourceFile.bind(host);
  host.fileExists = (
    (exists) => (f: string) =>
      f === STRIPPED || exists(f)
  )(host.fileExists.bind(host));
  host.readFile = (f) => (f === STRIPPED ? kept.join('\n') : readFile(f));
  host.getSourceFile = (f, lang, onError, create) =>
    f === STRIPPED ? ts.createSourceFile(f, kept.join('\n'), lang, true) : getSourceFile(f, lang, onError, create);
  const program = ts.createProgram([VALID, MISTAKES, STRIPPED], options, host);
  const all = [...program.getSyntacticDiagnostics(), ...program.getSemanticDiagnostics()];
  return {
    errors: (file) => all.filter((d) => d.file && resolve(d.file.fileName) === file),
    strippedLines,
  };
})();

const show = (ds: readonly ts.Diagnostic[]) =>
  ds
    .map((d) => {
      const line = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start).line + 1 : '?';
      return `${d.file ? basename(d.file.fileName) : ''}:${line}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n').split('\n')[0]}`;
    })
    .join('\n');

test('valid option objects for F and ops type-check', (t) => {
  const errors = checked.errors(VALID);
  t.deepEqual(errors, [], show(errors));
});

test('every deliberate mistake in option objects fails tsc (no unused @ts-expect-error)', (t) => {
  const errors = checked.errors(MISTAKES);
  t.deepEqual(errors, [], show(errors));
  t.true(checked.strippedLines.length >= 15);
});

test('without the directives, each marked line of mistakes.ts has its own type error', (t) => {
  const errors = checked.errors(STRIPPED);
  const errorLines = new Set(errors.map((d) => d.file!.getLineAndCharacterOfPosition(d.start!).line));
  const missed = checked.strippedLines.filter((l) => !errorLines.has(l)).map((l) => l + 1);
  t.deepEqual(missed, [], `lines of mistakes.stripped.ts with no error:\n${show(errors)}`);
  t.is(errorLines.size, checked.strippedLines.length, `errors on unmarked lines:\n${show(errors)}`);
});

test('src/runtime/ops/param-names.ts matches the op schemas (regenerate with scripts/gen-op-param-names.ts)', async (t) => {
  t.is(readFileSync(PARAM_NAMES_FILE, 'utf8'), await renderParamNames());
});
