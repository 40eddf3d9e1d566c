import { ConstraintViolationError, ValueError } from '../errors.js';
import { add, type Expr, int, scale, sym } from './symbolic/expr.js';
import { type Size, type ShapeEnv, SymSize } from './symbolic/shape-env.js';

/**
 * `Dim(name, { min, max })`: a named dynamic dimension for `exportProgram`'s `dynamicShapes` (PyTorch's
 * `torch.export.Dim`). Dims with the same name are the same size; a derived dim (`dx.add(1)`,
 * `dx.mul(2)`, `dx.mul(2).add(1)`) is an increasing linear function `scale*root + offset` of a root Dim.
 *
 * Ranges follow PyTorch 2.x: `min` defaults to 0 and `max` to Infinity, and the range must not be a
 * single value. While tracing a dynamic size is assumed ≥ 2 (sizes 0 and 1 specialise, as PyTorch's
 * ShapeEnv does), so the example input for a Dim must be at least 2; the program still accepts the
 * Dim's smaller values at run time (PyTorch's documented 0/1 behaviour).
 */
export interface Dim {
  /** `dx` for a root; the printed expression (`2*dx + 1`) for a derived dim. */
  readonly name: string;
  readonly min: number;
  readonly max: number;
  /** The root Dim (itself for a root). */
  readonly root: Dim;
  /** derived = scale*root + offset (1 and 0 for a root). */
  readonly scale: number;
  readonly offset: number;
  readonly isDerived: boolean;
  add(n: number): Dim;
  sub(n: number): Dim;
  mul(n: number): Dim;
  toString(): string;
}

export interface DimOptions {
  min?: number;
  max?: number;
}

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
const HINT = '(Only increasing linear operations with integer coefficients are supported.)';

class DimImpl implements Dim {
  readonly root: Dim;
  constructor(
    readonly name: string,
    readonly min: number,
    readonly max: number,
    root: Dim | undefined,
    readonly scale: number,
    readonly offset: number,
  ) {
    this.root = root ?? this;
  }

  get isDerived(): boolean {
    return this.root !== this;
  }

  add(n: number): Dim {
    if (!Number.isSafeInteger(n))
      throw new ValueError(`Attempted to add ${String(n)} to ${this.name}, where an integer was expected. ${HINT}`);
    return derive(this, this.scale, this.offset + n);
  }

  sub(n: number): Dim {
    if (!Number.isSafeInteger(n))
      throw new ValueError(`Attempted to subtract ${String(n)} from ${this.name}, where an integer was expected. ${HINT}`);
    return derive(this, this.scale, this.offset - n);
  }

  mul(n: number): Dim {
    if (!Number.isSafeInteger(n) || n <= 0) {
      throw new ValueError(`Attempted to multiply ${String(n)} with ${this.name}, where a positive integer was expected. ${HINT}`);
    }
    return derive(this, this.scale * n, this.offset * n);
  }

  toString(): string {
    return this.isDerived ? this.name : readableDim(this.name, this.min, this.max);
  }
}

function derive(from: DimImpl, scaleBy: number, offset: number): Dim {
  const root = from.root;
  const expr = add(scale(sym(root.name), scaleBy), int(offset));
  const name = expr.toString();
  const min = root.min === -Infinity ? -Infinity : scaleBy * root.min + offset;
  const max = root.max === Infinity ? Infinity : scaleBy * root.max + offset;
  if (min < 0) {
    throw new ValueError(
      `Expected derived min value of ${name} to be >= 0. Please specify an appropriate min value for ${root.name} (currently ${root.min}).`,
    );
  }
  if (max !== Infinity && max > Number.MAX_SAFE_INTEGER) {
    throw new ValueError(
      `Expected derived max value of ${name} to be <= ${Number.MAX_SAFE_INTEGER}. Please specify an appropriate max value for ${root.name} (currently ${root.max}).`,
    );
  }
  return new DimImpl(name, min, max, root, scaleBy, offset);
}

/** A named dynamic dimension; see the Dim interface. */
export function Dim(name: string, options: DimOptions = {}): Dim {
  if (typeof name !== 'string' || !IDENTIFIER.test(name)) throw new ValueError(`Dim name must be a valid identifier, got ${String(name)}`);
  const min = options.min ?? 0;
  const max = options.max ?? Infinity;
  if (!Number.isSafeInteger(min) || min < 0)
    throw new ValueError(`Dim('${name}'): min must be a non-negative integer, got ${String(options.min)}`);
  if (max !== Infinity && (!Number.isSafeInteger(max) || max < 0)) {
    throw new ValueError(`Dim('${name}'): max must be a non-negative integer or Infinity, got ${String(options.max)}`);
  }
  if (!(max > min)) throw new ValueError(`Cannot create Dim with inconsistent min=${String(options.min)}, max=${String(options.max)}`);
  return new DimImpl(name, min, max, undefined, 1, 0);
}

