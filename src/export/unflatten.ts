import { ValueError } from '../errors.js';
import type { Module } from '../runtime/nn/module.js';
import { buildModule, ExportedProgram } from './exported-program.js';

/**
 * unflatten (PyTorch's `torch.export.unflatten`): the program as a module tree with the original submodule
 * paths and class names, each holding its own parameters and buffers (the program's, shared), so state-dict
 * keys, `getSubmodule` and printing match the exported module. The root's forward runs the whole program.
 */
export function unflatten(ep: ExportedProgram): Module {
  if (!(ep instanceof ExportedProgram)) throw new ValueError(`unflatten: expected an ExportedProgram, got ${typeof ep}`);
  return buildModule(ep.parts);
}
