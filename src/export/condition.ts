import { ValueError } from '../errors.js';
import type { FunctionTarget, Node } from '../graph/node.js';
import { SYMBOLIC_CONDITION, type SymbolicCondition } from '../runtime/check.js';
import type { ComparisonOp } from '../runtime/shape-recording.js';
import { _assert_range, _assert_sym, compareValues, sym_cmp } from './data-dependent.js';
import { linearInOne, sub, sym } from './symbolic/expr.js';
import type { Size } from './symbolic/shape-env.js';
import type { SymbolicShapes } from './symbolic-trace.js';

const SYMBOLS: Record<ComparisonOp, string> = { lt: '<', le: '<=', gt: '>', ge: '>=', eq: '==', ne: '!=' };

/**
 * A comparison on symbolic sizes that rewritten code handed to `check(...)` or `cond(...)` (PyTorch's SymBool):
 * `check` makes it an assertion (the solver narrows the symbols' ranges, and a data-dependent one gets an
 * assertion node the program runs), `cond` a predicate node that picks the branch at run time.
 */
export class ExportCondition implements SymbolicCondition {
  readonly [SYMBOLIC_CONDITION] = true as const;

  constructor(
    private readonly shapes: SymbolicShapes,
    readonly op: ComparisonOp,
    readonly a: Size,
    readonly b: Size,
  ) {}

  /** Whether it holds for the values being traced. */
  get holds(): boolean {
    return compareValues(this.op, this.shapes.value(this.a), this.shapes.value(this.b));
  }

  toString(): string {
    return `${String(this.a)} ${SYMBOLS[this.op]} ${String(this.b)}`;
  }

  assert(message: string | undefined): void {
    // as eagerly: a condition false for the example is the program's own error
    if (!this.holds) throw new ValueError(message ?? `Expected cond to be True, but got False. (${this.toString()})`);
    const { env } = this.shapes;
    const { op, a, b } = this;
    if (op === 'gt' || op === 'ge') env.assume(op === 'gt' ? 'lt' : 'le', b, a);
    else env.assume(op, a, b);
    const diff = sub(env.toExpr(a), env.toExpr(b));
    const dataDependent = [...diff.freeSymbols()].filter((s) => this.shapes.isUnbacked(s));
    if (dataDependent.length === 0) return; // sizes of the inputs: a guard the input checks enforce
    const graph = this.shapes.graph;
    const lin = linearInOne(diff);
    if (lin && dataDependent.length === 1 && op !== 'ne') {
      // a range of one value: PyTorch's sym_constrain_range, its bounds set to the solved range after tracing
      const node = graph.callFunction(_assert_range as unknown as FunctionTarget, [
        this.shapes.nodeOf(env.size(sym(lin.symbol))),
        null,
        null,
      ]);
      node.meta.rangeOf = lin.symbol;
      return;
    }
    const holds = this.predicateNode();
    graph.callFunction(_assert_sym as unknown as FunctionTarget, [holds, message ?? `Expected ${this.toString()} to hold`]);
  }

  /** The comparison as a graph value. */
  predicateNode(): Node {
    return this.shapes.graph.callFunction(sym_cmp as unknown as FunctionTarget, [
      this.op,
      this.shapes.nodeOf(this.a),
      this.shapes.nodeOf(this.b),
    ]);
  }
}
