import type { Node } from '../graph/node.js';
import { nodesIn, type Argument } from '../graph/node.js';
import { sameShape } from '../runtime/shape.js';
import { isIR, type IRNode, type Operand } from './ir.js';
import type { BatchNormExpansion, Lowered } from './lower.js';

/**
 * Fusion: which IR nodes are computed together in one kernel.
 *
 * - Element-wise nodes fuse with their consumers: walking backwards, a node joins the kernel of its users
 *   when all of them are in one kernel, so chains and diamonds become one kernel and each value is
 *   computed once per element. A node whose users sit in different kernels, or that something other than
 *   a kernel reads (an eager node, the graph's output, a matmul, a view), is materialised instead.
 * - Reductions, matmuls, convolutions, pooling and embedding lookups each root a kernel; a reduction takes in the element-wise
 *   nodes that only feed it (so `sum(exp(x - m))` reads x once and never stores the exponentials).
 * - A matmul or convolution whose only user adds a bias along the output features, and then takes
 *   `max(·, 0)` (relu's lowering), takes those into the GEMM call as its epilogue (the pattern, not the op name:
 *   any op lowering to that primitive folds).
 * - A convolution whose only reader is an inference batch norm takes it in (folded into its weight and bias
 *   at run time, see steps/conv-weights.ts), and then a relu after it: conv → bn → relu is one GEMM call. On the bench CNN
 *   this removed the element-wise batch norm + relu kernel after each conv (1.9, 4.0, 3.7 ms of 63 ms).
 * - Views never compute: readers index the materialised tensor beneath them.
 * - ReLU's backward `where(y > 0, g, 0)` of a matmul's product g (its only reader) is that matmul's epilogue: the
 *   step zeroes the product where y ≤ 0 while it is in wasm memory, instead of an element-wise kernel copying it.
 * - A plain 2-D matmul read only through its transpose computes that transpose instead, as t(b) · t(a): the
 *   weight gradient `t(mm(t(x), g))` (the gradient of a Linear's t(w)) becomes `mm(t(g), x)`, stored as the
 *   contiguous [out, in] the weight has, and its left operand t(g) is what a bias gradient can ride on (next).
 * - A bias gradient `sum(g, [0])` whose g is also the transposed left operand of a matmul (`mm(t(g), x)`, the
 *   weight gradient of the same layer) joins that matmul's group: the GEMM step reads g once to place it in
 *   wasm memory as dense rows of gᵀ and sums each row on the way (steps/matmul.ts), so the bias gradient
 *   costs no kernel and no second pass over g.
 */

export type GroupKind = 'elementwise' | 'reduce' | 'matmul' | 'conv2d' | 'pool2d' | 'gather' | 'eager';

export interface Group {
  readonly kind: GroupKind;
  /** The IR node whose value the group produces (the kernel's output). */
  readonly root: number;
  /** IR nodes computed inside the kernel, in order, root last. */
  readonly members: number[];
}

export interface Partition {
  readonly groups: Group[];
  /** IR values that exist as tensors at run time (group roots, inputs, parameters, eager results). */
  readonly materialised: Set<number>;
  /** IR nodes dropped because an epilogue absorbed them. */
  readonly absorbed: Set<number>;
}

/** IR ids read by each IR node (through operands), plus the readers outside the IR: eager nodes and the output. */
function readers(low: Lowered, outputs: readonly Node[]): { users: number[][]; external: Set<number> } {
  const users: number[][] = low.ir.map(() => []);
  const external = new Set<number>();
  for (const n of low.ir) for (const r of reads(n)) users[r]!.push(n.id);
  for (const [node] of low.opaque) {
    for (const input of nodesIn(node.args as Argument).concat(nodesIn(node.kwargs))) {
      const id = low.irOf.get(input);
      if (id !== undefined) external.add(id);
    }
  }
  for (const o of outputs) {
    const id = low.irOf.get(o);
    if (id !== undefined) external.add(id);
  }
  return { users, external };
}

