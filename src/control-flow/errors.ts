import { TraceError } from '../errors.js';

/** The branches of a `cond` return different structures, shapes or dtypes (PyTorch's `CondOpArgsMismatchError`). */
export class CondOpArgsMismatchError extends TraceError {}

/** A `cond` branch or `map` body writes or returns its input (PyTorch's `UnsupportedAliasMutationException`). */
export class UnsupportedAliasMutationError extends TraceError {}
