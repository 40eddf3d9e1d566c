import { KilnError } from '../errors.js';

/**
 * Maximum flow / minimum s-t cut (Dinic's algorithm) over a small directed network with named vertices,
 * written for the min-cut rematerialisation partitioner. Capacities may be `Infinity` (an edge that must not
 * be cut); a network whose every source–sink path is infinite has no finite cut and is refused.
 */
export class FlowNetwork {
  private readonly index = new Map<string, number>();
  readonly names: string[] = [];
  // Edge arrays: edge e goes to `to[e]` with residual capacity `cap[e]`; its reverse edge is e ^ 1.
  private readonly to: number[] = [];
  private readonly cap: number[] = [];
  private readonly adj: number[][] = [];

  vertex(name: string): number {
    let v = this.index.get(name);
    if (v === undefined) {
      v = this.names.push(name) - 1;
      this.index.set(name, v);
      this.adj.push([]);
    }
    return v;
  }

  has(name: string): boolean {
    return this.index.has(name);
  }

  /** Add capacity from `u` to `v` (parallel edges add up, as networkx's single edge with the larger capacity would not: callers add each edge once). */
  addEdge(u: string, v: string, capacity: number): void {
    if (!(capacity >= 0)) throw new KilnError(`FlowNetwork.addEdge: capacity of ${u} → ${v} must be ≥ 0, got ${capacity}`);
    const a = this.vertex(u);
    const b = this.vertex(v);
    this.adj[a]!.push(this.to.length);
    this.to.push(b);
    this.cap.push(capacity);
    this.adj[b]!.push(this.to.length);
    this.to.push(a);
    this.cap.push(0);
  }

  /**
   * The maximum flow from `source` to `sink` and a minimum cut. `sinkSide` holds the vertices that can still
   * reach the sink in the residual network (what networkx's `minimum_cut` returns as its second set), so among
   * several minimum cuts the one closest to the sink is chosen, as PyTorch's partitioner gets.
   */
  minCut(source: string, sink: string): { value: number; sinkSide: Set<string>; cutEdges: [string, string][] } {
    const s = this.vertex(source);
    const t = this.vertex(sink);
    const n = this.names.length;
    let value = 0;
    const level = new Array<number>(n);
    const iter = new Array<number>(n);
    const bfs = (): boolean => {
      level.fill(-1);
      level[s] = 0;
      const queue = [s];
      for (let qi = 0; qi < queue.length; qi++) {
        const u = queue[qi]!;
        for (const e of this.adj[u]!) {
          const v = this.to[e]!;
          if (this.cap[e]! > 0 && level[v] === -1) {
            level[v] = level[u]! + 1;
            queue.push(v);
          }
        }
      }
      return level[t] !== -1;
    };
    // Iterative DFS for one augmenting path in the level graph; returns the flow pushed (0 when blocked).
    const augment = (): number => {
      const pathEdges: number[] = [];
      let u = s;
      for (;;) {
        if (u === t) {
          let f = Infinity;
          for (const e of pathEdges) f = Math.min(f, this.cap[e]!);
          if (f === Infinity) {
            const path = [source, ...pathEdges.map((e) => this.names[this.to[e]!]!)].join(' → ');
            throw new KilnError(`minCut: the path ${path} has no finite capacity, so no finite cut separates ${source} from ${sink}`);
          }
          for (const e of pathEdges) {
            this.cap[e]! -= f;
            this.cap[e ^ 1]! += f;
          }
          return f;
        }
        const edges = this.adj[u]!;
        let advanced = false;
        for (; iter[u]! < edges.length; iter[u]!++) {
          const e = edges[iter[u]!]!;
          const v = this.to[e]!;
          if (this.cap[e]! > 0 && level[v] === level[u]! + 1) {
            pathEdges.push(e);
            u = v;
            advanced = true;
            break;
          }
        }
        if (advanced) continue;
        if (u === s) return 0;
        // Dead end: prune it from the level graph and step back.
        level[u] = -1;
        const back = pathEdges.pop()!;
        u = this.to[back ^ 1]!;
        iter[u]!++;
      }
    };
    while (bfs()) {
      iter.fill(0);
      for (let f = augment(); f > 0; f = augment()) value += f;
    }
    // Vertices that reach the sink through edges with residual capacity.
    const reach = new Array<boolean>(n).fill(false);
    reach[t] = true;
    const stack = [t];
    while (stack.length > 0) {
      const v = stack.pop()!;
      for (const e of this.adj[v]!) {
        // e goes v → u; its reverse e ^ 1 goes u → v with residual cap[e ^ 1].
        const u = this.to[e]!;
        if (!reach[u] && this.cap[e ^ 1]! > 0) {
          reach[u] = true;
          stack.push(u);
        }
      }
    }
    const sinkSide = new Set(this.names.filter((_, i) => reach[i]));
    const cutEdges: [string, string][] = [];
    for (let u = 0; u < n; u++) {
      if (reach[u]) continue;
      for (const e of this.adj[u]!) {
        if (e % 2 === 0 && reach[this.to[e]!]) cutEdges.push([this.names[u]!, this.names[this.to[e]!]!]);
      }
    }
    return { value, sinkSide, cutEdges };
  }
}
