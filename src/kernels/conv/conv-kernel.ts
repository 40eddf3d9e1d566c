/**
 * Emits kiln's wasm SIMD convolution and pooling module, in the GEMM kernel's style (simd-kernel.ts) and on
 * its one shared memory. Every kernel walks output pixels through an indirection table (window.ts): entry
 * (p, t) is the byte offset, from the input's base, of the channels-last pixel that tap t of output pixel p
 * reads, or −1 where the tap falls in the padding. That is XNNPACK's "indirect GEMM": the convolution never
 * writes im2row rows, its micro-kernel broadcasts each input value straight from the input (load32_splat at
 * four row pointers) against NR columns of the packed weight, and stride, padding and dilation live in the
 * table only. The kernels:
 *
 * - `conv`: out[p, j] = bias[j] + Σ_t Σ_c in[tap(p, t) + c] · B[t·C + c, j] (then ReLU), B packed by the GEMM's
 *   packB into NR-column panels; a padding tap reads a zero block. Tiles of MR pixels × NR channels in v128
 *   locals (4×8, as the GEMM), narrow right-edge tiles through a scratch tile.
 * - `col2im`: the input gradient's scatter, dx[tap(p, t) + c] += rows[p, t·C + c] over valid taps.
 * - `wgrad`: the weight gradient as the transposed product, dWᵀ[t·C + c, j] = Σ_p in[tap(p, t) + c] · g[p, j],
 *   4 channel rows × NR output channels a tile, pixels in blocks (accumulated) so a block of g stays in L1.
 * - `maxPool`, `avgPool` and their backward: channels in vectors of 4, the channel tail one lane at a time
 *   with the same code (loads splat one float, stores take lane 0). maxPoolBackward recomputes each window's
 *   winner exactly as the eager kernel picks it (the first valid tap, then a strictly greater value or a NaN),
 *   so the gradient goes where eager's indices send it.
 *
 * All addresses are bytes; the driver functions are exported.
 */

import { forBlocks, forLoop, min, emitCopy, type KernelConfig } from '../gemm/simd-kernel.js';
import { FunctionBuilder, ModuleBuilder } from '../gemm/wasm-encoder.js';
import { MAX_PAGES } from '../gemm/wasm-heap.js';
import { emitWinogradInput, emitWinogradOutput } from './winograd-kernel.js';

const I = 'i32' as const;
/** −∞ as f32 bits (0xff800000) */
const NEG_INF_BITS = -8388608;

/** The conv micro-kernel for `mr` pixel rows: params (inBase, zero, indRow, taps, C, bp, cp, ldcB, flags, biasp). */
function emitConvMicro(f: FunctionBuilder, cfg: KernelConfig, mr: number): void {
  const [inBase, zero, indRow, taps, C, bp, cp, ldcB, flags, biasp] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
  const nv = cfg.nr / 4;
  const acc: number[][] = [];
  for (let r = 0; r < mr; r++) acc.push(Array.from({ length: nv }, () => f.local('v128')));
  const b = Array.from({ length: nv }, () => f.local('v128'));
  const a = f.local('v128');
  const ptr = Array.from({ length: mr }, () => f.local('i32'));
  const t = f.local('i32');
  const n = f.local('i32');
  const rs = f.local('i32');
  const ia = f.local('i32');
  const off = f.local('i32');
  const row = f.local('i32');

  // bias row or zero
  f.get(flags).i32(2).i32And().if();
  for (let c = 0; c < nv; c++)
    f.get(biasp)
      .v128Load(16 * c)
      .set(b[c]!);
  f.else();
  for (let c = 0; c < nv; c++) f.v128Zero().set(b[c]!);
  f.end();
  for (let r = 0; r < mr; r++) for (let c = 0; c < nv; c++) f.get(b[c]!).set(acc[r]![c]!);

  f.get(taps).i32(2).i32Shl().set(rs);
  f.get(indRow).set(ia);
  f.i32(0).set(t);
  f.loop();
  // each row's pointer for tap t: the pixel's channels, or the zero block
  for (let r = 0; r < mr; r++) {
    f.get(ia);
    for (let q = 0; q < r; q++) f.get(rs).i32Add();
    f.i32Load().set(off);
    f.get(zero).get(inBase).get(off).i32Add().get(off).i32(0).i32LtS().select().set(ptr[r]!);
  }
  f.get(C).set(n);
  f.loop();
  for (let c = 0; c < nv; c++)
    f.get(bp)
      .v128Load(16 * c)
      .set(b[c]!);
  for (let r = 0; r < mr; r++) {
    f.get(ptr[r]!).v128Load32Splat().set(a);
    for (let c = 0; c < nv; c++) {
      if (cfg.relaxed) f.get(a).get(b[c]!).get(acc[r]![c]!).f32x4RelaxedMadd();
      else f.get(acc[r]![c]!).get(a).get(b[c]!).f32x4Mul().f32x4Add();
      f.set(acc[r]![c]!);
    }
    f.get(ptr[r]!).i32(4).i32Add().set(ptr[r]!);
  }
  f.get(bp)
    .i32(cfg.nr * 4)
    .i32Add()
    .set(bp);
  f.get(n).i32(1).i32Sub().tee(n).brIf(0);
  f.end();
  f.get(ia).i32(4).i32Add().set(ia);
  f.get(t).i32(1).i32Add().tee(t).get(taps).i32LtS().brIf(0);
  f.end();

  f.get(flags).i32(4).i32And().if();
  for (let r = 0; r < mr; r++) for (let c = 0; c < nv; c++) f.get(acc[r]![c]!).v128Zero().f32x4Pmax().set(acc[r]![c]!);
  f.end();
  f.get(cp).set(row);
  for (let r = 0; r < mr; r++) {
    if (r > 0) f.get(row).get(ldcB).i32Add().set(row);
    for (let c = 0; c < nv; c++)
      f.get(row)
        .get(acc[r]![c]!)
        .v128Store(16 * c);
  }
}

