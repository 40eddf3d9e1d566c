import { ValueError } from '../errors.js';

/**
 * Seeded random generators: sfc32 (a 32-bit generator) seeded through splitmix32. kiln's global generator
 * makes `manualSeed(n)` reproduce `rand`, `randn`, dropout and parameter initialisation; like PyTorch, its
 * default seed is fixed, so a fresh process is deterministic too. A `Generator` of one's own (PyTorch's
 * `torch.Generator`) gives a stream that the global one does not disturb, e.g. a DataLoader's shuffle.
 */
const DEFAULT_SEED = 67280421;

type GeneratorState = readonly [number, number, number, number, number | null];

export class Generator {
  private a = 0;
  private b = 0;
  private c = 0;
  private d = 0;
  private spareNormal: number | null = null;

  constructor(seed: number = DEFAULT_SEED) {
    this.manualSeed(seed);
  }

  /** Seed this generator (any safe integer; the same seed gives the same stream). Returns the generator. */
  manualSeed(seed: number): this {
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
    this.a = mix();
    this.b = mix();
    this.c = mix();
    this.d = mix();
    this.spareNormal = null;
    for (let i = 0; i < 12; i++) this.next32();
    return this;
  }

  /** The next 32 random bits, as an unsigned integer. */
  next32(): number {
    let a = this.a >>> 0;
    let b = this.b >>> 0;
    let c = this.c >>> 0;
    let d = this.d >>> 0;
    let t = (a + b) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    d = (d + 1) | 0;
    t = (t + d) | 0;
    c = (c + t) | 0;
    this.a = a;
    this.b = b;
    this.c = c;
    this.d = d;
    return t >>> 0;
  }

  /** A uniform float in [0, 1) with 24 random bits (exactly representable in float32). */
  uniform(): number {
    return (this.next32() >>> 8) / 16777216;
  }

  /** A standard normal sample (Box–Muller, caching the second value). */
  normal(): number {
    if (this.spareNormal !== null) {
      const v = this.spareNormal;
      this.spareNormal = null;
      return v;
    }
    let u = 0;
    while (u === 0) u = this.uniform();
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spareNormal = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** A uniform integer in [0, n) (n ≤ 2^32), without modulo bias. */
  below(n: number): number {
    const limit = 2 ** 32 - (2 ** 32 % n);
    let x = this.next32();
    while (x >= limit) x = this.next32();
    return x % n;
  }

  /** @internal The generator's state, so a tool that reseeds can put it back after. */
  getState(): GeneratorState {
    return [this.a, this.b, this.c, this.d, this.spareNormal];
  }

  /** @internal Restore a state taken by `getState`. */
  setState(state: GeneratorState): void {
    [this.a, this.b, this.c, this.d, this.spareNormal] = state;
  }
}

/** The generator behind `rand`, `randn`, dropout and initialisation. */
export const defaultGenerator = new Generator();

/** Seed the global generator (any safe integer; the same seed gives the same stream). */
export function manualSeed(seed: number): void {
  defaultGenerator.manualSeed(seed);
}

/** A uniform float in [0, 1) from the global generator. */
export function uniform(): number {
  return defaultGenerator.uniform();
}

/** A standard normal sample from the global generator. */
export function normal(): number {
  return defaultGenerator.normal();
}

/** @internal The global generator's state, so a tool that reseeds (testing.differential) can put it back after. */
export function rngState(): GeneratorState {
  return defaultGenerator.getState();
}

/** @internal Restore a state taken by `rngState`. */
export function setRngState(state: GeneratorState): void {
  defaultGenerator.setState(state);
}
