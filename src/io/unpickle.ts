import { SerializationError } from '../errors.js';

/**
 * A restricted reader for Python pickles: the protocol-2 opcodes that `torch.save` writes for a state dict, and
 * nothing that could run code. A pickle is a program for a stack machine whose GLOBAL and REDUCE opcodes import and
 * call any Python function (`posix.system`, `builtins.eval`); this reader calls nothing of its own accord. A GLOBAL
 * is looked up in the caller's allow-list (`findGlobal`), a REDUCE calls only what that list returned, and any
 * other global, or any opcode outside the list below (INST, OBJ, NEWOBJ, EXT*, text PERSID, …), is a
 * SerializationError naming it and its byte offset. Python values map to JS as: None → null, bool → boolean,
 * int → number (bigint beyond 2^53), float → number, str → string, list → array, tuple → PyTuple, dict → PyDict.
 */

/** A Python tuple (kept apart from lists: a state dict's shapes and persistent ids are tuples). */
export class PyTuple {
  constructor(readonly items: readonly unknown[]) {}
}

/** A Python dict or OrderedDict: insertion-ordered, keys compared as Python would for str and int keys. */
export class PyDict {
  readonly entries = new Map<unknown, unknown>();
  /** The instance attributes a BUILD opcode set (an OrderedDict state dict carries `_metadata` this way). */
  attributes: PyDict | null = null;
}

/** What an allowed global stands for: a function REDUCE may call with its argument tuple. */
export type AllowedGlobal = (args: readonly unknown[]) => unknown;

/** A global the allow-list accepted, on the stack until a REDUCE calls it (or a persistent id names it). */
export class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
    readonly call: AllowedGlobal,
  ) {}
}

export interface UnpickleOptions {
  /** Start of every error message (the reader, the file and the pickle's name). */
  where: string;
  /** The allowed function for `module.name`, or undefined to refuse it. */
  findGlobal(module: string, name: string): AllowedGlobal | undefined;
  /** What the list of allowed globals is, for the refusal message. */
  allowedGlobals: string;
  /** Resolve a BINPERSID id (for torch: a storage). */
  persistentLoad(pid: unknown): unknown;
}

const OPCODE_NAMES: Record<number, string> = {
  0x28: 'MARK',
  0x2e: 'STOP',
  0x30: 'POP',
  0x31: 'POP_MARK',
  0x32: 'DUP',
  0x46: 'FLOAT',
  0x49: 'INT',
  0x4a: 'BININT',
  0x4b: 'BININT1',
  0x4c: 'LONG',
  0x4d: 'BININT2',
  0x4e: 'NONE',
  0x50: 'PERSID',
  0x51: 'BINPERSID',
  0x52: 'REDUCE',
  0x53: 'STRING',
  0x54: 'BINSTRING',
  0x55: 'SHORT_BINSTRING',
  0x56: 'UNICODE',
  0x58: 'BINUNICODE',
  0x61: 'APPEND',
  0x62: 'BUILD',
  0x63: 'GLOBAL',
  0x64: 'DICT',
  0x7d: 'EMPTY_DICT',
  0x65: 'APPENDS',
  0x67: 'GET',
  0x68: 'BINGET',
  0x69: 'INST',
  0x6a: 'LONG_BINGET',
  0x6c: 'LIST',
  0x5d: 'EMPTY_LIST',
  0x6f: 'OBJ',
  0x70: 'PUT',
  0x71: 'BINPUT',
  0x72: 'LONG_BINPUT',
  0x73: 'SETITEM',
  0x74: 'TUPLE',
  0x29: 'EMPTY_TUPLE',
  0x75: 'SETITEMS',
  0x47: 'BINFLOAT',
  0x80: 'PROTO',
  0x81: 'NEWOBJ',
  0x82: 'EXT1',
  0x83: 'EXT2',
  0x84: 'EXT4',
  0x85: 'TUPLE1',
  0x86: 'TUPLE2',
  0x87: 'TUPLE3',
  0x88: 'NEWTRUE',
  0x89: 'NEWFALSE',
  0x8a: 'LONG1',
  0x8b: 'LONG4',
  0x42: 'BINBYTES',
  0x43: 'SHORT_BINBYTES',
  0x8c: 'SHORT_BINUNICODE',
  0x8d: 'BINUNICODE8',
  0x8e: 'BINBYTES8',
  0x8f: 'EMPTY_SET',
  0x90: 'ADDITEMS',
  0x91: 'FROZENSET',
  0x92: 'NEWOBJ_EX',
  0x93: 'STACK_GLOBAL',
  0x94: 'MEMOIZE',
  0x95: 'FRAME',
  0x96: 'BYTEARRAY8',
  0x97: 'NEXT_BUFFER',
  0x98: 'READONLY_BUFFER',
};

