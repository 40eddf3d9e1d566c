import { FUNCTIONAL_RULES } from '../aot/functional-rules.js';
import { isRandomOp, opName } from '../aot/op-classes.js';
import { mapArg, Node, type Argument } from '../graph/node.js';
import { proxyNode, type Tracer } from '../graph/tracer.js';
import { noGrad } from '../runtime/autograd.js';
import { Module } from '../runtime/nn/module.js';
import { setTraceDispatch } from '../runtime/dispatch.js';

/** Thrown inside an evaluation that cannot be done without side effects; caught by `valueOf`. */
const UNKNOWN = Symbol('unknown');

/**
 * The value a node of a trace in progress has at the example arguments, computed on demand by running the
 * nodes it depends on (no grad, outside the trace). Compile's trace uses it for what must be known while
 * tracing and is the same at every size the guards admit: the rank of a tensor computed inside the trace,
 * for `const [b, c] = h.shape`. Nodes whose run would have an effect (an in-place op, a random op, batch norm's
 * statistics, a module with buffers in training mode or with hooks) and everything computed from them stay unknown.
 */
export class ExampleValues {
  private readonly memo = new Map<Node, unknown>();

  /** `args`: the example value of each placeholder, by its target (the parameter name). */
  constructor(
    private readonly tracer: Tracer,
    private readonly args: ReadonlyMap<string, unknown>,
  ) {}

  /** `node`'s example value, or undefined when it cannot be computed without side effects. */
  valueOf(node: Node): unknown {
    const prev = setTraceDispatch(null); // run the ops, do not record them
    try {
      return noGrad(() => this.compute(node));
    } catch {
      return undefined;
    } finally {
      setTraceDispatch(prev);
    }
  }

  private compute(node: Node): unknown {
    if (this.memo.has(node)) {
      const v = this.memo.get(node);
      if (v === UNKNOWN) throw UNKNOWN;
      return v;
    }
    let v: unknown = UNKNOWN;
    try {
      v = this.run(node);
      return v;
    } finally {
      this.memo.set(node, v);
    }
  }

  private run(node: Node): unknown {
    const value = this.runNode(node);
    if (proxyNode(value) !== undefined) throw UNKNOWN; // reached a tracing stand-in: not a real value
    return value;
  }

  private runNode(node: Node): unknown {
    const args = mapArg(node.args as Argument, (n) => this.compute(n)) as unknown[];
    const kwargs = mapArg(node.kwargs as Argument, (n) => this.compute(n)) as Record<string, unknown>;
    const withKwargs = Object.keys(kwargs).length > 0 ? [...args, kwargs] : args;
    switch (node.op) {
      case 'placeholder':
        if (!this.args.has(String(node.target))) throw UNKNOWN;
        return this.args.get(String(node.target));
      case 'get_attr': {
        const v = this.tracer.memberAt(String(node.target));
        if (v === undefined) throw UNKNOWN;
        return v;
      }
      case 'call_function': {
        if (writesArguments(node)) throw UNKNOWN;
        return (node.target as (...a: unknown[]) => unknown)(...withKwargs);
      }
      case 'call_method': {
        if (writesArguments(node)) throw UNKNOWN;
        const [self, ...rest] = withKwargs;
        const f = (self as Record<string, unknown> | null)?.[String(node.target)];
        if (typeof f !== 'function') throw UNKNOWN;
        return (f as (...a: unknown[]) => unknown).apply(self, rest);
      }
      case 'call_module': {
        const m = this.tracer.memberAt(String(node.target));
        if (!(m instanceof Module) || m.hasForwardHooks() || (m.training && (hasBuffers(m) || /Dropout/.test(m.constructor.name))))
          throw UNKNOWN;
        // the leaf's own forward: the trace replaced the instance's with one that records a call_module node
        const forward = (Object.getPrototypeOf(m) as Module).forward as (...a: unknown[]) => unknown;
        return forward.apply(m, withKwargs);
      }
      default:
        throw UNKNOWN;
    }
  }
}

/** Ops that write into an argument (batch norm's running statistics, `add_`) or draw random numbers. */
const WRITES = new Set([...FUNCTIONAL_RULES.keys(), 'batchNorm']);
function writesArguments(node: Node): boolean {
  const name = opName(node) ?? String(node.target);
  return isRandomOp(node) || name.endsWith('_') || WRITES.has(name);
}

function hasBuffers(m: Module): boolean {
  for (const _ of m.buffers()) return true;
  return false;
}
