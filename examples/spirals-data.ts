import { manualSeed, randn, tensor, type Tensor } from 'kiln';

/**
 * The classic two-spiral problem: two interleaved arms, one per class, with Gaussian noise.
 * Returns points [2n, 2] and int32 labels [2n].
 */
export function twoSpirals(n: number, { noise = 0.1, turns = 1.75, seed = 0 } = {}): { x: Tensor; y: Tensor } {
  manualSeed(seed);
  const jitter = randn([2 * n, 2])
    .mul(noise)
    .data();
  const pts: number[] = [];
  const labels: number[] = [];
  for (let cls = 0; cls < 2; cls++) {
    for (let i = 0; i < n; i++) {
      const t = (i / n) * turns * 2 * Math.PI + 0.3;
      const r = t / (turns * 2 * Math.PI);
      const sign = cls === 0 ? 1 : -1;
      const k = cls * n + i;
      pts.push(sign * r * Math.cos(t) * 2 + jitter[2 * k]! * r, sign * r * Math.sin(t) * 2 + jitter[2 * k + 1]! * r);
      labels.push(cls);
    }
  }
  return { x: tensor(pts, { shape: [2 * n, 2] }), y: tensor(labels, { dtype: 'int32' }) };
}
