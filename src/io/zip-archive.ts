import * as zlib from 'node:zlib';
import { unzipSync } from 'fflate';
import { SerializationError } from '../errors.js';

/**
 * Read every file of a zip archive, checked. fflate extracts (stored and deflated entries, zip64), but it trusts
 * the archive: it checks neither the central directory's signatures, nor that an entry's bytes are all there, nor
 * their CRC-32. So the central directory is walked here first (bounds and signatures, before fflate loops over a
 * count read from the file), and each extracted file is then held to its recorded size and CRC-32, as PyTorch's own
 * reader (miniz) holds it: a truncated or corrupted checkpoint is an error naming the entry, never other weights.
 */

const EOCD = 0x06054b50;
const ZIP64_LOCATOR = 0x07064b50;
const ZIP64_EOCD = 0x06064b50;
const CENTRAL_HEADER = 0x02014b50;

interface CentralEntry {
  crc: number;
  size: number;
}

/** The central directory's record of each file: its CRC-32 and uncompressed size (zip64 sizes included). */
function centralDirectory(bytes: Uint8Array, where: string): Map<string, CentralEntry> {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u16 = (at: number) => view.getUint16(at, true);
  const u32 = (at: number) => view.getUint32(at, true);
  const u64 = (at: number) => Number(view.getBigUint64(at, true));
  const bad = (msg: string): never => {
    throw new SerializationError(`${where}: not a readable zip archive: ${msg}`);
  };

  // the end-of-central-directory record is in the last 22 + 65535 (comment) bytes
  let eocd = -1;
  for (let at = bytes.byteLength - 22; at >= Math.max(0, bytes.byteLength - 22 - 65535); at--) {
    if (u32(at) === EOCD) {
      eocd = at;
      break;
    }
  }
  if (eocd < 0) bad(`no end-of-central-directory record in the last bytes of the ${bytes.byteLength}-byte file (is it truncated?)`);
  let count = u16(eocd + 10);
  let offset = u32(eocd + 16);
  if (eocd >= 20 && u32(eocd - 20) === ZIP64_LOCATOR) {
    const z = u64(eocd - 12);
    if (z + 56 > bytes.byteLength || u32(z) !== ZIP64_EOCD) bad(`the zip64 end-of-central-directory record at byte ${z} is missing`);
    count = u64(z + 32);
    offset = u64(z + 48);
  }
  const entries = new Map<string, CentralEntry>();
  const names = new TextDecoder('utf-8');
  for (let i = 0; i < count; i++) {
    if (offset + 46 > bytes.byteLength || u32(offset) !== CENTRAL_HEADER) {
      bad(`central directory entry ${i} at byte ${offset} is missing or corrupt`);
    }
    const nameLength = u16(offset + 28);
    const extraLength = u16(offset + 30);
    const commentLength = u16(offset + 32);
    const next = offset + 46 + nameLength + extraLength + commentLength;
    if (next > bytes.byteLength) bad(`central directory entry ${i} at byte ${offset} runs past the end of the file`);
    const name = names.decode(bytes.subarray(offset + 46, offset + 46 + nameLength));
    const method = u16(offset + 10);
    const compressed = u32(offset + 20);
    let size = u32(offset + 24);
    // sizes are checked against the method before fflate allocates them: a lying header must not reserve gigabytes
    if (method !== 0 && method !== 8) {
      bad(`entry '${name}' uses compression method ${method}; a checkpoint's entries are stored or deflated`);
    }
    if (compressed !== 0xffffffff && size !== 0xffffffff) {
      if (method === 0 ? size !== compressed : size > compressed * 1032 + 1024) {
        bad(`entry '${name}' claims ${size} bytes from ${compressed} ${method === 0 ? 'stored' : 'deflated'} bytes`);
      }
    }
    if (size === 0xffffffff) {
      // zip64: the real size is the first field of the zip64 extra block (id 1)
      for (let e = offset + 46 + nameLength; e + 4 <= offset + 46 + nameLength + extraLength; e += 4 + u16(e + 2)) {
        if (u16(e) === 1 && e + 12 <= bytes.byteLength) size = u64(e + 4);
      }
    }
    if (entries.has(name)) bad(`the entry '${name}' appears twice`);
    entries.set(name, { crc: u32(offset + 16), size });
    offset = next;
  }
  return entries;
}

const CRC_TABLE = (() => {
  const table = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c;
  }
  return table;
})();

/** CRC-32 (zip's): Node's native one where this Node has it (20.15+), else a table-driven one. */
function crc32(data: Uint8Array): number {
  const native = (zlib as { crc32?: (d: Uint8Array) => number }).crc32;
  if (native) return native(data) >>> 0;
  let c = -1;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

/** Every file in the archive by name, each checked against its recorded size and CRC-32. */
export function readZip(bytes: Uint8Array, where: string): Map<string, Uint8Array> {
  const directory = centralDirectory(bytes, where);
  let files: Record<string, Uint8Array>;
  try {
    files = unzipSync(bytes);
  } catch (e) {
    throw new SerializationError(`${where}: not a readable zip archive: ${(e as Error).message}`);
  }
  const out = new Map<string, Uint8Array>();
  for (const [name, { crc, size }] of directory) {
    const data = files[name];
    if (data === undefined || data.byteLength !== size) {
      throw new SerializationError(
        `${where}: zip entry '${name}' should hold ${size} bytes, but ${data?.byteLength ?? 0} could be read: the file is truncated or corrupt`,
      );
    }
    if (crc32(data) !== crc) throw new SerializationError(`${where}: zip entry '${name}' fails its CRC-32 check: the file is corrupt`);
    out.set(name, data);
  }
  return out;
}
