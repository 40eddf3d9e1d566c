import { KilnError } from '../errors.js';

/** A program kiln/export cannot export as asked, or a call that does not fit an exported program's inputs. */
export class ExportError extends KilnError {}
