import type { Module } from '../runtime/nn/module.js';
import { sourceBreak } from './source-check.js';

/**
 * Whether `m`'s forward hooks and pre-hooks can be traced into a graph (TorchDynamo inlines them): their
 * source shows nothing a graph would drop (a side effect, a free variable it cannot guard). The hooks'
 * identity is guarded (`forwardHooks`), so a changed hook recompiles; hooks that fail this run eagerly.
 */
export function hooksCapturable(m: Module): boolean {
  const { pre, post } = m.forwardHooks();
  return [...pre, ...post].every((h) => sourceBreak(h as never, undefined, 'a forward hook') === undefined);
}
