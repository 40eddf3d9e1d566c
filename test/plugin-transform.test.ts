import test from 'ava';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { format } from 'prettier';
import { transform } from 'kiln/plugin';
import { transform as fromSource } from '../plugin/index.js';

/**
 * `transform(source, filename, options)` from `kiln/plugin` (issue 18, item 8): what users call in their
 * snapshot tests of rewritten sources. It is imported here through the package's own entry point (the built
 * dist/), as users import it.
 */
const fixture = (name: string) => resolve('test/fixtures/plugin', name, 'input.ts');
const read = (file: string) => readFileSync(file, 'utf8');

test('transform from kiln/plugin rewrites a TypeScript source exactly as the Babel plugin route does', async (t) => {
  for (const name of ['console-log', 'breaks-mixed', 'compile-expression', 'super-forward']) {
    const { code } = transform(read(fixture(name)), fixture(name));
    const expected = read(resolve('test/fixtures/plugin', name, 'output.js'));
    t.is(await format(code, { parser: 'babel', printWidth: 120 }), expected, name);
  }
});

test('transform returns the report: rewritten functions with their segments and break reasons', (t) => {
  const { report } = transform(read(fixture('console-log')), fixture('console-log'));
  t.deepEqual(
    report.plans.map((p) => [p.name, p.segments.map((s) => `${s.kind} ${s.loc}`)]),
    [['Logged.forward', ['graph 9:5', 'break 10:5', 'graph 11:5']]], // this.calls++ is recorded state, not a break
  );
  t.is(report.plans[0]!.segments[1]!.reason, 'console.log() is a side effect: it runs eagerly, every call');
});

// The README's example, as a user writes it: the rewritten code of one model file, snapshotted.
test('README example: snapshot of a model file rewritten by kiln/plugin', (t) => {
  const file = 'test/fixtures/plugin/console-log/input.ts';
  const { code } = transform(readFileSync(file, 'utf8'), file);
  t.snapshot(code);
});

test('transform is the source export too, passes plugin options on and validates them', (t) => {
  const source = read(fixture('mlp'));
  t.is(fromSource(source, fixture('mlp')).code, transform(source, fixture('mlp')).code);
  t.regex(transform(source, fixture('mlp'), { backend: 'eager', cacheSizeLimit: 2 }).code, /backend: "eager",\s+cacheSizeLimit: 2/);
  const e = t.throws(() => transform(source, fixture('mlp'), { backnd: 'eager' } as never));
  t.regex(e.message, /unknown option 'backnd'/);
});

test('transform leaves a file outside include as it is (TypeScript still stripped) with an empty report', (t) => {
  const file = fixture('mlp');
  const r = transform(read(file), file, { include: ['src/**'] });
  t.deepEqual(r.report, { plans: [], skipped: [] });
  t.notRegex(r.code, /_kiln|plan\(/);
  t.notRegex(r.code, /: Tensor/);
});

test('transform on JavaScript keeps it JavaScript; sourceMaps: true gives a map of the original', (t) => {
  const js = `import { nn } from 'kiln';\nexport class M extends nn.Module {\n  forward(x) {\n    return x.relu();\n  }\n}\n`;
  const file = join(process.cwd(), 'model.js');
  const r = transform(js, file, { sourceMaps: true });
  t.is(r.report.plans[0]?.name, 'M.forward');
  const map = r.map as { sources: string[]; sourcesContent: string[] };
  t.deepEqual(map.sources, ['model.js']);
  t.is(map.sourcesContent[0], js);
  t.is(transform(js, file).map, null);
});