/** Several root Dims with the same range (PyTorch's `dims`). */
export function dims(names: readonly string[], options: DimOptions = {}): Dim[] {
  return names.map((n) => Dim(n, options));
}

export function isDim(v: unknown): v is Dim {
  return v instanceof DimImpl;
}

/** `Dim('x', { min: 3, max: 6 })` in kiln's syntax, leaving out defaults (min 0, max Infinity). */
export function readableDim(name: string, min: number, max: number): string {
  const parts: string[] = [];
  if (min > 0) parts.push(`min: ${min}`);
  if (max !== Infinity) parts.push(`max: ${max}`);
  return parts.length ? `Dim('${name}', { ${parts.join(', ')} })` : `Dim('${name}')`;
}

/** `root.mul(2).add(1)` in kiln's syntax for scale*root + offset. */
export function derivedSyntax(root: string, scaleBy: number, offset: number): string {
  let out = root;
  if (scaleBy !== 1) out += `.mul(${scaleBy})`;
  if (offset > 0) out += `.add(${offset})`;
  else if (offset < 0) out += `.sub(${-offset})`;
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Binding dynamicShapes entries to symbols

/** One entry of a `dynamicShapes` spec for one tensor dim: a Dim, a static size, or null (static). */
export type DimSpec = Dim | number | null | undefined;

export interface DimEntry {
  readonly spec: DimSpec;
  /** The example input's size at this dim. */
  readonly size: number;
  /** The input path of this dim, e.g. `x.shape[0]` or `*args[1][0].shape[0]`. */
  readonly source: string;
}

/** What bindInputDims records on the env, for constraint checking and run-time checks. */
export interface InputDimBinding {
  readonly source: string;
  readonly expr: Expr;
  readonly dim?: Dim;
}

const bindings = new WeakMap<ShapeEnv, InputDimBinding[]>();
const rootSymbols = new WeakMap<ShapeEnv, Map<string, { dim: Dim; symbol: string }>>();

/** Every dim bound so far (in order), with the Dim that declared it. */
export function inputDimBindings(env: ShapeEnv): readonly InputDimBinding[] {
  return bindings.get(env) ?? [];
}

/** Root Dim name → its Dim and symbol. */
export function declaredDims(env: ShapeEnv): ReadonlyMap<string, { dim: Dim; symbol: string }> {
  return rootSymbols.get(env) ?? new Map();
}

function shapeIndex(source: string): string {
  const m = /\.shape\[(\d+)\]$/.exec(source);
  return m ? `shape[${m[1]}]` : 'shape';
}

/**
 * Bind the flattened `dynamicShapes` entries of every input tensor dim (in input order) to sizes in
 * `env`: a number or null gives the example's static size, a Dim gives its symbol (one per root name,
 * shared by every dim using it), a derived Dim gives `scale*root + offset`. Checks, with PyTorch's
 * texts, that a Dim name has one definition, static sizes match, the example fits each Dim's range and
 * each derived form, and equal Dims have equal sizes. Throws ValueError for a malformed spec and
 * ConstraintViolationError when the example does not fit the spec.
 */
export function bindInputDims(env: ShapeEnv, entries: readonly DimEntry[]): Size[] {
  // 1. One definition per Dim name (roots, including the roots of derived dims).
  // Dims bound by an earlier call on the same env count as definitions too.
  const roots = rootSymbols.get(env) ?? new Map<string, { dim: Dim; symbol: string }>();
  rootSymbols.set(env, roots);
  const defs = new Map<string, Dim>([...roots].map(([name, r]) => [name, r.dim]));
  for (const e of entries) {
    if (e.spec === null || e.spec === undefined || typeof e.spec === 'number') continue;
    if (!isDim(e.spec))
      throw new ValueError(`dynamicShapes entry for ${e.source}: expected a Dim, a number or null, got ${String(e.spec)}`);
    const root = e.spec.root;
    const prev = defs.get(root.name);
    if (prev && prev !== root && (prev.min !== root.min || prev.max !== root.max)) {
      throw new ValueError(
        `Found different definitions ${readableDim(root.name, prev.min, prev.max)} and ${readableDim(root.name, root.min, root.max)} ` +
          `for the same symbolic dimension ${root.name}!`,
      );
    }
    if (!prev) defs.set(root.name, root);
  }
  // 2. Each root's example value: from the first input that uses it directly, else solved from the first derived use.
  const rootValue = new Map<string, { value: number; source: string; phantom: boolean }>();
  for (const e of entries) {
    if (isDim(e.spec) && !e.spec.isDerived && !rootValue.has(e.spec.name))
      rootValue.set(e.spec.name, { value: e.size, source: e.source, phantom: false });
  }
  for (const e of entries) {
    if (!isDim(e.spec) || !e.spec.isDerived || rootValue.has(e.spec.root.name) || roots.has(e.spec.root.name)) continue;
    const d = e.spec;
    const v = (e.size - d.offset) / d.scale;
    if (!Number.isInteger(v)) {
      throw new ConstraintViolationError(
        `Expected ${shapeIndex(e.source)} = ${e.size} of input Tensor to be of the form ${d.name}, where ${d.root.name} is an integer (at ${e.source})`,
      );
    }
    rootValue.set(d.root.name, { value: v, source: e.source, phantom: true });
  }
  // 3. Symbols, in order of first mention; every entry checked against its root's value.
  const bound = bindings.get(env) ?? [];
  bindings.set(env, bound);
  const out: Size[] = [];
  for (const e of entries) {
    if (!Number.isSafeInteger(e.size) || e.size < 0)
      throw new ValueError(`${e.source}: a size must be a non-negative integer, got ${e.size}`);
    const spec = e.spec;
    if (spec === null || spec === undefined || typeof spec === 'number') {
      if (typeof spec === 'number') {
        if (!Number.isSafeInteger(spec) || spec < 0)
          throw new ValueError(`dynamicShapes entry for ${e.source}: a static size must be a non-negative integer, got ${spec}`);
        if (spec !== e.size)
          throw new ConstraintViolationError(`Static shape constraint of ${spec} does not match input size of ${e.size}, for ${e.source}`);
      }
      bound.push({ source: e.source, expr: int(e.size) });
      out.push(e.size);
      continue;
    }
    const root = defs.get(spec.root.name)!;
    const rv = rootValue.get(root.name)!;
    let entry = roots.get(root.name);
    if (!entry) {
      checkInRange(root, rv.value, rv.phantom ? `${root.name} (inferred from ${rv.source} = ${e.size})` : rv.source);
      const s = env.createSymbol(rv.value, rv.phantom ? root.name : rv.source, {
        range: { lower: root.min, upper: root.max },
        dimName: root.name,
        phantom: rv.phantom,
      });
      entry = { dim: root, symbol: s.expr.asSymbol()! };
      roots.set(root.name, entry);
    }
    const info = env.symbol(entry.symbol);
    const hint = info.hint!;
    if (!spec.isDerived) {
      if (e.size !== hint) {
        throw new ConstraintViolationError(`${info.sources[0]} = ${hint} is not equal to ${e.source} = ${e.size}`);
      }
      if (!info.sources.includes(e.source)) info.sources.push(e.source);
      bound.push({ source: e.source, expr: sym(entry.symbol), dim: spec });
      out.push(new SymSize(sym(entry.symbol), hint, env));
      continue;
    }
    const expected = spec.scale * hint + spec.offset;
    if (e.size !== expected) {
      throw new ConstraintViolationError(
        `Expected input ${e.source} to be equal to ${spec.name}, where ${root.name} = ${hint}, but got ${e.size}`,
      );
    }
    const expr = add(scale(sym(entry.symbol), spec.scale), int(spec.offset));
    bound.push({ source: e.source, expr, dim: spec });
    out.push(env.size(expr));
  }
  return out;
}

function checkInRange(root: Dim, value: number, where: string): void {
  const show = (n: number) => (n === Infinity ? 'Infinity' : String(n));
  if (value < root.min || value > root.max) {
    throw new ConstraintViolationError(
      `${value} not in range [${show(root.min)}, ${show(root.max)}]: the example size ${where} = ${value} does not fit ${readableDim(root.name, root.min, root.max)}`,
    );
  }
  if (value < 2) {
    throw new ConstraintViolationError(
      `${value} not in range [2, ${show(root.max)}]: the example size ${where} = ${value} is too small for ${root.name}; ` +
        'export specialises sizes 0 and 1, so give an example of at least 2 for a dynamic dim (the program still accepts the smaller sizes the Dim allows)',
    );
  }
}
