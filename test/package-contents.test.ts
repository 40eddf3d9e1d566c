import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * What `npm pack` ships (issue 18, item 6): the built entry points, their types, a LICENSE, and source maps
 * that carry their own sources (src/*.ts is not shipped). Reads the list from `npm pack --dry-run --json`
 * with scripts off (prepack would rebuild; the test needs `npm run build` first, as the suite does).
 */
interface PackedFile {
  readonly path: string;
}

const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as {
  exports: Record<string, string | { types: string; default: string }>;
  bin: Record<string, string>;
  typesVersions: Record<string, Record<string, string[]>>;
  peerDependencies: Record<string, string>;
  dependencies: Record<string, string>;
  scripts: Record<string, string>;
};

const files = ((): readonly string[] => {
  const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const [entry] = JSON.parse(out) as { files: PackedFile[] }[];
  return entry!.files.map((f) => f.path).sort();
})();
const shipped = new Set(files);
const rel = (p: string) => p.replace(/^\.\//, '');

test('the package ships every export, its types and the bin, built', (t) => {
  for (const [sub, target] of Object.entries(pkg.exports)) {
    if (typeof target === 'string') {
      t.true(shipped.has(rel(target)), `${sub}: ${target}`);
      continue;
    }
    t.true(shipped.has(rel(target.default)), `${sub}: ${target.default}`);
    t.true(shipped.has(rel(target.types)), `${sub}: ${target.types}`);
  }
  for (const bin of Object.values(pkg.bin)) t.true(shipped.has(rel(bin)), bin);
});

test('typesVersions maps each typed subpath export to the same .d.ts, for moduleResolution node', (t) => {
  const map = pkg.typesVersions['*']!;
  for (const [sub, target] of Object.entries(pkg.exports)) {
    if (typeof target === 'string' || sub === '.') continue;
    t.deepEqual(map[sub.slice(2)], [target.types], sub);
  }
  for (const targets of Object.values(map)) for (const f of targets) t.true(shipped.has(rel(f)), f);
});

test('the package ships a LICENSE, package.json and README, and no sources, tests or configs', (t) => {
  t.true(shipped.has('LICENSE'));
  t.true(shipped.has('package.json'));
  t.true(shipped.has('README.md'));
  t.regex(readFileSync('LICENSE', 'utf8'), /^MIT License\n\nCopyright \(c\) \d{4} kiln contributors\n/);
  const stray = files.filter((f) => !/^dist\//.test(f) && !['LICENSE', 'package.json', 'README.md'].includes(f));
  t.deepEqual(stray, []);
  t.deepEqual(
    files.filter((f) => /\.ts$/.test(f) && !/\.d\.ts$/.test(f)),
    [],
  );
  t.deepEqual(
    files.filter((f) => /^dist\/(test|bench|examples|scripts)\//.test(f)),
    [],
  );
});

test('every shipped source map carries the sources it points at (sourcesContent), or is not shipped', (t) => {
  const maps = files.filter((f) => f.endsWith('.map'));
  t.true(maps.length > 0);
  const bad: string[] = [];
  for (const m of maps) {
    const map = JSON.parse(readFileSync(m, 'utf8')) as { sources: string[]; sourcesContent?: (string | null)[] };
    const ok = map.sourcesContent?.length === map.sources.length && map.sourcesContent.every((s) => typeof s === 'string' && s.length > 0);
    if (!ok) bad.push(m);
  }
  t.deepEqual(bad, []);
  // the content is the TypeScript the map names, not something else
  const sample = 'dist/src/runtime/op.js.map';
  if (existsSync(sample)) {
    const map = JSON.parse(readFileSync(sample, 'utf8')) as { sources: string[]; sourcesContent: string[] };
    t.is(map.sourcesContent[0], readFileSync(join('dist/src/runtime', map.sources[0]!), 'utf8'));
  }
});

test('Babel core and preset-typescript are peer dependencies, and prepack builds', (t) => {
  t.truthy(pkg.peerDependencies['@babel/core']);
  t.truthy(pkg.peerDependencies['@babel/preset-typescript']);
  t.false('@babel/core' in pkg.dependencies);
  t.false('@babel/preset-typescript' in pkg.dependencies);
  t.is(pkg.scripts.prepack, 'npm run build');
});

test('the repo has no .npmrc keys npm does not know (npm 11 warns on every command)', (t) => {
  t.false(existsSync('.npmrc') && /onnxruntime-node-install/.test(readFileSync('.npmrc', 'utf8')));
  const r = spawnSync('npm', ['config', 'get', 'registry'], { encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  t.notRegex(r.stderr, /Unknown (project|user|env) config/);
});
