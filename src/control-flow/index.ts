import { registerBuiltin } from '../graph/builtins.js';
import type { FunctionTarget } from '../graph/node.js';
import { cond, condImpl } from './cond.js';
import { map, mapImpl } from './map.js';

/**
 * Control flow (API §6): `cond` and `map` run as plain code eagerly and become subgraphs under export. Their
 * graph nodes call `cond` and `map_impl`, registered as graph builtins so generated code and saved programs
 * name them.
 */
registerBuiltin('cond', condImpl as unknown as FunctionTarget);
registerBuiltin('map_impl', mapImpl as unknown as FunctionTarget);

export { cond, map };
export { CondOpArgsMismatchError, UnsupportedAliasMutationError } from './errors.js';
