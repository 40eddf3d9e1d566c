import { AutogradError, ValueError } from '../errors.js';
import { activeTrace } from './dispatch.js';
import { describe } from './validate.js';
import type { Tensor } from './tensor.js';

/**
 * One recorded operation on the tape. Each node has exactly one differentiable output; `next[i]` is the
 * node that receives the gradient for input i (null where the input needs none).
 */
export class GradNode {
  /** Hooks that see the gradient arriving at this node (used by retainGrad on non-leaf tensors). */
  readonly preHooks: ((grad: Tensor) => void)[] = [];

  constructor(
    readonly name: string,
    readonly next: readonly (GradNode | null)[],
    readonly apply: (grad: Tensor) => readonly (Tensor | null | undefined)[],
  ) {}
}

/**
 * A node with several differentiable outputs (a custom Function's backward, which PyTorch calls once with
 * every output's gradient). Each output tensor's gradFn is an `OutputEdge` into it; the sweep collects the
 * gradient of output i into slot i and applies this node once, with undefined where an output got none.
 */
export class MultiOutputGradNode extends GradNode {
  constructor(
    name: string,
    next: readonly (GradNode | null)[],
    readonly numOutputs: number,
    readonly applyAll: (grads: readonly (Tensor | undefined)[]) => readonly (Tensor | null | undefined)[],
  ) {
    super(name, next, () => {
      throw new AutogradError(`${name}: a node with several outputs runs through applyAll (the sweep collects each output's gradient)`);
    });
  }
}

/** The gradFn of output `index` of a `MultiOutputGradNode`: routes that output's gradient into its slot. */
export class OutputEdge extends GradNode {
  constructor(
    readonly owner: MultiOutputGradNode,
    readonly index: number,
  ) {
    super(owner.name, [owner], (g) => [g]);
  }
}

/**
 * Gradients nothing else holds (a compiled backward graph's fresh results): AccumulateGrad may keep such a
 * tensor as `.grad` instead of copying it, as PyTorch steals a gradient whose reference count allows.
 */
export const ownedGradients = new WeakSet<Tensor>();

let gradEnabled = true;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Run `fn` without recording operations (like `torch.no_grad()`). */
export function noGrad<T>(fn: () => T): T {
  if (typeof fn !== 'function') throw new ValueError(`noGrad: expected a function to run without grad, got ${describe(fn)}`);
  return withGradMode(false, fn);
}

/** Run `fn` with gradient recording explicitly on or off. */
export function withGradMode<T>(enabled: boolean, fn: () => T): T {
  if (typeof enabled !== 'boolean') throw new ValueError(`withGradMode: enabled must be true or false, got ${describe(enabled)}`);
  if (typeof fn !== 'function') throw new ValueError(`withGradMode: expected a function to run, got ${describe(fn)}`);
  const prev = gradEnabled;
  // While a trace is active the region is recorded (PyTorch's _set_grad_enabled nodes), so the graph switches here too.
  const close = activeTrace?.gradModeRegion?.(enabled);
  gradEnabled = enabled;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
    close?.();
  }
}

/**
 * Switch gradient recording on or off and return the previous mode (PyTorch's `torch._C._set_grad_enabled`,
 * which graphs call where captured code entered or left a grad-mode region). Prefer `withGradMode`.
 */
export function setGradEnabled(enabled: boolean): boolean {
  const prev = gradEnabled;
  gradEnabled = enabled;
  return prev;
}

/**
 * Reverse-mode sweep from `root` seeded with `grad`: count how many edges reach each node, then
 * process nodes once all their consumers have contributed (a topological order of the tape).
 */
export function runBackward(root: GradNode, grad: Tensor): void {
  withGradMode(false, () => sweep(root, grad));
}

/**
 * The gradients of `outputs` (seeded with `gradOutputs`) with respect to the leaf tensors `inputs`, returned
 * instead of accumulated into any `.grad` (PyTorch's `torch.autograd.grad`); null where an input gets none.
 * The sweep runs the ops of the gradient rules, so a tracer that is active records the backward.
 */
