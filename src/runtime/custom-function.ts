import { AutogradError, TraceError, ValueError } from '../errors.js';
import { isGradEnabled, MultiOutputGradNode, OutputEdge, SavedTensors, withGradMode, type GradNode } from './autograd.js';
import { activeTrace, hasTraced } from './dispatch.js';
import { zeros } from './ops/creation.js';
import { sumTo } from './ops/reduce.js';
import { broadcastsTo, fmt, sameShape } from './shape.js';
import { Tensor } from './tensor.js';
import { describe } from './validate.js';

/**
 * Custom gradients (PyTorch's `torch.autograd.Function`): `defineFunction({ forward, backward })` gives a
 * function whose forward runs without recording and whose gradient is the user's backward. Both are written
 * with ordinary op calls, so a tracer that records every op (AOT autograd's joint graph) sees the forward's
 * ops and, during the backward sweep, the backward's.
 */

/** What forward hands to backward: saved tensors, which inputs need gradients, and free-form state. */
export class FunctionCtx {
  /** Whether input i is a tensor that needs a gradient in this call (PyTorch's `needs_input_grad`). */
  readonly needsInputGrad: readonly boolean[];
  /** Free-form values forward computes for backward (shapes, scalars, …). */
  [key: string]: unknown;
  private readonly saved: SavedTensors;
  /** Where `saveForBackward` got null or undefined: kept as null in `savedTensors`. */
  private savedSlots: (Tensor | null)[] = [];
  /** @internal */ _nonDifferentiable = new Set<Tensor>();
  /** @internal */ _dirty = new Set<Tensor>();
  /** @internal */ _materializeGrads = true;

  constructor(name: string, needsInputGrad: readonly boolean[]) {
    this.saved = new SavedTensors(name);
    this.needsInputGrad = Object.freeze([...needsInputGrad]);
  }

  /** Keep tensors for backward; an in-place write to one of them before backward is an error there. */
  saveForBackward(...tensors: (Tensor | null | undefined)[]): void {
    tensors.forEach((t, i) => {
      if (t !== null && t !== undefined && !(t instanceof Tensor)) {
        throw new ValueError(
          `saveForBackward: argument ${i} must be a Tensor, null or undefined, got ${describe(t)}; keep other values as attributes of ctx`,
        );
      }
    });
    this.savedSlots = tensors.map((t) => (t ? this.saved.save(t) : null));
  }

  /** The tensors given to `saveForBackward`, checked against in-place writes since they were saved. */
  get savedTensors(): (Tensor | null)[] {
    this.saved.unpack();
    return [...this.savedSlots];
  }

  /** These outputs get no gradient (indices, masks); backward still receives a zero gradient for them. */
  markNonDifferentiable(...outputs: Tensor[]): void {
    for (const t of outputs) this._nonDifferentiable.add(t);
  }

  /** These inputs were modified in place by forward and are returned: their history continues through this function. */
  markDirty(...inputs: Tensor[]): void {
    for (const t of inputs) this._dirty.add(t);
  }

  /** With false, backward gets null (not zeros) for outputs that received no gradient. */
  setMaterializeGrads(flag: boolean): void {
    if (typeof flag !== 'boolean') throw new ValueError(`setMaterializeGrads: flag must be true or false, got ${describe(flag)}`);
    this._materializeGrads = flag;
  }
}

type Grad = Tensor | null | undefined;

export interface FunctionSpec<I extends unknown[], O extends Tensor | Tensor[]> {
  /** Named in errors and in the tape (`${name}Backward`); defaults to forward's own name, else 'CustomFunction'. */
  readonly name?: string;
  readonly forward: (ctx: FunctionCtx, ...inputs: I) => O;
  /** One gradient per forward input (null for inputs that get none), given one gradient per output. */
  readonly backward: (ctx: FunctionCtx, ...grads: (Tensor | null)[]) => Grad | readonly Grad[];
}

function edgeOf(t: Tensor): GradNode | null {
  return t.gradFn ?? (t.requiresGrad ? t._gradAccumulator() : null);
}

