// Which WebSocket URL the page connects to: ?ws= beats config.js's wsUrl beats the default.

export const DEFAULT_PORT = 8765;

export function resolveWsUrl(location, configuredUrl) {
  const fromQuery = new URLSearchParams(location.search).get('ws')?.trim();
  const fromConfig = typeof configuredUrl === 'string' ? configuredUrl.trim() : '';
  return toWebSocketUrl(fromQuery || fromConfig || defaultWsUrl(location), location.href);
}

/** The page's host on port 8765, ws: or wss: to match the page. */
export function defaultWsUrl({ protocol, hostname }) {
  const scheme = protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${bracketIPv6(hostname || 'localhost')}:${DEFAULT_PORT}/`;
}

export function bracketIPv6(host) {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

/** Absolute ws:/wss: URL; relative values and http(s): URLs are taken relative to the page. */
export function toWebSocketUrl(value, pageUrl) {
  const url = new URL(value, pageUrl);
  if (url.protocol === 'http:') url.protocol = 'ws:';
  else if (url.protocol === 'https:') url.protocol = 'wss:';
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    throw new TypeError(`not a WebSocket URL: ${value}`);
  }
  return url.href;
}

/** The daemon's HTTP side for a WebSocket URL: ws://h:p/x/ws -> http://h:p/x/ (where /api/... lives). */
export function httpBase(wsUrl) {
  const url = new URL(wsUrl);
  url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:';
  url.search = url.hash = '';
  url.pathname = url.pathname.replace(/[^/]*$/, '');
  return url.href;
}
