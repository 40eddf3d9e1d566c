/**
 * Emits kiln's wasm SIMD GEMM module: C[M×N] (+)= A[M×K] · B[K×N], with the bias + ReLU epilogue fused into the
 * final store. It is the classic GotoBLAS/BLIS structure scaled down to 128-bit wasm SIMD:
 *
 * - B is packed once into panels of NR columns, [⌈N/NR⌉][K][NR], zero-padded on the right (weights keep
 *   theirs packed); A is packed per block into micro-panels of MR rows, [⌈mc/MR⌉][kc][MR], the last one
 *   [kc][mr] (its own micro-kernel, so no flops are wasted on padding rows).
 * - The micro-kernel holds an mr×NR tile of C in v128 locals (MR·NR/4 of them, kept within x64's 16 xmm
 *   registers so TurboFan never spills), and per k broadcasts one A value per row (load32_splat) against NR/4
 *   vectors of B: f32x4.mul + f32x4.add (no FMA in Node 20's wasm; relaxed_madd when the engine has it).
 *   K can be unrolled U times with constant load offsets (runtime.ts says why the chosen U is 1).
 * - K is split into KC blocks and M into MC blocks so a packed A block stays in L2 and a B micro-panel
 *   (kc×NR) in L1 while the macro-kernel walks all row tiles under it; blocks after the first accumulate
 *   into C, the last applies ReLU.
 * - Tiles narrower than NR (the right edge) go through a per-thread scratch tile and copy back, so any
 *   M, N, K ≥ 1 works with no out-of-bounds stores.
 *
 * All pointers are byte addresses into the one shared memory; `gemm`, `packA` and `packB` are exported.
 */

import { FunctionBuilder, ModuleBuilder } from './wasm-encoder.js';
import { MAX_PAGES } from './wasm-heap.js';

export interface KernelConfig {
  /** Rows of the register tile (1..8). */
  readonly mr: number;
  /** Columns of the register tile, a multiple of 4. */
  readonly nr: number;
  /** K unroll factor of the micro-kernel loop, a power of two. */
  readonly unroll: number;
  /** K block (packed A block depth), in elements. */
  readonly kc: number;
  /** M block (packed A block height), a multiple of mr. */
  readonly mc: number;
  /** Use f32x4.relaxed_madd instead of mul + add. */
  readonly relaxed: boolean;
}

/** Micro-kernel flags: where the tile starts from and whether ReLU runs before the store. */
export const FLAG_ACCUMULATE = 1;
export const FLAG_BIAS = 2;
export const FLAG_RELU = 4;

export function scratchBytes(cfg: KernelConfig): { apack: number; tile: number } {
  return { apack: cfg.mc * cfg.kc * 4, tile: cfg.mr * cfg.nr * 4 };
}

type Body = () => void;
const I = 'i32' as const;

/** `for (i = start; i < end; i += step) body` with i, end already-evaluated by the emitters given. */
export function forLoop(f: FunctionBuilder, i: number, start: Body, end: Body, step: number, body: Body): void {
  start();
  f.set(i);
  f.block().loop();
  f.get(i);
  end();
  f.i32GeS().brIf(1);
  body();
  f.get(i).i32(step).i32Add().set(i);
  f.br(0).end().end();
}

/** Pushes min(a, b) of two i32 locals/expressions (each emitter pushes one value). */
export function min(f: FunctionBuilder, a: Body, b: Body): void {
  a();
  b();
  a();
  b();
  f.i32LtS().select();
}

/**
 * `for (i = 0; i < end; i += step) { len = min(step, end − i); body }`: blocks of `step`, the last one short.
 * `end` is a local.
 */
export function forBlocks(f: FunctionBuilder, i: number, len: number, end: number, step: number, body: Body): void {
  forLoop(
    f,
    i,
    () => f.i32(0),
    () => f.get(end),
    step,
    () => {
      min(
        f,
        () => f.i32(step),
        () => f.get(end).get(i).i32Sub(),
      );
      f.set(len);
      body();
    },
  );
}

