/**
 * A small synthetic digits set for examples/mnist-like.ts: the digits 0–9 drawn from a built-in 5×7 bitmap font
 * onto a 12×12 canvas at a random offset, with random stroke intensity, dropped stroke pixels and background
 * noise. Sample i is a pure function of (seed, i), so the set needs no download and is the same on every run.
 */
import { data, tensor, type Tensor } from 'kiln';

export const IMAGE_SIZE = 12;

const GLYPH_W = 5;
const GLYPH_H = 7;

/** Rows of each digit, most significant bit on the left. */
const FONT: readonly (readonly string[])[] = [
  ['01110', '10001', '10011', '10101', '11001', '10001', '01110'],
  ['00100', '01100', '00100', '00100', '00100', '00100', '01110'],
  ['01110', '10001', '00001', '00010', '00100', '01000', '11111'],
  ['11111', '00010', '00100', '00010', '00001', '10001', '01110'],
  ['00010', '00110', '01010', '10010', '11111', '00010', '00010'],
  ['11111', '10000', '11110', '00001', '00001', '10001', '01110'],
  ['00110', '01000', '10000', '11110', '10001', '10001', '01110'],
  ['11111', '00001', '00010', '00100', '01000', '01000', '01000'],
  ['01110', '10001', '10001', '01110', '10001', '10001', '01110'],
  ['01110', '10001', '10001', '01111', '00001', '00010', '01100'],
];

/** mulberry32: a tiny seeded generator, so each sample draws its own stream. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One 12×12 image of `digit` (row-major, values roughly in [0, 1]). */
export function drawDigit(digit: number, random: () => number): Float32Array {
  const img = new Float32Array(IMAGE_SIZE * IMAGE_SIZE);
  const dx = Math.floor(random() * (IMAGE_SIZE - GLYPH_W + 1));
  const dy = Math.floor(random() * (IMAGE_SIZE - GLYPH_H + 1));
  const ink = 0.6 + 0.4 * random();
  const rows = FONT[digit]!;
  for (let r = 0; r < GLYPH_H; r++) {
    for (let c = 0; c < GLYPH_W; c++) {
      if (rows[r]![c] === '1' && random() > 0.1) img[(dy + r) * IMAGE_SIZE + dx + c] = ink;
    }
  }
  // background noise: the sum of two uniforms, centred, so most pixels stay near their value
  for (let i = 0; i < img.length; i++) img[i]! += (random() + random() - 1) * 0.35;
  return img;
}

/** `length` samples `[image [1, 12, 12], label]`, labels cycling 0–9 so every class is equally common. */
export class SyntheticDigits extends data.Dataset<[Tensor, number]> {
  constructor(
    readonly length: number,
    readonly seed: number,
  ) {
    super();
  }

  getItem(index: number): [Tensor, number] {
    const label = index % 10;
    const random = mulberry32(Math.imul(this.seed + 1, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca6b));
    return [tensor(drawDigit(label, random), { shape: [1, IMAGE_SIZE, IMAGE_SIZE] }), label];
  }
}
