import { renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { SerializationError } from '../errors.js';
import { isPlainObject } from '../runtime/plain-object.js';
import { Tensor } from '../runtime/tensor.js';
import { describe } from '../runtime/validate.js';
import { ELEMENT_SIZE, decodeElements, elementTypeOf, encodeElements, isElementType } from './element-types.js';
import { type StateDict, checkShape, putEntry, readCheckpoint } from './state-dict.js';

/**
 * The safetensors format (huggingface/safetensors): an unsigned 64-bit little-endian header length N, N bytes of
 * JSON `{ "__metadata__"?: {string: string}, key: { dtype, shape, data_offsets: [begin, end] }, … }` (padded with
 * spaces), then the tensors' raw little-endian bytes, each at its offsets from the end of the header. It holds data
 * only: reading one never runs anything. Reading checks what the reference implementation checks (offsets tile the
 * data exactly, sizes match shapes) and every failure is a SerializationError naming the key or the byte offset.
 */

/** The reference implementation refuses larger headers; a corrupt length must not make us allocate gigabytes. */
const MAX_HEADER_BYTES = 100_000_000;
const METADATA = '__metadata__';

export interface SafetensorsContents {
  tensors: StateDict;
  metadata: Record<string, string> | null;
}

/** Parse a safetensors file's bytes; `where` prefixes every error (the reader and the path). */
export function decodeSafetensors(bytes: Uint8Array, where: string): SafetensorsContents {
  if (bytes.byteLength < 8) {
    throw new SerializationError(`${where}: file is ${bytes.byteLength} bytes, too short for the 8-byte header length`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = view.getBigUint64(0, true);
  if (headerLength > BigInt(Math.min(MAX_HEADER_BYTES, bytes.byteLength - 8))) {
    throw new SerializationError(
      `${where}: header length ${headerLength} (bytes 0..8) is larger than the ${bytes.byteLength - 8} bytes after it` +
        (headerLength > BigInt(MAX_HEADER_BYTES) ? ` (and than the format's limit of ${MAX_HEADER_BYTES})` : '') +
        ': not a safetensors file, or a truncated one',
    );
  }
  const dataStart = 8 + Number(headerLength);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, dataStart)));
  } catch (e) {
    throw new SerializationError(`${where}: the header (bytes 8..${dataStart}) is not valid JSON: ${(e as Error).message}`);
  }
  if (!isPlainObject(header)) {
    throw new SerializationError(
      `${where}: the header (bytes 8..${dataStart}) is ${JSON.stringify(header)?.slice(0, 40)}, not a JSON object`,
    );
  }

  let metadata: Record<string, string> | null = null;
  const entries: { key: string; type: keyof typeof ELEMENT_SIZE; shape: number[]; begin: number; end: number }[] = [];
  for (const [key, info] of Object.entries(header)) {
    if (key === METADATA) {
      if (!isPlainObject(info) || !Object.values(info).every((v) => typeof v === 'string')) {
        throw new SerializationError(
          `${where}: "${METADATA}" must be a map of strings to strings, got ${JSON.stringify(info)?.slice(0, 80)}`,
        );
      }
      metadata = info as Record<string, string>;
      continue;
    }
    if (!isPlainObject(info)) {
      throw new SerializationError(
        `${where}: tensor '${key}': expected { dtype, shape, data_offsets }, got ${JSON.stringify(info)?.slice(0, 80)}`,
      );
    }
    const { dtype, shape, data_offsets: offsets } = info;
    if (!isElementType(dtype)) {
      throw new SerializationError(
        `${where}: tensor '${key}' has dtype ${JSON.stringify(dtype)}, which kiln cannot load (it reads ${Object.keys(ELEMENT_SIZE).join(', ')})`,
      );
    }
    const dims = checkShape(shape, key, where);
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
      offsets[0] > offsets[1]
    ) {
      throw new SerializationError(
        `${where}: tensor '${key}' has data_offsets ${JSON.stringify(offsets)}, not [begin, end] with 0 <= begin <= end`,
      );
    }
    const [begin, end] = offsets as [number, number];
    const expected = dims.reduce((a, d) => a * d, 1) * ELEMENT_SIZE[dtype];
    if (end - begin !== expected) {
      throw new SerializationError(
        `${where}: tensor '${key}' (${dtype}, shape ${JSON.stringify(dims)}) needs ${expected} bytes, but data_offsets [${begin}, ${end}] hold ${end - begin}`,
      );
    }
    entries.push({ key, type: dtype, shape: dims, begin, end });
  }

  // The tensors must tile the data exactly: no overlap (two keys sharing bytes), no hole, nothing past the end.
  const dataLength = bytes.byteLength - dataStart;
  let at = 0;
  for (const e of [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end)) {
    if (e.begin !== at) {
      throw new SerializationError(
        `${where}: tensor '${e.key}' starts at data byte ${e.begin} (file offset ${dataStart + e.begin}), but the previous tensor ends at ${at}: ` +
          (e.begin < at ? 'tensors overlap' : 'there is a gap'),
      );
    }
    at = e.end;
  }
  if (at !== dataLength) {
    throw new SerializationError(
      `${where}: the tensors end at data byte ${at} (file offset ${dataStart + at}), but the file has ${dataLength} data bytes` +
        (at > dataLength ? ': the file is truncated' : ': trailing bytes after the last tensor'),
    );
  }

  const tensors: StateDict = {};
  for (const e of entries) {
    const numel = e.shape.reduce((a, d) => a * d, 1);
    const { data, dtype } = decodeElements(
      bytes.subarray(dataStart + e.begin, dataStart + e.end),
      e.type,
      numel,
      `${where}: tensor '${e.key}'`,
    );
    putEntry(tensors, e.key, Tensor.fromData(data, e.shape, dtype), where);
  }
  return { tensors, metadata };
}

