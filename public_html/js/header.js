// The header: relay connection state, Alpaca upstream state, DEMO badge and the WebSocket URL.

const CONNECTION_TEXT = {
  live: () => 'LIVE',
  connecting: () => 'connecting…',
  reconnecting: ({ seconds }) => `reconnecting in ${seconds}s`,
  disconnected: () => 'disconnected',
};

export class Header {
  #conn;
  #upstream;
  #demo;
  #url;

  constructor(document) {
    this.#conn = document.getElementById('conn-state');
    this.#upstream = document.getElementById('upstream-state');
    this.#demo = document.getElementById('demo-badge');
    this.#url = document.getElementById('ws-url');
  }

  /** A Connection state report: { state, seconds?, reason? }. */
  showConnection(report) {
    this.#conn.dataset.state = report.state;
    this.#conn.textContent = CONNECTION_TEXT[report.state](report);
    this.#conn.title = report.state === 'live' ? '' : (report.reason ?? '');
  }

  /** The upstream object of welcome/status messages; null when unknown (relay not live). */
  showUpstream(upstream) {
    const state = upstream?.state ?? 'unknown';
    const feed = upstream?.feed ? ` · ${String(upstream.feed).toUpperCase()}` : '';
    this.#upstream.dataset.state = state;
    this.#upstream.textContent = upstream ? `${state}${feed}` : '—';
    this.#upstream.title = upstream?.error ?? '';
  }

  showDemo(isDemo) {
    this.#demo.hidden = !isDemo;
  }

  showUrl(url) {
    this.#url.textContent = url;
  }
}
