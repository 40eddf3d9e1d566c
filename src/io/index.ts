/** Model I/O: weights in and out of safetensors files, and PyTorch checkpoints in. */
export { saveSafetensors, loadSafetensors } from './safetensors.js';
export { loadPytorch } from './pytorch.js';
export type { StateDict } from './state-dict.js';
