import { setTraceDispatch, type TraceDispatch } from '../src/runtime/dispatch.js';
import type { Op } from '../src/runtime/op.js';
import { isPlainObject } from '../src/runtime/plain-object.js';
import { Tensor } from '../src/index.js';

/**
 * Plays the joint-graph tracer: watches every op called (a forward and its backward), and flags an op that
 * receives a tensor no op made (a gradient rule that computed it with a raw kernel, or saved an intermediate
 * of its forward kernel). Composite ops are traced into, as AOT autograd's tracer does.
 */
export class TraceabilityCheck implements TraceDispatch {
  readonly symbolic = false;
  readonly recordsEveryOp = true;
  readonly problems: string[] = [];
  /** Every op called while checking, in order. */
  readonly called: string[] = [];
  private readonly known = new WeakSet<Tensor>();
  phase = 'forward';

  know(x: unknown): void {
    if (x instanceof Tensor) this.known.add(x);
    else if (Array.isArray(x)) x.forEach((v) => this.know(v));
    else if (isPlainObject(x)) Object.values(x).forEach((v) => this.know(v));
  }

  isTraced(x: unknown): boolean {
    return x instanceof Tensor && this.known.has(x);
  }

  private check(opName: string, x: unknown): void {
    if (x instanceof Tensor && !this.known.has(x)) {
      this.problems.push(`${this.phase}: ${opName} got a ${x.dtype} [${x.shape.join(', ')}] that no op made`);
    } else if (Array.isArray(x)) x.forEach((v) => this.check(opName, v));
    else if (isPlainObject(x)) Object.values(x).forEach((v) => this.check(opName, v));
  }

  callOp(op: (...args: never[]) => unknown, args: readonly unknown[], kwargs: Readonly<Record<string, unknown>> | undefined): unknown {
    // An op-table op, or one of the recorded factories (`zeros`, `full`, …), which take no tensors.
    const o = op as unknown as Partial<Op<(...a: unknown[]) => unknown>> & ((...a: unknown[]) => unknown);
    const name = o.opName ?? o.name;
    this.called.push(name);
    this.check(name, args);
    this.check(name, kwargs);
    const prev = o.composite ? null : setTraceDispatch(null);
    try {
      const out = o.invoke ? o.invoke(args, kwargs) : o(...args, ...(kwargs ? [kwargs] : []));
      this.know(out);
      return out;
    } finally {
      if (!o.composite) setTraceDispatch(prev);
    }
  }

  derived(from: unknown, to: unknown): void {
    if (this.isTraced(from)) this.know(to);
  }

  wroteInPlace(self: unknown, result: unknown): void {
    if (this.isTraced(result)) this.know(self);
  }
}
