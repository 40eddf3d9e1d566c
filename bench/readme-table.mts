/**
 * The README's bench tables, made from bench/results.json, so a fresh `npm run bench` refreshes them without
 * copying numbers by hand:
 *
 *   npx tsx bench/readme-table.mts           prints every table (markdown)
 *   npx tsx bench/readme-table.mts --write   replaces each table in README.md between its markers,
 *                                            <!-- bench-table:NAME --> … <!-- /bench-table:NAME -->
 *
 * Tables: run (date and machine), peers (kiln against the wasm and native peers), targets (the issue's
 * targets), gemm (bench/gemm.mts's variants), eager (kiln eager against tfjs-backend-cpu), checks (kiln's
 * overhead checks). Every ratio in them was measured side by side in the one run the file records (the gemm
 * table: in bench/gemm.mts's one run). The prose around the tables is not generated: reread it after a rerun.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { format, resolveConfig } from 'prettier';

interface Check {
  name: string;
  unit: string;
  value: number;
  target: string;
  pass: boolean;
  /** 'training': bench/training.mts's checks (issue 15's targets), shown in the targets table */
  group?: string;
}
interface EagerResult {
  name: string;
  unit: string;
  kiln: number;
  tfjsCpu: number;
  speedup: number;
  kiln1Thread?: number;
  speedup1Thread?: number;
  kilnThreads?: number;
}
interface PeerCase {
  name: string;
  unit: string;
  value: Record<string, number>;
  missing: Record<string, string>;
  ratios: Record<string, number>;
  threads?: Record<string, number>;
}
interface Results {
  date: string;
  machine: { node: string; cpu: string; cores: number };
  rounds: number;
  peerRounds: number;
  results: EagerResult[];
  checks: Check[];
  peers: { name: string; available: boolean; threads?: number; why?: string }[];
  peerCases: PeerCase[];
  kernelTargets: Check[];
  gemm?: { date: string; gflops: Record<string, Record<string, number | null>> };
}

const resultsFile = new URL('./results.json', import.meta.url);
const readmeFile = new URL('../README.md', import.meta.url);

/** A markdown table; prettier aligns it later. */
function table(head: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [line(head), line(head.map(() => '---')), ...rows.map(line)].join('\n');
}

/** Three significant figures or so: 3.62, 26.4, 341, 1194. */
function num(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return '—';
  const a = Math.abs(v);
  return v.toFixed(a >= 100 ? 0 : a >= 10 ? 1 : 2);
}
const times = (r: number | undefined): string => (r === undefined || !Number.isFinite(r) ? '—' : `${r.toFixed(2)}×`);

const KILN_EAGER = 'kiln eager';
const KILN_COMPILED = 'kiln compiled';
const KILN_COMPILED_1T = 'kiln compiled 1-thread';
const TFJS_FOLDED = 'tfjs-wasm folded-BN';

/** Column headings: what each contender is, with its thread count. */
const HEADINGS: Record<string, string> = {
  [KILN_EAGER]: 'kiln eager',
  [KILN_COMPILED_1T]: 'kiln compiled',
  [KILN_COMPILED]: 'kiln compiled',
  'tfjs-wasm': 'tfjs-wasm (XNNPACK)',
  [TFJS_FOLDED]: 'tfjs-wasm, BN folded',
  'jax-js-wasm': 'jax-js wasm',
  'jax-js-wasm-mt': 'jax-js wasm, worker pool',
  'onnxruntime-node': 'onnxruntime-node (native)',
};

/** The case names, shortened for the table's first column. */
function caseLabel(c: PeerCase): string {
  const name = c.name
    .replace(/^matmul (\d+)x\d+ float32$/, 'matmul $1')
    .replace(/ inference, batch \d+$/, ', batch 64')
    .replace(/^CNN 3x\(conv3x3-bn-relu\) [\d-]+, pool, linear, batch (\d+)$/, 'CNN 3×(conv3x3-bn-relu), pool, linear');
  return `${name} [${c.unit}]`;
}

function runLine(r: Results): string {
  const d = r.date.slice(0, 10);
  return `Run of ${d} (\`bench/results.json\`): ${r.machine.cores} cores (${r.machine.cpu}), Node ${r.machine.node.replace(/^v/, '')}.`;
}

