import { KilnError } from '../errors.js';

/** AOT autograd refused a program, or a compiled one was called in a way it was not compiled for. */
export class AotError extends KilnError {}
