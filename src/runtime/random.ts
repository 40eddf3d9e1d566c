import { ValueError } from '../errors.js';

/**
 * kiln's global random generator: a seeded 32-bit generator (sfc32) so that `manualSeed(n)` makes
 * `rand`, `randn`, dropout and parameter initialisation reproducible. Like PyTorch, the default seed is
 * fixed, so a fresh process is deterministic too.
 */
const DEFAULT_SEED = 67280421;

let a = 0;
let b = 0;
let c = 0;
let d = 0;
let spareNormal: number | null = null;

function next32(): number {
  a >>>= 0;
  b >>>= 0;
  c >>>= 0;
  d >>>= 0;
  let t = (a + b) | 0;
  a = b ^ (b >>> 9);
  b = (c + (c << 3)) | 0;
  c = (c << 21) | (c >>> 11);
  d = (d + 1) | 0;
  t = (t + d) | 0;
  c = (c + t) | 0;
  return t >>> 0;
}

/** Seed the global generator (any safe integer; the same seed gives the same stream). */
export function manualSeed(seed: number): void {
  // PyTorch takes integers only; a string or a fraction would silently become some other seed
  if (!Number.isSafeInteger(seed)) {
    const shown =
      typeof seed === 'string' ? `'${seed}'` : typeof seed === 'number' || typeof seed === 'boolean' ? String(seed) : typeof seed;
    throw new ValueError(`manualSeed: seed must be an integer, got ${shown}`);
  }
  // splitmix32 spreads the seed over the four state words
  let s = Math.trunc(seed) >>> 0;
  const mix = () => {
    s = (s + 0x9e3779b9) | 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  a = mix();
  b = mix();
  c = mix();
  d = mix();
  spareNormal = null;
  for (let i = 0; i < 12; i++) next32();
}

/** A uniform float in [0, 1) with 24 random bits (exactly representable in float32). */
export function uniform(): number {
  return (next32() >>> 8) / 16777216;
}

/** A standard normal sample (Box–Muller, caching the second value). */
export function normal(): number {
  if (spareNormal !== null) {
    const v = spareNormal;
    spareNormal = null;
    return v;
  }
  let u = 0;
  while (u === 0) u = uniform();
  const v = uniform();
  const r = Math.sqrt(-2 * Math.log(u));
  spareNormal = r * Math.sin(2 * Math.PI * v);
  return r * Math.cos(2 * Math.PI * v);
}

manualSeed(DEFAULT_SEED);

/** @internal The generator's state, so a tool that reseeds (testing.differential) can put it back after. */
export function rngState(): readonly [number, number, number, number, number | null] {
  return [a, b, c, d, spareNormal];
}

/** @internal Restore a state taken by `rngState`. */
export function setRngState(state: readonly [number, number, number, number, number | null]): void {
  [a, b, c, d, spareNormal] = state;
}