export function gradients(outputs: readonly Tensor[], gradOutputs: readonly Tensor[], inputs: readonly Tensor[]): (Tensor | null)[] {
  const capture = new Map<GradNode, Tensor | null>();
  const nodes = inputs.map((t) => {
    if (!t.isLeaf) throw new AutogradError(`gradients: input of shape [${t.shape.join(', ')}] is not a leaf tensor`);
    const n = t._gradAccumulator();
    capture.set(n, null);
    return n;
  });
  const edges = outputs.map((o) => o.gradFn ?? (o.requiresGrad ? o._gradAccumulator() : null));
  const root = new GradNode('GradientsRoot', edges, () => gradOutputs);
  withGradMode(false, () => sweep(root, gradOutputs[0]!, capture));
  return nodes.map((n) => capture.get(n) ?? null);
}

/** `capture`: gradients reaching these nodes are stored there, and no AccumulateGrad node runs. */
function sweep(root: GradNode, grad: Tensor, capture?: Map<GradNode, Tensor | null>): void {
  const pending = new Map<GradNode, number>();
  const seen = new Set<GradNode>([root]);
  const stack = [root];
  while (stack.length > 0) {
    const node = stack.pop()!;
    for (const nxt of node.next) {
      if (!nxt) continue;
      pending.set(nxt, (pending.get(nxt) ?? 0) + 1);
      if (!seen.has(nxt)) {
        seen.add(nxt);
        stack.push(nxt);
      }
    }
  }
  const grads = new Map<GradNode, Tensor>([[root, grad]]);
  // Gradients per output of the multi-output nodes, filled by their OutputEdges.
  const slots = new Map<MultiOutputGradNode, (Tensor | undefined)[]>();
  const ready = [root];
  while (ready.length > 0) {
    const node = ready.pop()!;
    const g = grads.get(node);
    grads.delete(node);
    if (capture && g) {
      if (capture.has(node)) capture.set(node, g);
      if (node.name === 'AccumulateGrad') continue;
    }
    let inputGrads: readonly (Tensor | null | undefined)[] = [];
    if (node instanceof MultiOutputGradNode) {
      const got = slots.get(node);
      slots.delete(node);
      if (got) inputGrads = node.applyAll(got);
    } else if (g) {
      for (const hook of node.preHooks) hook(g);
      if (node instanceof OutputEdge) {
        const got = slots.get(node.owner) ?? new Array<Tensor | undefined>(node.owner.numOutputs).fill(undefined);
        got[node.index] = g;
        slots.set(node.owner, got);
      } else inputGrads = node.apply(g);
    }
    // A node reached by no gradient (a backward returned null for it) still releases the nodes after it,
    // which may get gradients along other paths.
    node.next.forEach((nxt, i) => {
      if (!nxt) return;
      const gi = inputGrads[i];
      if (gi) {
        const prev = grads.get(nxt);
        grads.set(nxt, prev ? prev.add(gi) : gi);
      }
      const left = pending.get(nxt)! - 1;
      pending.set(nxt, left);
      if (left === 0) ready.push(nxt);
    });
  }
}

/** Records tensors an op needs for its gradient, with their version so later in-place writes are caught. */
export class SavedTensors {
  private readonly saved: { tensor: Tensor; version: number }[] = [];
  constructor(private readonly op: string) {}

  save(t: Tensor): Tensor {
    this.saved.push({ tensor: t, version: t._storage.version });
    return t;
  }

  /** The saved tensors, after checking that none was written in place since it was saved. */
  unpack(): Tensor[] {
    this.check();
    return this.saved.map((s) => s.tensor);
  }

  check(): void {
    for (const { tensor, version } of this.saved) {
      if (tensor._storage.version !== version) {
        throw new AutogradError(
          `one of the tensors needed for gradient computation has been modified by an in-place operation: ` +
            `${tensor.dtype} [${tensor.shape.join(', ')}] saved by ${this.op}Backward is at version ` +
            `${tensor._storage.version}; expected version ${version} instead`,
        );
      }
    }
  }
}
