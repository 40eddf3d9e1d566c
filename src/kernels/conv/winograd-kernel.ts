/**
 * The wasm SIMD transforms of Winograd's F(2×2, 3×3) convolution (Lavin & Gray, "Fast Algorithms for
 * Convolutional Neural Networks", 2016), for a 3×3 stride-1 conv over a channels-last input: each 2×2 output
 * tile is Aᵀ [Σ_c (G g_c Gᵀ) ⊙ (Bᵀ d_c B)] A, with d_c the 4×4 input patch of channel c. The 16 element-wise
 * products summed over channels are 16 GEMMs [tiles, C] × [C, O] (run by the GEMM's batched job), so the
 * multiplies fall from 9 to 4 per output and channel (2.25×), for two cheap transforms:
 *
 * - `winoInput(inBase, zero, H, W, C, ph, pw, TH, TW, t0, t1, V, planeB)`: for tiles q ∈ [t0, t1) (q = (n, th,
 *   tw) row-major, TH×TW tiles an image), V[i·4 + j][q − t0][c] = (Bᵀ d B)[i][j] over channels in vectors of 4
 *   (C a multiple of 4), with d read at rows 2·th − ph + i, columns 2·tw − pw + j (a zero block outside);
 * - `winoOutput(M, planeB, O, OH, OW, TH, TW, t0, t1, out, biasp, flags)`: out[n, 2·th + a, 2·tw + b, o] =
 *   (Aᵀ m A)[a][b] + bias[o] (then ReLU) for the outputs inside the image, m[i·4 + j] = M[i·4 + j][q − t0][o].
 *
 * Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]], Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]].
 */

import { forLoop } from '../gemm/simd-kernel.js';
import { type FunctionBuilder } from '../gemm/wasm-encoder.js';

/** (Bᵀ x B) in place over a 4×4 grid of v128 locals, rows then columns. */
function inputTransform(f: FunctionBuilder, d: number[], t: number): void {
  const at = (i: number, j: number) => d[i * 4 + j]!;
  const pass = (get: (k: number) => number): void => {
    const [x0, x1, x2, x3] = [get(0), get(1), get(2), get(3)];
    // y0 = x0 − x2, y1 = x1 + x2, y2 = x2 − x1, y3 = x1 − x3 (x1 kept in t while y1 overwrites it)
    f.get(x1).set(t);
    f.get(x0).get(x2).f32x4Sub().set(x0);
    f.get(t).get(x2).f32x4Add().set(x1);
    f.get(x2).get(t).f32x4Sub().set(x2);
    f.get(t).get(x3).f32x4Sub().set(x3);
  };
  for (let i = 0; i < 4; i++) pass((k) => at(i, k));
  for (let j = 0; j < 4; j++) pass((k) => at(k, j));
}

export function emitWinogradInput(f: FunctionBuilder): void {
  const [inBase, zero, H, W, C, ph, pw, TH, TW, t0, t1, V, planeB] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
  const q = f.local('i32');
  const n = f.local('i32');
  const h0 = f.local('i32');
  const w0 = f.local('i32');
  const c = f.local('i32');
  const cEnd = f.local('i32');
  const row = f.local('i32');
  const dst = f.local('i32');
  const h = f.local('i32');
  const w = f.local('i32');
  const addr = Array.from({ length: 16 }, () => f.local('i32'));
  const d = Array.from({ length: 16 }, () => f.local('v128'));
  const t = f.local('v128');
  f.get(C).i32(2).i32Shl().set(cEnd);
  forLoop(
    f,
    q,
    () => f.get(t0),
    () => f.get(t1),
    1,
    () => {
      // n, th, tw → the patch's top-left pixel
      f.get(q).get(TH).get(TW).i32Mul().i32DivU().set(n);
      f.get(q).get(TW).i32DivU().get(TH).i32RemU().i32(1).i32Shl().get(ph).i32Sub().set(h0);
      f.get(q).get(TW).i32RemU().i32(1).i32Shl().get(pw).i32Sub().set(w0);
      for (let i = 0; i < 4; i++) {
        f.get(h0).i32(i).i32Add().set(h);
        for (let j = 0; j < 4; j++) {
          f.get(w0).i32(j).i32Add().set(w);
          // the zero block when (h, w) is outside, else inBase + ((n·H + h)·W + w)·C·4
          f.get(zero);
          f.get(inBase).get(n).get(H).i32Mul().get(h).i32Add().get(W).i32Mul().get(w).i32Add().get(cEnd).i32Mul().i32Add();
          f.get(h).i32(0).i32LtS().get(h).get(H).i32GeS().i32Or().get(w).i32(0).i32LtS().i32Or().get(w).get(W).i32GeS().i32Or();
          f.select().set(addr[i * 4 + j]!);
        }
      }
      f.get(V).get(q).get(t0).i32Sub().get(cEnd).i32Mul().i32Add().set(row);
      forLoop(
        f,
        c,
        () => f.i32(0),
        () => f.get(cEnd),
        16,
        () => {
          for (let k = 0; k < 16; k++) f.get(addr[k]!).get(c).i32Add().v128Load().set(d[k]!);
          inputTransform(f, d, t);
          f.get(row).get(c).i32Add().set(dst);
          for (let k = 0; k < 16; k++) {
            if (k > 0) f.get(dst).get(planeB).i32Add().set(dst);
            f.get(dst).get(d[k]!).v128Store();
          }
        },
      );
    },
  );
}

