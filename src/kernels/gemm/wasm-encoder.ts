/**
 * A small WebAssembly binary encoder: just enough of the format (LEB128, the type/import/function/export/code
 * sections, and the scalar and SIMD opcodes the GEMM kernels use) to emit a module as bytes from TypeScript, so
 * kiln needs no assembler package. Reference: the WebAssembly core spec, binary format (§5), the fixed-width
 * SIMD and relaxed SIMD proposals, and the threads proposal for the shared memory import.
 */

export type ValType = 'i32' | 'f32' | 'v128';

const VALTYPE: Record<ValType, number> = { i32: 0x7f, f32: 0x7d, v128: 0x7b };
const EMPTY_BLOCK = 0x40;

function pushU32(out: number[], value: number): void {
  let v = value >>> 0;
  do {
    let byte = v & 0x7f;
    v >>>= 7;
    if (v !== 0) byte |= 0x80;
    out.push(byte);
  } while (v !== 0);
}

function pushI32(out: number[], value: number): void {
  let v = value | 0;
  for (;;) {
    const byte = v & 0x7f;
    v >>= 7;
    const done = (v === 0 && (byte & 0x40) === 0) || (v === -1 && (byte & 0x40) !== 0);
    out.push(done ? byte : byte | 0x80);
    if (done) return;
  }
}

/** Appends without spreading, so large bodies cannot overflow the call stack. */
function append(out: number[], bytes: ArrayLike<number>): void {
  for (let i = 0; i < bytes.length; i++) out.push(bytes[i]!);
}

function pushName(out: number[], name: string): void {
  const bytes = new TextEncoder().encode(name);
  pushU32(out, bytes.length);
  append(out, bytes);
}

/** Natural alignment (log2 bytes) of each memory access width, used as the memarg hint. */
const ALIGN = { 4: 2, 8: 3, 16: 4 } as const;

/**
 * Emits one function body. Methods return `this` so code reads in stack order, e.g.
 * `f.get(a).get(b).f32x4Mul()`. Locals are numbered after the parameters.
 */
export class FunctionBuilder {
  readonly code: number[] = [];
  private readonly localTypes: ValType[] = [];

  constructor(
    readonly name: string,
    readonly params: readonly ValType[],
    readonly results: readonly ValType[],
  ) {}

  /** Declares a local and returns its index. */
  local(type: ValType): number {
    this.localTypes.push(type);
    return this.params.length + this.localTypes.length - 1;
  }

  private op(...bytes: number[]): this {
    this.code.push(...bytes);
    return this;
  }
  private simd(opcode: number): this {
    this.code.push(0xfd);
    pushU32(this.code, opcode);
    return this;
  }
  private memarg(width: 4 | 8 | 16, offset: number): this {
    if (!Number.isInteger(offset) || offset < 0) throw new RangeError(`wasm memarg offset ${offset} must be a non-negative integer`);
    pushU32(this.code, ALIGN[width]);
    pushU32(this.code, offset);
    return this;
  }

  // control flow
  block(): this {
    return this.op(0x02, EMPTY_BLOCK);
  }
  loop(): this {
    return this.op(0x03, EMPTY_BLOCK);
  }
  if(): this {
    return this.op(0x04, EMPTY_BLOCK);
  }
  else(): this {
    return this.op(0x05);
  }
  end(): this {
    return this.op(0x0b);
  }
  br(depth: number): this {
    this.op(0x0c);
    pushU32(this.code, depth);
    return this;
  }
  brIf(depth: number): this {
    this.op(0x0d);
    pushU32(this.code, depth);
    return this;
  }
  return(): this {
    return this.op(0x0f);
  }
  call(funcIndex: number): this {
    this.op(0x10);
    pushU32(this.code, funcIndex);
    return this;
  }
  drop(): this {
    return this.op(0x1a);
  }

  // locals
  get(index: number): this {
    this.op(0x20);
    pushU32(this.code, index);
    return this;
  }
  set(index: number): this {
    this.op(0x21);
    pushU32(this.code, index);
    return this;
  }
  tee(index: number): this {
    this.op(0x22);
    pushU32(this.code, index);
    return this;
  }

  // i32
  i32(value: number): this {
    this.op(0x41);
    pushI32(this.code, value);
    return this;
  }
  i32Eqz(): this {
    return this.op(0x45);
  }
  i32Eq(): this {
    return this.op(0x46);
  }
  i32Ne(): this {
    return this.op(0x47);
  }
  i32LtS(): this {
    return this.op(0x48);
  }
  i32GtS(): this {
    return this.op(0x4a);
  }
  i32LeS(): this {
    return this.op(0x4c);
  }
  i32GeS(): this {
    return this.op(0x4e);
  }
  i32Add(): this {
    return this.op(0x6a);
  }
  i32Sub(): this {
    return this.op(0x6b);
  }
  i32Mul(): this {
    return this.op(0x6c);
  }
  i32And(): this {
    return this.op(0x71);
  }
  i32Or(): this {
    return this.op(0x72);
  }
  i32Shl(): this {
    return this.op(0x74);
  }
  i32ShrU(): this {
    return this.op(0x76);
  }
  select(): this {
    return this.op(0x1b);
  }
  i32Load(offset = 0): this {
    return this.op(0x28).memarg(4, offset);
  }
  i32Store(offset = 0): this {
    return this.op(0x36).memarg(4, offset);
  }

  // f32
  f32Load(offset = 0): this {
    return this.op(0x2a).memarg(4, offset);
  }
  f32Store(offset = 0): this {
    return this.op(0x38).memarg(4, offset);
  }

