/**
 * `kiln/plugin/runtime`: what code rewritten by kiln/plugin imports. Not for hand-written code.
 * Importing compile.js installs the option parsing that plans use for the plugin's defaults.
 */
import './compile/compile.js';
export { plan, run, attach } from './compile/plan.js';
export { scope } from './compile/free-vars.js';
export {
  size,
  sizeAt,
  sizeOf,
  shape,
  numel,
  ndim,
  dim,
  item,
  add,
  sub,
  mul,
  floorDiv,
  mod,
  div,
  inc,
  dec,
  lt,
  le,
  gt,
  ge,
  eq,
  ne,
  looseEq,
  looseNe,
  concrete,
  pred,
} from './runtime/shape-helpers.js';
