import { createRequire } from 'node:module';
import { GPU, HeadlessGLKernel, WebAssemblyKernel } from 'gpu.js';
import { ValueError } from '../errors.js';

/**
 * Which gpu.js mode runs kiln's kernels (API §8). Compiled programs are synchronous calls, so only modes
 * whose kernels return their results synchronously can serve them: headlessgl (a real GPU through
 * headless-gl), webasm (wasm SIMD, single-threaded when called synchronously) and cpu (plain JS).
 */
export type KernelBackendName = 'webasm' | 'cpu' | 'headlessgl' | 'webgpu';

export const KERNEL_BACKENDS: readonly KernelBackendName[] = ['webasm', 'cpu', 'headlessgl', 'webgpu'];

/** Fastest first; what the default picks from. webgpu is absent: its kernels only return Promises. */
const PREFERENCE: readonly KernelBackendName[] = ['headlessgl', 'webasm', 'cpu'];

const require = createRequire(import.meta.url);

/** Why `mode` cannot run kernels on this machine, or null when it can. Results are cached per mode. */
const unavailable = new Map<KernelBackendName, string | null>();

export function whyUnavailable(mode: KernelBackendName): string | null {
  if (!unavailable.has(mode)) unavailable.set(mode, probe(mode));
  return unavailable.get(mode)!;
}

function probe(mode: KernelBackendName): string | null {
  switch (mode) {
    case 'cpu':
      return null;
    case 'webasm':
      return WebAssemblyKernel.isSupported ? null : 'this JavaScript engine has no WebAssembly';
    case 'headlessgl': {
      const loadError = loadFailure('gl');
      if (loadError) return `the optional 'gl' package (headless-gl) cannot be loaded: ${loadError}`;
      return HeadlessGLKernel.isSupported
        ? null
        : "the 'gl' package loads but could not create a WebGL context (no display or GPU driver?)";
    }
    case 'webgpu': {
      const loadError = loadFailure('webgpu');
      if (loadError) return `the 'webgpu' package's Dawn binary cannot be loaded: ${loadError}`;
      return 'gpu.js webgpu kernels only return Promises, and compiled kiln programs run synchronously';
    }
    default:
      return mode satisfies never;
  }
}

/** The first line of the error loading `pkg`, or null when it loads. */
function loadFailure(pkg: string): string | null {
  try {
    require(pkg);
    return null;
  } catch (e) {
    return (e instanceof Error ? e.message : String(e)).split('\n')[0]!.trim();
  }
}

let active: KernelBackendName | null = null;

function fastestAvailable(): KernelBackendName {
  return PREFERENCE.find((m) => whyUnavailable(m) === null) ?? 'cpu';
}

/**
 * Choose the gpu.js mode for kernels compiled from now on. A mode that cannot run here falls back to the
 * fastest one that can, with one `KilnWarning` naming the mode, the reason and the replacement; results
 * stay correct either way. Returns the mode actually used.
 */
export function setKernelBackend(name: KernelBackendName): KernelBackendName {
  if (!KERNEL_BACKENDS.includes(name)) {
    throw new ValueError(
      `setKernelBackend: unknown kernel backend ${JSON.stringify(name)} (expected one of ${KERNEL_BACKENDS.join(', ')})`,
    );
  }
  const reason = whyUnavailable(name);
  if (reason === null) {
    active = name;
    return name;
  }
  active = fastestAvailable();
  process.emitWarning(`kiln: kernel backend '${name}' is unavailable (${reason}); using '${active}' instead.`, 'KilnWarning');
  return active;
}

/** The gpu.js mode kernels run on: the one set, or by default the fastest that works here. */
export function getKernelBackend(): KernelBackendName {
  active ??= fastestAvailable();
  return active;
}

const instances = new Map<KernelBackendName, GPU>();

/** The one shared gpu.js instance for `mode`. */
export function gpuFor(mode: KernelBackendName): GPU {
  let gpu = instances.get(mode);
  if (!gpu) instances.set(mode, (gpu = new GPU({ mode })));
  return gpu;
}