/** A state dict (and optional metadata) as the bytes of a safetensors file. */
export function encodeSafetensors(stateDict: StateDict, metadata: Record<string, string> | null, where: string): Uint8Array {
  if (!isPlainObject(stateDict)) {
    throw new SerializationError(`${where}: expected a state dict (a plain object of key → Tensor), got ${describe(stateDict)}`);
  }
  if (metadata !== null && (!isPlainObject(metadata) || !Object.values(metadata).every((v) => typeof v === 'string'))) {
    throw new SerializationError(`${where}: metadata must be a plain object of strings, got ${describe(metadata)}`);
  }
  const header: Record<string, unknown> = {};
  if (metadata !== null) header[METADATA] = { ...metadata };
  const blobs: Uint8Array[] = [];
  let at = 0;
  for (const [key, t] of Object.entries(stateDict)) {
    if (key === METADATA) throw new SerializationError(`${where}: the key '${METADATA}' is reserved for the file's metadata`);
    if (!(t instanceof Tensor)) throw new SerializationError(`${where}: '${key}' is ${describe(t)}, not a Tensor`);
    const blob = encodeElements(t.data()); // data() is a fresh contiguous copy: its bytes are ours to keep
    header[key] = { dtype: elementTypeOf(t.dtype), shape: [...t.shape], data_offsets: [at, at + blob.byteLength] };
    blobs.push(blob);
    at += blob.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8); // the reference writer aligns the data to 8 bytes
  const head = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.byteLength + at);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.byteLength), true);
  out.set(head, 8);
  let pos = 8 + head.byteLength;
  for (const b of blobs) {
    out.set(b, pos);
    pos += b.byteLength;
  }
  return out;
}

/**
 * Write `stateDict` (float32, int32 and bool tensors, stored as F32, I32 and BOOL) to `path` in the safetensors
 * format, with an optional `metadata` map of strings. The file is written beside `path` and renamed into place, so a
 * failed save never leaves a half-written file under that name.
 */
export function saveSafetensors(stateDict: StateDict, path: string, options: { metadata?: Record<string, string> } = {}): void {
  const where = `saveSafetensors: ${path}`;
  const bytes = encodeSafetensors(stateDict, options.metadata ?? null, where);
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, bytes);
    renameSync(tmp, path);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      // nothing was written
    }
    throw new SerializationError(`${where}: cannot write: ${(e as Error).message}`);
  }
}

/**
 * Read a safetensors file into a state dict of new tensors. F32, I32 and BOOL load as they are; F16, BF16 and F64
 * become float32 and I64, I16, I8 and U8 int32, with a SerializationError naming the key where a value does not fit.
 */
export function loadSafetensors(path: string): StateDict {
  const where = `loadSafetensors: ${path}`;
  return decodeSafetensors(readCheckpoint(path, where), where).tensors;
}