/** The IR ids a node reads. */
export function reads(n: IRNode): number[] {
  switch (n.kind) {
    case 'value':
      return [];
    case 'ew':
      return n.args.filter(isIR).map((a) => a.ir);
    case 'view':
      return [n.arg];
    case 'reduce':
      return [n.arg];
    case 'matmul':
      return [n.a, n.b, ...(n.bias === null ? [] : [n.bias]), ...(n.mask === undefined ? [] : [n.mask])];
    case 'conv2d': {
      const ids = n.bias === null ? [n.x, n.w] : [n.x, n.w, n.bias];
      if (n.bn) for (const id of [n.bn.mean, n.bn.variance, n.bn.weight, n.bn.bias]) if (id !== null) ids.push(id);
      return ids;
    }
    case 'pool2d':
      return [n.x];
    case 'gather':
      return [n.table, n.index];
    default:
      return n satisfies never;
  }
}

/**
 * Fold `matmul → add(bias along N) → max(·, 0)` (and `conv2d → max(·, 0)`) chains into the matmul/conv node, in place:
 * the absorbing node takes the id of the last node it absorbed, so its users need no rewiring.
 */
function foldEpilogues(low: Lowered, users: number[][], external: Set<number>, absorbed: Set<number>): void {
  const soleUser = (id: number): IRNode | null => {
    const u = users[id]!;
    return u.length === 1 && !external.has(id) ? low.ir[u[0]!]! : null;
  };
  const bnOf = new Map(low.batchNorms.map((bn) => [bn.x, bn]));
  for (const n of [...low.ir]) {
    if (absorbed.has(n.id) || (n.kind !== 'matmul' && n.kind !== 'conv2d')) continue;
    let cur: IRNode = n;
    for (;;) {
      const bn: BatchNormExpansion | null =
        cur.kind === 'conv2d' && !cur.bn && !cur.relu ? foldableBatchNorm(bnOf.get(cur.id), cur.id, users, external) : null;
      if (bn && cur.kind === 'conv2d') {
        const { mean, variance, weight, bias, eps } = bn;
        const out = low.ir[bn.out]!;
        for (const m of bn.members) if (m !== bn.out && m !== cur.id && low.ir[m]!.kind !== 'value') absorbed.add(m);
        absorbed.add(cur.id);
        const merged = [...(cur.absorbed ?? []), ...(cur.origin && cur.origin !== out.origin ? [cur.origin] : [])];
        low.ir[bn.out] = {
          ...cur,
          id: bn.out,
          bn: { mean, variance, weight, bias, eps },
          origin: out.origin,
          isOriginValue: out.isOriginValue,
          dtype: out.dtype,
          absorbed: merged,
        };
        // the expansion's readers now read the conv's result (users of bn.out are unchanged)
        cur = low.ir[bn.out]!;
        continue;
      }
      if (cur.kind === 'matmul' && cur.mask !== undefined) break; // the mask runs after the GEMM's own epilogue: nothing folds after it
      const u = soleUser(cur.id);
      if (!u || u.kind !== 'ew') break;
      let next: IRNode | null = null;
      if (isReluOf(u, cur.id) && !(cur as { relu: boolean }).relu) next = { ...cur, id: u.id, relu: true } as IRNode;
      if (u.op === 'add' && cur.kind === 'matmul' && cur.bias === null && !cur.relu) {
        const other = u.args.find((a) => !(isIR(a) && a.ir === cur.id));
        const N = cur.shape[cur.shape.length - 1]!;
        if (other && isIR(other) && u.args.length === 2) {
          const b = low.ir[other.ir]!;
          if (b.dtype === 'float32' && b.shape.length === 1 && b.shape[0] === N && sameShape(u.shape, cur.shape)) {
            next = { ...cur, id: u.id, bias: other.ir } as IRNode;
          }
        }
      }
      const mask = cur.kind === 'matmul' && !cur.relu && cur.mask === undefined ? reluMaskOf(low, u, cur.id, users, external) : null;
      if (mask) {
        absorbed.add(mask.gt);
        next = { ...cur, id: u.id, mask: mask.y } as IRNode;
      }
      if (!next) break;
      absorbed.add(cur.id);
      const merged = [...(cur.absorbed ?? []), ...(cur.origin && cur.origin !== u.origin ? [cur.origin] : [])];
      const comparison = mask ? low.ir[mask.gt]!.origin : null; // the y > 0 node the mask replaced
      if (comparison && comparison !== u.origin && !merged.includes(comparison)) merged.push(comparison);
      low.ir[u.id] = { ...next, origin: u.origin, isOriginValue: u.isOriginValue, dtype: u.dtype, absorbed: merged } as IRNode;
      cur = low.ir[u.id]!;
    }
  }
}

