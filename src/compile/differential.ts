import { ValueError } from '../errors.js';
import { Graph } from '../graph/graph.js';
import { GraphModule } from '../graph/graph-module.js';
import { Interpreter } from '../graph/interpreter.js';
import { targetName, type Node } from '../graph/node.js';
import { noGrad } from '../runtime/autograd.js';
import { isFloating } from '../runtime/dtype.js';
import { Module } from '../runtime/nn/module.js';
import { randn } from '../runtime/ops/index.js';
import { manualSeed, rngState, setRngState } from '../runtime/random.js';
import { fmt } from '../runtime/shape.js';
import { Tensor } from '../runtime/tensor.js';
import { eagerBackend, type Backend } from './backends.js';
import { compile } from './compile.js';
import { eagerly } from './plan.js';
import { kernelsBackend } from '../kernels/program.js';

/**
 * `testing.differential`: run a model (or function) compiled, on each backend, with grad on and off and in
 * train/eval mode, against the same model run eagerly, on the given inputs and on seeded random inputs of
 * the same shapes; compare outputs, buffers and input/parameter gradients; for a mismatch, find the captured
 * graph and the node whose backend value first leaves eager's (each graph is re-run node by node through
 * the Interpreter). The model's parameters, buffers, grads, `training` flags and the global generator are
 * put back as they were. When the model does not run eagerly on the inputs, the eager run's error is thrown.
 */

export type DifferentialBackend = 'eager' | 'kernels';

export interface DifferentialOptions {
  /** Backends to check (default both), or your own as `{ name, backend }`. */
  readonly backends?: readonly (DifferentialBackend | NamedBackend)[];
  /** Grad modes to check: true runs backward and compares gradients (default [true, false]). */
  readonly grad?: readonly boolean[];
  /** Module modes to check (default: the mode the module is in). Ignored for functions. */
  readonly modes?: readonly ('train' | 'eval')[];
  /** Extra input sets of the same shapes, drawn with `seed` (default 1). Integer and bool inputs are kept. */
  readonly randomInputs?: number;
  readonly seed?: number;
  /** Tolerances (|compiled - eager| <= atol + rtol·|eager|); float32 kernels fuse and reorder, so not exact. */
  readonly rtol?: number;
  readonly atol?: number;
  /** For a function: the module whose parameters and buffers it uses (their grads and state are compared and restored). */
  readonly module?: Module;
}

/** A backend under test with the name the report gives it. */
export interface NamedBackend {
  readonly name: string;
  readonly backend: Backend;
}

export interface DifferentialMismatch {
  readonly backend: string;
  readonly grad: boolean;
  readonly mode: 'train' | 'eval' | undefined;
  /** `given` or `random 1`, … */
  readonly inputs: string;
  /** `output`, `output[1].h`, `grad of input 0`, `grad of parameter 'fc.weight'`, `buffer 'bn.runningMean'`, `error`. */
  readonly what: string;
  readonly detail: string;
  /** Which captured graph (0-based, in capture order) first computed a different value, when one did. */
  readonly graph?: number;
  /** The node of that graph whose backend value first differs from the Interpreter's, and its source line. */
  readonly node?: string;
  readonly nodeSource?: string;
  /** Why no graph or node is named: every graph agrees with the Interpreter on its own inputs. */
  readonly localisation?: string;
}

export interface DifferentialReport {
  readonly ok: boolean;
  /** Runs compared (backend × grad × mode × input set). */
  readonly runs: number;
  /** Most graphs one compiled run captured. */
  readonly graphs: number;
  readonly mismatches: readonly DifferentialMismatch[];
  /** A short aligned report, one line per mismatch. */
  toString(): string;
}

type Callable = Module | ((...args: never[]) => unknown);

const BACKENDS: Record<DifferentialBackend, Backend> = { eager: eagerBackend, kernels: kernelsBackend };

interface RunResult {
  readonly outputs: readonly (readonly [string, unknown])[];
  readonly grads: readonly (readonly [string, Tensor | null])[];
  readonly buffers: readonly (readonly [string, Tensor])[];
  readonly error?: Error;
}

interface GraphCall {
  readonly graph: number;
  readonly gm: GraphModule;
  readonly args: readonly unknown[];
  readonly out: unknown;
}