/** One conv tile, any mr ≤ MR and nr ≤ NR: params (inBase, zero, indRow, taps, C, bp, cp, ldcB, flags, biasp, mr, nr, scratch). */
function emitConvTile(f: FunctionBuilder, cfg: KernelConfig, micro: number[]): void {
  const [inBase, zero, indRow, taps, C, bp, cp, ldcB, flags, biasp, mr, nr, scratch] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
  const target = f.local('i32');
  const stride = f.local('i32');
  const narrow = f.local('i32');
  f.get(nr).i32(cfg.nr).i32LtS().set(narrow);
  f.get(scratch).get(cp).get(narrow).select().set(target);
  f.i32(cfg.nr * 4)
    .get(ldcB)
    .get(narrow)
    .select()
    .set(stride);
  for (let i = 1; i <= cfg.mr; i++) {
    f.get(mr).i32(i).i32Eq().if();
    f.get(inBase)
      .get(zero)
      .get(indRow)
      .get(taps)
      .get(C)
      .get(bp)
      .get(target)
      .get(stride)
      .get(flags)
      .get(biasp)
      .call(micro[i - 1]!);
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

/** conv(inBase, zero, ind, taps, C, bp, panelB, out, ldcB, p0, p1, N, flags, biasp, scratch): pixels [p0, p1). */
function emitConvDriver(f: FunctionBuilder, cfg: KernelConfig, tile: number): void {
  const [inBase, zero, ind, taps, C, bp, panelB, out, ldcB, p0, p1, N, flags, biasp, scratch] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
  ];
  const p = f.local('i32');
  const mr = f.local('i32');
  const jr = f.local('i32');
  const nr = f.local('i32');
  const bpj = f.local('i32');
  const indRow = f.local('i32');
  const cRow = f.local('i32');
  forLoop(
    f,
    p,
    () => f.get(p0),
    () => f.get(p1),
    cfg.mr,
    () => {
      min(
        f,
        () => f.i32(cfg.mr),
        () => f.get(p1).get(p).i32Sub(),
      );
      f.set(mr);
      f.get(ind).get(p).get(taps).i32Mul().i32(2).i32Shl().i32Add().set(indRow);
      f.get(out).get(p).get(ldcB).i32Mul().i32Add().set(cRow);
      f.get(bp).set(bpj);
      forBlocks(f, jr, nr, N, cfg.nr, () => {
        f.get(inBase).get(zero).get(indRow).get(taps).get(C).get(bpj);
        f.get(cRow).get(jr).i32(2).i32Shl().i32Add().get(ldcB).get(flags);
        f.get(biasp).get(jr).i32(2).i32Shl().i32Add();
        f.get(mr).get(nr).get(scratch).call(tile);
        f.get(bpj).get(panelB).i32Add().set(bpj);
      });
    },
  );
}

/**
 * A loop over C channels, in vectors of 4 then one at a time: `body(c, wide)` emits the work at byte offset
 * `c` (a local) of both operands, loading and storing with `ld`/`st`, which read 4 lanes or splat one float
 * and write 4 lanes or lane 0.
 */
interface Lanes {
  /** 4 lanes or 1 */
  readonly lanes: 4 | 1;
  /** push the value at [address on the stack] */
  ld(): void;
  /** store the v128 on the stack at [address pushed before it] */
  st(): void;
}
function channelLoop(f: FunctionBuilder, C: number, body: (c: number, lanes: Lanes) => void): void {
  const c = f.local('i32');
  const end4 = f.local('i32');
  const end = f.local('i32');
  f.get(C).i32(2).i32Shl().set(end);
  f.get(C).i32(-4).i32And().i32(2).i32Shl().set(end4);
  const wide: Lanes = { lanes: 4, ld: () => f.v128Load(), st: () => f.v128Store() };
  const one: Lanes = { lanes: 1, ld: () => f.v128Load32Splat(), st: () => f.f32x4ExtractLane(0).f32Store() };
  forLoop(
    f,
    c,
    () => f.i32(0),
    () => f.get(end4),
    16,
    () => body(c, wide),
  );
  forLoop(
    f,
    c,
    () => f.get(end4),
    () => f.get(end),
    4,
    () => body(c, one),
  );
}

/** Sets `off` to ind[p·taps + t] (bytes from the input base, −1 in the padding); `ia` walks the row. */
function tapLoop(f: FunctionBuilder, ind: number, p: number, taps: number, off: number, body: (t: number) => void): void {
  const t = f.local('i32');
  const ia = f.local('i32');
  f.get(ind).get(p).get(taps).i32Mul().i32(2).i32Shl().i32Add().set(ia);
  forLoop(
    f,
    t,
    () => f.i32(0),
    () => f.get(taps),
    1,
    () => {
      f.get(ia).get(t).i32(2).i32Shl().i32Add().i32Load().set(off);
      body(t);
    },
  );
}

/** col2im(rows, ldrB, ind, taps, C, dx, p0, p1): dx[tap(p, t) + c] += rows[(p − p0)·ldr + t·C + c]. */
function emitCol2im(f: FunctionBuilder): void {
  const [rows, ldrB, ind, taps, C, dx, p0, p1] = [0, 1, 2, 3, 4, 5, 6, 7];
  const p = f.local('i32');
  const off = f.local('i32');
  const src = f.local('i32');
  const dst = f.local('i32');
  const r = f.local('i32');
  f.get(rows).set(r);
  forLoop(
    f,
    p,
    () => f.get(p0),
    () => f.get(p1),
    1,
    () => {
      tapLoop(f, ind, p, taps, off, (t) => {
        f.get(off).i32(0).i32GeS().if();
        f.get(dx).get(off).i32Add().set(dst);
        f.get(r).get(t).get(C).i32Mul().i32(2).i32Shl().i32Add().set(src);
        channelLoop(f, C, (c, l) => {
          f.get(dst).get(c).i32Add();
          f.get(dst).get(c).i32Add();
          l.ld();
          f.get(src).get(c).i32Add();
          l.ld();
          f.f32x4Add();
          l.st();
        });
        f.end();
      });
      f.get(r).get(ldrB).i32Add().set(r);
    },
  );
}

/**
 * wgradTile{mr}(inBase, indT, rsB, cOffB, g, ldgB, P, dst, ldwB, accumulate): rows r < mr of
 * dWᵀ[c0 + r, j0..j0+NR) += Σ_p in[ind(p, t) + c0 + r] · g[p, j0..], with indT at entry (0, t) and rsB the
 * table's row stride; padding taps add nothing.
 */
function emitWgradTile(f: FunctionBuilder, cfg: KernelConfig, mr: number): void {
  const [inBase, indT, rsB, cOffB, g, ldgB, P, dst, ldwB, accumulate] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
  const nv = cfg.nr / 4;
  const acc: number[][] = [];
  for (let r = 0; r < mr; r++) acc.push(Array.from({ length: nv }, () => f.local('v128')));
  const gv = Array.from({ length: nv }, () => f.local('v128'));
  const a = f.local('v128');
  const n = f.local('i32');
  const off = f.local('i32');
  const src = f.local('i32');
  const row = f.local('i32');
  const eachRow = (fn: (r: number) => void): void => {
    f.get(dst).set(row);
    for (let r = 0; r < mr; r++) {
      if (r > 0) f.get(row).get(ldwB).i32Add().set(row);
      fn(r);
    }
  };
  f.get(accumulate).if();
  eachRow((r) => {
    for (let c = 0; c < nv; c++)
      f.get(row)
        .v128Load(16 * c)
        .set(acc[r]![c]!);
  });
  f.else();
  for (let r = 0; r < mr; r++) for (let c = 0; c < nv; c++) f.v128Zero().set(acc[r]![c]!);
  f.end();
  f.block();
  f.get(P).tee(n).i32Eqz().brIf(0);
  f.loop();
  f.get(indT).i32Load().tee(off).i32(0).i32GeS().if();
  f.get(inBase).get(off).i32Add().get(cOffB).i32Add().set(src);
  for (let c = 0; c < nv; c++)
    f.get(g)
      .v128Load(16 * c)
      .set(gv[c]!);
  for (let r = 0; r < mr; r++) {
    f.get(src)
      .v128Load32Splat(4 * r)
      .set(a);
    for (let c = 0; c < nv; c++) {
      if (cfg.relaxed) f.get(a).get(gv[c]!).get(acc[r]![c]!).f32x4RelaxedMadd();
      else f.get(acc[r]![c]!).get(a).get(gv[c]!).f32x4Mul().f32x4Add();
      f.set(acc[r]![c]!);
    }
  }
  f.end();
  f.get(indT).get(rsB).i32Add().set(indT);
  f.get(g).get(ldgB).i32Add().set(g);
  f.get(n).i32(1).i32Sub().tee(n).brIf(0);
  f.end();
  f.end();
  eachRow((r) => {
    for (let c = 0; c < nv; c++)
      f.get(row)
        .get(acc[r]![c]!)
        .v128Store(16 * c);
  });
}

/**
 * wgrad(inBase, ind, taps, C, g, ldgB, P, dw, ldwB, Npad, block): dWᵀ [taps·C, Npad] (row stride ldwB) of
 * pixels [0, P), g [P, Npad] with Npad a multiple of NR; pixels in blocks of `block`, later blocks accumulate.
 */
function emitWgradDriver(f: FunctionBuilder, cfg: KernelConfig, tiles: number[]): void {
  const [inBase, ind, taps, C, g, ldgB, P, dw, ldwB, Npad, block] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  const p0 = f.local('i32');
  const pn = f.local('i32');
  const t = f.local('i32');
  const c0 = f.local('i32');
  const mr = f.local('i32');
  const j0 = f.local('i32');
  const rsB = f.local('i32');
  f.get(taps).i32(2).i32Shl().set(rsB);
  // pixel blocks of `block` (a parameter, so not forBlocks)
  f.i32(0).set(p0);
  f.block().loop();
  f.get(p0).get(P).i32GeS().brIf(1);
  min(
    f,
    () => f.get(block),
    () => f.get(P).get(p0).i32Sub(),
  );
  f.set(pn);
  forLoop(
    f,
    t,
    () => f.i32(0),
    () => f.get(taps),
    1,
    () => {
      forLoop(
        f,
        c0,
        () => f.i32(0),
        () => f.get(C),
        cfg.mr,
        () => {
          min(
            f,
            () => f.i32(cfg.mr),
            () => f.get(C).get(c0).i32Sub(),
          );
          f.set(mr);
          forLoop(
            f,
            j0,
            () => f.i32(0),
            () => f.get(Npad),
            cfg.nr,
            () => {
              for (let i = 1; i <= cfg.mr; i++) {
                f.get(mr).i32(i).i32Eq().if();
                f.get(inBase);
                f.get(ind).get(p0).get(rsB).i32Mul().i32Add().get(t).i32(2).i32Shl().i32Add();
                f.get(rsB);
                f.get(c0).i32(2).i32Shl();
                f.get(g).get(p0).get(ldgB).i32Mul().i32Add().get(j0).i32(2).i32Shl().i32Add();
                f.get(ldgB).get(pn);
                f.get(dw).get(t).get(C).i32Mul().get(c0).i32Add().get(ldwB).i32Mul().i32Add().get(j0).i32(2).i32Shl().i32Add();
                f.get(ldwB).get(p0);
                f.call(tiles[i - 1]!);
                f.end();
              }
            },
          );
        },
      );
    },
  );
  f.get(p0).get(block).i32Add().set(p0);
  f.br(0).end().end();
}

/**
 * maxPool(inBase, ind, taps, C, out, PL, nB, pB, cB, p0, p1) and avgPool(…, div): the value of channel c of
 * output pixel p over its valid taps (a window always has one), max with NaN winning or the sum divided by
 * div[p], stored at out + ⌊p / PL⌋·nB + (p mod PL)·pB + c·cB: channels-last with cB = 4 (vector stores), NCHW
 * with PL = OH·OW, pB = 4 and cB = PL·4 (a lane at a time).
 */
function emitPool(f: FunctionBuilder, kind: 'max' | 'avg'): void {
  const [inBase, ind, taps, C, out, PL, nB, pB, cB, p0, p1, div] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
  const p = f.local('i32');
  const off = f.local('i32');
  const o = f.local('i32');
  const acc = f.local('v128');
  const dst = f.local('i32');
  const wide = f.local('i32');
  f.get(cB).i32(4).i32Eq().set(wide);
  forLoop(
    f,
    p,
    () => f.get(p0),
    () => f.get(p1),
    1,
    () => {
      f.get(out).get(p).get(PL).i32DivU().get(nB).i32Mul().i32Add().get(p).get(PL).i32RemU().get(pB).i32Mul().i32Add().set(o);
      channelLoop(f, C, (c, l) => {
        if (kind === 'max') f.i32(NEG_INF_BITS).i32x4Splat().set(acc);
        else f.v128Zero().set(acc);
        tapLoop(f, ind, p, taps, off, () => {
          f.get(off).i32(0).i32GeS().if();
          f.get(acc).get(inBase).get(off).i32Add().get(c).i32Add();
          l.ld();
          if (kind === 'max') f.f32x4Max();
          else f.f32x4Add();
          f.set(acc).end();
        });
        if (kind === 'avg') f.get(acc).get(div).get(p).i32(2).i32Shl().i32Add().v128Load32Splat().f32x4Div().set(acc);
        // c is a byte offset into the channels: channel k sits at o + (c / 4 + k)·cB
        f.get(o).get(c).i32(2).i32ShrU().get(cB).i32Mul().i32Add().set(dst);
        if (l.lanes === 1) {
          f.get(dst).get(acc).f32x4ExtractLane(0).f32Store();
          return;
        }
        f.get(wide).if();
        f.get(dst).get(acc).v128Store();
        f.else();
        for (let k = 0; k < 4; k++) {
          if (k > 0) f.get(dst).get(cB).i32Add().set(dst);
          f.get(dst).get(acc).f32x4ExtractLane(k).f32Store();
        }
        f.end();
      });
    },
  );
}

/**
 * maxPoolBackward(inBase, ind, taps, C, g, ldgB, gx, p0, p1): per pixel and channel, the eager kernel's
 * winner (first valid tap, then a strictly greater value or a NaN), then gx[winner] += g[p, c].
 */
function emitMaxPoolBackward(f: FunctionBuilder): void {
  const [inBase, ind, taps, C, g, ldgB, gx, p0, p1] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const p = f.local('i32');
  const off = f.local('i32');
  const best = f.local('v128');
  const sel = f.local('v128');
  const x = f.local('v128');
  const upd = f.local('v128');
  const gp = f.local('v128');
  forLoop(
    f,
    p,
    () => f.get(p0),
    () => f.get(p1),
    1,
    () => {
      channelLoop(f, C, (c, l) => {
        f.i32(NEG_INF_BITS).i32x4Splat().set(best);
        f.i32(-1).i32x4Splat().set(sel);
        tapLoop(f, ind, p, taps, off, (t) => {
          f.get(off).i32(0).i32GeS().if();
          f.get(inBase).get(off).i32Add().get(c).i32Add();
          l.ld();
          f.set(x);
          // upd = x > best | x ≠ x | nothing chosen yet
          f.get(x).get(best).f32x4Gt();
          f.get(x).get(x).f32x4Ne().v128Or();
          f.get(sel).i32(-1).i32x4Splat().i32x4Eq().v128Or().set(upd);
          f.get(x).get(best).get(upd).v128Bitselect().set(best);
          f.get(t).i32x4Splat().get(sel).get(upd).v128Bitselect().set(sel);
          f.end();
        });
        f.get(g).get(p).get(ldgB).i32Mul().i32Add().get(c).i32Add();
        l.ld();
        f.set(gp);
        tapLoop(f, ind, p, taps, off, (t) => {
          f.get(off).i32(0).i32GeS().if();
          f.get(gx).get(off).i32Add().get(c).i32Add();
          f.get(gx).get(off).i32Add().get(c).i32Add();
          l.ld();
          f.get(gp).get(sel).get(t).i32x4Splat().i32x4Eq().v128And();
          f.f32x4Add();
          l.st();
          f.end();
        });
      });
    },
  );
}

/** avgPoolBackward(ind, taps, C, g, ldgB, div, gx, p0, p1): gx[tap(p, t) + c] += g[p, c] / div[p] over valid taps. */
function emitAvgPoolBackward(f: FunctionBuilder): void {
  const [ind, taps, C, g, ldgB, div, gx, p0, p1] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const p = f.local('i32');
  const off = f.local('i32');
  const gp = f.local('v128');
  forLoop(
    f,
    p,
    () => f.get(p0),
    () => f.get(p1),
    1,
    () => {
      channelLoop(f, C, (c, l) => {
        f.get(g).get(p).get(ldgB).i32Mul().i32Add().get(c).i32Add();
        l.ld();
        f.get(div).get(p).i32(2).i32Shl().i32Add().v128Load32Splat().f32x4Div().set(gp);
        tapLoop(f, ind, p, taps, off, () => {
          f.get(off).i32(0).i32GeS().if();
          f.get(gx).get(off).i32Add().get(c).i32Add();
          f.get(gx).get(off).i32Add().get(c).i32Add();
          l.ld();
          f.get(gp).f32x4Add();
          l.st();
          f.end();
        });
      });
    },
  );
}

/** Builds the convolution and pooling module's bytes for the GEMM's tile configuration. */
export function buildConvModule(cfg: KernelConfig): Uint8Array {
  const m = new ModuleBuilder({ initial: 1, maximum: MAX_PAGES, shared: true });
  const micro: FunctionBuilder[] = [];
  for (let mr = 1; mr <= cfg.mr; mr++) micro.push(m.func(`convMicro${mr}`, [I, I, I, I, I, I, I, I, I, I]));
  micro.forEach((f, i) => emitConvMicro(f, cfg, i + 1));
  const tile = m.func('convTile', [I, I, I, I, I, I, I, I, I, I, I, I, I]);
  emitConvTile(
    tile,
    cfg,
    micro.map((f) => m.indexOf(f)),
  );
  emitConvDriver(m.func('conv', new Array<typeof I>(15).fill(I), [], true), cfg, m.indexOf(tile));
  emitCol2im(m.func('col2im', new Array<typeof I>(8).fill(I), [], true));
  const wtiles: FunctionBuilder[] = [];
  for (let mr = 1; mr <= cfg.mr; mr++) wtiles.push(m.func(`wgradTile${mr}`, new Array<typeof I>(10).fill(I)));
  wtiles.forEach((f, i) => emitWgradTile(f, cfg, i + 1));
  emitWgradDriver(
    m.func('wgrad', new Array<typeof I>(11).fill(I), [], true),
    cfg,
    wtiles.map((f) => m.indexOf(f)),
  );
  emitPool(m.func('maxPool', new Array<typeof I>(11).fill(I), [], true), 'max');
  emitPool(m.func('avgPool', new Array<typeof I>(12).fill(I), [], true), 'avg');
  emitMaxPoolBackward(m.func('maxPoolBackward', new Array<typeof I>(9).fill(I), [], true));
  emitAvgPoolBackward(m.func('avgPoolBackward', new Array<typeof I>(9).fill(I), [], true));
  emitWinogradInput(m.func('winoInput', new Array<typeof I>(13).fill(I), [], true));
  emitWinogradOutput(m.func('winoOutput', new Array<typeof I>(12).fill(I), [], true));
  return m.toBytes();
}