function emitMicroKernel(f: FunctionBuilder, cfg: KernelConfig, mr: number): void {
  // params: ap, bp, cp, ldcB, kc, flags, biasp
  const [ap, bp, cp, ldcB, kc, flags, biasp] = [0, 1, 2, 3, 4, 5, 6];
  const nv = cfg.nr / 4;
  const acc: number[][] = [];
  for (let r = 0; r < mr; r++) acc.push(Array.from({ length: nv }, () => f.local('v128')));
  const b = Array.from({ length: nv }, () => f.local('v128'));
  const a = f.local('v128');
  const row = f.local('i32');
  const n = f.local('i32');
  const U = cfg.unroll;

  // Start the tile from C (a later K block), the bias row, or zero.
  const eachRow = (fn: (r: number) => void): void => {
    f.get(cp).set(row);
    for (let r = 0; r < mr; r++) {
      if (r > 0) f.get(row).get(ldcB).i32Add().set(row);
      fn(r);
    }
  };
  f.get(flags).i32(FLAG_ACCUMULATE).i32And().if();
  eachRow((r) => {
    for (let c = 0; c < nv; c++)
      f.get(row)
        .v128Load(16 * c)
        .set(acc[r]![c]!);
  });
  f.else();
  f.get(flags).i32(FLAG_BIAS).i32And().if();
  for (let c = 0; c < nv; c++)
    f.get(biasp)
      .v128Load(16 * c)
      .set(b[c]!);
  f.else();
  for (let c = 0; c < nv; c++) f.v128Zero().set(b[c]!);
  f.end();
  for (let r = 0; r < mr; r++) for (let c = 0; c < nv; c++) f.get(b[c]!).set(acc[r]![c]!);
  f.end();

  const step = (u: number): void => {
    for (let c = 0; c < nv; c++)
      f.get(bp)
        .v128Load((u * cfg.nr + 4 * c) * 4)
        .set(b[c]!);
    for (let r = 0; r < mr; r++) {
      f.get(ap)
        .v128Load32Splat((u * mr + r) * 4)
        .set(a);
      for (let c = 0; c < nv; c++) {
        if (cfg.relaxed) f.get(a).get(b[c]!).get(acc[r]![c]!).f32x4RelaxedMadd();
        else f.get(acc[r]![c]!).get(a).get(b[c]!).f32x4Mul().f32x4Add();
        f.set(acc[r]![c]!);
      }
    }
  };
  const kLoop = (count: Body, steps: number): void => {
    count();
    f.tee(n).i32Eqz().brIf(0);
    f.loop();
    for (let u = 0; u < steps; u++) step(u);
    f.get(ap)
      .i32(steps * mr * 4)
      .i32Add()
      .set(ap);
    f.get(bp)
      .i32(steps * cfg.nr * 4)
      .i32Add()
      .set(bp);
    f.get(n).i32(1).i32Sub().tee(n).brIf(0);
    f.end();
  };
  f.block();
  kLoop(() => f.get(kc).i32(Math.log2(U)).i32ShrU(), U);
  f.end();
  f.block();
  kLoop(
    () =>
      f
        .get(kc)
        .i32(U - 1)
        .i32And(),
    1,
  );
  f.end();

  f.get(flags).i32(FLAG_RELU).i32And().if();
  for (let r = 0; r < mr; r++) {
    for (let c = 0; c < nv; c++) f.get(acc[r]![c]!).v128Zero().f32x4Pmax().set(acc[r]![c]!);
  }
  f.end();
  eachRow((r) => {
    for (let c = 0; c < nv; c++)
      f.get(row)
        .get(acc[r]![c]!)
        .v128Store(16 * c);
  });
}

/** Copies an mr×nr block of floats between two row strides (bytes). */
export function emitCopy(f: FunctionBuilder, src: number, srcStride: Body, dst: number, dstStride: Body, mr: number, nr: number): void {
  const r = f.local('i32');
  const c = f.local('i32');
  const s = f.local('i32');
  const d = f.local('i32');
  forLoop(
    f,
    r,
    () => f.i32(0),
    () => f.get(mr),
    1,
    () => {
      f.get(src).get(r);
      srcStride();
      f.i32Mul().i32Add().set(s);
      f.get(dst).get(r);
      dstStride();
      f.i32Mul().i32Add().set(d);
      forLoop(
        f,
        c,
        () => f.i32(0),
        () => f.get(nr),
        1,
        () => {
          f.get(d).get(c).i32(2).i32Shl().i32Add();
          f.get(s).get(c).i32(2).i32Shl().i32Add().f32Load();
          f.f32Store();
        },
      );
    },
  );
}