export function differential(model: Callable, inputs: readonly unknown[], options: DifferentialOptions = {}): DifferentialReport {
  if (!(model instanceof Module) && typeof model !== 'function') throw new ValueError('differential: expected an nn.Module or a function');
  if (!Array.isArray(inputs)) throw new ValueError(`differential: inputs must be an array of forward's arguments, got ${typeof inputs}`);
  const backends = (options.backends ?? ['eager', 'kernels']).map(namedBackend);
  const grads = options.grad ?? [true, false];
  const owner = model instanceof Module ? model : options.module;
  const modes: ('train' | 'eval' | undefined)[] = owner ? [...(options.modes ?? [owner.training ? 'train' : 'eval'])] : [undefined];
  const randomSets = options.randomInputs ?? 1;
  if (!Number.isInteger(randomSets) || randomSets < 0)
    throw new ValueError(`differential: randomInputs must be a non-negative integer, got ${randomSets}`);
  for (const m of modes)
    if (m !== undefined && m !== 'train' && m !== 'eval')
      throw new ValueError(`differential: modes are 'train' or 'eval', got ${JSON.stringify(m)}`);
  for (const g of grads) if (typeof g !== 'boolean') throw new ValueError(`differential: grad takes booleans, got ${JSON.stringify(g)}`);
  const seed = options.seed ?? 0;
  if (!Number.isSafeInteger(seed)) throw new ValueError(`differential: seed must be an integer, got ${seed}`);
  const tol = { rtol: options.rtol ?? 1e-4, atol: options.atol ?? 1e-5 };

  const saved = owner ? saveState(owner) : undefined;
  const rng = rngState();
  const mismatches: DifferentialMismatch[] = [];
  let runs = 0;
  let graphs = 0;
  try {
    const sets: [string, readonly unknown[]][] = [['given', inputs]];
    for (let k = 1; k <= randomSets; k++) {
      manualSeed(seed + k);
      sets.push([`random ${k}`, inputs.map(randomLike)]);
    }
    for (const [inputName, ins] of sets) {
      for (const mode of modes) {
        for (const grad of grads) {
          // The eager reference, once per input set, mode and grad mode.
          saved?.restore(mode);
          const want = runOnce((args) => eagerly(() => invoke(model, args)), ins, grad, owner, seed);
          // Nothing to compare against: the model itself does not run on these inputs.
          if (want.error) throw want.error;
          for (const { name: backend, backend: base } of backends) {
            runs++;
            const where = { backend, grad, mode, inputs: inputName };
            const calls: GraphCall[] = [];
            let captured = 0;
            const recording: Backend = (gm, example) => {
              const graph = captured++;
              const run = base(gm, example);
              return (...args) => {
                const snap = args.map(snapshot);
                const out = run(...args);
                calls.push({ graph, gm, args: snap, out: snapshot(out) });
                return out;
              };
            };
            saved?.restore(mode);
            const compiled = compile(model as never, { backend: recording }) as unknown as Callable;
            const got = runOnce((args) => invoke(compiled, args), ins, grad, owner, seed);
            graphs = Math.max(graphs, captured);
            const found = compare(want, got, tol);
            if (found.length === 0) continue;
            const valueMismatch = found.some((f) => f.what !== 'error' && !f.what.startsWith('grad'));
            saved?.restore(mode);
            const where2 = valueMismatch ? localise(calls, base, tol) : {};
            for (const f of found) mismatches.push({ ...where, ...f, ...(f.what.startsWith('grad') ? {} : where2) });
          }
        }
      }
    }
  } finally {
    saved?.restore(undefined);
    setRngState(rng);
  }
  return { ok: mismatches.length === 0, runs, graphs, mismatches, toString: () => formatReport(runs, graphs, mismatches) };
}

function namedBackend(b: DifferentialBackend | NamedBackend): NamedBackend {
  if (typeof b === 'string' && Object.hasOwn(BACKENDS, b)) return { name: b, backend: BACKENDS[b] };
  if (b !== null && typeof b === 'object' && typeof b.name === 'string' && typeof b.backend === 'function') return b;
  throw new ValueError(`differential: unknown backend ${JSON.stringify(b)} (expected 'eager', 'kernels' or { name, backend })`);
}

function invoke(f: Callable, args: readonly unknown[]): unknown {
  return f instanceof Module ? f.call(...(args as never[])) : f(...(args as never[]));
}

