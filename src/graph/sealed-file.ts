import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { SerializationError } from '../errors.js';
import { isPlainObject } from '../runtime/plain-object.js';

/**
 * Saved files (kiln.graph_module, kiln.jit) are one JSON object `{ format, version, …payload, sha256 }`, where
 * `sha256` is the SHA-256 of the JSON of everything else. Reading one checks, in order: the file can be read,
 * it is JSON, it nests no deeper than MAX_JSON_DEPTH (everything after parsing may recurse), it has the
 * expected format and version, and its digest matches, so a flipped byte is refused instead of loading a
 * different model. Only then does the caller look at the payload.
 */

/** Deeper than any file kiln writes (a module tree a few dozen levels deep, args a few levels deep). */
export const MAX_JSON_DEPTH = 256;

export function digest(payload: unknown): string {
  return createHash('sha256').update(JSON.stringify(payload)).digest('hex');
}

/** `payload` with its digest added, as written to disk. */
export function seal<T extends object>(payload: T): T & { sha256: string } {
  return { ...payload, sha256: digest(payload) };
}

export function writeSealed(path: string, payload: object): void {
  writeFileSync(path, JSON.stringify(seal(payload)));
}

/** Throw unless `json` nests at most `max` arrays/objects deep; iterative, so no input can overflow the stack. */
export function checkDepth(json: unknown, where: string, max = MAX_JSON_DEPTH): void {
  const stack: [unknown, number][] = [[json, 0]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (depth >= max) throw new SerializationError(`${where}: values are nested more than ${max} levels deep`);
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, depth + 1]);
  }
}

export interface SealedFormat {
  /** Who reads, for messages: `fx.load`, `jit.load`. */
  readonly reader: string;
  readonly format: string;
  readonly version: number;
}

/** Read and verify a sealed file; returns the payload (the object without `sha256`). */
export function readSealed(path: string, { reader, format, version }: SealedFormat): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new SerializationError(`${reader}: cannot read ${path}: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SerializationError(`${reader}: ${path} is not a ${format} file (not valid JSON: ${(e as Error).message})`);
  }
  checkDepth(json, `${reader}: ${path}`);
  if (!isPlainObject(json)) throw new SerializationError(`${reader}: ${path} is not a ${format} file (expected a JSON object)`);
  const { sha256, ...payload } = json;
  if (payload.format !== format) {
    throw new SerializationError(
      `${reader}: ${path} is not a ${format} file: expected format '${format}', found ${JSON.stringify(payload.format)}`,
    );
  }
  if (payload.version !== version) {
    throw new SerializationError(`${reader}: ${path} is version ${JSON.stringify(payload.version)}; this kiln reads version ${version}`);
  }
  if (typeof sha256 !== 'string') {
    throw new SerializationError(`${reader}: ${path} has no 'sha256' field (the checksum of its contents), so it cannot be trusted`);
  }
  if (sha256 !== digest(payload)) throw new SerializationError(`${reader}: ${path} is corrupt (its SHA-256 does not match its contents)`);
  // kiln writes one canonical text: anything else (a duplicated key the parser drops, stray bytes) was changed
  if (JSON.stringify(json) !== text) throw new SerializationError(`${reader}: ${path} is corrupt (its text is not the form kiln writes)`);
  return payload;
}
