/**
 * The graph signature of an exported program (PyTorch's `ExportGraphSignature`): what each placeholder and
 * each output of the functional graph stands for.
 */

export type InputKind = 'PARAMETER' | 'BUFFER' | 'CONSTANT_TENSOR' | 'USER_INPUT';
export type OutputKind = 'USER_OUTPUT' | 'BUFFER_MUTATION' | 'USER_INPUT_MUTATION';

export interface InputSpec {
  readonly kind: InputKind;
  /** The placeholder's name. */
  readonly name: string;
  /** The state-dict key or constant name (absent for user inputs). */
  readonly target?: string;
  /** Buffers only: saved in the state dict (false: kept with the constants, as PyTorch keeps them). */
  readonly persistent?: boolean;
}

export interface OutputSpec {
  readonly kind: OutputKind;
  /** The output node's name. */
  readonly name: string;
  /** The buffer (state-dict key) or the user input's placeholder that receives the new value. */
  readonly target?: string;
}

export interface GraphSignature {
  readonly inputSpecs: readonly InputSpec[];
  readonly outputSpecs: readonly OutputSpec[];
}

/** Where a lifted input's tensor is kept: parameters and persistent buffers in `stateDict`, the rest in `constants`. */
export function inStateDict(spec: InputSpec): boolean {
  return spec.kind === 'PARAMETER' || (spec.kind === 'BUFFER' && spec.persistent !== false);
}

/** `fc.weight` → `p_fc_weight`: PyTorch's placeholder names for lifted state. */
export function liftedName(kind: Exclude<InputKind, 'USER_INPUT'>, target: string): string {
  const prefix = kind === 'PARAMETER' ? 'p' : kind === 'BUFFER' ? 'b' : 'c';
  return `${prefix}_${target.replace(/[^A-Za-z0-9_]/g, '_')}`;
}

/** A name not yet in `taken`: `name`, else `name_1`, `name_2`, … (PyTorch gives user inputs their names first). */
export function claimName(name: string, taken: Set<string>): string {
  let out = name;
  for (let i = 1; taken.has(out); i++) out = `${name}_${i}`;
  taken.add(out);
  return out;
}
