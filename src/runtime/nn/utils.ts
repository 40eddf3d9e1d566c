/** `nn.utils`: helpers around a model's parameters and gradients (PyTorch's `torch.nn.utils`). */
export { clipGradNorm_, clipGradValue_, type ClipGradNormOptions } from './clip-grad.js';
