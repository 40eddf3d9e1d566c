/** kiln's 'kernels' compile backend: captured graphs lowered to fused gpu.js kernels (API §8). */
export { getKernelBackend, setKernelBackend, KERNEL_BACKENDS, type KernelBackendName } from './backend.js';
export { kernelCacheStats, resetKernelCache, type KernelCacheStats } from './cache.js';
export { kernelsBackend, KernelProgram, type KernelProgramCallable } from './program.js';