/** Whether `n` is a [1, 0] permute view (a 2-D transpose). */
function isTranspose(n: IRNode): n is IRNode & { kind: 'view' } {
  return n.kind === 'view' && n.view.op === 'permute' && n.view.dims.length === 2 && n.view.dims[0] === 1 && n.view.dims[1] === 0;
}

/**
 * Rewrite `t(a · b)` (a 2-D matmul, no epilogue, whose only reader is a transpose view that is not transposed
 * again) as `t(b) · t(a)` in the view's place, in place like foldEpilogues: the view's id becomes the matmul, the
 * old matmul is absorbed. The transposed operands are views (`t(t(x))` is x itself), appended to the IR: nothing
 * computes them.
 */
function transposeProducts(low: Lowered, users: number[][], external: Set<number>, absorbed: Set<number>): void {
  const transposeOf = (id: number, origin: IRNode['origin']): number => {
    const n = low.ir[id]!;
    if (isTranspose(n)) return n.arg;
    const view = low.ir.length;
    low.ir.push({
      kind: 'view',
      arg: id,
      view: { op: 'permute', dims: [1, 0] },
      id: view,
      shape: [n.shape[1]!, n.shape[0]!],
      dtype: n.dtype,
      origin,
      isOriginValue: false,
    });
    return view;
  };
  for (const n of [...low.ir]) {
    if (n.kind !== 'matmul' || n.bTransposed || n.bias !== null || n.relu || n.shape.length !== 2) continue;
    if (low.ir[n.a]!.shape.length !== 2 || low.ir[n.b]!.shape.length !== 2) continue;
    const u = users[n.id]!;
    const view = u.length === 1 && !external.has(n.id) ? low.ir[u[0]!]! : null;
    // t(t(a · b)) is a · b: a transpose read only by another transpose is left as the view it is
    if (!view || !isTranspose(view) || users[view.id]!.some((v) => isTranspose(low.ir[v]!))) continue;
    absorbed.add(n.id);
    const merged = [...(n.absorbed ?? []), ...(n.origin && n.origin !== view.origin ? [n.origin] : [])];
    low.ir[view.id] = {
      ...n,
      id: view.id,
      a: transposeOf(n.b, n.origin),
      b: transposeOf(n.a, n.origin),
      shape: view.shape,
      origin: view.origin,
      isOriginValue: view.isOriginValue,
      absorbed: merged,
    };
  }
}

/**
 * When `u` is `where(gt(y, 0), id, 0)` (ReLU's backward, PyTorch's threshold_backward at 0) with y float32 of `u`'s
 * shape and the comparison read by nothing else: y, and the comparison node, which the epilogue replaces.
 */
