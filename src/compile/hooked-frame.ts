import type { Module } from '../runtime/nn/module.js';
import { CompiledCallable } from './compiled-callable.js';
import type { PlanRunner } from './plan.js';

/**
 * Hooks on the compiled root are part of the frame, as TorchDynamo captures `Module._call_impl`: one graph
 * holds the pre-hooks, forward and hooks (the root's hooks are guarded, so removing one recompiles), when
 * `hooksCapturable`; other hooks keep running eagerly around the captured forward.
 */
export { hooksCapturable } from './capturable-hooks.js';

/**
 * The hooked frame for `run` (a forward captured at run time, or a plugin plan that is one graph segment
 * over forward's own parameters), or undefined when the plan has breaks: its hooks then run around it.
 */
export function hookedFrame(m: Module, run: PlanRunner | CompiledCallable): CompiledCallable | undefined {
  if (run instanceof CompiledCallable) return new CompiledCallable(run.fn, m, run.options, true, undefined, true, undefined, true);
  const p = run.plan;
  const seg = p.segments[0];
  if (p.unsupported || p.bind || p.segments.length !== 1 || seg?.kind !== 'graph' || seg.exit !== 'return' || !p.readsParams[0])
    return undefined;
  const label = `${p.name} with its hooks (segment at ${p.file}:${seg.loc})`;
  return new CompiledCallable(seg.fn!, m, run.options, false, label, false, seg.exit, true);
}
