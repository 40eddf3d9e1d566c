import test from 'ava';
import { spawn } from 'node:child_process';

/**
 * examples/mnist-like.ts end to end, as `npm run demo` runs it (needs `npm run build`: `kiln` resolves to dist/):
 * one epoch of compiled training, the safetensors round trip, the ONNX export run by onnxruntime-node.
 */

/** Runs the example to completion; async so the test's own process stays responsive while it trains. */
function runExample(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'kiln/register', 'examples/mnist-like.ts', ...args], {
      env: { ...process.env, CI: '1' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

const stripAnsi = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, ''); // eslint-disable-line no-control-regex

test('mnist-like example: trains one epoch above chance, reloads its checkpoint, and onnxruntime-node predicts as kiln', async (t) => {
  const r = await runExample('--epochs', '1');
  const out = stripAnsi(r.stdout);
  t.is(r.status, 0, r.stderr);
  t.regex(out, /trained through compile\(model\)/);
  t.regex(out, /epoch 1\/1: mean loss \d+\.\d+ over 40 batches/);
  const acc = /held-out accuracy: (\d+\.\d)% on 200 digits/.exec(out);
  t.truthy(acc, out);
  t.true(Number(acc![1]) > 15, `accuracy ${acc![1]}% should be above chance (10%)`);
  t.regex(out, /reloaded into a fresh DigitNet: same predictions/);
  t.regex(out, /onnxruntime-node at 200: predictions equal kiln's on all 200 held-out digits/);
});

test('mnist-like example: a bad flag is a usage error (exit 2)', async (t) => {
  const r = await runExample('--epochs', '0');
  t.is(r.status, 2);
  t.regex(r.stderr, /usage: mnist-like\.ts/);
});
