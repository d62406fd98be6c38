// Why the page cannot connect, in words. A browser hides the reason a WebSocket handshake failed (every
// refusal is close code 1006), so the page asks the daemon's public /api/page-info over plain HTTP, which answers
// any origin: unreachable, origin refused (and the exact setting to add), or refused by connection limits.

const TIMEOUT_MS = 4_000;

/** { kind: 'unreachable'|'origin'|'refused'|'ok', text, info? } */
export async function diagnose(apiBase) {
  if (!apiBase) return { kind: 'unreachable', text: 'No usable WebSocket URL: check config.js or ?ws=.' };
  const url = new URL('api/page-info', apiBase);
  let info;
  try {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
    const response = await fetch(url, { cache: 'no-store', signal: controller.signal });
    clearTimeout(timer);
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    info = await response.json();
  } catch {
    return {
      kind: 'unreachable',
      text: `Cannot reach trade-stream at ${url.host}: the daemon is not running, or the address is wrong `
        + '(config.js wsUrl or ?ws=).',
    };
  }
  if (info.origin_allowed === false) {
    return { kind: 'origin', info, text: `The daemon refuses this page's origin. ${info.hint ?? ''}`.trim() };
  }
  return {
    kind: 'refused', info,
    text: 'The daemon is up but refused the connection: too many connections from this address, or too many '
      + 'new ones per minute (TRADE_STREAM_MAX_CONNECTIONS_PER_IP, TRADE_STREAM_MAX_CONNECT_RATE_PER_IP).',
  };
}
