import { SerializationError } from '../errors.js';
import { contiguousStrides } from '../runtime/shape.js';
import { Tensor } from '../runtime/tensor.js';
import { ELEMENT_SIZE, type ElementType, decodeElements } from './element-types.js';
import { type StateDict, checkShape, putEntry, readCheckpoint } from './state-dict.js';
import { type AllowedGlobal, PyDict, PyGlobal, PyTuple, typeName, unpickle } from './unpickle.js';
import { readZip } from './zip-archive.js';

/**
 * `loadPytorch(path)`: a `torch.save(model.state_dict())` file as a kiln state dict. Since PyTorch 1.6 that file is
 * a zip archive `<name>/data.pkl` (the pickled dict, protocol 2) plus one `<name>/data/<id>` entry per storage, raw
 * little-endian elements; a tensor in the pickle is `torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
 * …)` over a storage named by a persistent id `('storage', torch.FloatStorage, '<id>', 'cpu', numel)`. The pickle is
 * read by the restricted unpickler (unpickle.ts) with the few globals listed here, so a hostile file is refused
 * before anything of it runs, and nothing is returned until every tensor has been read and checked.
 */

/** PyTorch's storage classes and the element type each holds. */
const STORAGE_TYPES: Readonly<Record<string, ElementType>> = {
  DoubleStorage: 'F64',
  FloatStorage: 'F32',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
};

/** A storage the pickle named: its element type and the bytes of its archive entry. */
class StorageRef {
  constructor(
    readonly id: string,
    readonly type: ElementType,
    readonly numel: number,
    readonly bytes: Uint8Array,
  ) {}
}

/** A tensor the pickle rebuilt: a strided view of a storage, read into a kiln tensor once its key is known. */
class TensorRef {
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly size: readonly unknown[],
    readonly stride: readonly unknown[],
  ) {}
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const fail = (message: string): never => {
  throw new SerializationError(message);
};

function rebuildTensor(args: readonly unknown[]): TensorRef {
  if (args.length < 6 || args.length > 7) {
    fail(`expected (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]), got ${args.length} arguments`);
  }
  const [storage, offset, size, stride, requiresGrad, hooks, metadata] = args;
  if (!(storage instanceof StorageRef)) fail(`the storage is ${typeName(storage)}, not a storage from the archive`);
  if (!isCount(offset)) fail(`storage_offset ${typeName(offset)} is not a non-negative integer`);
  if (!(size instanceof PyTuple) || !(stride instanceof PyTuple)) {
    fail(`size and stride must be tuples, got ${typeName(size)} and ${typeName(stride)}`);
  }
  if (typeof requiresGrad !== 'boolean') fail(`requires_grad is ${typeName(requiresGrad)}, not a bool`);
  if (!(hooks instanceof PyDict) || hooks.entries.size > 0) fail('backward hooks cannot be loaded (they are Python functions)');
  if (metadata !== undefined && metadata !== null && !(metadata instanceof PyDict && metadata.entries.size === 0)) {
    fail(`tensor metadata ${typeName(metadata)} cannot be loaded`);
  }
  return new TensorRef(storage as StorageRef, offset as number, (size as PyTuple).items, (stride as PyTuple).items);
}

function rebuildParameter(args: readonly unknown[]): TensorRef {
  const [data, requiresGrad, hooks] = args;
  if (
    args.length !== 3 ||
    !(data instanceof TensorRef) ||
    typeof requiresGrad !== 'boolean' ||
    !(hooks instanceof PyDict) ||
    hooks.entries.size > 0
  ) {
    fail('expected (tensor, requires_grad, empty backward hooks)');
  }
  return data as TensorRef;
}

const notCallable =
  (name: string): AllowedGlobal =>
  () =>
    fail(`torch.${name} is only allowed as a storage type in a persistent id, not called`);

