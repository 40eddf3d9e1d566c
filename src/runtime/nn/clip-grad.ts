import { ValueError } from '../../errors.js';
import { noGrad } from '../autograd.js';
import { tensor } from '../ops/creation.js';
import { Tensor } from '../tensor.js';
import { checkBoolean, checkNumber, checkOptions, describe } from '../validate.js';

/**
 * Gradient clipping (PyTorch's `torch.nn.utils.clip_grad_norm_` and `clip_grad_value_`): both scale or
 * clamp the `.grad` of each given parameter in place, skipping parameters without a gradient.
 */

/** The gradients of `parameters` (a Tensor or an iterable of them) that have one. */
function gradsOf(op: string, parameters: unknown): Tensor[] {
  if (parameters instanceof Tensor) parameters = [parameters];
  if (parameters === null || typeof parameters !== 'object' || !(Symbol.iterator in parameters)) {
    throw new ValueError(`${op}: parameters must be a Tensor or an iterable of Tensors, got ${describe(parameters)}`);
  }
  const list = [...(parameters as Iterable<unknown>)];
  list.forEach((p, i) => {
    if (!(p instanceof Tensor)) throw new ValueError(`${op}: parameters[${i}] must be a Tensor, got ${describe(p)}`);
  });
  return (list as Tensor[]).flatMap((p) => (p.grad ? [p.grad] : []));
}

/** torch.linalg.vector_norm of the values: max |x| for ∞, min |x| for −∞, the count of non-zeros for 0, else (Σ|x|^p)^(1/p). */
function vectorNorm(values: ArrayLike<number>, p: number): number {
  const n = values.length;
  if (p === Infinity || p === -Infinity) {
    const pick = p === Infinity ? Math.max : Math.min;
    let m = p === Infinity ? 0 : Infinity;
    for (let i = 0; i < n; i++) m = pick(m, Math.abs(values[i]!));
    return m;
  }
  let s = 0;
  if (p === 0) {
    for (let i = 0; i < n; i++) s += values[i] !== 0 ? 1 : 0;
    return s;
  }
  if (p === 1) {
    for (let i = 0; i < n; i++) s += Math.abs(values[i]!);
    return s;
  }
  if (p === 2) {
    for (let i = 0; i < n; i++) s += values[i]! * values[i]!;
    return Math.sqrt(s);
  }
  for (let i = 0; i < n; i++) s += Math.abs(values[i]!) ** p;
  return s ** (1 / p);
}

export interface ClipGradNormOptions {
  /** The norm's order: any number, Infinity for the largest absolute value (default 2). */
  normType?: number;
  /** Throw when the total norm is NaN or infinite instead of scaling by it (default false). */
  errorIfNonfinite?: boolean;
}

/**
 * Scale the gradients of `parameters` so that their total norm (the norm of every gradient's norm, as if
 * they were one vector) is at most `maxNorm`: each is multiplied by min(1, maxNorm / (total + 1e-6)).
 * Returns the total norm before clipping, a scalar float32 Tensor, as PyTorch does.
 */
export function clipGradNorm_(parameters: Tensor | Iterable<Tensor>, maxNorm: number, options: ClipGradNormOptions = {}): Tensor {
  const op = 'clipGradNorm_';
  const o = checkOptions(op, options, ['normType', 'errorIfNonfinite']);
  checkNumber(op, 'maxNorm', maxNorm, { min: 0, infinite: true });
  const p = checkNumber(op, 'normType', o.normType ?? 2, { infinite: true });
  const errorIfNonfinite = checkBoolean(op, 'errorIfNonfinite', o.errorIfNonfinite ?? false);
  const grads = gradsOf(op, parameters);
  if (grads.length === 0) return tensor(0);
  // each gradient's norm rounded to float32, then the norm of those: PyTorch's norm of the stacked norms
  const total = Math.fround(
    vectorNorm(
      Float32Array.from(grads, (g) => Math.fround(vectorNorm(g.data(), p))),
      p,
    ),
  );
  if (errorIfNonfinite && !Number.isFinite(total)) {
    throw new ValueError(
      `${op}: the total norm of order ${p} of the gradients is ${total}, so they cannot be clipped; ` +
        'pass errorIfNonfinite: false to scale them by it anyway',
    );
  }
  const coef = Math.min(Math.fround(maxNorm / Math.fround(total + 1e-6)), 1);
  // PyTorch multiplies even by a coefficient of 1 (no branch on the device); so do we: the same versions
  noGrad(() => grads.forEach((g) => g.mul_(coef)));
  return tensor(total);
}

/** Clamp every gradient of `parameters` into [−clipValue, clipValue], in place. */
export function clipGradValue_(parameters: Tensor | Iterable<Tensor>, clipValue: number): void {
  const op = 'clipGradValue_';
  checkNumber(op, 'clipValue', clipValue, { min: 0, infinite: true });
  const grads = gradsOf(op, parameters);
  noGrad(() => grads.forEach((g) => g.clamp_(-clipValue, clipValue)));
}
