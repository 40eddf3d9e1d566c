import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { zipSync } from 'fflate';
import { SerializationError, StateDictError, loadPytorch, nn } from '../src/index.js';
import { decodePytorch } from '../src/io/pytorch.js';
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
 * Issue 19 item 1: `loadPytorch` reads `torch.save(model.state_dict())` files written by PyTorch 1.13
 * (scripts/make_io_fixtures.py), and refuses hostile, corrupt and truncated ones with a SerializationError.
 */

const model = fixtureJson<ModelFixture>('model.json');

test("loadPytorch reads PyTorch 1.13's checkpoint: its keys in order, every tensor bit-identical to PyTorch's", (t) => {
  const sd = loadPytorch(fixture('model.pt'));
  t.deepEqual(Object.keys(sd), model.keys);
  sameAsFixture(t, sd, model.stateDict);
  t.is(sd['bn.num_batches_tracked']!.dtype, 'int32'); // int64 in the file
  t.is(sd['bn.num_batches_tracked']!.item(), 3);
});

test("module.loadStateDict(loadPytorch(...)) gives PyTorch's recorded outputs within 1e-5 (Embedding, Conv2d, BatchNorm2d, LayerNorm, Linear)", (t) => {
  const net = new Net();
  t.deepEqual(Object.keys(net.stateDict()), model.keys);
  net.loadStateDict(loadPytorch(fixture('model.pt')));
  net.eval();
  const out = net.call(decodeTensor(model.inputs.image), decodeTensor(model.inputs.tokens));
  t.deepEqual(out.shape, model.out.shape);
  t.true(maxAbsDiff(out, decodeTensor(model.out)) <= 1e-5, `max abs diff ${maxAbsDiff(out, decodeTensor(model.out))}`);
  t.is(net.bn.num_batches_tracked!.item(), 3);
  t.deepEqual(net.bn.running_var!.toArray(), decodeTensor(model.stateDict['bn.running_var']!).toArray());
});

test('views of one shared storage keep their storage offsets and strides (transposed, windowed, stepped, 0-d)', (t) => {
  const sd = loadPytorch(fixture('views.pt'));
  const want = fixtureJson<Record<string, EncodedTensor>>('views.json');
  sameAsFixture(t, sd, want);
  t.deepEqual(sd.transposed!.shape, [6, 4]);
  t.deepEqual(sd.scalar!.shape, []);
  // each loaded tensor owns its memory: writing one does not change another that shared a PyTorch storage
  sd.base!.fill_(0);
  t.is(sd.window!.toArray().toString(), '1,1.125,1.25,1.75,1.875,2');
});

test('every storage type a state dict may hold loads: float64, float16, bfloat16 → float32; int64, int16, int8, uint8 → int32; bool', (t) => {
  const sd = loadPytorch(fixture('views.pt'));
  const dtypes = Object.fromEntries(Object.entries(sd).map(([k, v]) => [k, v.dtype]));
  t.like(dtypes, {
    f64: 'float32',
    f16: 'float32',
    bf16: 'float32',
    i64: 'int32',
    i64_t: 'int32',
    i16: 'int32',
    i8: 'int32',
    u8: 'int32',
    i32: 'int32',
    mask: 'bool',
  });
  t.deepEqual(sd.i64!.toArray(), [
    [-2147483648, 7, 2147483647],
    [0, -1, 42],
  ]);
  t.deepEqual(sd.f16!.toArray(), [0.5, -1.25, 65504, 0.00006097555160522461, 0]);
});

test('Parameters saved with state_dict(keep_vars=True) load (torch._utils._rebuild_parameter)', (t) => {
  sameAsFixture(t, loadPytorch(fixture('params.pt')), fixtureJson('params.json'));
  const lin = new nn.Linear(2, 2);
  lin.loadStateDict(loadPytorch(fixture('params.pt')));
  t.true(lin.weight.requiresGrad);
});

