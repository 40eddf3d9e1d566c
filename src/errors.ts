/**
 * Every error kiln throws on purpose is a KilnError, so callers can tell a bad model or bad input
 * apart from a bug. Messages name the op or layer and the shapes or values involved.
 */
export class KilnError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** Shapes that do not fit an op: mismatched matmul dims, non-broadcastable operands, bad reshape. */
export class ShapeError extends KilnError {}

/** A dtype an op does not accept, or a value that does not fit the dtype. */
export class DTypeError extends KilnError {}

/** A dim or index out of range. */
export class IndexError extends KilnError {}

/** A bad argument value that is neither a shape nor a dtype problem (negative size, unknown option). */
export class ValueError extends KilnError {}

/** Autograd misuse: backward on a non-scalar without a grad, a tensor modified after it was saved, … */
export class AutogradError extends KilnError {}

/** A state dict that does not match the module it is loaded into. */
export class StateDictError extends KilnError {}

/** Symbolic tracing met something it cannot record: control flow on a traced value, reading its data, … */
export class TraceError extends KilnError {}

/** A malformed graph: use before definition, dangling users, duplicate names, a missing output. */
export class GraphLintError extends KilnError {}

/** A saved graph or program that cannot be read: corrupt, wrong format or wrong version. */
export class SerializationError extends KilnError {}

/** `fullgraph: true` met code that cannot be captured in one graph; names the reason and source location. */
export class GraphBreakError extends KilnError {}

/** `errorOnRecompile: true` and a guard failed. */
export class RecompileError extends KilnError {}

/**
 * Export found that the program's shape guards do not fit the declared `Dim`s (or an example input does
 * not fit its spec); the message lists each violation and, where it can, `Suggested fixes:`.
 */
export class ConstraintViolationError extends KilnError {}
