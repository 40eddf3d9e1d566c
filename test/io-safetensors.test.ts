import test from 'ava';
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SerializationError, StateDictError, type Tensor, loadSafetensors, nn, saveSafetensors, tensor, zeros } from '../src/index.js';
import { decodeSafetensors, encodeSafetensors } from '../src/io/safetensors.js';
import {
  type EncodedTensor,
  type ModelFixture,
  Net,
  decodeTensor,
  fixture,
  fixtureJson,
  maxAbsDiff,
  sameAsFixture,
  snapshot,
} from './io-helpers.js';

/**
 * Issue 19 item 1: `saveSafetensors` / `loadSafetensors`. Files written by scripts/make_io_fixtures.py from PyTorch
 * 1.13's tensors load bit-exactly, kiln's own files round-trip byte-exact, and every corrupt, truncated or foreign
 * file is a SerializationError naming the key or the byte offset.
 */

const dir = mkdtempSync(join(tmpdir(), 'kiln-io-safetensors-'));
const model = fixtureJson<ModelFixture>('model.json');

/** A safetensors file from a header object and data bytes (the header padded to 8 bytes like the reference writer). */
function file(header: unknown, data: number[] | Uint8Array = [], rawHeader?: string): Uint8Array {
  let json = rawHeader ?? JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const head = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  out.set(data, 8 + head.length);
  return out;
}
const decode = (bytes: Uint8Array) => decodeSafetensors(bytes, 'f.safetensors').tensors;

test("loadSafetensors reads the PyTorch model's safetensors file bit-identically, and the loaded Net gives PyTorch's outputs within 1e-5", (t) => {
  const sd = loadSafetensors(fixture('model.safetensors'));
  sameAsFixture(t, sd, model.stateDict);
  const net = new Net();
  net.loadStateDict(sd);
  net.eval();
  const out = net.call(decodeTensor(model.inputs.image), decodeTensor(model.inputs.tokens));
  t.true(maxAbsDiff(out, decodeTensor(model.out)) <= 1e-5);
});

test('F16, BF16 and F64 load as float32; I64, I16, I8 and U8 as int32; BOOL, I32, F32 as they are; __metadata__ is read', (t) => {
  const want = fixtureJson<{ tensors: Record<string, EncodedTensor>; metadata: Record<string, string> }>('dtypes.json');
  const { tensors, metadata } = decodeSafetensors(readFileSync(fixture('dtypes.safetensors')), 'dtypes.safetensors');
  sameAsFixture(t, tensors, want.tensors);
  t.deepEqual(metadata, want.metadata);
  t.deepEqual(tensors.bf16!.toArray(), [1, -3.5, 3.00405527047391e38, 0.00099945068359375]);
});

test("an I64 value outside int32's range is a SerializationError naming the key", (t) => {
  t.throws(() => loadSafetensors(fixture('overflow.safetensors')), {
    instanceOf: SerializationError,
    message: /overflow\.safetensors: tensor 'big': int64 value 2147483648 at element 1 does not fit kiln's int32/,
  });
});

test("kiln's writer reproduces PyTorch's safetensors file byte for byte (same header, alignment and data)", (t) => {
  const path = join(dir, 'model-i32.safetensors');
  saveSafetensors(loadSafetensors(fixture('model-i32.safetensors')), path);
  t.true(readFileSync(path).equals(readFileSync(fixture('model-i32.safetensors'))));
});

test('save → load round-trips byte-exact tensors: float32 edge values, int32 extremes, bool, 0-d, empty and non-contiguous views', (t) => {
  const f32 = new Float32Array([0, -0, 1.5e-45, -3.4028234663852886e38, Infinity, -Infinity, 1 / 3]);
  const nanBits = new Float32Array(new Uint32Array([0x7fc00001, 0xffc00000]).buffer); // NaNs with a payload and a sign
  const sd: Record<string, Tensor> = {
    floats: tensor(f32),
    nans: tensor(nanBits),
    ints: tensor(new Int32Array([-2147483648, 2147483647, 0, -1]), { shape: [2, 2] }),
    mask: tensor([true, false, true], { dtype: 'bool' }),
    scalar: tensor(2.5),
    empty: zeros([0, 4]),
    transposed: tensor([
      [1, 2, 3],
      [4, 5, 6],
    ]).t(),
  };
  const path = join(dir, 'round-trip.safetensors');
  saveSafetensors(sd, path, { metadata: { epoch: '3' } });
  const back = loadSafetensors(path);
  t.deepEqual(snapshot(back), snapshot(sd));
  t.deepEqual(back.transposed!.toArray(), [
    [1, 4],
    [2, 5],
    [3, 6],
  ]);
  t.deepEqual(decodeSafetensors(readFileSync(path), path).metadata, { epoch: '3' });
  const bytes = readFileSync(path);
  t.is((8 + Number(bytes.readBigUInt64LE(0))) % 8, 0, 'the data starts 8-byte aligned');
});