/** Builds the module's bytes for one configuration. */
/** `micro[mr - 1]` is the function index of the mr-row micro-kernel. */
function emitTile(f: FunctionBuilder, cfg: KernelConfig, micro: number[]): void {
  const [ap, bp, cp, ldcB, kc, flags, biasp, mr, nr, scratch] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
  const target = f.local('i32');
  const stride = f.local('i32');
  const narrow = f.local('i32');
  f.get(nr).i32(cfg.nr).i32LtS().set(narrow);
  // A narrow tile computes in the scratch tile (row stride NR) and copies its nr valid columns back.
  f.get(cp).set(target);
  f.get(ldcB).set(stride);
  f.get(narrow).if();
  f.get(scratch).set(target);
  f.i32(cfg.nr * 4).set(stride);
  f.get(flags).i32(FLAG_ACCUMULATE).i32And().if();
  emitCopy(
    f,
    cp,
    () => f.get(ldcB),
    scratch,
    () => f.i32(cfg.nr * 4),
    mr,
    nr,
  );
  f.end();
  f.end();
  for (let i = 0; i < cfg.mr; i++) {
    f.get(mr)
      .i32(cfg.mr - i)
      .i32Eq()
      .if();
    f.get(ap)
      .get(bp)
      .get(target)
      .get(stride)
      .get(kc)
      .get(flags)
      .get(biasp)
      .call(micro[cfg.mr - i - 1]!);
    f.end();
  }
  f.get(narrow).if();
  emitCopy(
    f,
    scratch,
    () => f.i32(cfg.nr * 4),
    cp,
    () => f.get(ldcB),
    mr,
    nr,
  );
  f.end();
}

function emitPackA(f: FunctionBuilder, cfg: KernelConfig): void {
  const [src, ldaB, mc, kc, dst] = [0, 1, 2, 3, 4];
  const i = f.local('i32');
  const mr = f.local('i32');
  const k = f.local('i32');
  const r = f.local('i32');
  const rowBase = f.local('i32');
  const col = f.local('i32');
  forBlocks(f, i, mr, mc, cfg.mr, () => {
    f.get(src).get(i).get(ldaB).i32Mul().i32Add().set(rowBase);
    f.get(mr).i32(cfg.mr).i32Eq().if();
    // Full micro-panel: MR loads per k with constant row offsets would need ldaB at build time, so walk
    // k with one column pointer and step rows by ldaB.
    forLoop(
      f,
      k,
      () => f.i32(0),
      () => f.get(kc),
      1,
      () => {
        f.get(rowBase).get(k).i32(2).i32Shl().i32Add().set(col);
        for (let rr = 0; rr < cfg.mr; rr++) {
          f.get(dst)
            .get(col)
            .f32Load()
            .f32Store(rr * 4);
          if (rr < cfg.mr - 1) f.get(col).get(ldaB).i32Add().set(col);
        }
        f.get(dst)
          .i32(cfg.mr * 4)
          .i32Add()
          .set(dst);
      },
    );
    f.else();
    forLoop(
      f,
      k,
      () => f.i32(0),
      () => f.get(kc),
      1,
      () => {
        forLoop(
          f,
          r,
          () => f.i32(0),
          () => f.get(mr),
          1,
          () => {
            f.get(dst);
            f.get(rowBase).get(r).get(ldaB).i32Mul().i32Add().get(k).i32(2).i32Shl().i32Add().f32Load();
            f.f32Store();
            f.get(dst).i32(4).i32Add().set(dst);
          },
        );
      },
    );
    f.end();
  });
}

function emitPackB(f: FunctionBuilder, cfg: KernelConfig): void {
  const [src, skB, sjB, K, N, dst] = [0, 1, 2, 3, 4, 5];
  const j = f.local('i32');
  const k = f.local('i32');
  const c = f.local('i32');
  const p = f.local('i32');
  const fast = f.local('i32');
  const q = f.local('i32');
  forLoop(
    f,
    j,
    () => f.i32(0),
    () => f.get(N),
    cfg.nr,
    () => {
      // Row-major B with a full panel: NR/4 vector copies per k.
      f.get(sjB).i32(4).i32Eq().get(N).get(j).i32Sub().i32(cfg.nr).i32GeS().i32And().set(fast);
      forLoop(
        f,
        k,
        () => f.i32(0),
        () => f.get(K),
        1,
        () => {
          f.get(src).get(k).get(skB).i32Mul().i32Add().get(j).get(sjB).i32Mul().i32Add().set(p);
          f.get(fast).if();
          for (let v = 0; v < cfg.nr / 4; v++)
            f.get(dst)
              .get(p)
              .v128Load(16 * v)
              .v128Store(16 * v);
          f.else();
          forLoop(
            f,
            c,
            () => f.i32(0),
            () => f.i32(cfg.nr),
            1,
            () => {
              // Zero first, then the value where the column exists: padding reads nothing past B.
              f.get(dst).get(c).i32(2).i32Shl().i32Add().tee(q).i32(0).i32Store();
              f.get(j).get(c).i32Add().get(N).i32LtS().if();
              f.get(q).get(p).get(c).get(sjB).i32Mul().i32Add().f32Load().f32Store();
              f.end();
            },
          );
          f.end();
          f.get(dst)
            .i32(cfg.nr * 4)
            .i32Add()
            .set(dst);
        },
      );
    },
  );
}