/** The only globals a state dict pickle may name; everything else is refused by the unpickler. */
function findGlobal(module: string, name: string): AllowedGlobal | undefined {
  if (module === 'collections' && name === 'OrderedDict') {
    return (args) => (args.length === 0 ? new PyDict() : fail('OrderedDict is only rebuilt empty, then filled by SETITEMS'));
  }
  if (module === 'torch._utils' && name === '_rebuild_tensor_v2') return rebuildTensor;
  if (module === 'torch._utils' && name === '_rebuild_parameter') return rebuildParameter;
  if (module === 'torch' && Object.hasOwn(STORAGE_TYPES, name)) return notCallable(name);
  return undefined;
}
const ALLOWED_GLOBALS = 'collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter and torch.<Type>Storage';

/** The values of a strided view, gathered into a contiguous run of raw elements. */
function gatherBytes(ref: TensorRef, shape: readonly number[], strides: readonly number[], label: string): Uint8Array {
  const { storage, offset } = ref;
  const size = ELEMENT_SIZE[storage.type];
  const numel = shape.reduce((a, d) => a * d, 1);
  if (numel === 0) {
    if (offset > storage.numel) fail(`${label}: storage offset ${offset} is past the end of its ${storage.numel}-element storage`);
    return new Uint8Array(0);
  }
  const last = offset + shape.reduce((a, d, i) => a + (d - 1) * strides[i]!, 0);
  if (last >= storage.numel) {
    fail(
      `${label}: shape [${shape.join(', ')}], strides [${strides.join(', ')}] and offset ${offset} reach element ${last} of a ${storage.numel}-element storage`,
    );
  }
  const dense = contiguousStrides(shape);
  if (strides.every((s, i) => shape[i] === 1 || s === dense[i])) {
    return storage.bytes.subarray(offset * size, (offset + numel) * size);
  }
  // copy whole elements as 1-, 2- or 4-byte words (an 8-byte element is two words), not byte by byte
  const word = Math.min(size, 4);
  const per = size / word;
  const Words = word === 1 ? Uint8Array : word === 2 ? Uint16Array : Uint32Array;
  const bytes = storage.bytes.byteOffset % word === 0 ? storage.bytes : new Uint8Array(storage.bytes);
  const src = new Words(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength / word);
  const dst = new Words(numel * per);
  const index = new Array<number>(shape.length).fill(0);
  let at = offset;
  for (let n = 0; n < numel; n++) {
    for (let j = 0; j < per; j++) dst[n * per + j] = src[at * per + j]!;
    // advance the multi-index, last dim fastest
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++index[d]! < shape[d]!) {
        at += strides[d]!;
        break;
      }
      at -= (shape[d]! - 1) * strides[d]!;
      index[d] = 0;
    }
  }
  return new Uint8Array(dst.buffer);
}

function materialize(ref: TensorRef, key: string, where: string): Tensor {
  const label = `${where}: tensor '${key}'`;
  const shape = checkShape(ref.size, key, where);
  if (ref.stride.length !== shape.length || !ref.stride.every(isCount)) {
    fail(`${label}: stride ${JSON.stringify(ref.stride.map(String))} does not fit its shape [${shape.join(', ')}]`);
  }
  const bytes = gatherBytes(ref, shape, ref.stride as number[], label);
  const numel = shape.reduce((a, d) => a * d, 1);
  const { data, dtype } = decodeElements(bytes, ref.storage.type, numel, label);
  return Tensor.fromData(data, shape, dtype);
}

