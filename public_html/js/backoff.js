// Reconnect delays: exponential from 1 s to 30 s, with jitter so that many tabs do not reconnect in step.

export const MIN_DELAY_MS = 1_000;
export const MAX_DELAY_MS = 30_000;

/** Delay before reconnect attempt number `attempt` (0 for the first retry). */
export function backoffDelay(attempt, random = Math.random) {
  const base = Math.min(MAX_DELAY_MS, MIN_DELAY_MS * 2 ** attempt);
  const jittered = base * (0.8 + 0.4 * random());
  return Math.round(Math.min(MAX_DELAY_MS, Math.max(MIN_DELAY_MS, jittered)));
}