function peerTable(r: Results): string {
  const peerNames = r.peers.map((p) => p.name).flatMap((n) => (n === 'tfjs-wasm' ? [n, TFJS_FOLDED] : [n]));
  const present = (who: string) => r.peerCases.some((c) => c.value[who] !== undefined);
  const who = [KILN_EAGER, KILN_COMPILED_1T, KILN_COMPILED, ...peerNames].filter(present);
  const threads = (w: string) => {
    // kiln eager's matmul, linear and conv follow the GEMM's thread count only where they run on the GEMM
    if (w === KILN_EAGER) return '';
    const t = r.peerCases.find((c) => c.threads?.[w] !== undefined)?.threads?.[w];
    return t === undefined ? '' : `, ${t} thr.`;
  };
  const head = ['case', ...who.map((w) => `${HEADINGS[w] ?? w}${threads(w)}`)];
  const rows = r.peerCases.map((c) => [
    caseLabel(c),
    ...who.map((w) => {
      const v = c.value[w];
      if (v === undefined) return '—';
      // the peers' ratio: kiln compiled on the same thread count ÷ the peer (older runs: kiln compiled's default)
      const ratio = w.startsWith('kiln ') ? undefined : (c.ratios[`sameThreads/${w}`] ?? c.ratios[`kernels/${w}`]);
      return ratio === undefined ? num(v) : `${num(v)} (${times(ratio)})`;
    }),
  ]);
  return table(head, rows);
}

function targetTable(r: Results): string {
  const fused = r.checks.filter((c) => c.name.startsWith('fused'));
  const memory = r.checks.filter((c) => c.group !== 'training' && (c.name.includes('memory') || c.name.includes('packed weight')));
  const training = r.checks.filter((c) => c.group === 'training');
  const rows = [...fused, ...r.kernelTargets, ...memory, ...training].map((c) => [
    c.name,
    `${num(c.value)}${c.unit}`,
    `${c.target}${c.unit}`,
    c.pass ? 'pass' : 'miss',
  ]);
  return table(['target', 'result', 'target', 'state'], rows);
}

function gemmTable(r: Results): string {
  if (!r.gemm) return '_No gemm section in bench/results.json: run `npx tsx bench/gemm.mts`._';
  const sizes = ['256', '512', '1024'];
  // the peers' rows carry their versions (in the peers table's config): named here by peer alone
  const label = (variant: string) => variant.replace(/^(\S+) (tfjs-core|@jax-js\/jax|onnxruntime-node) .*$/, '$1 (peer, same run)');
  const rows = Object.entries(r.gemm.gflops).map(([variant, by]) => [label(variant), ...sizes.map((n) => num(by[n] ?? undefined))]);
  return table(['variant (GFLOP/s)', ...sizes.map((n) => `${n}×${n}`)], rows);
}

function eagerTable(r: Results): string {
  const unit = (e: EagerResult, v: number | undefined) => (v === undefined ? '—' : `${num(v)} ${e.unit}`);
  const rows = r.results.map((e) => [
    e.name,
    unit(e, e.kiln),
    unit(e, e.kiln1Thread),
    unit(e, e.tfjsCpu),
    times(e.speedup),
    times(e.speedup1Thread),
  ]);
  return table(
    ['benchmark', 'kiln eager', 'kiln eager, GEMM on 1 thread', 'tfjs-backend-cpu (1 thread)', 'kiln speed-up', 'speed-up, 1 thread each'],
    rows,
  );
}

function checkTable(r: Results): string {
  const rows = r.checks
    .filter((c) => c.group !== 'training' && !c.name.startsWith('fused') && !c.name.includes('memory') && !c.name.includes('packed weight'))
    .map((c) => [c.name, `${num(c.value)} ${c.unit}`, `${c.target} ${c.unit}`, c.pass ? 'pass' : 'FAIL']);
  return table(['check', 'result', 'target', 'state'], rows);
}

const TABLES: Record<string, (r: Results) => string> = {
  run: runLine,
  peers: peerTable,
  targets: targetTable,
  gemm: gemmTable,
  eager: eagerTable,
  checks: checkTable,
};

async function main(): Promise<void> {
  const results = JSON.parse(readFileSync(resultsFile, 'utf8')) as Results;
  const options = { ...(await resolveConfig(readmeFile.pathname)), parser: 'markdown' as const };
  const made: Record<string, string> = {};
  for (const [name, make] of Object.entries(TABLES)) made[name] = (await format(make(results), options)).trimEnd();
  if (!process.argv.includes('--write')) {
    for (const [name, text] of Object.entries(made)) console.log(`<!-- bench-table:${name} -->\n${text}\n<!-- /bench-table:${name} -->\n`);
    return;
  }
  let readme = readFileSync(readmeFile, 'utf8');
  for (const [name, text] of Object.entries(made)) {
    const open = `<!-- bench-table:${name} -->`;
    const close = `<!-- /bench-table:${name} -->`;
    const start = readme.indexOf(open);
    const end = readme.indexOf(close);
    if (start < 0 || end < start) throw new Error(`README.md has no ${open} … ${close} markers`);
    readme = `${readme.slice(0, start + open.length)}\n\n${text}\n\n${readme.slice(end)}`;
  }
  writeFileSync(readmeFile, readme);
  console.log(`README.md: ${Object.keys(made).length} bench tables refreshed from bench/results.json (${results.date})`);
}

await main();
