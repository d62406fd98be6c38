// The sticky status bar: relay connection, Alpaca upstream, market clock, DEMO badge and the WebSocket URL; the
// problem banner that says in words what is wrong; and a live region that announces changes of state (never the
// countdown's seconds).
import { isSimulated, marketNow } from './market-clock.js';

const CONNECTION_TEXT = {
  live: () => 'LIVE',
  connecting: () => 'connecting…',
  reconnecting: ({ seconds }) => `reconnecting in ${seconds}s`,
  disconnected: () => 'disconnected',
};
const ANNOUNCE = {
  live: 'Connected: live data.',
  connecting: 'Connecting to trade-stream.',
  reconnecting: 'Connection lost: data is stale, reconnecting.',
  disconnected: 'Disconnected: data is stale.',
};
const CLOCK_TIME = new Intl.DateTimeFormat('en-US', {
  timeZone: 'America/New_York', weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23',
});

export class Header {
  #conn;
  #upstream;
  #demo;
  #url;
  #clock;
  #problem;
  #announcer;
  #lastAnnounced = '';

  constructor(document) {
    const $ = (id) => document.getElementById(id);
    this.#conn = $('conn-state');
    this.#upstream = $('upstream-state');
    this.#demo = $('demo-badge');
    this.#url = $('ws-url');
    this.#clock = $('market-clock');
    this.#problem = $('conn-problem');
    this.#announcer = $('announcer');
  }

  /** A Connection state report: { state, seconds?, reason? }. */
  showConnection(report) {
    this.#conn.dataset.state = report.state;
    this.#conn.textContent = CONNECTION_TEXT[report.state](report);
    this.#conn.title = report.state === 'live' ? '' : (report.reason ?? '');
    this.announce(ANNOUNCE[report.state]);
  }

  /** The upstream object of welcome/status messages; null when unknown (relay not live). */
  showUpstream(upstream) {
    const state = upstream?.state ?? 'unknown';
    const feed = upstream?.feed ? ` · ${String(upstream.feed).toUpperCase()}` : '';
    const code = upstream?.error_code ? ` ${upstream.error_code}` : '';
    this.#upstream.dataset.state = state;
    this.#upstream.textContent = upstream ? `${state}${code}${feed}` : '—';
    this.#upstream.title = upstream?.error ?? '';
  }

  /** Alpaca's clock via /api/clock: { is_open, next_open, next_close }, or null when unknown. */
  showClock(clock) {
    if (!clock) {
      this.#clock.dataset.state = 'unknown';
      this.#clock.textContent = 'market —';
      return;
    }
    const when = (text) => {
      const date = new Date(text);
      return Number.isNaN(date.getTime()) ? '—' : `${CLOCK_TIME.format(date)} ET`;
    };
    this.#clock.dataset.state = clock.is_open ? 'open' : 'closed';
    const simulated = isSimulated() ? ` · simulated ${CLOCK_TIME.format(new Date(marketNow()))} ET` : '';
    this.#clock.dataset.simulated = String(isSimulated());
    this.#clock.textContent = clock.is_open
      ? `Market open · closes ${when(clock.next_close)}${simulated}`
      : `Market closed · opens ${when(clock.next_open)}${simulated}`;
  }

  /** A sentence saying what is wrong and what to do, or null to hide it. */
  showProblem(text, kind = '') {
    this.#problem.hidden = !text;
    this.#problem.dataset.kind = kind;
    this.#problem.textContent = text ?? '';
    if (text) this.announce(text);
  }

  announce(text) {
    if (!text || text === this.#lastAnnounced) return;
    this.#lastAnnounced = text;
    this.#announcer.textContent = text;
  }

  showDemo(isDemo) {
    this.#demo.hidden = !isDemo;
  }

  showUrl(url) {
    this.#url.textContent = url;
  }
}