test("a kiln model's stateDict saved and loaded into a fresh model gives the same outputs", (t) => {
  const a = new Net();
  a.loadStateDict(loadSafetensors(fixture('model.safetensors')));
  const path = join(dir, 'net.safetensors');
  saveSafetensors(a.stateDict(), path);
  const b = new Net();
  b.loadStateDict(loadSafetensors(path));
  t.deepEqual(snapshot(b.stateDict()), snapshot(a.stateDict()));
});

test('a file truncated at any byte is a SerializationError', (t) => {
  const bytes = readFileSync(fixture('dtypes.safetensors'));
  for (let n = 0; n < bytes.length; n++) {
    const err = t.throws(() => decode(bytes.subarray(0, n)), { instanceOf: SerializationError, message: /f\.safetensors: / });
    if (!err) return;
  }
});

test('a file with trailing bytes is a SerializationError', (t) => {
  const bytes = readFileSync(fixture('dtypes.safetensors'));
  t.throws(() => decode(new Uint8Array([...bytes, 0])), {
    instanceOf: SerializationError,
    message: /trailing bytes after the last tensor/,
  });
});

const F32_PAIR = [0, 0, 128, 63, 0, 0, 0, 64]; // 1.0, 2.0
const entry = (dtype: unknown, shape: unknown, offsets: unknown) => ({ dtype, shape, data_offsets: offsets });
const CORRUPT: [string, Uint8Array, RegExp][] = [
  [
    'wrong magic (a zip file)',
    readFileSync(fixture('model.pt')),
    /header length \d+ \(bytes 0\.\.8\) is larger than the \d+ bytes after it.*not a safetensors file/,
  ],
  ['shorter than 8 bytes', new Uint8Array([1, 0, 0]), /file is 3 bytes, too short for the 8-byte header length/],
  [
    'a header length past the end',
    file({ w: entry('F32', [2], [0, 8]) }, F32_PAIR).map((b, i) => (i === 0 ? 0xf0 : b)),
    /header length 240 \(bytes 0\.\.8\) is larger/,
  ],
  ['a header that is not JSON', file(null, [], '{"w": {"dtype": "F32",'), /the header \(bytes 8\.\.32\) is not valid JSON/],
  ['a header that is not an object', file(null, [], '[1, 2]'), /the header \(bytes 8\.\.16\) is \[1,2\], not a JSON object/],
  [
    'a header that is not UTF-8',
    file(null, [], '{"\udc00": 1}'.replace('\udc00', 'x')).map((b, i) => (i === 10 ? 0xff : b)),
    /is not valid JSON: The encoded data was not valid for encoding utf-8/,
  ],
  ['an unknown dtype', file({ w: entry('C64', [1], [0, 8]) }, F32_PAIR), /tensor 'w' has dtype "C64", which kiln cannot load/],
  ['a negative dim', file({ w: entry('F32', [-2], [0, 8]) }, F32_PAIR), /tensor 'w' has shape \[-2\], not a list of non-negative integers/],
  [
    'a shape that does not fit its offsets',
    file({ w: entry('F32', [3], [0, 8]) }, F32_PAIR),
    /tensor 'w' \(F32, shape \[3\]\) needs 12 bytes, but data_offsets \[0, 8\] hold 8/,
  ],
  [
    'offsets that are not a pair',
    file({ w: entry('F32', [2], [8, 0]) }, F32_PAIR),
    /tensor 'w' has data_offsets \[8,0\], not \[begin, end\]/,
  ],
  ['an entry that is not an object', file({ w: 5 }), /tensor 'w': expected \{ dtype, shape, data_offsets \}, got 5/],
  [
    'overlapping tensors',
    file({ a: entry('F32', [2], [0, 8]), b: entry('F32', [1], [4, 8]) }, F32_PAIR),
    /tensor 'b' starts at data byte 4 \(file offset \d+\), but the previous tensor ends at 8: tensors overlap/,
  ],
  ['a gap between tensors', file({ a: entry('F32', [1], [4, 8]) }, F32_PAIR), /tensor 'a' starts at data byte 4 .* there is a gap/],
  [
    'data past the end',
    file({ a: entry('F32', [4], [0, 16]) }, F32_PAIR),
    /the tensors end at data byte 16 \(file offset \d+\), but the file has 8 data bytes: the file is truncated/,
  ],
  ['metadata that is not strings', file({ __metadata__: { epoch: 3 } }), /"__metadata__" must be a map of strings to strings/],
  [
    'a __proto__ key',
    file(null, F32_PAIR, '{"__proto__":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'),
    /the key '__proto__' is not allowed/,
  ],
  ['a bool byte that is not 0 or 1', file({ m: entry('BOOL', [2], [0, 2]) }, [1, 7]), /tensor 'm': byte 7 at element 1 is not a bool/],
  [
    'a finite F64 beyond float32',
    file({ d: entry('F64', [1], [0, 8]) }, new Uint8Array(new Float64Array([1e300]).buffer)),
    /tensor 'd': float64 value 1e\+300 at element 0 is outside float32's range/,
  ],
];

