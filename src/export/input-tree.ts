import { flattenTensors, type Tree } from '../aot/pytree.js';
import type { Tensor } from '../runtime/tensor.js';
import { ExportError } from './errors.js';

/**
 * The user's arguments as exportProgram saw them: a pytree (aot/pytree.ts) whose constants are baked into
 * the program, and the path of every leaf in PyTorch's spelling (`*args[1][0]`, `*args[0]['a']`), which the
 * run-time checks of `module()` name.
 */

export interface TreeLeaf {
  readonly path: string;
  readonly kind: 'tensor' | 'const';
  /** A constant's value (numbers, strings, booleans, null, undefined). */
  readonly value?: unknown;
}

/** Every leaf of `tree` in flattening order (tensors in the order `flattenTensors` lists them). */
export function treeLeaves(tree: Tree, root = '*args'): TreeLeaf[] {
  const out: TreeLeaf[] = [];
  const walk = (t: Tree, path: string): void => {
    switch (t.kind) {
      case 'tensor':
        out.push({ path, kind: 'tensor' });
        return;
      case 'const':
        out.push({ path, kind: 'const', value: t.value });
        return;
      case 'array':
        t.items.forEach((item, i) => walk(item, `${path}[${i}]`));
        return;
      case 'object':
        t.items.forEach((item, i) => walk(item, `${path}[${JSON.stringify(t.keys[i])}]`));
        return;
      default:
        return t satisfies never;
    }
  };
  walk(tree, root);
  return out;
}

/** A readable form of a tree for messages: `[Tensor, [Tensor, 5], { a: Tensor }]`. */
export function describeTree(tree: Tree): string {
  switch (tree.kind) {
    case 'tensor':
      return 'Tensor';
    case 'const':
      return tree.value === undefined ? 'undefined' : JSON.stringify(tree.value);
    case 'array':
      return `[${tree.items.map(describeTree).join(', ')}]`;
    case 'object':
      return `{ ${tree.keys.map((k, i) => `${k}: ${describeTree(tree.items[i]!)}`).join(', ')} }`;
    default:
      return tree satisfies never;
  }
}

/** The structure only: constants as `*`, since their values are checked one by one with their paths. */
function skeleton(tree: Tree): string {
  switch (tree.kind) {
    case 'tensor':
      return 'T';
    case 'const':
      return '*';
    case 'array':
      return `[${tree.items.map(skeleton).join(',')}]`;
    case 'object':
      return `{${tree.keys.map((k, i) => `${JSON.stringify(k)}:${skeleton(tree.items[i]!)}`).join(',')}}`;
    default:
      return tree satisfies never;
  }
}

/**
 * The tensors of `args` called on a program exported with input tree `want`, and every leaf's value in order
 * (for the input checks, which compare baked-in numbers too). The structure must be the same: PyTorch's
 * "Trying to flatten user inputs with exported input tree spec" error.
 */
export function flattenLike(want: Tree, args: readonly unknown[]): { tensors: Tensor[]; leaves: unknown[] } {
  let got: { tensors: Tensor[]; tree: Tree };
  try {
    got = flattenTensors([...args], '*args');
  } catch (e) {
    throw new ExportError(`Trying to flatten user inputs: ${(e as Error).message}`);
  }
  if (skeleton(got.tree) !== skeleton(want)) {
    throw new ExportError(
      `Trying to flatten user inputs with exported input tree spec:\n  ${describeTree(want)}\n` +
        `but actually got inputs with tree spec of:\n  ${describeTree(got.tree)}`,
    );
  }
  let t = 0;
  const leaves = treeLeaves(got.tree).map((l) => (l.kind === 'tensor' ? got.tensors[t++] : l.value));
  return { tensors: got.tensors, leaves };
}