/** The highest protocol whose opcodes this reader knows; torch.save writes protocol 2 unless told otherwise. */
const MAX_PROTOCOL = 2;

const utf8 = new TextDecoder('utf-8', { fatal: true });
const latin1 = new TextDecoder('latin1');

/** Run the pickle in `bytes` under the restrictions above and return the value it builds. */
export function unpickle(bytes: Uint8Array, options: UnpickleOptions): unknown {
  const { where } = options;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();
  let pos = 0;
  let opAt = 0;
  let opName = '';

  const fail = (message: string): never => {
    throw new SerializationError(`${where}: ${message} (opcode ${opName} at byte ${opAt})`);
  };
  const need = (n: number): number => {
    if (pos + n > bytes.byteLength) {
      fail(`the pickle is truncated: ${n} more byte(s) needed at byte ${pos}, but it is ${bytes.byteLength} bytes long`);
    }
    const at = pos;
    pos += n;
    return at;
  };
  const pop = (): unknown => {
    if (stack.length === 0 || (marks.length > 0 && stack.length <= marks[marks.length - 1]!)) fail('the stack is empty');
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0 || (marks.length > 0 && stack.length <= marks[marks.length - 1]!)) fail('the stack is empty');
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const m = marks.pop();
    if (m === undefined) fail('no MARK before it');
    return stack.splice(m!);
  };
  const readLine = (): string => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0) fail(`the pickle is truncated: no end of line after byte ${pos}`);
    const s = latin1.decode(bytes.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const text = (n: number): string => {
    const at = need(n);
    try {
      return utf8.decode(bytes.subarray(at, at + n));
    } catch {
      return fail(`the string at byte ${at} is not valid UTF-8`);
    }
  };
  const length32 = (): number => view.getUint32(need(4), true);
  const setItems = (target: unknown, items: unknown[]): void => {
    if (!(target instanceof PyDict)) fail(`cannot set items on ${typeName(target)}: only a dict takes items`);
    if (items.length % 2) fail('an odd number of items for a dict');
    for (let i = 0; i < items.length; i += 2) (target as PyDict).entries.set(dictKey(items[i]), items[i + 1]);
  };
  const dictKey = (k: unknown): unknown => {
    if (typeof k === 'string' || typeof k === 'number' || typeof k === 'bigint' || typeof k === 'boolean' || k === null) return k;
    return fail(`a dict key of type ${typeName(k)}: a state dict's keys are strings or numbers`);
  };
  const memoGet = (i: number): unknown => {
    if (!memo.has(i)) fail(`memo entry ${i} was never stored`);
    return memo.get(i);
  };

  while (true) {
    if (pos >= bytes.byteLength) {
      opAt = pos;
      opName = 'end of data';
      fail(`the pickle ends at byte ${pos} without a STOP opcode: it is truncated`);
    }
    opAt = pos;
    const op = bytes[pos++]!;
    opName = OPCODE_NAMES[op] ?? `0x${op.toString(16).padStart(2, '0')}`;
    switch (op) {
      case 0x80: {
        // PROTO
        const v = bytes[need(1)]!;
        if (v > MAX_PROTOCOL) {
          fail(`pickle protocol ${v}: kiln reads protocol ${MAX_PROTOCOL}, torch.save's default (save with pickle_protocol=2)`);
        }
        break;
      }
      case 0x2e: {
        // STOP
        if (marks.length) fail('a MARK was never closed');
        if (stack.length !== 1) fail(`the stack holds ${stack.length} values at STOP, expected 1`);
        return stack[0];
      }
      case 0x28:
        marks.push(stack.length);
        break;
      case 0x30:
        pop();
        break;
      case 0x31:
        popMark();
        break;
      case 0x32:
        stack.push(top());
        break;
      case 0x4a:
        stack.push(view.getInt32(need(4), true));
        break;
      case 0x4b:
        stack.push(bytes[need(1)]!);
        break;
      case 0x4d:
        stack.push(view.getUint16(need(2), true));
        break;
      case 0x8a: {
        // LONG1: a little-endian two's-complement integer. A state dict's integers fit in 8 bytes; longer ones are
        // refused rather than decoded (decoding a megabyte-long integer takes minutes).
        const n = bytes[need(1)]!;
        if (n > 8) fail(`an integer of ${n} bytes: a state dict's integers fit in 8`);
        const at = need(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[at + i]!);
        if (n > 0 && bytes[at + n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
        stack.push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case 0x4e:
        stack.push(null);
        break;
      case 0x88:
        stack.push(true);
        break;
      case 0x89:
        stack.push(false);
        break;
      case 0x47:
        stack.push(view.getFloat64(need(8), false)); // BINFLOAT is big-endian
        break;
      case 0x58:
        stack.push(text(length32()));
        break;
      case 0x29:
        stack.push(new PyTuple([]));
        break;
      case 0x74:
        stack.push(new PyTuple(popMark()));
        break;
      case 0x85:
      case 0x86:
      case 0x87: {
        const n = op - 0x84;
        const items: unknown[] = [];
        for (let i = 0; i < n; i++) items.unshift(pop());
        stack.push(new PyTuple(items));
        break;
      }
      case 0x5d:
        stack.push([]);
        break;
      case 0x6c:
        stack.push(popMark());
        break;
      case 0x61: {
        const v = pop();
        const list = top();
        if (!Array.isArray(list)) fail(`cannot append to ${typeName(list)}`);
        (list as unknown[]).push(v);
        break;
      }
      case 0x65: {
        const items = popMark();
        const list = top();
        if (!Array.isArray(list)) fail(`cannot append to ${typeName(list)}`);
        (list as unknown[]).push(...items);
        break;
      }
      case 0x7d:
        stack.push(new PyDict());
        break;
      case 0x64: {
        const d = new PyDict();
        setItems(d, popMark());
        stack.push(d);
        break;
      }
      case 0x73: {
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: {
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x71:
        memo.set(bytes[need(1)]!, top());
        break;
      case 0x72:
        memo.set(length32(), top());
        break;
      case 0x68:
        stack.push(memoGet(bytes[need(1)]!));
        break;
      case 0x6a:
        stack.push(memoGet(length32()));
        break;
      case 0x63: {
        // GLOBAL: the gate. Nothing is imported or called here; an unlisted name stops the read.
        const module = readLine();
        const name = readLine();
        const call = options.findGlobal(module, name);
        if (!call) {
          fail(`refuses the global '${module}.${name}': a state dict needs only ${options.allowedGlobals}; nothing in the file was run`);
        }
        stack.push(new PyGlobal(module, name, call!));
        break;
      }
      case 0x52: {
        const args = pop();
        const fn = pop();
        if (!(fn instanceof PyGlobal)) fail(`REDUCE calls ${typeName(fn)}, not an allowed global`);
        if (!(args instanceof PyTuple)) fail(`REDUCE's arguments are ${typeName(args)}, not a tuple`);
        const g = fn as PyGlobal;
        try {
          stack.push(g.call((args as PyTuple).items));
        } catch (e) {
          if (e instanceof SerializationError) fail(`${g.module}.${g.name}: ${e.message}`);
          throw e;
        }
        break;
      }
      case 0x62: {
        // BUILD sets an object's attributes; only a dict's (OrderedDict's `_metadata`) are ever needed
        const state = pop();
        const obj = top();
        if (!(obj instanceof PyDict) || !(state instanceof PyDict)) {
          fail(`BUILD on ${typeName(obj)} with ${typeName(state)}: only a dict's attributes may be set`);
        }
        (obj as PyDict).attributes = state as PyDict;
        break;
      }
      case 0x51: {
        const pid = pop();
        try {
          stack.push(options.persistentLoad(pid));
        } catch (e) {
          if (e instanceof SerializationError) fail(e.message);
          throw e;
        }
        break;
      }
      default:
        fail(
          OPCODE_NAMES[op] === undefined
            ? 'an unknown opcode: the data is not a pickle, or it is corrupt'
            : `opcode ${opName} is not allowed: a state dict is read with protocol-2 data opcodes only`,
        );
    }
  }
}

/** A Python-flavoured name for a value in errors. */
export function typeName(v: unknown): string {
  if (v === null) return 'None';
  if (v === undefined) return 'nothing';
  if (v instanceof PyTuple) return 'a tuple';
  if (v instanceof PyDict) return 'a dict';
  if (v instanceof PyGlobal) return `the global '${v.module}.${v.name}'`;
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return `a ${v.constructor?.name ?? 'object'}`;
  return `${typeof v === 'bigint' ? 'int' : typeof v} ${String(v).slice(0, 40)}`;
}