export function emitWinogradOutput(f: FunctionBuilder): void {
  const [M, planeB, O, OH, OW, TH, TW, t0, t1, out, biasp, flags] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
  const q = f.local('i32');
  const n = f.local('i32');
  const oh = f.local('i32');
  const ow = f.local('i32');
  const o = f.local('i32');
  const oEnd = f.local('i32');
  const src = f.local('i32');
  const rowB = f.local('i32');
  const base = f.local('i32');
  const right = f.local('i32');
  const below = f.local('i32');
  const m = Array.from({ length: 16 }, () => f.local('v128'));
  const s = Array.from({ length: 8 }, () => f.local('v128'));
  const y = Array.from({ length: 4 }, () => f.local('v128'));
  const bias = f.local('v128');
  f.get(O).i32(2).i32Shl().set(oEnd);
  f.get(OW).get(oEnd).i32Mul().set(rowB);
  forLoop(
    f,
    q,
    () => f.get(t0),
    () => f.get(t1),
    1,
    () => {
      f.get(q).get(TH).get(TW).i32Mul().i32DivU().set(n);
      f.get(q).get(TW).i32DivU().get(TH).i32RemU().i32(1).i32Shl().set(oh);
      f.get(q).get(TW).i32RemU().i32(1).i32Shl().set(ow);
      f.get(ow).i32(1).i32Add().get(OW).i32LtS().set(right);
      f.get(oh).i32(1).i32Add().get(OH).i32LtS().set(below);
      f.get(out).get(n).get(OH).i32Mul().get(oh).i32Add().get(rowB).i32Mul().i32Add().get(ow).get(oEnd).i32Mul().i32Add().set(base);
      forLoop(
        f,
        o,
        () => f.i32(0),
        () => f.get(oEnd),
        16,
        () => {
          f.get(M).get(q).get(t0).i32Sub().get(oEnd).i32Mul().i32Add().get(o).i32Add().set(src);
          for (let k = 0; k < 16; k++) {
            if (k > 0) f.get(src).get(planeB).i32Add().set(src);
            f.get(src).v128Load().set(m[k]!);
          }
          // columns: s0[j] = m0j + m1j + m2j, s1[j] = m1j − m2j − m3j
          for (let j = 0; j < 4; j++) {
            f.get(m[j]!)
              .get(m[4 + j]!)
              .f32x4Add()
              .get(m[8 + j]!)
              .f32x4Add()
              .set(s[j]!);
            f.get(m[4 + j]!)
              .get(m[8 + j]!)
              .f32x4Sub()
              .get(m[12 + j]!)
              .f32x4Sub()
              .set(s[4 + j]!);
          }
          // rows: y[a][0] = s_a0 + s_a1 + s_a2, y[a][1] = s_a1 − s_a2 − s_a3
          for (let a = 0; a < 2; a++) {
            const r = s.slice(4 * a, 4 * a + 4);
            f.get(r[0]!)
              .get(r[1]!)
              .f32x4Add()
              .get(r[2]!)
              .f32x4Add()
              .set(y[2 * a]!);
            f.get(r[1]!)
              .get(r[2]!)
              .f32x4Sub()
              .get(r[3]!)
              .f32x4Sub()
              .set(y[2 * a + 1]!);
          }
          f.get(flags).i32(2).i32And().if();
          f.get(biasp).get(o).i32Add().v128Load().set(bias);
          for (let k = 0; k < 4; k++) f.get(y[k]!).get(bias).f32x4Add().set(y[k]!);
          f.end();
          f.get(flags).i32(4).i32And().if();
          for (let k = 0; k < 4; k++) f.get(y[k]!).v128Zero().f32x4Pmax().set(y[k]!);
          f.end();
          // y00 always lies inside; y01 when a column is to its right, y10 when a row is below
          f.get(base).get(o).i32Add().get(y[0]!).v128Store();
          f.get(right).if();
          f.get(base).get(o).i32Add().get(oEnd).i32Add().get(y[1]!).v128Store();
          f.end();
          f.get(below).if();
          f.get(base).get(o).i32Add().get(rowB).i32Add().get(y[2]!).v128Store();
          f.get(right).if();
          f.get(base).get(o).i32Add().get(rowB).i32Add().get(oEnd).i32Add().get(y[3]!).v128Store();
          f.end();
          f.end();
        },
      );
    },
  );
}