/** A random tensor like `a` (float tensors only; other values are kept). */
function randomLike(a: unknown): unknown {
  if (!(a instanceof Tensor) || !isFloating(a.dtype)) return a;
  return randn([...a.shape], { dtype: a.dtype });
}

/** A copy of a value to compare later: tensors detached and cloned, containers copied. */
function snapshot(v: unknown): unknown {
  if (v instanceof Tensor) return noGrad(() => v.detach().clone());
  if (Array.isArray(v)) return v.map(snapshot);
  if (v !== null && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype)
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, snapshot(x)]));
  return v;
}

/** Every leaf of a (nested) output with its path: `output`, `output[0]`, `output.h`. */
function flatten(v: unknown, path: string, out: [string, unknown][] = []): [string, unknown][] {
  if (Array.isArray(v)) v.forEach((x, i) => flatten(x, `${path}[${i}]`, out));
  else if (v !== null && typeof v === 'object' && !(v instanceof Tensor) && Object.getPrototypeOf(v) === Object.prototype)
    for (const [k, x] of Object.entries(v)) flatten(x, `${path}.${k}`, out);
  else out.push([path, v]);
  return out;
}

/** Fixed weights for the backward seed, so every output element's gradient counts (as gradcheck). */
function weightsLike(t: Tensor): Tensor {
  const w = Float32Array.from({ length: t.numel() }, (_, i) => Math.sin(i * 12.9898 + 1) * 0.5 + 0.75);
  return Tensor.fromData(w, [...t.shape], 'float32');
}

/** One run: fresh input copies (requiring grad when `grad` is on), seeded, then backward when grad is on. */
function runOnce(
  f: (args: readonly unknown[]) => unknown,
  ins: readonly unknown[],
  grad: boolean,
  owner: Module | undefined,
  seed: number,
): RunResult {
  const params = owner ? owner.namedParameters() : [];
  for (const [, p] of params) p.grad = null;
  const args = ins.map((a) => {
    if (!(a instanceof Tensor)) return a;
    const c = noGrad(() => a.detach().clone());
    return grad && c.dtype === 'float32' ? c.requiresGrad_(true) : c;
  });
  const run = () => f(args);
  manualSeed(seed);
  let out: unknown;
  try {
    out = grad ? run() : noGrad(run);
    const leaves = flatten(out, 'output');
    if (grad) {
      let loss: Tensor | undefined;
      for (const [, v] of leaves) {
        if (!(v instanceof Tensor) || !v.requiresGrad || v.dtype !== 'float32') continue;
        const term = v.mul(weightsLike(v)).sum();
        loss = loss ? loss.add(term) : term;
      }
      loss?.backward();
    }
    const inputGrads = args.flatMap((a, i) =>
      a instanceof Tensor && a.requiresGrad ? [[`grad of input ${i}`, a.grad ? snapshot(a.grad) : null] as const] : [],
    );
    const paramGrads = params.map(([n, p]) => [`grad of parameter '${n}'`, p.grad ? (snapshot(p.grad) as Tensor) : null] as const);
    return {
      outputs: leaves.map(([k, v]) => [k, snapshot(v)] as const),
      grads: grad ? [...(inputGrads as [string, Tensor | null][]), ...paramGrads] : [],
      buffers: owner ? owner.namedBuffers().map(([n, b]) => [`buffer '${n}'`, snapshot(b) as Tensor] as const) : [],
    };
  } catch (e) {
    return { outputs: [], grads: [], buffers: [], error: e instanceof Error ? e : new Error(String(e)) };
  }
}

type Found = Pick<DifferentialMismatch, 'what' | 'detail'>;

function compare(want: RunResult, got: RunResult, tol: { rtol: number; atol: number }): Found[] {
  if (want.error || got.error) {
    if (want.error && got.error && want.error.constructor === got.error.constructor) return [];
    const say = (r: RunResult) => (r.error ? `${r.error.name}: ${r.error.message.split('\n')[0]}` : 'no error');
    return [{ what: 'error', detail: `eager: ${say(want)}; compiled: ${say(got)}` }];
  }
  const found: Found[] = [];
  const pairs = (a: readonly (readonly [string, unknown])[], b: readonly (readonly [string, unknown])[]) => {
    const theirs = new Map(b);
    for (const [k, v] of a) {
      if (!theirs.has(k)) {
        found.push({ what: k, detail: 'missing from the compiled run' });
        continue;
      }
      const d = differ(v, theirs.get(k), tol);
      if (d) found.push({ what: k, detail: d });
    }
    for (const [k] of b) if (!a.some(([x]) => x === k)) found.push({ what: k, detail: 'only in the compiled run' });
  };
  pairs(want.outputs, got.outputs);
  pairs(want.buffers, got.buffers);
  pairs(want.grads, got.grads);
  return found;
}

