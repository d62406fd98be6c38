// Reconnect delays: exponential with full jitter. The ceiling doubles from 2 s up to 30 s and each delay is
// drawn anywhere below it, so the tabs a daemon restart disconnected together spread their reconnects over the
// whole window instead of arriving in step; a small floor keeps a tab from retrying in a tight loop.

export const FLOOR_MS = 250;
export const BASE_MS = 1_000;
export const MAX_DELAY_MS = 30_000;

/** The ceiling of reconnect attempt number `attempt` (0 for the first retry). */
export function backoffCeiling(attempt) {
  return Math.min(MAX_DELAY_MS, BASE_MS * 2 ** (Math.max(0, attempt) + 1));
}

/** Delay before reconnect attempt number `attempt`: uniform in [FLOOR_MS, its ceiling]. */
export function backoffDelay(attempt, random = Math.random) {
  return Math.round(Math.max(FLOOR_MS, random() * backoffCeiling(attempt)));
}