test("an int64 value outside int32's range is a SerializationError naming the key and the value", (t) => {
  const err = t.throws(() => loadPytorch(fixture('overflow.pt')), { instanceOf: SerializationError });
  t.regex(err!.message, /overflow\.pt: tensor 'big': int64 value 2147483648 at element 1 does not fit kiln's int32/);
});

const MARKER = '/tmp/kiln-io-hostile-pickle-ran';

test('a hostile checkpoint whose pickle calls os.system is refused, naming the global and its byte offset; nothing runs', (t) => {
  const err = t.throws(() => loadPytorch(fixture('hostile.pt')), { instanceOf: SerializationError });
  t.regex(
    err!.message,
    /hostile\/data\.pkl: refuses the global 'posix\.system'.*nothing in the file was run \(opcode GLOBAL at byte 180\)/,
  );
  t.false(existsSync(MARKER));
});

test('a hostile checkpoint through builtins.eval is refused the same way', (t) => {
  const err = t.throws(() => loadPytorch(fixture('hostile-eval.pt')), { instanceOf: SerializationError });
  t.regex(err!.message, /refuses the global '__builtin__\.eval'.* at byte \d+/);
  t.false(existsSync(MARKER));
});

test('a legacy (pre-1.6, non-zip) torch.save file is a SerializationError that says how to re-save it', (t) => {
  t.throws(() => loadPytorch(fixture('legacy.pt')), {
    instanceOf: SerializationError,
    message: /legacy \(non-zip\) torch\.save file.*re-save it with torch\.save\(torch\.load\(path\), path\) in PyTorch 1\.6 or later/,
  });
});

test('wrong magic, an unreadable path and a safetensors file given to loadPytorch are SerializationErrors', (t) => {
  t.throws(() => decodePytorch(new TextEncoder().encode('hello world'), 'x.pt'), {
    instanceOf: SerializationError,
    message: "x.pt: not a PyTorch checkpoint: it starts with bytes [68 65 6c 6c], not a zip archive's 'PK\\x03\\x04' (50 4b 03 04)",
  });
  t.throws(() => loadPytorch(fixture('no-such-file.pt')), {
    instanceOf: SerializationError,
    message: /loadPytorch: .*no-such-file\.pt: cannot read/,
  });
  t.throws(() => loadPytorch(fixture('model.safetensors')), { instanceOf: SerializationError, message: /not a PyTorch checkpoint/ });
});

test('a checkpoint truncated at any byte is a SerializationError', (t) => {
  const bytes = readFileSync(fixture('model.pt'));
  for (let n = 0; n < bytes.length; n++) {
    const err = t.throws(() => decodePytorch(bytes.subarray(0, n), `model.pt[0:${n}]`), { instanceOf: SerializationError });
    if (!err) return;
  }
});

test('a corrupted byte anywhere in the checkpoint is a SerializationError (zip structure, CRC-32, pickle) or changes nothing', (t) => {
  const bytes = readFileSync(fixture('model.pt'));
  const good = snapshot(decodePytorch(bytes, 'model.pt'));
  let refused = 0;
  for (let at = 0; at < bytes.length; at++) {
    const bad = Uint8Array.from(bytes);
    bad[at] ^= 0xff;
    try {
      const got = snapshot(decodePytorch(bad, 'model.pt'));
      t.deepEqual(got, good, `byte ${at} flipped, and the checkpoint loaded different tensors`);
    } catch (e) {
      if (!(e instanceof SerializationError)) return t.fail(`byte ${at} flipped: ${String(e)}`);
      refused++;
    }
  }
  t.true(refused > bytes.length / 2, `${refused} of ${bytes.length} corruptions refused`);
});

test('a failed load leaves the module unchanged: a checkpoint whose last tensor has the wrong shape loads nothing', (t) => {
  class Wider extends Net {
    override fc = new nn.Linear(52, 6);
  }
  const net = new Wider();
  const before = snapshot(net.stateDict());
  t.throws(() => net.loadStateDict(loadPytorch(fixture('model.pt'))), {
    instanceOf: StateDictError,
    message: /size mismatch for fc\.weight: copying a param with shape \[5, 52\] from checkpoint, the shape in current model is \[6, 52\]/,
  });
  t.deepEqual(snapshot(net.stateDict()), before);
});

test('a failed load leaves the module unchanged: a missing key, or a value that is not a tensor', (t) => {
  const net = new Net();
  const before = snapshot(net.stateDict());
  const missing = loadPytorch(fixture('model.pt'));
  delete missing['fc.bias'];
  t.throws(() => net.loadStateDict(missing), { instanceOf: StateDictError, message: /Missing key\(s\) in state_dict: "fc\.bias"/ });
  const notTensor = { ...loadPytorch(fixture('model.pt')), 'fc.bias': 5 } as unknown as Parameters<Net['loadStateDict']>[0];
  t.throws(() => net.loadStateDict(notTensor), { instanceOf: StateDictError, message: /"fc\.bias", expected a Tensor/ });
  t.deepEqual(snapshot(net.stateDict()), before);
});

// ---------------------------------------------------------------------------------------------------------
// Crafted pickles: each a minimal edit of a valid state-dict pickle, wrapped in a valid zip (right CRCs), so that
// only the unpickler's rules can refuse it.

type Part = number | number[] | string;
const latin1 = (s: string) => [...s].map((c) => c.charCodeAt(0));
const u32 = (n: number) => [n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, (n >>> 24) & 0xff];
const str = (s: string): number[] => {
  const b = [...new TextEncoder().encode(s)];
  return [0x58, ...u32(b.length), ...b]; // BINUNICODE
};
const glob = (module: string, name: string) => [0x63, ...latin1(`${module}\n${name}\n`)];
const pickle = (...parts: Part[]) => Uint8Array.from(parts.flatMap((p) => (typeof p === 'string' ? latin1(p) : p)));

const PROTO2 = [0x80, 2];
const ODICT = [...glob('collections', 'OrderedDict'), 0x29, 0x52]; // OrderedDict()
/** rebuild(storage '0' of `numel` floats, offset, size, stride, False, OrderedDict()) */
const tensorOf = (numel: number, offset: number, size: number[], stride: number[], storageType = 'FloatStorage') => [
  ...glob('torch._utils', '_rebuild_tensor_v2'),
  0x28, // MARK
  ...[0x28, ...str('storage'), ...glob('torch', storageType), ...str('0'), ...str('cpu'), 0x4b, numel, 0x74, 0x51], // BINPERSID
  0x4b,
  offset,
  ...[0x28, ...size.flatMap((d) => [0x4b, d]), 0x74],
  ...[0x28, ...stride.flatMap((d) => [0x4b, d]), 0x74],
  0x89, // False
  ...ODICT,
  0x74, // TUPLE
  0x52, // REDUCE
];
const stateDictPickle = (...entries: number[][]) => pickle(PROTO2, ODICT, 0x28, ...entries.flat(), 0x75, 0x2e);
const FLOATS = new Uint8Array(new Float32Array([1, 2, 3, 4, 5, 6]).buffer);
const checkpoint = (pkl: Uint8Array, storage: Uint8Array = FLOATS) =>
  zipSync({ 'archive/data.pkl': pkl, 'archive/data/0': storage, 'archive/version': latin1('3\n') as unknown as Uint8Array }, { level: 0 });
const load = (pkl: Uint8Array, storage?: Uint8Array) => decodePytorch(checkpoint(pkl, storage), 'crafted.pt');

test('the crafted baseline pickle loads (so each refusal below is the unpickler refusing one edit)', (t) => {
  const sd = load(stateDictPickle([...str('w'), ...tensorOf(6, 1, [2, 2], [1, 2])]));
  t.deepEqual(sd.w!.toArray(), [
    [2, 4],
    [3, 5],
  ]);
});

const HOSTILE: [string, Uint8Array, RegExp][] = [
  [
    'os.system',
    pickle(PROTO2, glob('os', 'system'), str('touch /tmp/x'), 0x85, 0x52, 0x2e),
    /refuses the global 'os\.system'.*\(opcode GLOBAL at byte 2\)/,
  ],
  [
    'posix.system inside the dict',
    stateDictPickle([...str('w'), ...glob('posix', 'system'), ...str('id'), 0x85, 0x52]),
    /refuses the global 'posix\.system'.*at byte 36\)/,
  ],
  ['builtins.eval', pickle(PROTO2, glob('builtins', 'eval'), str('1'), 0x85, 0x52, 0x2e), /refuses the global 'builtins\.eval'/],
  ['builtins.getattr', pickle(PROTO2, glob('builtins', 'getattr'), 0x2e), /refuses the global 'builtins\.getattr'/],
  ['torch.load', pickle(PROTO2, glob('torch', 'load'), 0x2e), /refuses the global 'torch\.load'/],
  ['INST', pickle(PROTO2, 0x28, 'ios\nsystem\n', 0x2e), /opcode INST is not allowed.*\(opcode INST at byte 3\)/],
  ['OBJ', pickle(PROTO2, 0x28, ...glob('collections', 'OrderedDict'), 0x6f, 0x2e), /opcode OBJ is not allowed/],
  ['NEWOBJ', pickle(PROTO2, ...glob('collections', 'OrderedDict'), 0x29, 0x81, 0x2e), /opcode NEWOBJ is not allowed/],
  ['EXT1', pickle(PROTO2, 0x82, 1, 0x2e), /opcode EXT1 is not allowed/],
  ['text PERSID', pickle(PROTO2, 'P0\n', 0x2e), /opcode PERSID is not allowed/],
  ['protocol 4', pickle(0x80, 4, 0x95, 0, 0, 0, 0, 0, 0, 0, 0, 0x2e), /pickle protocol 4: kiln reads protocol 2/],
  ['STACK_GLOBAL', pickle(PROTO2, str('os'), str('system'), 0x93, 0x2e), /opcode STACK_GLOBAL is not allowed/],
  ['an unknown opcode', pickle(PROTO2, 0xff, 0x2e), /unknown opcode.*\(opcode 0xff at byte 2\)/],
  ['REDUCE on a string', pickle(PROTO2, str('os.system'), 0x29, 0x52, 0x2e), /REDUCE calls string os\.system, not an allowed global/],
  [
    'a storage type called',
    pickle(PROTO2, glob('torch', 'FloatStorage'), 0x29, 0x52, 0x2e),
    /torch\.FloatStorage is only allowed as a storage type/,
  ],
  ['BUILD on a tensor', stateDictPickle([...str('w'), ...tensorOf(6, 0, [6], [1]), 0x7d, 0x62]), /BUILD on a TensorRef with a dict/],
  ['a persistent id that is not a storage', pickle(PROTO2, str('x'), 0x51, 0x2e), /a persistent id must be \('storage'.*got string x/],
  [
    'a storage with no archive entry',
    stateDictPickle([...str('w'), ...tensorOf(6, 0, [6], [1])]).map((b, i, a) => (a[i - 1] === 0x00 && b === 0x30 ? 0x31 : b)),
    /storage '1' has no archive entry 'archive\/data\/1'/,
  ],
  [
    'a storage shorter than its numel',
    stateDictPickle([...str('w'), ...tensorOf(7, 0, [7], [1])]),
    /storage '0' \(7 FloatStorage elements\) needs 28 bytes, but 'archive\/data\/0' holds 24/,
  ],
  [
    'a view past the end of its storage',
    stateDictPickle([...str('w'), ...tensorOf(6, 1, [2, 3], [3, 1])]),
    /tensor 'w': shape \[2, 3\], strides \[3, 1\] and offset 1 reach element 6 of a 6-element storage/,
  ],
  ['a key that is __proto__', stateDictPickle([...str('__proto__'), ...tensorOf(6, 0, [6], [1])]), /the key '__proto__' is not allowed/],
  ['a value that is not a tensor', stateDictPickle([...str('epoch'), 0x4b, 3]), /'epoch' holds number 3, not a tensor/],
  ['a list at the top', pickle(PROTO2, 0x5d, 0x2e), /holds a list, not a state dict/],
  ['no STOP', pickle(PROTO2, 0x7d), /ends at byte 3 without a STOP opcode/],
  ['a memo entry never stored', pickle(PROTO2, 0x68, 7, 0x2e), /memo entry 7 was never stored/],
  [
    'a 9-byte LONG1 integer',
    pickle(PROTO2, 0x8a, 9, [0, 0, 0, 0, 0, 0, 0, 0, 1], 0x2e),
    /an integer of 9 bytes: a state dict's integers fit in 8/,
  ],
  ['LONG4', pickle(PROTO2, 0x8b, u32(1), 5, 0x2e), /opcode LONG4 is not allowed/],
  ['an empty stack', pickle(PROTO2, 0x52, 0x2e), /the stack is empty \(opcode REDUCE at byte 2\)/],
];

for (const [name, pkl, message] of HOSTILE) {
  test(`a crafted pickle is refused with a SerializationError naming what and where: ${name}`, (t) => {
    t.throws(() => load(pkl), { instanceOf: SerializationError, message });
    t.is(Object.getPrototypeOf({}), Object.prototype);
  });
}

test('a valid pickle truncated at any byte is a SerializationError naming the offset', (t) => {
  const pkl = stateDictPickle([...str('w'), ...tensorOf(6, 0, [6], [1])], [...str('v'), ...tensorOf(6, 2, [2], [2])]);
  t.is(Object.keys(load(pkl)).length, 2);
  for (let n = 0; n < pkl.length; n++) {
    const err = t.throws(() => load(pkl.subarray(0, n)), {
      instanceOf: SerializationError,
      message: /crafted\.pt: archive\/data\.pkl: .*at byte \d+/,
    });
    if (!err) return;
  }
});

test('a zip whose central directory lies about an entry is refused before anything is extracted', (t) => {
  const zip = checkpoint(stateDictPickle([...str('w'), ...tensorOf(6, 0, [6], [1])]));
  t.is(Object.keys(decodePytorch(zip, 'lying.pt')).length, 1);
  const view = new DataView(zip.buffer);
  let at = zip.length - 22;
  while (view.getUint32(at, true) !== 0x06054b50) at--;
  const directory = view.getUint32(at + 16, true); // the first entry is archive/data.pkl
  view.setUint32(directory + 24, 0x7fffffff, true); // its uncompressed size
  t.throws(() => decodePytorch(zip, 'lying.pt'), {
    instanceOf: SerializationError,
    message: /lying\.pt: not a readable zip archive: entry 'archive\/data\.pkl' claims 2147483647 bytes from \d+ stored bytes/,
  });
});