  // v128 / f32x4
  v128Load(offset = 0): this {
    return this.simd(0x00).memarg(16, offset);
  }
  v128Load32Splat(offset = 0): this {
    return this.simd(0x09).memarg(4, offset);
  }
  v128Store(offset = 0): this {
    return this.simd(0x0b).memarg(16, offset);
  }
  v128Zero(): this {
    this.simd(0x0c);
    this.code.push(...new Array<number>(16).fill(0));
    return this;
  }
  f32x4Splat(): this {
    return this.simd(0x13);
  }
  f32x4Add(): this {
    return this.simd(0xe4);
  }
  f32x4Mul(): this {
    return this.simd(0xe6);
  }
  /** pmax(a, b) = a < b ? b : a: one maxps, and relu(NaN) stays NaN as in PyTorch when a is the value. */
  f32x4Pmax(): this {
    return this.simd(0xeb);
  }
  /** Relaxed SIMD a * b + c (fused where the CPU has FMA); only valid where the engine ships relaxed SIMD. */
  f32x4RelaxedMadd(): this {
    return this.simd(0x105);
  }

  // used by the convolution and pooling kernels (kernels/conv/)
  i32ShrS(): this {
    return this.op(0x75);
  }
  i32DivU(): this {
    return this.op(0x6e);
  }
  i32RemU(): this {
    return this.op(0x70);
  }
  f32Add(): this {
    return this.op(0x92);
  }
  f32x4Sub(): this {
    return this.simd(0xe5);
  }
  /** max(a, b) per lane, NaN when either is NaN. */
  f32x4Div(): this {
    return this.simd(0xe7);
  }
  f32x4Max(): this {
    return this.simd(0xe9);
  }
  f32x4Gt(): this {
    return this.simd(0x44);
  }
  f32x4Ne(): this {
    return this.simd(0x42);
  }
  f32x4ExtractLane(lane: number): this {
    this.simd(0x1f);
    this.code.push(lane);
    return this;
  }
  i32x4Splat(): this {
    return this.simd(0x11);
  }
  i32x4Eq(): this {
    return this.simd(0x37);
  }
  v128And(): this {
    return this.simd(0x4e);
  }
  v128Or(): this {
    return this.simd(0x50);
  }
  /** bitselect(a, b, mask): bits of a where mask is 1, of b where it is 0. */
  v128Bitselect(): this {
    return this.simd(0x52);
  }

  /** The body as the code section wants it: size-prefixed, locals run-length encoded. */
  encode(): number[] {
    const body: number[] = [];
    const runs: [number, ValType][] = [];
    for (const t of this.localTypes) {
      const last = runs[runs.length - 1];
      if (last && last[1] === t) last[0]++;
      else runs.push([1, t]);
    }
    pushU32(body, runs.length);
    for (const [count, t] of runs) {
      pushU32(body, count);
      body.push(VALTYPE[t]);
    }
    append(body, this.code);
    body.push(0x0b);
    const out: number[] = [];
    pushU32(out, body.length);
    append(out, body);
    return out;
  }
}

/** A module whose functions all use one imported memory `env.memory` (shared, so worker threads can use it too). */
export class ModuleBuilder {
  private readonly functions: FunctionBuilder[] = [];
  private readonly exported = new Set<FunctionBuilder>();

  constructor(private readonly memory: { initial: number; maximum: number; shared: boolean }) {}

  /** Adds a function; its index (for `call`) is its position. Forward calls are fine: index it first, fill it later. */
  func(name: string, params: readonly ValType[], results: readonly ValType[] = [], exported = false): FunctionBuilder {
    const f = new FunctionBuilder(name, params, results);
    this.functions.push(f);
    if (exported) this.exported.add(f);
    return f;
  }

  indexOf(f: FunctionBuilder): number {
    return this.functions.indexOf(f);
  }

  toBytes(): Uint8Array {
    const out: number[] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    const section = (id: number, content: number[]): void => {
      out.push(id);
      pushU32(out, content.length);
      append(out, content);
    };

    const typeKeys: string[] = [];
    const typeOf = this.functions.map((f) => {
      const key = `${f.params.join(',')}>${f.results.join(',')}`;
      if (!typeKeys.includes(key)) typeKeys.push(key);
      return typeKeys.indexOf(key);
    });
    const types: number[] = [];
    pushU32(types, typeKeys.length);
    for (const key of typeKeys) {
      const [params, results] = key.split('>').map((s) => (s ? (s.split(',') as ValType[]) : []));
      types.push(0x60);
      pushU32(types, params!.length);
      for (const p of params!) types.push(VALTYPE[p]);
      pushU32(types, results!.length);
      for (const r of results!) types.push(VALTYPE[r]);
    }
    section(1, types);

    const imports: number[] = [];
    pushU32(imports, 1);
    pushName(imports, 'env');
    pushName(imports, 'memory');
    imports.push(0x02, this.memory.shared ? 0x03 : 0x01);
    pushU32(imports, this.memory.initial);
    pushU32(imports, this.memory.maximum);
    section(2, imports);

    const funcs: number[] = [];
    pushU32(funcs, this.functions.length);
    for (const t of typeOf) pushU32(funcs, t);
    section(3, funcs);

    const exports: number[] = [];
    pushU32(exports, this.exported.size);
    for (const f of this.exported) {
      pushName(exports, f.name);
      exports.push(0x00);
      pushU32(exports, this.indexOf(f));
    }
    section(7, exports);

    const code: number[] = [];
    pushU32(code, this.functions.length);
    for (const f of this.functions) append(code, f.encode());
    section(10, code);
    return Uint8Array.from(out);
  }
}
