import { KilnError } from '../errors.js';
import type { GraphModule } from '../graph/graph-module.js';
import { Module } from '../runtime/nn/module.js';
import { kernelsBackend, type KernelProgramCallable } from '../kernels/program.js';
import { countOps, eagerBackend, isKernelsBackend, type BackendOption } from './backends.js';
import { CompiledCallable, codeFrameAt, type BreakReason, type CacheEntry, type CaptureOptions } from './compiled-callable.js';
import { PlanRunner, planOf, recording, type PlanRecorder } from './plan.js';
import { OptimizedModule, type CompileOptions } from './compile.js';

export interface ExplainOutput {
  graphCount: number;
  graphBreakCount: number;
  breakReasons: BreakReason[];
  opCount: number;
  guards: string[];
  graphs: GraphModule[];
  /**
   * With the 'kernels' backend (the default): for each graph (same order as `graphs`), its kernel plan for
   * these inputs as `pprint()` and `KILN_LOG=kernels` print it: one row per kernel or eager step, naming the
   * graph nodes fused into it; an eager step says why (`not lowered: …` with the reason its op or layer
   * declares in its `lower` field or `functional` form). Absent with any other backend.
   */
  kernels?: string[];
  /**
   * The guards again, grouped by the captured callable they belong to: one group per graph segment (and
   * per arm of a branch) of a plugin-rewritten method, or one for run-time capture.
   */
  guardsBySegment: { segment: string; guards: string[] }[];
}

/**
 * `explain(modelOrFn)(...args)`: capture once, on fresh caches, and report what was captured — graphs, their
 * op count, the guards, and every graph break with its reason and source location. With the 'kernels'
 * backend each graph is also compiled by it and run once on the inputs (graphs hold only graph ops, so no
 * user code runs again; a plugin-rewritten method runs once in all, its breaks as written), and `kernels`
 * holds the plan tables. While gradients are recorded kernels do not run; the table then shows the plan
 * the graph would run under noGrad.
 */
export function explain(model: Module | ((...args: never[]) => unknown)): (...args: unknown[]) => ExplainOutput {
  if (!(model instanceof Module) && typeof model !== 'function') throw new KilnError('explain: expected an nn.Module or a function');
  return (...args) => {
    const target = model instanceof OptimizedModule ? model.origMod : compiledFunctionOf(model);
    const graphs: GraphModule[] = [];
    const self = target instanceof Module ? target : undefined;
    const fn = (self ? self.forward : target) as (...a: unknown[]) => unknown;
    const p = planOf(fn);
    const given = model instanceof OptimizedModule ? model._options.backend : (model as { _options?: CompileOptions })._options?.backend;
    const programs = usesKernels(given, p?.options?.backend) ? new Map<GraphModule, KernelProgramCallable>() : undefined;
    const options: CaptureOptions = {
      backend: (gm, inputs) => {
        graphs.push(gm);
        if (!programs) return eagerBackend(gm, inputs);
        const program = kernelsBackend(gm, inputs, { planUnderGrad: true });
        programs.set(gm, program);
        return program;
      },
      fullgraph: false,
      dynamic: undefined,
      cacheSizeLimit: 1,
      errorOnRecompile: false,
    };
    let groups: { segment: string; entries: CacheEntry[] }[];
    let breakReasons: BreakReason[] = [];
    if (p) {
      // A plugin-rewritten method: run it once through a fresh runner, collecting every segment (helpers too).
      const rec: PlanRecorder = { runners: new Set(), breaks: breakReasons };
      recording(rec, () => new PlanRunner(p, self, options).call(args));
      groups = [...rec.runners].flatMap((r) => r.graphCallables().map((c) => ({ segment: c.describe(), entries: c.entries })));
    } else {
      const callable = new CompiledCallable(fn, self, options);
      groups = [{ segment: callable.describe(), entries: [callable.capture(args, true)] }];
      // capture only traces; the kernels backend plans on a graph's first run (graph ops only, no user code)
      const entry = groups[0]!.entries[0]!;
      if (programs && entry.graph) entry.run(...args);
    }
    const entries = groups.flatMap((g) => g.entries);
    for (const e of entries) if (e.breakReason) breakReasons.push(e.breakReason);
    breakReasons = sortByLocation(breakReasons);
    const guards = [...new Set(entries.flatMap((e) => e.guards.map((g) => g.text)))];
    return {
      graphCount: graphs.length,
      graphBreakCount: breakReasons.length,
      breakReasons,
      opCount: graphs.reduce((n, g) => n + countOps(g), 0),
      guards,
      graphs,
      ...(programs ? { kernels: graphs.map((g) => programs.get(g)?.pprint() ?? '') } : {}),
      guardsBySegment: groups.map((g) => ({
        segment: g.segment,
        guards: [...new Set(g.entries.flatMap((e) => e.guards.map((x) => x.text)))],
      })),
    };
  };
}

/**
 * What `compile(fn)` wraps: `explain(compile(fn))` explains `fn` itself (the wrapper's `...args` would
 * otherwise name every guard). A plugin-rewritten function keeps its plan; anything else is itself.
 */
function compiledFunctionOf(model: Module | ((...args: never[]) => unknown)): Module | ((...args: never[]) => unknown) {
  if (model instanceof Module) return model;
  const inner = (model as { _compiled?: unknown })._compiled;
  if (inner instanceof PlanRunner) return inner.plan.eager as (...args: never[]) => unknown;
  if (inner instanceof CompiledCallable && !inner.self) return inner.fn as (...args: never[]) => unknown;
  return model;
}

