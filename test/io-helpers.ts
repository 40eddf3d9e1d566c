import type { ExecutionContext } from 'ava';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { F, Tensor, cat, nn, tensor } from '../src/index.js';

/** Shared by test/io-pytorch.test.ts and test/io-safetensors.test.ts: the fixtures scripts/make_io_fixtures.py wrote. */

export const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/io/${name}`, import.meta.url));
export const fixtureJson = <T>(name: string): T => JSON.parse(readFileSync(fixture(name), 'utf8')) as T;

export interface EncodedTensor {
  shape: number[];
  dtype: 'float32' | 'int32' | 'bool';
  data: (number | boolean)[];
}
export interface ModelFixture {
  keys: string[];
  stateDict: Record<string, EncodedTensor>;
  inputs: { image: EncodedTensor; tokens: EncodedTensor };
  out: EncodedTensor;
}

export function decodeTensor(e: EncodedTensor): Tensor {
  if (e.dtype === 'float32') return tensor(Float32Array.from(e.data as number[]), { shape: e.shape, dtype: 'float32' });
  if (e.dtype === 'int32') return tensor(Int32Array.from(e.data as number[]), { shape: e.shape, dtype: 'int32' });
  return tensor(
    Uint8Array.from(e.data as boolean[], (b) => (b ? 1 : 0)),
    { shape: e.shape, dtype: 'bool' },
  );
}

/** The script's Net, in kiln: Embedding, Conv2d, BatchNorm2d (running stats), LayerNorm and Linear. */
export class Net extends nn.Module {
  embed = new nn.Embedding(10, 4);
  conv = new nn.Conv2d(1, 3, 3, { padding: 1 });
  bn = new nn.BatchNorm2d(3);
  norm = new nn.LayerNorm(52);
  fc = new nn.Linear(52, 5);
  override forward(image: Tensor, tokens: Tensor): Tensor {
    const h = F.relu(this.bn.call(this.conv.call(image))).flatten(1);
    const e = this.embed.call(tokens).mean(1);
    return this.fc.call(this.norm.call(cat([h, e], 1)));
  }
}

/** Each tensor's dtype, shape and exact bytes: equal snapshots mean bit-identical tensors. */
export function snapshot(sd: Record<string, Tensor>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(sd).map(([k, v]) => {
      const d = v.data();
      return [k, `${v.dtype}[${v.shape.join(',')}] ${Buffer.from(d.buffer, d.byteOffset, d.byteLength).toString('hex')}`];
    }),
  );
}

/** `got` holds exactly the tensors `want` describes (same keys in order, dtypes, shapes and values, bit for bit). */
export function sameAsFixture(t: ExecutionContext, got: Record<string, Tensor>, want: Record<string, EncodedTensor>): void {
  t.deepEqual(Object.keys(got), Object.keys(want));
  t.deepEqual(snapshot(got), snapshot(Object.fromEntries(Object.entries(want).map(([k, v]) => [k, decodeTensor(v)]))));
}

/** Largest absolute difference between two float tensors of one shape. */
export function maxAbsDiff(a: Tensor, b: Tensor): number {
  const x = a.data();
  const y = b.data();
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!));
  return m;
}