/** Why compiled value `b` is not eager value `a`, or undefined when they agree. */
function differ(a: unknown, b: unknown, { rtol, atol }: { rtol: number; atol: number }): string | undefined {
  if (a instanceof Tensor && b instanceof Tensor) {
    if (a.shape.join() !== b.shape.join()) return `shape ${fmt(b.shape)}, eager ${fmt(a.shape)}`;
    if (a.dtype !== b.dtype) return `dtype ${b.dtype}, eager ${a.dtype}`;
    const x = a.contiguous().data();
    const y = b.contiguous().data();
    let worst = -1;
    let excess = 0;
    let bad = 0;
    for (let i = 0; i < x.length; i++) {
      const u = Number(x[i]);
      const v = Number(y[i]);
      if (Object.is(u, v) || (Number.isNaN(u) && Number.isNaN(v))) continue;
      const over = Number.isNaN(u) || Number.isNaN(v) ? Infinity : Math.abs(u - v) - (atol + rtol * Math.abs(u));
      if (over > 0) {
        bad++;
        if (over > excess || worst < 0) [worst, excess] = [i, over];
      }
    }
    if (bad === 0) return undefined;
    return `${bad} of ${x.length} elements differ; worst at ${worst}: ${short(Number(y[worst]))}, eager ${short(Number(x[worst]))}`;
  }
  if (a === null && b === null) return undefined;
  if (a instanceof Tensor || b instanceof Tensor) {
    const say = (v: unknown) => (v instanceof Tensor ? `a tensor ${fmt(v.shape)}` : v === null ? 'no gradient' : JSON.stringify(v));
    return `${say(b)}, eager ${say(a)}`;
  }
  return JSON.stringify(a) === JSON.stringify(b) ? undefined : `${JSON.stringify(b)}, eager ${JSON.stringify(a)}`;
}

/**
 * The first graph call whose backend output differs from the Interpreter's on the same inputs, and in it
 * the first node whose backend value (the graph cut after that node, compiled the same way) differs.
 */
function localise(calls: readonly GraphCall[], backend: Backend, tol: { rtol: number; atol: number }) {
  const none = {
    localisation:
      calls.length === 0
        ? 'no graph was captured: the compiled run took an eager path'
        : `${calls.length === 1 ? 'the graph run agrees' : `all ${calls.length} graph runs agree`} with the Interpreter on its inputs: the capture differs from eager (guards, side effects, grad mode, code between graphs) or the model keeps state outside its parameters, buffers and attributes`,
  };
  for (const c of calls) {
    let reference: Map<Node, unknown>;
    try {
      const interp = new Interpreter(c.gm, false);
      noGrad(() => interp.run(...(c.args.map(snapshot) as unknown[])));
      reference = interp.env;
    } catch {
      continue;
    }
    const outNode = c.gm.graph.outputNode;
    const whole = outNode ? reference.get(outNode) : undefined;
    const leavesWant = flatten(whole, 'out');
    const leavesGot = new Map(flatten(c.out, 'out'));
    if (!leavesWant.some(([k, v]) => differ(v, leavesGot.get(k), tol) !== undefined)) continue;
    for (const node of c.gm.graph.nodes) {
      if (!node.op.startsWith('call_')) continue;
      const want = reference.get(node);
      if (!(want instanceof Tensor)) continue;
      let got: unknown;
      try {
        got = noGrad(() => upTo(c.gm, node, backend)(...(c.args.map(snapshot) as Tensor[])));
      } catch (e) {
        return { graph: c.graph, node: node.name, nodeSource: nodeSource(node, `the backend threw ${(e as Error).name}`) };
      }
      const d = differ(want, got, tol);
      if (d) return { graph: c.graph, node: node.name, nodeSource: nodeSource(node, d) };
    }
    return { graph: c.graph, localisation: 'the graph output differs, but no single node does on its own' };
  }
  return none;
}

