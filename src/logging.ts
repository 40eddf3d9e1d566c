import { ValueError } from './errors.js';

/**
 * `KILN_LOG` (PyTorch's TORCH_LOGS) and `KILN_COMPILE`, read once when kiln loads: reading process.env costs
 * ~0.3 µs, too much for a compiled call's hot path, so each channel is a plain boolean checked before any
 * message is built. Messages go to stderr, one `[kiln:<channel>]` header line per event. (Node's
 * util.debuglog is switched by NODE_DEBUG, not by a variable of our own with validated names, and the
 * `debug` package is not a dependency of kiln, so this is the small module over process.stderr.)
 *
 *   recompiles    a guard failed and a callable compiles again: which callable, which guard
 *   graph_breaks  where captured code breaks (the plugin's break segments, failed traces), with the reason
 *   guards        the guards of each graph captured
 *   graph_code    the code of each graph captured
 *   kernels       the kernel plan of each graph the 'kernels' backend runs (src/kernels/log.ts)
 *   aot           the forward/backward/inference graphs AOT autograd hands to its compilers
 *   all           every channel
 */
export const LOG_CHANNELS = ['recompiles', 'graph_breaks', 'guards', 'graph_code', 'kernels', 'aot'] as const;
export type LogChannel = (typeof LOG_CHANNELS)[number];

/** The channels a `KILN_LOG` value turns on (names separated by commas or spaces); an unknown name throws. */
export function parseLogSetting(value: string | undefined): Set<LogChannel> {
  const on = new Set<LogChannel>();
  for (const name of (value ?? '').split(/[\s,]+/).filter(Boolean)) {
    if (name === 'all') LOG_CHANNELS.forEach((c) => on.add(c));
    else if ((LOG_CHANNELS as readonly string[]).includes(name)) on.add(name as LogChannel);
    else {
      throw new ValueError(
        `KILN_LOG: unknown log name '${name}' in ${JSON.stringify(value)}; valid names are ${[...LOG_CHANNELS, 'all'].join(', ')} (comma-separated)`,
      );
    }
  }
  return on;
}

/** Whether a `KILN_COMPILE` value turns compilation off (`0`, `false`, `off`, any case); other values throw. */
export function compileOffSetting(value: string | undefined): boolean {
  const v = (value ?? '').trim().toLowerCase();
  if (v === '0' || v === 'false' || v === 'off') return true;
  if (v === '' || v === '1' || v === 'true' || v === 'on') return false;
  throw new ValueError(`KILN_COMPILE must be 0, false or off (run eagerly) or 1, true or on (compile), got ${JSON.stringify(value)}`);
}

const enabled = parseLogSetting(process.env.KILN_LOG);

/** Per channel: on or off for this process. */
export const LOG: Readonly<Record<LogChannel, boolean>> = Object.fromEntries(LOG_CHANNELS.map((c) => [c, enabled.has(c)])) as Record<
  LogChannel,
  boolean
>;

/** `KILN_COMPILE=0|false|off`: every compiled callable runs its original code. */
export const COMPILE_OFF_BY_ENV = compileOffSetting(process.env.KILN_COMPILE);

/** Write one event to `channel` (callers check `LOG[channel]` first, so the text is built only when it is on). */
export function log(channel: LogChannel, text: string): void {
  if (!LOG[channel]) return;
  process.stderr.write(`[kiln:${channel}] ${text.replace(/\n/g, '\n    ')}\n`);
}
