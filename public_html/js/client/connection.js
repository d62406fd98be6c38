// The WebSocket to trade-stream: keeps itself alive with app-level pings and a silence watchdog, and
// reconnects with backoff. It reports one of four states:
//   connecting    socket opening, or open but the welcome has not arrived
//   live          socket open and welcomed
//   reconnecting  waiting `seconds` before the next attempt
//   disconnected  not trying (the URL is unusable, or close() was called)
import { backoffDelay } from './backoff.js';

const PING_EVERY_MS = 15_000;
const SILENCE_LIMIT_MS = 45_000;
const PONG_GRACE_MS = 10_000;
const WELCOME_TIMEOUT_MS = 10_000;
const STABLE_AFTER_MS = 10_000;
const HEARTBEAT_TICK_MS = 1_000;
const COUNTDOWN_TICK_MS = 250;

export class Connection {
  #url;
  #onState;
  #onMessage;
  #ws = null;
  #state = null;
  #lastSeconds = undefined;
  #attempt = 0;
  #liveSince = 0;
  #lastMessageAt = 0;
  #lastPingAt = 0;
  #unansweredPingAt = 0;
  #timers = { heartbeat: 0, welcome: 0, retry: 0, countdown: 0 };
  #started = false;
  #onOnline = () => {
    if (this.#state === 'reconnecting') this.#connect();
  };

  /** onState({ state, seconds?, reason? }); onMessage(message) once per message, batches unpacked. */
  constructor(url, { onState, onMessage }) {
    this.#url = url;
    this.#onState = onState;
    this.#onMessage = onMessage;
  }

  get isLive() {
    return this.#state === 'live';
  }

  start() {
    if (this.#started) return;
    this.#started = true;
    globalThis.addEventListener?.('online', this.#onOnline);
    this.#connect();
  }

  /** Drops the socket and connects again after the usual backoff (a new handshake, e.g. with a new cookie). */
  reconnect(reason) {
    if (this.#ws) this.#drop(reason);
  }

  /** Closes the socket for good: no reconnect follows. */
  close() {
    this.#started = false;
    globalThis.removeEventListener?.('online', this.#onOnline);
    this.#clearTimers();
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      if (ws.readyState === WebSocket.OPEN) ws.close();
      else if (ws.readyState === WebSocket.CONNECTING) ws.onopen = () => ws.close();
    }
    this.#setState({ state: 'disconnected', reason: 'closed' });
  }

  /** Sends a JSON message; false when the socket is not open. */
  send(message) {
    if (this.#ws?.readyState !== WebSocket.OPEN) return false;
    this.#ws.send(JSON.stringify(message));
    return true;
  }

  #connect() {
    this.#clearTimers();
    let ws;
    try {
      ws = new WebSocket(this.#url);
    } catch (error) {
      this.#setState({ state: 'disconnected', reason: error.message });
      return;
    }
    this.#ws = ws;
    this.#lastMessageAt = this.#lastPingAt = Date.now();
    this.#unansweredPingAt = 0;
    ws.onopen = () => this.#startHeartbeat();
    ws.onmessage = (event) => this.#receive(event.data);
    ws.onclose = (event) => this.#drop(`connection closed (code ${event.code})`);
    this.#timers.welcome = setTimeout(() => this.#drop('no welcome from the server'), WELCOME_TIMEOUT_MS);
    this.#setState({ state: 'connecting' });
  }

  #receive(data) {
    this.#lastMessageAt = Date.now();
    this.#unansweredPingAt = 0;
    let parsed;
    try {
      parsed = JSON.parse(data);
    } catch {
      return; // not JSON: nothing the page understands
    }
    for (const message of Array.isArray(parsed) ? parsed : [parsed]) {
      if (!message || typeof message !== 'object') continue;
      if (message.type === 'welcome') this.#goLive();
      try {
        this.#onMessage(message);
      } catch (error) {
        console.error('trade-stream: failed to handle message', message, error);
      }
    }
  }

  #goLive() {
    clearTimeout(this.#timers.welcome);
    this.#liveSince = Date.now();
    this.#setState({ state: 'live' });
  }

  #startHeartbeat() {
    this.#timers.heartbeat = setInterval(() => this.#heartbeat(), HEARTBEAT_TICK_MS);
  }

  // A silent socket is only declared dead once a ping has also gone unanswered, so a throttled
  // background tab (timers firing once a minute) does not drop a healthy connection.
  #heartbeat() {
    const now = Date.now();
    const silentTooLong = now - this.#lastMessageAt > SILENCE_LIMIT_MS;
    const pingUnanswered = this.#unansweredPingAt && now - this.#unansweredPingAt > PONG_GRACE_MS;
    if (silentTooLong && pingUnanswered) {
      this.#drop('no messages for 45 s');
      return;
    }
    if (now - this.#lastPingAt >= PING_EVERY_MS && this.send({ action: 'ping' })) {
      this.#lastPingAt = now;
      this.#unansweredPingAt ||= now;
    }
  }

  #drop(reason) {
    const ws = this.#ws;
    if (!ws) return;
    this.#ws = null;
    ws.onopen = ws.onmessage = ws.onclose = null;
    if (ws.readyState === WebSocket.OPEN) ws.close();
    else if (ws.readyState === WebSocket.CONNECTING) ws.onopen = () => ws.close();
    if (this.#liveSince && Date.now() - this.#liveSince >= STABLE_AFTER_MS) this.#attempt = 0;
    this.#liveSince = 0;
    this.#scheduleReconnect(reason);
  }

  #scheduleReconnect(reason) {
    this.#clearTimers();
    const delay = backoffDelay(this.#attempt++);
    const retryAt = Date.now() + delay;
    console.info(`trade-stream: ${reason}; reconnecting in ${(delay / 1000).toFixed(1)} s`);
    const showCountdown = () => {
      const seconds = Math.max(1, Math.ceil((retryAt - Date.now()) / 1000));
      this.#setState({ state: 'reconnecting', seconds, reason });
    };
    showCountdown();
    this.#timers.countdown = setInterval(showCountdown, COUNTDOWN_TICK_MS);
    this.#timers.retry = setTimeout(() => this.#connect(), delay);
  }

  #setState(next) {
    const changed = next.state !== this.#state || next.seconds !== this.#lastSeconds;
    this.#state = next.state;
    this.#lastSeconds = next.seconds;
    if (changed) this.#onState(next);
  }

  #clearTimers() {
    clearInterval(this.#timers.heartbeat);
    clearTimeout(this.#timers.welcome);
    clearTimeout(this.#timers.retry);
    clearInterval(this.#timers.countdown);
  }
}
