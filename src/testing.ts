import { countOps, eagerBackend, type Backend, type BackendObject } from './compile/backends.js';
export { eagerly } from './compile/plan.js';
import { KilnError, ShapeError } from './errors.js';
import { noGrad } from './runtime/autograd.js';
import { elementOffsets } from './runtime/cpu/strided.js';
import { fmt } from './runtime/shape.js';
import { Tensor } from './runtime/tensor.js';

/** Raised by `gradcheck` when an analytic gradient disagrees with finite differences. */
export class GradcheckError extends KilnError {}

export interface CloseOptions {
  rtol?: number;
  atol?: number;
  equalNan?: boolean;
}

/** |a - b| <= atol + rtol·|b| element-wise, with broadcasting (PyTorch's `allclose`). */
export function allclose(a: Tensor, b: Tensor, { rtol = 1e-5, atol = 1e-8, equalNan = false }: CloseOptions = {}): boolean {
  return maxViolation(a, b, rtol, atol, equalNan) === null;
}

/** The first element that breaks the tolerance, or null. Shapes must broadcast. */
function maxViolation(a: Tensor, b: Tensor, rtol: number, atol: number, equalNan: boolean): string | null {
  const x = a.float();
  const y = b.float();
  const shape = x.shape.length >= y.shape.length ? x.shape : y.shape;
  let xs: ArrayLike<number>;
  let ys: ArrayLike<number>;
  try {
    xs = x.expand(shape).contiguous().data();
    ys = y.expand(shape).contiguous().data();
  } catch {
    throw new ShapeError(`allclose: shapes ${fmt(a.shape)} and ${fmt(b.shape)} cannot be broadcast together`);
  }
  for (let i = 0; i < xs.length; i++) {
    const u = xs[i]!;
    const v = ys[i]!;
    if (Number.isNaN(u) || Number.isNaN(v)) {
      if (equalNan && Number.isNaN(u) && Number.isNaN(v)) continue;
      return `element ${i}: ${u} vs ${v}`;
    }
    if (u === v) continue;
    if (!(Math.abs(u - v) <= atol + rtol * Math.abs(v))) return `element ${i}: ${u} vs ${v} (|diff| ${Math.abs(u - v)})`;
  }
  return null;
}

export interface GradcheckOptions {
  /** Finite-difference step; float32 needs a larger one than PyTorch's float64 default. */
  eps?: number;
  atol?: number;
  rtol?: number;
  /** A name for error messages (e.g. the op under test). */
  name?: string;
}

/**
 * Compare the gradients autograd computes for `fn` with central finite differences, for every input
 * that requires grad. The output is reduced with fixed pseudo-random weights so every output element
 * counts. Returns true, or throws a GradcheckError naming the input, element and both values.
 */
export function gradcheck(
  fn: (...inputs: Tensor[]) => Tensor,
  inputs: Tensor[],
  { eps = 1e-2, atol = 1e-2, rtol = 1e-2, name = fn.name || 'fn' }: GradcheckOptions = {},
): true {
  const probe = noGrad(() => fn(...inputs));
  const weights = Float64Array.from({ length: probe.numel() }, (_, i) => Math.sin(i * 12.9898 + 1) * 0.5 + 0.75);
  const project = (t: Tensor) => {
    const d = t.float().contiguous().data();
    let s = 0;
    for (let i = 0; i < d.length; i++) s += d[i]! * weights[i]!;
    return s;
  };
  for (const x of inputs) x.grad = null;
  const out = fn(...inputs);
  if (!out.requiresGrad) throw new GradcheckError(`gradcheck(${name}): the output does not require grad`);
  out.backward(Tensor.fromData(Float32Array.from(weights), out.shape, 'float32'));
  inputs.forEach((x, k) => {
    if (!x.requiresGrad) return;
    const analytic = x.grad ? x.grad.contiguous().data() : new Float32Array(x.numel());
    const offsets = elementOffsets(x.shape, x.strides, x.offset);
    const data = x._storage.data;
    for (let i = 0; i < offsets.length; i++) {
      const at = offsets[i]!;
      const orig = data[at]!;
      data[at] = orig + eps;
      const plus = project(noGrad(() => fn(...inputs)));
      data[at] = orig - eps;
      const minus = project(noGrad(() => fn(...inputs)));
      data[at] = orig;
      const numeric = (plus - minus) / (2 * eps);
      const got = analytic[i]!;
      if (!(Math.abs(got - numeric) <= atol + rtol * Math.abs(numeric))) {
        throw new GradcheckError(
          `gradcheck(${name}): input ${k} ${fmt(x.shape)} element ${i}: analytic gradient ${got} != numerical ${numeric}`,
        );
      }
    }
  });
  return true;
}

/** Throw unless `actual` is close to `expected`, with a message naming the worst element. */
export function assertClose(actual: Tensor, expected: Tensor, { rtol = 1e-5, atol = 1e-8, equalNan = false }: CloseOptions = {}): void {
  if (actual.shape.join() !== expected.shape.join()) {
    throw new ShapeError(`assertClose: shape ${fmt(actual.shape)} differs from expected ${fmt(expected.shape)}`);
  }
  const bad = maxViolation(actual, expected, rtol, atol, equalNan);
  if (bad) throw new KilnError(`assertClose: tensors differ at ${bad} (rtol=${rtol}, atol=${atol})`);
}

/**
 * A backend that counts what it is given (PyTorch's `torch._dynamo.testing.CompileCounter`): `frameCount`
 * graphs compiled and `opCount` call_function/call_method/call_module nodes in them. It runs graphs eagerly.
 * Pass the instance itself as `backend`.
 */
export class CompileCounter implements BackendObject {
  frameCount = 0;
  opCount = 0;

  readonly compileGraph: Backend = (gm, inputs) => {
    this.frameCount++;
    this.opCount += countOps(gm);
    return eagerBackend(gm, inputs);
  };

  clear(): void {
    this.frameCount = 0;
    this.opCount = 0;
  }
}

/** Compiled against eager on given and random inputs, mismatches traced to a graph node (`kiln check`). */
export {
  differential,
  type DifferentialBackend,
  type DifferentialMismatch,
  type DifferentialOptions,
  type DifferentialReport,
  type NamedBackend,
} from './compile/differential.js';