function reluMaskOf(
  low: Lowered,
  u: IRNode & { kind: 'ew' },
  id: number,
  users: readonly number[][],
  external: ReadonlySet<number>,
): { y: number; gt: number } | null {
  if (u.op !== 'where' || u.args.length !== 3) return null;
  const [cond, x, other] = u.args as [Operand, Operand, Operand];
  if (!isIR(cond) || !isIR(x) || x.ir !== id || isIR(other) || !Object.is(other.value, 0)) return null;
  const gt = low.ir[cond.ir]!;
  if (gt.kind !== 'ew' || gt.op !== 'gt' || gt.args.length !== 2 || users[gt.id]!.length !== 1 || external.has(gt.id)) return null;
  const [y, zero] = gt.args as [Operand, Operand];
  if (!isIR(y) || isIR(zero) || zero.value !== 0) return null;
  const yn = low.ir[y.ir]!;
  return yn.dtype === 'float32' && sameShape(yn.shape, u.shape) && sameShape(u.shape, low.ir[id]!.shape) ? { y: y.ir, gt: gt.id } : null;
}

/** Whether `u` is `max(id, 0)` (either order): relu's lowering, which the GEMM epilogue applies as its activation. */
function isReluOf(u: IRNode & { kind: 'ew' }, id: number): boolean {
  if (u.op !== 'max' || u.args.length !== 2) return false;
  const [a, b] = u.args as [Operand, Operand];
  const isZero = (o: Operand) => !isIR(o) && o.value === 0;
  const isId = (o: Operand) => isIR(o) && o.ir === id;
  return (isId(a) && isZero(b)) || (isZero(a) && isId(b));
}

/**
 * The batch norm `bn` when a conv2d (IR `conv`) may take it in: it reads the conv's result, nothing else reads
 * that result (not another node, not an eager step, not the graph's output), and nothing outside the batch norm's
 * own expansion reads a value inside it. Then the conv computes the normalised values directly: weight · s and
 * bias · s + t per output channel, with s = weight_bn / √(var + eps) and t = bias_bn − mean · s.
 */
function foldableBatchNorm(
  bn: BatchNormExpansion | undefined,
  conv: number,
  users: readonly (readonly number[])[],
  external: ReadonlySet<number>,
): BatchNormExpansion | null {
  if (!bn || bn.x !== conv || external.has(conv)) return null;
  const inside = new Set(bn.members);
  if (!users[conv]!.every((u) => inside.has(u))) return null;
  for (const m of bn.members) {
    if (m === bn.out) continue;
    if (external.has(m) || !users[m]!.every((u) => inside.has(u))) return null;
  }
  return bn;
}

/** Group the lowered IR into kernels, in execution order. */
export function partition(low: Lowered, outputs: readonly Node[]): Partition {
  const absorbed = new Set<number>();
  let { users, external } = readers(low, outputs);
  transposeProducts(low, users, external, absorbed);
  ({ users, external } = readers(low, outputs));
  foldEpilogues(low, users, external, absorbed);
  ({ users, external } = readers(low, outputs));
  const dead = new Set<number>();
  const live = (id: number) => !absorbed.has(id) && !dead.has(id);

  const materialised = new Set<number>();
  const groupOf = new Map<number, number>();
  const roots: number[] = [];
  const newGroup = (id: number) => {
    groupOf.set(id, id);
    roots.push(id);
    materialised.add(id);
  };
  for (let id = low.ir.length - 1; id >= 0; id--) {
    const n = low.ir[id]!;
    if (!live(id)) continue;
    const liveUsers = users[id]!.filter(live);
    // Pure and unread (dead code in the graph, or a part of an expansion nobody needs): not computed.
    if (n.kind !== 'value' && liveUsers.length === 0 && !external.has(id)) {
      dead.add(id);
      continue;
    }
    switch (n.kind) {
      case 'value':
        materialised.add(id);
        continue;
      case 'view':
        continue;
      case 'reduce':
      case 'matmul':
      case 'conv2d':
      case 'pool2d':
      case 'gather':
        newGroup(id);
        continue;
      case 'ew': {
        // Read outside any kernel, or through a view: it must exist as a tensor.
        const forced = external.has(id) || liveUsers.some((u) => !fusesInto(low.ir[u]!));
        const target = new Set(liveUsers.map((u) => groupOf.get(u)));
        if (forced || target.size !== 1 || target.has(undefined)) newGroup(id);
        else groupOf.set(id, [...target][0]!);
        continue;
      }
      default:
        n satisfies never;
    }
  }

  const byRoot = new Map<number, number[]>();
  for (const [id, root] of groupOf) {
    if (!materialised.has(root)) continue;
    (byRoot.get(root) ?? byRoot.set(root, []).get(root)!).push(id);
  }
  const groups: Group[] = [...new Set(roots)]
    .sort((a, b) => a - b)
    .map((root) => ({
      kind: kindOf(low.ir[root]!),
      root,
      members: (byRoot.get(root) ?? [root]).sort((a, b) => a - b),
    }));
  return { groups: fuseBiasGradients(low, groups, users, live), materialised, absorbed };
}