/** The graph cut after `node` (its value is the output), compiled with `backend`. */
function upTo(gm: GraphModule, node: Node, backend: Backend): (...args: Tensor[]) => unknown {
  const g = new Graph();
  const map = new Map<Node, Node>();
  for (const n of gm.graph.nodes) {
    if (n.op === 'output') break;
    map.set(
      n,
      g.nodeCopy(n, (x) => map.get(x)!),
    );
    if (n === node) break;
  }
  g.output(map.get(node)!);
  const cut = new GraphModule(gm, g, gm.className);
  return backend(cut, []);
}

function nodeSource(node: Node, detail: string): string {
  const at = typeof node.meta.stackTrace === 'string' ? ` ${node.meta.stackTrace}` : '';
  return `${node.op} ${targetName(node.target)}: ${detail}${at}`;
}

/** Parameters, buffers (by owner and attribute), grads, training flags and plain attributes, to put back after every run. */
function saveState(owner: Module) {
  const modules = owner.namedModules();
  const flags = modules.map(([, m]) => [m, m.training] as const);
  const tensors: { m: Module; name: string; t: Tensor; data: ArrayLike<number> & { slice(): unknown } }[] = [];
  for (const [, m] of modules) {
    for (const [name, t] of [...m.namedParameters('', false), ...m.namedBuffers('', false)]) {
      tensors.push({ m, name, t, data: t._storage.data.slice() as ArrayLike<number> & { slice(): unknown } });
    }
  }
  const grads = owner.namedParameters().map(([, p]) => [p, p.grad] as const);
  // Plain attributes a forward may update (counters, flags), so every run starts from the same values.
  const plain = modules.flatMap(([, m]) =>
    Object.entries(m)
      .filter(([, v]) => v === null || ['number', 'string', 'boolean', 'undefined'].includes(typeof v))
      .map(([k, v]) => [m as unknown as Record<string, unknown>, k, v] as const),
  );
  return {
    /** Back to the saved state; then `mode` (or the saved flags when undefined). */
    restore(mode: 'train' | 'eval' | undefined): void {
      for (const { m, name, t, data } of tensors) {
        const holder = m as unknown as Record<string, unknown>;
        if (holder[name] !== t) {
          try {
            holder[name] = t;
          } catch {
            // a getter-only attribute: nothing to put back
          }
        }
        (t._storage.data as unknown as { set(a: ArrayLike<number>): void }).set(data);
      }
      for (const [p, g] of grads) p.grad = g;
      for (const [m, k, v] of plain) if (m[k] !== v) m[k] = v;
      for (const [m, f] of flags) m.training = f;
      if (mode) owner.train(mode === 'train');
    },
  };
}

/** A value for the report: 6 significant digits. */
function short(v: number): string {
  return String(Number(v.toPrecision(6)));
}

/** Mismatch lines the text report shows; the report object keeps them all. */
const MAX_LINES = 12;

function formatReport(runs: number, graphs: number, mismatches: readonly DifferentialMismatch[]): string {
  const head = `differential check: ${runs} compiled run${runs === 1 ? '' : 's'} against eager, up to ${graphs} graph${graphs === 1 ? '' : 's'} each: `;
  if (mismatches.length === 0) return `${head}all match`;
  const rows = mismatches.map((m) => [
    m.backend,
    m.grad ? 'grad' : 'noGrad',
    m.mode ?? '-',
    m.inputs,
    m.what,
    m.detail,
    m.node !== undefined ? `graph ${m.graph} node '${m.node}': ${m.nodeSource}` : (m.localisation ?? ''),
  ]);
  const widths = rows[0]!.slice(0, 5).map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const shown = rows.slice(0, MAX_LINES);
  const indent = ' '.repeat(widths.reduce((s, w) => s + w + 2, 2));
  const lines = shown.map((r, i) => {
    const cols = r.slice(0, 5).map((c, k) => c.padEnd(widths[k]!));
    // Where it diverged, unless the row above said the same.
    const where = r[6] && !shown.slice(0, i).some((above) => above[6] === r[6]) ? `\n${indent}${r[6]}` : '';
    return `  ${cols.join('  ')}  ${r[5]}${where}`;
  });
  if (rows.length > shown.length) lines.push(`  … and ${rows.length - shown.length} more (report.mismatches lists all)`);
  return [`${head}${mismatches.length} mismatch${mismatches.length === 1 ? '' : 'es'}`, ...lines].join('\n');
}