function emitDriver(f: FunctionBuilder, cfg: KernelConfig, packA: number, tile: number): void {
  const [a, ldaB, bp, panelB, c, ldcB, M, N, K, flags, biasp, apack, scratch] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
  const pc = f.local('i32');
  const kc = f.local('i32');
  const ic = f.local('i32');
  const mc = f.local('i32');
  const fl = f.local('i32');
  const jr = f.local('i32');
  const ir = f.local('i32');
  const bpj = f.local('i32');
  const nr = f.local('i32');
  const mr = f.local('i32');
  forBlocks(f, pc, kc, K, cfg.kc, () => {
    // First K block starts from bias or zero, later ones accumulate; only the last applies ReLU.
    f.get(pc).if();
    f.i32(FLAG_ACCUMULATE).set(fl);
    f.else();
    f.get(flags).i32(FLAG_BIAS).i32And().set(fl);
    f.end();
    f.get(pc).get(kc).i32Add().get(K).i32Eq().if();
    f.get(fl).get(flags).i32(FLAG_RELU).i32And().i32Or().set(fl);
    f.end();
    forBlocks(f, ic, mc, M, cfg.mc, () => {
      f.get(a).get(ic).get(ldaB).i32Mul().i32Add().get(pc).i32(2).i32Shl().i32Add();
      f.get(ldaB).get(mc).get(kc).get(apack).call(packA);
      // Macro-kernel: each B micro-panel (kc×NR, L1) against every row tile of the packed A block (L2).
      f.get(bp)
        .get(pc)
        .i32(cfg.nr * 4)
        .i32Mul()
        .i32Add()
        .set(bpj);
      forBlocks(f, jr, nr, N, cfg.nr, () => {
        forBlocks(f, ir, mr, mc, cfg.mr, () => {
          f.get(apack).get(ir).get(kc).i32Mul().i32(2).i32Shl().i32Add();
          f.get(bpj);
          f.get(c).get(ic).get(ir).i32Add().get(ldcB).i32Mul().i32Add().get(jr).i32(2).i32Shl().i32Add();
          f.get(ldcB).get(kc).get(fl);
          f.get(biasp).get(jr).i32(2).i32Shl().i32Add();
          f.get(mr).get(nr).get(scratch).call(tile);
        });
        f.get(bpj).get(panelB).i32Add().set(bpj);
      });
    });
  });
}

/** Builds the module's bytes for one configuration. */
export function buildGemmModule(cfg: KernelConfig): Uint8Array {
  if (cfg.nr % 4 !== 0 || cfg.mr < 1 || cfg.mc % cfg.mr !== 0 || (cfg.unroll & (cfg.unroll - 1)) !== 0) {
    throw new RangeError(`bad GEMM kernel config ${JSON.stringify(cfg)}`);
  }
  const m = new ModuleBuilder({ initial: 1, maximum: MAX_PAGES, shared: true });
  const micro: FunctionBuilder[] = [];
  for (let mr = 1; mr <= cfg.mr; mr++) micro.push(m.func(`micro${mr}`, [I, I, I, I, I, I, I]));
  micro.forEach((f, i) => emitMicroKernel(f, cfg, i + 1));
  // tile(ap, bp, cp, ldcB, kc, flags, biasp, mr, nr, scratch): one register tile, any mr ≤ MR, nr ≤ NR.
  const tile = m.func('tile', [I, I, I, I, I, I, I, I, I, I]);
  emitTile(
    tile,
    cfg,
    micro.map((f) => m.indexOf(f)),
  );
  // packA(src, ldaB, mc, kc, dst): rows of A → micro-panels [⌈mc/MR⌉][kc][mr].
  const packA = m.func('packA', [I, I, I, I, I], [], true);
  emitPackA(packA, cfg);
  // packB(src, skB, sjB, K, N, dst): element (k, j) at src + k·skB + j·sjB → panels [⌈N/NR⌉][K][NR], zero-padded.
  emitPackB(m.func('packB', [I, I, I, I, I, I], [], true), cfg);
  // gemm(a, ldaB, bp, panelB, c, ldcB, M, N, K, flags, biasp, apack, scratch): the blocked driver.
  emitDriver(m.func('gemm', [I, I, I, I, I, I, I, I, I, I, I, I, I], [], true), cfg, m.indexOf(packA), m.indexOf(tile));
  return m.toBytes();
}