/** The matmul whose left operand is `t(v)` (a [1, 0] permute of the 2-D value `v`) with a 2-D right operand. */
function isTransposedLeftOperand(low: Lowered, mm: IRNode, v: number): boolean {
  if (mm.kind !== 'matmul' || low.ir[mm.b]!.shape.length !== 2) return false;
  const a = low.ir[mm.a]!;
  return isTranspose(a) && a.arg === v;
}

/**
 * Move each lone `sum(v, [0])` (float32, v 2-D) into the group of a matmul whose left operand is `t(v)`, when the
 * sum's value is not needed before that matmul runs (the merged step runs where the matmul's group does).
 */
function fuseBiasGradients(low: Lowered, groups: Group[], users: readonly number[][], live: (id: number) => boolean): Group[] {
  // Where each value is first read: IR readers (through views) and eager steps, which run at their own IR id.
  const eagerReaders: number[][] = low.ir.map(() => []);
  for (const [node] of low.opaque) {
    const at = low.irOf.get(node)!;
    for (const input of nodesIn(node.args as Argument).concat(nodesIn(node.kwargs))) {
      const id = low.irOf.get(input);
      if (id !== undefined) eagerReaders[id]!.push(at);
    }
  }
  const firstRead = (id: number): number => {
    let first = Infinity;
    for (const u of users[id]!.filter(live)) first = Math.min(first, low.ir[u]!.kind === 'view' ? firstRead(u) : u);
    for (const at of eagerReaders[id]!) first = Math.min(first, at);
    return first;
  };
  const byRoot = new Map(groups.map((g) => [g.root, g]));
  const taken = new Set<number>();
  const dropped = new Set<Group>();
  for (const g of groups) {
    const r = low.ir[g.root]!;
    if (g.kind !== 'reduce' || r.kind !== 'reduce' || g.members.length !== 1 || r.op !== 'sum') continue;
    const v = low.ir[r.arg]!;
    if (v.shape.length !== 2 || v.dtype !== 'float32' || r.dims.length !== 1 || r.dims[0] !== 0) continue;
    const host = users[r.arg]!.filter(live)
      .flatMap((view) => users[view]!.filter(live))
      .map((u) => byRoot.get(u))
      .find((m) => m && !taken.has(m.root) && isTransposedLeftOperand(low, low.ir[m.root]!, r.arg) && firstRead(r.id) > m.root);
    if (!host) continue;
    taken.add(host.root);
    dropped.add(g);
    host.members.push(r.id);
    host.members.sort((a, b) => a - b);
  }
  return groups.filter((g) => !dropped.has(g));
}

/** Whether IR node `user` can compute an element-wise operand inside its own kernel. */
function fusesInto(user: IRNode): boolean {
  return user.kind === 'ew' || user.kind === 'reduce';
}

function kindOf(n: IRNode): GroupKind {
  switch (n.kind) {
    case 'ew':
      return 'elementwise';
    case 'reduce':
    case 'matmul':
    case 'conv2d':
    case 'pool2d':
    case 'gather':
      return n.kind;
    default:
      return 'eager';
  }
}
