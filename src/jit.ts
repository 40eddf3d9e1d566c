/**
 * kiln/jit: runtime tracing (torch.jit.trace) — record what a function or module does on example inputs as a
 * kiln FX graph, check it, and save/load it as a file.
 */
export {
  trace,
  traceModule,
  TracedModule,
  TracingCheckError,
  TracingError,
  type TraceOptions,
  type TracedMethod,
  type TracedFunction,
} from './jit/trace.js';
export { saveTraced as save, loadTraced as load, JIT_FORMAT, JIT_VERSION } from './jit/serialize.js';
export type { Structure } from './jit/structure.js';