for (const [name, bytes, message] of CORRUPT) {
  test(`a corrupt file is a SerializationError naming the key or offset: ${name}`, (t) => {
    t.throws(() => decode(bytes), { instanceOf: SerializationError, message });
  });
}

test('the crafted files above are otherwise valid: the same header with the right data loads', (t) => {
  t.deepEqual(decode(file({ w: entry('F32', [2], [0, 8]) }, F32_PAIR)).w!.toArray(), [1, 2]);
  t.deepEqual(decode(file({ a: entry('F32', [1], [0, 4]), b: entry('F32', [1], [4, 8]) }, F32_PAIR)).b!.toArray(), [2]);
});

test('loadSafetensors of a missing file is a SerializationError naming the path', (t) => {
  t.throws(() => loadSafetensors(join(dir, 'missing.safetensors')), {
    instanceOf: SerializationError,
    message: /loadSafetensors: .*missing\.safetensors: cannot read/,
  });
});

test('saveSafetensors refuses a value that is not a tensor, the reserved __metadata__ key and bad metadata, writing nothing', (t) => {
  const path = join(dir, 'refused.safetensors');
  t.throws(() => saveSafetensors({ w: zeros([2]), b: 5 } as unknown as Record<string, Tensor>, path), {
    instanceOf: SerializationError,
    message: /'b' is 5, not a Tensor/,
  });
  t.throws(() => saveSafetensors({ __metadata__: zeros([1]) }, path), {
    instanceOf: SerializationError,
    message: /'__metadata__' is reserved/,
  });
  t.throws(() => saveSafetensors({ w: zeros([1]) }, path, { metadata: { epoch: 3 } as unknown as Record<string, string> }), {
    instanceOf: SerializationError,
    message: /metadata must be a plain object of strings/,
  });
  t.throws(() => saveSafetensors(null as unknown as Record<string, Tensor>, path), {
    instanceOf: SerializationError,
    message: /expected a state dict/,
  });
  t.false(existsSync(path));
  t.deepEqual(
    readdirSync(dir).filter((f) => f.endsWith('.tmp')),
    [],
  );
});

test('encodeSafetensors then decodeSafetensors is the identity on a state dict', (t) => {
  const sd = { a: tensor([1, 2, 3]), b: tensor([[true]], { dtype: 'bool' }) };
  t.deepEqual(snapshot(decodeSafetensors(encodeSafetensors(sd, null, 'x'), 'x').tensors), snapshot(sd));
});

test('a failed load of a mismatched safetensors file leaves the module unchanged', (t) => {
  const lin = new nn.Linear(3, 2);
  const before = snapshot(lin.stateDict());
  const path = join(dir, 'wrong-shape.safetensors');
  saveSafetensors({ weight: zeros([2, 3]), bias: zeros([3]) }, path);
  t.throws(() => lin.loadStateDict(loadSafetensors(path)), {
    instanceOf: StateDictError,
    message: /size mismatch for bias: copying a param with shape \[3\]/,
  });
  t.deepEqual(snapshot(lin.stateDict()), before);
});