/** Where the archive keeps its pickle: `<name>/data.pkl`, one folder deep (torch names the folder after the file). */
function archivePrefix(files: Map<string, Uint8Array>, where: string): string {
  const pickles = [...files.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (pickles.length === 1) return pickles[0]!.slice(0, -'data.pkl'.length);
  if ([...files.keys()].some((n) => /^[^/]+\/constants\.pkl$/.test(n))) {
    fail(`${where}: a TorchScript archive (torch.jit.save), not a torch.save file; save the model's state_dict() with torch.save instead`);
  }
  return fail(
    pickles.length
      ? `${where}: the archive holds ${pickles.length} data.pkl files (${pickles.join(', ')}); a torch.save file holds one`
      : `${where}: the zip archive has no <name>/data.pkl entry: not a torch.save file`,
  );
}

/** Parse the bytes of a torch.save zip archive into a state dict. */
export function decodePytorch(bytes: Uint8Array, where: string): StateDict {
  const zipMagic = bytes[0] === 0x50 && bytes[1] === 0x4b && bytes[2] === 0x03 && bytes[3] === 0x04;
  if (!zipMagic) {
    if (bytes[0] === 0x80) {
      fail(
        `${where}: a legacy (non-zip) torch.save file, written by PyTorch before 1.6 or with _use_new_zipfile_serialization=False; ` +
          'kiln reads the zip format: re-save it with torch.save(torch.load(path), path) in PyTorch 1.6 or later',
      );
    }
    const head = [...bytes.subarray(0, 4)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    fail(`${where}: not a PyTorch checkpoint: it starts with bytes [${head}], not a zip archive's 'PK\\x03\\x04' (50 4b 03 04)`);
  }
  const files = readZip(bytes, where);
  const prefix = archivePrefix(files, where);
  const byteorder = files.get(`${prefix}byteorder`);
  if (byteorder !== undefined && new TextDecoder().decode(byteorder).trim() !== 'little') {
    fail(`${where}: the storages are stored ${new TextDecoder().decode(byteorder).trim()}-endian; kiln reads little-endian checkpoints`);
  }

  const storages = new Map<string, StorageRef>();
  const persistentLoad = (pid: unknown): StorageRef => {
    const items = pid instanceof PyTuple ? pid.items : [];
    const [kind, type, id, _location, numel] = items;
    if (items.length !== 5 || kind !== 'storage' || !(type instanceof PyGlobal) || typeof id !== 'string' || !isCount(numel)) {
      fail(`a persistent id must be ('storage', torch.<Type>Storage, key, location, numel), got ${typeName(pid)}`);
    }
    const t = type as PyGlobal;
    if (t.module !== 'torch' || !Object.hasOwn(STORAGE_TYPES, t.name)) fail(`${typeName(t)} is not a storage type`);
    const elementType = STORAGE_TYPES[t.name]!;
    const seen = storages.get(id as string);
    if (seen) {
      if (seen.type !== elementType || seen.numel !== numel) fail(`storage '${id}' is named twice with different types or sizes`);
      return seen;
    }
    const entry = `${prefix}data/${id}`;
    const data = files.get(entry);
    if (data === undefined) fail(`storage '${id}' has no archive entry '${entry}'`);
    const expected = (numel as number) * ELEMENT_SIZE[elementType];
    if (data!.byteLength !== expected) {
      fail(`storage '${id}' (${numel} ${t.name} elements) needs ${expected} bytes, but '${entry}' holds ${data!.byteLength}`);
    }
    const ref = new StorageRef(id as string, elementType, numel as number, data!);
    storages.set(id as string, ref);
    return ref;
  };

  const pickleName = `${prefix}data.pkl`;
  const root = unpickle(files.get(pickleName)!, {
    where: `${where}: ${pickleName}`,
    findGlobal,
    allowedGlobals: ALLOWED_GLOBALS,
    persistentLoad,
  });
  if (!(root instanceof PyDict)) {
    fail(`${where}: the checkpoint holds ${typeName(root)}, not a state dict; save model.state_dict() with torch.save`);
  }
  const out: StateDict = {};
  for (const [key, value] of (root as PyDict).entries) {
    if (typeof key !== 'string') fail(`${where}: a state dict key is ${typeName(key)}, not a string`);
    if (!(value instanceof TensorRef)) {
      fail(
        `${where}: '${String(key)}' holds ${typeName(value)}, not a tensor: loadPytorch reads a state dict (torch.save(model.state_dict())); ` +
          'for a checkpoint that bundles several things, save the state dict on its own',
      );
    }
    putEntry(out, key as string, materialize(value as TensorRef, key as string, where), where);
  }
  return out;
}

/**
 * Read a `torch.save(model.state_dict())` file (PyTorch 1.6+ zip format) into a state dict of new kiln tensors, ready
 * for `module.loadStateDict`. Float storages (float64, float16, bfloat16) become float32 and integer ones int32,
 * with an error naming the key where a value does not fit. The pickle inside is read by a restricted unpickler that
 * never runs anything: a file naming any other Python function is refused with a SerializationError.
 */
export function loadPytorch(path: string): StateDict {
  const where = `loadPytorch: ${path}`;
  return decodePytorch(readCheckpoint(path, where), where);
}
