/**
 * A plugin segment's result carries the plan's protocol around the user's values (see plan.ts): `next`
 * segments return their `out` slots as an array, `either` segments prefix a flag (`[1, value]` when the
 * source returned `value`, `[0, ...outs]` when control falls through). A captured graph must read like the
 * user's code, so the protocol stays out of it: the graph outputs the user's values only, and the compiled
 * segment puts the flag and slot layout back around the graph's result.
 */
export type SegmentExit = 'return' | 'next' | 'either';

export interface SplitResult {
  /** What the graph outputs: the returned value, the one out value, or an array of several. */
  readonly output: unknown;
  /** The segment's result in the plan's protocol, rebuilt around what the graph returned. */
  readonly rebuild: (graphOutput: unknown) => unknown;
}

const asIs: SplitResult['rebuild'] = (v) => v;

/**
 * Split a traced segment's result into the graph's output and the layout around it. The flag and the
 * slots the segment leaves unset (a `let` not yet assigned, `undefined`) are fixed by the trace's control
 * flow, which the graph's guards pin, so they are constants of the compiled segment, not graph values.
 * A result that does not have the shape its exit promises is kept whole as the output.
 */
export function splitSegmentResult(exit: SegmentExit, result: unknown): SplitResult {
  if (exit === 'return') return { output: result, rebuild: asIs };
  if (exit === 'next') {
    if (result === undefined) return slotsOutput([], () => undefined);
    return Array.isArray(result) ? slotsOutput(result, (slots) => slots) : { output: result, rebuild: asIs };
  }
  if (!Array.isArray(result)) return { output: result, rebuild: asIs };
  if (result[0] === 1 && result.length === 2) return { output: result[1], rebuild: (v) => [1, v] };
  if (result[0] === 0) return slotsOutput(result.slice(1), (slots) => [0, ...slots]);
  return { output: result, rebuild: asIs };
}

/** The slots' defined values as the output (one value as itself), and the slot array rebuilt around them. */
function slotsOutput(slots: readonly unknown[], wrap: (slots: unknown[]) => unknown): SplitResult {
  const kept: number[] = [];
  slots.forEach((v, i) => v !== undefined && kept.push(i));
  const n = slots.length;
  if (kept.length === 1) {
    const at = kept[0]!;
    return {
      output: slots[at],
      rebuild: (v) => {
        const out = new Array<unknown>(n).fill(undefined);
        out[at] = v;
        return wrap(out);
      },
    };
  }
  return {
    output: kept.map((i) => slots[i]),
    rebuild: (values) => {
      const out = new Array<unknown>(n).fill(undefined);
      kept.forEach((slot, k) => (out[slot] = (values as unknown[])[k]));
      return wrap(out);
    },
  };
}
