/**
 * Reconnect delays: exponential with full jitter (a uniform draw in [0, cap]), so the
 * clients of a gateway that died spread their reconnects over the whole interval
 * instead of arriving in waves.
 */
export interface BackoffOptions {
  /** Cap of the first failed round's delay. */
  initialMs: number;
  /** Largest cap, whatever the number of failures. */
  maxMs: number;
}

/** The cap for the `round`-th failed round (0-based): initial * 2^round, at most max. */
export function backoffCap(round: number, options: BackoffOptions): number {
  return Math.min(options.maxMs, options.initialMs * 2 ** Math.min(round, 30));
}

export function fullJitter(round: number, options: BackoffOptions, random: () => number = Math.random): number {
  return random() * backoffCap(round, options);
}

/**
 * The delay before the next attempt after `failures` consecutive failed attempts over
 * `urlCount` URLs: none while the round still has untried URLs (another gateway may be
 * fine), then a jittered exponential wait per failed round.
 */
export function reconnectDelay(
  failures: number,
  urlCount: number,
  options: BackoffOptions,
  random: () => number = Math.random,
): number {
  if (failures % urlCount !== 0) return 0;
  return fullJitter(failures / urlCount - 1, options, random);
}