/** Whether graphs go to the 'kernels' backend: compile()'s option, else the plugin's, else the default ('kernels'). */
function usesKernels(given: BackendOption | undefined, plugin: BackendOption | undefined): boolean {
  return isKernelsBackend(given ?? plugin);
}

/** Break reasons in source order (file, then line, then column). */
function sortByLocation(bs: BreakReason[]): BreakReason[] {
  const key = (loc: string) => {
    const m = /^(.*):(\d+):(\d+)$/.exec(loc);
    return m ? ([m[1]!, Number(m[2]), Number(m[3])] as const) : ([loc, 0, 0] as const);
  };
  return [...bs].sort((a, b) => {
    const [fa, la, ca] = key(a.loc);
    const [fb, lb, cb] = key(b.loc);
    return fa < fb ? -1 : fa > fb ? 1 : la - lb || ca - cb;
  });
}

/** The report as text for people: counts, each graph's code, each break with its location, then the guards (summarised). */
export function formatExplain(r: ExplainOutput): string {
  const lines = [`graphs: ${r.graphCount}   graph breaks: ${r.graphBreakCount}   ops: ${r.opCount}   guards: ${r.guards.length}`];
  r.graphs.forEach((g, i) => {
    lines.push(`graph ${i + 1}:`, ...g.code.split('\n').map((l) => `  ${l}`));
    // the plan table under its graph, titled `kernels: …` instead of pprint's `kiln kernels: Name…`
    const plan = r.kernels?.[i];
    if (plan) lines.push(...plan.split('\n').map((l) => `  ${l.replace(/^kiln kernels: [\w$]+:? ?/, 'kernels: ')}`));
  });
  for (const b of r.breakReasons) {
    const frame = codeFrameAt(b.loc);
    lines.push(`break at ${b.loc}:`, `  ${b.reason}`, ...(frame ? frame.split('\n').map((l) => `    ${l}`) : []));
  }
  // One group per captured segment when there are several (each segment has its own guards); else as one list.
  const groups = r.guardsBySegment ?? [];
  if (groups.length > 1) {
    for (const g of groups) lines.push(`guards of ${g.segment}:`, ...summariseGuards(g.guards).map((x) => `  ${x}`));
  } else lines.push('guards:', ...summariseGuards(r.guards).map((g) => `  ${g}`));
  return lines.join('\n');
}

/**
 * Guards grouped for reading: one line per tensor (`x: Tensor [400, 2] float32, requiresGrad false`, free
 * dims as `*`), one line per kind of per-module check with how many modules it covers, the rest as is.
 */
export function summariseGuards(guards: readonly string[]): string[] {
  const tensors = new Map<string, { ndim: number; dims: Map<number, string>; dtype: string; grad: string }>();
  const perModule = new Map<string, string[]>();
  const rest: string[] = [];
  const tensor = (name: string) => {
    let e = tensors.get(name);
    if (!e) tensors.set(name, (e = { ndim: 0, dims: new Map(), dtype: '?', grad: '?' }));
    return e;
  };
  for (const g of guards) {
    let m: RegExpExecArray | null;
    if ((m = /^(\w+) is a Tensor$/.exec(g))) tensor(m[1]!);
    else if ((m = /^(\w+)\.ndim == (\d+)$/.exec(g))) tensor(m[1]!).ndim = Number(m[2]);
    else if ((m = /^(\w+)\.shape\[(\d+)\] == (\d+)$/.exec(g))) tensor(m[1]!).dims.set(Number(m[2]), m[3]!);
    else if ((m = /^(\w+)\.dtype == (\w+)$/.exec(g))) tensor(m[1]!).dtype = m[2]!;
    else if ((m = /^(\w+)\.requiresGrad == (\w+)$/.exec(g))) tensor(m[1]!).grad = m[2]!;
    else if (
      (m = /^([\w$]+(?:\.[\w.$]+)?)(\.forwardHooks| submodules, parameters and buffers \(identity and order\)|\.training == \w+)$/.exec(g))
    ) {
      const kind = m[2]!.replace(/^[. ]/, '');
      perModule.set(kind, [...(perModule.get(kind) ?? []), m[1]!]);
    } else rest.push(g);
  }
  const out: string[] = [];
  for (const [name, e] of tensors) {
    const shape = Array.from({ length: e.ndim }, (_, i) => e.dims.get(i) ?? '*');
    out.push(`${name}: Tensor [${shape.join(', ')}] ${e.dtype}, requiresGrad ${e.grad}`);
  }
  for (const [kind, mods] of perModule) {
    const what = kind.startsWith('submodules')
      ? 'submodules, parameters and buffers unchanged (identity and order)'
      : kind === 'forwardHooks'
        ? 'forward hooks unchanged'
        : kind;
    const own = mods.filter((p) => p === 'self' || p.startsWith('self.'));
    // Modules reached outside self's tree (closures, plain arrays, arguments) are named: their paths are new.
    const others = mods.filter((p) => !own.includes(p));
    const whose = [
      ...(own.length ? [own.length === 1 ? own[0]! : `self and ${own.length - 1} submodule${own.length === 2 ? '' : 's'}`] : []),
      ...others,
    ];
    out.push(mods.length === 1 ? `${mods[0]} ${what}` : `${what}: ${whose.join(', ')}`);
  }
  return [...out, ...rest];
}
