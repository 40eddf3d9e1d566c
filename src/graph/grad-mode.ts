import { isGradEnabled, setGradEnabled } from '../runtime/autograd.js';
import { _set_grad_enabled } from './builtins.js';
import type { Graph } from './graph.js';
import { Node, type Argument, type FunctionTarget } from './node.js';

/**
 * Grad mode in graphs. Captured code that enters a `noGrad`/`withGradMode` region is recorded as PyTorch's
 * Dynamo records `with torch.no_grad():`: a `_set_grad_enabled(false)` node where the region starts and a
 * `_set_grad_enabled(<start node>)` node where it ends (the start node's value is the mode before it), so
 * generated code, the Interpreter and the kernels backend switch at the same points the eager code does.
 */

const SET_GRAD_ENABLED = _set_grad_enabled as unknown as FunctionTarget;

/** Whether `n` switches grad mode. */
export function isGradModeNode(n: Node): boolean {
  return n.op === 'call_function' && n.target === SET_GRAD_ENABLED;
}

/** The first node of `graph` that switches grad mode: its value is the mode the graph was called in. */
export function firstGradModeNode(graph: Graph): Node | undefined {
  return graph.nodes.find(isGradModeNode);
}

/**
 * Whether running `graph` may turn grad mode on when it is called with grad mode off: some switch sets
 * anything but `false` or the mode saved by another switch (which, called with grad off, is only ever on
 * if a switch turned it on).
 */
export function mayEnableGrad(graph: Graph): boolean {
  return graph.nodes.some((n) => {
    if (!isGradModeNode(n)) return false;
    const a = n.args[0];
    return a !== false && !(a instanceof Node && isGradModeNode(a));
  });
}

/** Run `fn` and put grad mode back to what it is now, however `fn` ends (a graph that throws inside a region). */
export function restoringGradMode<T>(fn: () => T): T {
  const entry = isGradEnabled();
  try {
    return fn();
  } finally {
    setGradEnabled(entry);
  }
}

/**
 * The grad-mode regions a tracer is inside. A region is recorded only once a node is made inside it
 * (`flush`, called before each recorded node), so regions with nothing to record (the runtime's own,
 * around ops on real tensors) leave no trace in the graph.
 */
export class GradModeRegions {
  private readonly open: { readonly enabled: boolean; start: Node | undefined }[] = [];

  constructor(private readonly graph: () => Graph) {}

  /** Enter a region; returns what records its end. */
  enter(enabled: boolean): () => void {
    const region = { enabled, start: undefined as Node | undefined };
    this.open.push(region);
    return () => {
      const i = this.open.lastIndexOf(region);
      if (i >= 0) this.open.splice(i, 1);
      if (region.start) this.record(region.start);
    };
  }

  /** Record the start of every region entered since the last node, outermost first. */
  flush(): void {
    for (const r of this.open) r.start ??= this.record(r.enabled);
  }

  private record(arg: Argument): Node {
    return this.graph().callFunction(SET_GRAD_ENABLED, [arg]);
  }
}
