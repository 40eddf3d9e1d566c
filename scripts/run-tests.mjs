#!/usr/bin/env node
// Runs the ava suite with its TAP reporter, echoes it, and ends with one plain summary line,
// `N passed, N failed`, that CI reads. Exits non-zero when any test fails or ava itself fails.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

const ava = spawn(process.execPath, ['node_modules/ava/entrypoints/cli.mjs', '--tap', ...process.argv.slice(2)], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
let passed = 0;
let failed = 0;
let skipped = 0;
const lines = createInterface({ input: ava.stdout });
lines.on('line', (line) => {
  console.log(line);
  if (/^not ok \d+/.test(line)) failed++;
  else if (/^ok \d+.*# (SKIP|TODO)/i.test(line)) skipped++;
  else if (/^ok \d+/.test(line)) passed++;
});
ava.on('close', (code) => {
  lines.close();
  console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  process.exit(failed > 0 || code !== 0 ? 1 : 0);
});
