// The market's time as the daemon's Alpaca clock reports it (/api/clock). It is this computer's time, except in
// a demo whose simulator runs a shifted clock (--demo-session open): then "now" for bars and trade ages is the
// simulated time, hours or days away, and the header shows it. Differences under DRIFT_MS are ordinary clock
// skew plus the daemon's 30 s clock cache, not a simulation.
const DRIFT_MS = 120_000;
let offsetMs = 0;

/** ms since the epoch, in the market's time. */
export function marketNow() {
  return Date.now() + offsetMs;
}

/** True when the market's clock is a simulated one, far from this computer's. */
export function isSimulated() {
  return offsetMs !== 0;
}

/** Takes the clock's RFC 3339 timestamp (Alpaca's /v2/clock "timestamp"). */
export function setMarketTime(timestamp) {
  const at = Date.parse(timestamp ?? '');
  const offset = Number.isFinite(at) ? at - Date.now() : 0;
  offsetMs = Math.abs(offset) > DRIFT_MS ? offset : 0;
}
