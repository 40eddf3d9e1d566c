import type { Tree } from '../aot/pytree.js';
import { Dim } from './dim.js';
import type { ProgramParts } from './exported-program.js';
import { exprFromJSON, linearInOne } from './symbolic/expr.js';

/**
 * The `dynamicShapes` an exported program stands for, rebuilt from its input checks and range constraints, so
 * tracing it again (runDecompositions) keeps its dims dynamic: a dim of size `a·s + b` becomes
 * `Dim(s).mul(a).add(b)` over its symbol's range; a static dim, or one no single symbol describes, is static.
 */
export function dynamicShapesOf(parts: ProgramParts): unknown[] {
  const roots = new Map<string, Dim>();
  const rootOf = (symbol: string): Dim => {
    let d = roots.get(symbol);
    if (!d) {
      const r = parts.rangeConstraints.get(symbol);
      const options = r ? { min: Math.max(0, r.lower), ...(Number.isFinite(r.upper) ? { max: r.upper } : {}) } : {};
      roots.set(symbol, (d = Dim(parts.dimNames?.get(symbol) ?? symbol, options)));
    }
    return d;
  };
  const tensors = parts.inputChecks.inputs.flatMap((c) => (c.kind === 'tensor' ? [c] : []));
  let t = 0;
  const walk = (tree: Tree): unknown => {
    switch (tree.kind) {
      case 'tensor': {
        return tensors[t++]!.shape.map((d) => {
          if (typeof d === 'number') return null;
          const lin = linearInOne(exprFromJSON(d));
          if (!lin) return null;
          const root = rootOf(lin.symbol);
          const scaled = lin.a === 1 ? root : root.mul(lin.a);
          return lin.b === 0 ? scaled : scaled.add(lin.b);
        });
      }
      case 'const':
        return null;
      case 'array':
        return tree.items.map(walk);
      case 'object':
        return Object.fromEntries(tree.keys.map((k, i) => [k, walk(tree.items[i]!)]));
      default:
        return tree satisfies never;
    }
  };
  return walk(parts.inTree) as unknown[];
}