export function defineFunction<I extends unknown[], O extends Tensor | Tensor[]>(spec: FunctionSpec<I, O>): (...inputs: I) => O {
  if (spec === null || typeof spec !== 'object' || typeof spec.forward !== 'function' || typeof spec.backward !== 'function') {
    throw new ValueError(`defineFunction: expected { forward(ctx, ...inputs), backward(ctx, ...grads) }, got ${describe(spec)}`);
  }
  if (spec.name !== undefined && (typeof spec.name !== 'string' || spec.name === '')) {
    throw new ValueError(`defineFunction: name must be a non-empty string, got ${describe(spec.name)}`);
  }
  const forwardName = spec.forward.name;
  const name = spec.name ?? (forwardName && forwardName !== 'forward' ? forwardName : 'CustomFunction');
  const backwardName = `${name}Backward`;

  const apply = (...inputs: I): O => {
    const trace = activeTrace;
    if (trace && hasTraced(trace, inputs)) {
      // A graph of the forward's ops alone would lose the custom gradient: a symbolic trace breaks here
      // instead, and a runtime trace records one opaque call of this function.
      if (trace.symbolic && !trace.recordsEveryOp) {
        throw new TraceError(
          `symbolic tracing cannot trace into custom-gradient function ${name} (its backward would be lost); the graph breaks here`,
        );
      }
      if (trace.customFunctions === 'opaque') return trace.callOp(apply as never, inputs, undefined) as O;
    }
    const tensorInputs = inputs.map((x) => (x instanceof Tensor ? x : null));
    const recording = isGradEnabled() && tensorInputs.some((t) => t?.requiresGrad);
    const ctx = new FunctionCtx(
      name,
      tensorInputs.map((t) => recording && (t?.requiresGrad ?? false)),
    );
    // The edges are taken before forward runs: markDirty moves an input's history onto this function.
    const edges = recording ? tensorInputs.map((t) => (t ? edgeOf(t) : null)) : [];
    const inputShapes = tensorInputs.map((t) => t?.shape);
    const raw = withGradMode(false, () => spec.forward(ctx, ...inputs));
    const several = Array.isArray(raw);
    const outs: Tensor[] = several ? [...raw] : [raw as Tensor];
    if (outs.length === 0 || !outs.every((o) => o instanceof Tensor)) {
      throw new ValueError(`${name}.forward must return a Tensor or a non-empty array of Tensors, got ${describe(raw)}`);
    }
    for (const t of ctx._dirty) {
      if (!tensorInputs.includes(t)) throw new ValueError(`${name}: markDirty was given a tensor that is not an input of forward`);
      if (!outs.includes(t)) throw new ValueError(`${name}: an input marked dirty must be returned by forward as an output`);
    }
    // An input returned unchanged, or a tensor with its own history, comes out as a new alias, so its history is untouched.
    const results = outs.map((o, i) => {
      if (ctx._dirty.has(o)) return o;
      const aliased = tensorInputs.includes(o) || o.requiresGrad;
      const out = aliased ? o.detach() : o;
      if (aliased || o._base) forbidInplaceOnView(out, aliased ? o : o._base!, i, backwardName);
      return out;
    });
    if (!recording) return (several ? results : results[0]) as O;

    const outShapes = results.map((o) => o.shape);
    const outDTypes = results.map((o) => o.dtype);
    const node = new MultiOutputGradNode(backwardName, edges, results.length, (grads) => {
      const given = grads.map((g, i) => g ?? (ctx._materializeGrads ? zeros([...outShapes[i]!], { dtype: outDTypes[i] }) : null));
      return checkGrads(spec.backward(ctx, ...given), tensorInputs, inputShapes, edges, backwardName);
    });
    results.forEach((o, i) => {
      // Integer outputs and those marked non-differentiable get no gradient edge (their backward grad is zeros).
      if (o.dtype !== 'float32' || ctx._nonDifferentiable.has(outs[i]!)) return;
      if (ctx._dirty.has(o)) {
        if (o.isLeaf && o.requiresGrad) {
          throw new AutogradError(`${name}: a leaf tensor that requires grad is being used in an in-place operation (markDirty)`);
        }
        if (o._base?.requiresGrad) throw new AutogradError(`${name}: markDirty on a view of a tensor that requires grad is not supported`);
      }
      o.gradFn = new OutputEdge(node, i);
    });
    return (several ? results : results[0]) as O;
  };
  Object.defineProperty(apply, 'name', { value: name });
  return apply;
}

/**
 * An output that is a view (of an input, or made inside forward) must not be written in place: rebasing its
 * base's history would bypass the custom backward. PyTorch forbids it with this text.
 */
function forbidInplaceOnView(view: Tensor, base: Tensor, index: number, fn: string): void {
  view._base = base._base ?? base;
  view._viewReplay = () => {
    throw new AutogradError(
      `Output ${index} of ${fn} is a view and is being modified inplace. This view was created inside a custom Function ` +
        `(or because an input was returned as-is) and the autograd logic to handle view+inplace would override the custom ` +
        `backward associated with the custom Function, leading to incorrect gradients. This behavior is forbidden. You can ` +
        `fix this by cloning the output of the custom Function.`,
    );
  };
}

/** PyTorch's validate_outputs for a custom backward: one gradient per input, tensors only for tensor inputs, shapes that sum to the input's. */
function checkGrads(
  returned: Grad | readonly Grad[],
  inputs: readonly (Tensor | null)[],
  shapes: readonly (readonly number[] | undefined)[],
  edges: readonly (GradNode | null)[],
  fn: string,
): Grad[] {
  let grads: readonly unknown[] = Array.isArray(returned) ? returned : [returned];
  if (grads.length > inputs.length && grads.slice(inputs.length).every((g) => g === null || g === undefined)) {
    grads = grads.slice(0, inputs.length); // extra nulls are allowed, as in PyTorch
  }
  if (grads.length !== inputs.length) {
    throw new AutogradError(`function ${fn} returned an incorrect number of gradients (expected ${inputs.length}, got ${grads.length})`);
  }
  return grads.map((g, i) => {
    if (g === null || g === undefined) return null;
    if (!(g instanceof Tensor)) {
      throw new AutogradError(`function ${fn} returned ${describe(g)} at index ${i}; expected a Tensor, null or undefined`);
    }
    if (!inputs[i]) {
      throw new AutogradError(
        `function ${fn} returned a gradient different than null at position ${i}, but the corresponding forward input was not a Tensor (got ${describe(g)})`,
      );
    }
    if (!edges[i]) return null;
    const want = shapes[i]!;
    let out = g;
    if (!sameShape(g.shape, want)) {
      if (!broadcastsTo(want, g.shape)) {
        throw new AutogradError(
          `Function ${fn} returned an invalid gradient at index ${i} - got ${fmt(g.shape)} but expected shape compatible with ${fmt(want)}`,
        );
      }
      out = sumTo(g, want);
    }
    return out.dtype === 'float32' ? out : out.to('float32');
  });
}
