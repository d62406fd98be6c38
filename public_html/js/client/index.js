// TradeStream: the browser side of trade-stream's WebSocket protocol, for the page and for apps built on it.
//
// One socket per instance (TradeStream.shared() gives every subscriber on a page the same one). Subscriptions
// are reference-counted: two subscribers of AAPL cost one subscribe, and the relay hears the unsubscribe when
// the last of them leaves. After a reconnect (exponential backoff with full jitter) everything held is sent
// again, the orders stream and app channels resume from the last id seen, and an event that arrives twice (a
// replay overlapping what was already delivered) reaches the handlers once. Every map is bounded by what is
// held, and the ids remembered for dropping repeats by a fixed capacity.
import { Connection } from './connection.js';
import { OrderCursor } from './cursor.js';
import { RecentIds } from './recent.js';

export { OrderCursor, memoryStore } from './cursor.js';

const RATE_LIMIT_RETRY_MS = 2_000;
const RATE_LIMIT_RETRIES = 5;
const THROTTLE_RETRY_S = 60;
// A JWT is refreshed this long before its `exp` (a short-lived one halfway through what is left): the fresh
// one, sent in time, keeps the orders stream open without a gap.
const REFRESH_AHEAD_MS = 60_000;
const MIN_REFRESH_MS = 1_000;
const MAX_TIMER_MS = 2 ** 31 - 1;
// The subscription channel a market message belongs to.
const CHANNEL_OF = {
  trade: 'trades', snapshot: 'trades', correction: 'trades', cancel_error: 'trades',
  quote: 'quotes', bar: 'bars', orderbook: 'orderbooks', news: 'news',
};
const ORDER_TYPES = new Set(['orders_snapshot', 'orders_reset', 'order_update', 'position_update']);
// The relay's refusals of a channel subscribe. They name the channel in their message only (no field), so
// they are matched to the channel subscribes that are waiting for an answer by that name.
// Kept per held symbol for a subscriber that joins after them: its price shows at once, as the first one's did.
const REPLAYED = new Set(['snapshot', 'trade', 'quote']);
// The order updates kept since each account's snapshot, for an orders subscriber that joins later.
const MAX_REPLAYED_UPDATES = 200;

/**
 * Auth states reported by on('auth', …):
 *   none           no credentials: public data only
 *   waiting        credentials are held, the socket is not up
 *   pending        the token was sent, the relay has not answered
 *   authenticated  private subscriptions (orders, private channels) are open to this socket
 *   rejected       the relay refused the token (it is dropped: set another with setToken)
 *   throttled      too many failed tries from this address: retried after `retryAfter` seconds
 *   expired        the JWT expired and there is no getToken to ask for a fresh one
 *   displaced      a newer connection of the same user took this one's place (the relay's per-user limit):
 *                  the client reconnects for public data but does not authenticate again by itself, since two
 *                  clients doing that would take each other's place for ever; setToken takes the place back
 */
export class TradeStream {
  static #shared = null;

  /** The page-wide instance: created by the first call (which must pass the options), returned by the rest. */
  static shared(options) {
    if (!TradeStream.#shared) {
      if (!options) throw new TypeError('TradeStream.shared(options): the first call must pass {url, …}');
      TradeStream.#shared = new TradeStream(options);
    } else if (options?.url && options.url !== TradeStream.#shared.url) {
      throw new TypeError(`TradeStream.shared() already connects to ${TradeStream.#shared.url}, not ${options.url}`);
    }
    return TradeStream.#shared;
  }

  #url;
  #connection;
  #batch;
  #cookie;
  #getToken;
  #token;
  #cursor;
  #recent;
  #listeners = new Map(); // event name -> Set of listeners
  #report = { state: 'connecting', connected: false, error: null };
  #symbols = new Map(); // SYMBOL -> Map(channel -> {count, status, detail, retries, timer})
  #symbolSubs = new Map(); // SYMBOL -> Set of subscriptions naming it
  #latest = new Map(); // SYMBOL -> {snapshot, trade, quote}: the last of each, replayed to a late subscriber
  #channels = new Map(); // app channel name -> {count, status, lastId, subs}
  // snapshots: account -> its orders_snapshot; positions: "account|symbol" -> the last position_update since
  // it; updates: the order updates since them, oldest first (bounded): what a late subscriber is given first.
  #orders = { subs: new Set(), onWire: false, epochs: new Map(), snapshots: new Map(), positions: new Map(),
    updates: [] };
  #auth = { state: 'none', message: '', retryAfter: 0 };
  #privateReady = false; // this connection's auth is settled: private subscriptions can be sent
  #authTimer = 0;
  #refreshTimer = 0;
  #authRound = 0;
  #refreshAhead;

  /**
   * url: the relay's ws:// or wss:// URL. token: a users-file token, TRADE_STREAM_TOKEN or a JWT; getToken():
   * a promise of a token, asked on every connect and when the relay says the JWT expired (and shortly before
   * its `exp`). cookie: true when the relay reads the user from the web app's session cookie, which the
   * browser sends with the handshake (TRADE_STREAM_AUTH_COOKIE): no auth message is sent, and when the relay
   * says the cookie's JWT expired the client reconnects, so the cookie the app has refreshed is presented;
   * an explicit token wins over the cookie. batch: market messages as arrays (fewer frames on a busy
   * feed; the client unpacks them). orderCursor: where the orders resume point is kept (memory by default).
   * refreshAhead: how long before a JWT's exp getToken is asked again (0: only once the relay says it
   * expired). connect: false to wait for connect().
   */
  constructor({
    url, token = null, getToken = null, cookie = false, batch = true, orderCursor = new OrderCursor(),
    recentIds = 5_000, refreshAhead = REFRESH_AHEAD_MS, connect = true,
  } = {}) {
    this.#refreshAhead = refreshAhead;
    this.#url = url ?? null;
    this.#token = cleanToken(token);
    this.#getToken = typeof getToken === 'function' ? getToken : null;
    this.#cookie = cookie === true;
    this.#batch = batch !== false;
    this.#cursor = orderCursor;
    this.#recent = new RecentIds(recentIds);
    this.#auth.state = this.#hasCredentials() ? 'waiting' : 'none';
    this.#connection = this.#url ? new Connection(this.#url, {
      onState: (report) => this.#onState(report),
      onMessage: (message) => this.#onMessage(message),
    }) : null;
    if (connect) this.connect();
  }

  get url() {
    return this.#url;
  }

  /** True while the socket is open and welcomed. */
  get connected() {
    return this.#report.connected;
  }

  /** { state: connecting|live|reconnecting|disconnected, connected, error, seconds?, reason? } */
  get state() {
    return this.#report;
  }

  /** { state, message, retryAfter }: see the auth states above. */
  get auth() {
    return { ...this.#auth };
  }

  get orderCursor() {
    return this.#cursor;
  }

  connect() {
    if (this.#connection) this.#connection.start();
    else queueMicrotask(() => this.#onState({ state: 'disconnected', reason: 'no WebSocket URL' }));
  }

  /** Closes the socket for good (the shared instance is forgotten, so the next shared() makes a new one). */
  close() {
    clearTimeout(this.#authTimer);
    clearTimeout(this.#refreshTimer);
    for (const channels of this.#symbols.values()) for (const entry of channels.values()) clearTimeout(entry.timer);
    this.#connection?.close();
    if (TradeStream.#shared === this) TradeStream.#shared = null;
  }

  /**
   * Listens to 'state' (the connection report), 'auth', 'welcome', 'message' (every message, after the
   * client's own handling) or 'error' (relay errors no subscription claimed). Returns the function that stops.
   */
  on(event, listener) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(listener);
    return () => this.#listeners.get(event)?.delete(listener);
  }

  /** Sends one protocol message as it is; false when the socket is not open. */
  send(message) {
    return this.#connection?.send(message) ?? false;
  }

  /**
   * Market data for `symbols` on `channels` (trades, quotes, bars, orderbooks for pairs, news).
   * onMessage(message) gets each trade, quote, bar, orderbook, snapshot, correction, cancel_error and news
   * message of them; onStatus(symbol, status, detail) each change: offline, pending, retrying (rate limited),
   * subscribed, rejected (the relay refused it: detail says why), unsubscribed (by the relay). A rejected
   * subscription is not sent again until it is taken again. Returns the unsubscribe function.
   */
  subscribe(symbols, { channels = ['trades', 'quotes'], onMessage = () => {}, onStatus = () => {} } = {}) {
    const sub = { symbols: new Set(symbols.map((s) => String(s).toUpperCase())), channels: new Set(channels),
      onMessage, onStatus };
    for (const symbol of sub.symbols) {
      if (!this.#symbolSubs.has(symbol)) this.#symbolSubs.set(symbol, new Set());
      this.#symbolSubs.get(symbol).add(sub);
      if (!this.#symbols.has(symbol)) this.#symbols.set(symbol, new Map());
      const held = this.#symbols.get(symbol);
      const fresh = [];
      for (const channel of sub.channels) {
        let entry = held.get(channel);
        if (!entry) {
          entry = { count: 0, status: 'offline', detail: 'offline', retries: 0, timer: 0 };
          held.set(channel, entry);
          fresh.push(channel);
        }
        entry.count++;
      }
      if (fresh.length && this.connected) this.#sendSymbol(symbol, fresh);
      else if (fresh.length) this.#setSymbolStatus(symbol, fresh, 'offline', 'offline');
      const status = this.#symbolStatus(symbol, sub.channels);
      if (!fresh.length) call(sub.onStatus, symbol, status.status, status.detail);
    }
    let done = false;
    queueMicrotask(() => {
      if (done) return;
      for (const symbol of sub.symbols) {
        for (const message of Object.values(this.#latest.get(symbol) ?? {})) {
          if (sub.channels.has(CHANNEL_OF[message.type])) call(sub.onMessage, message);
        }
      }
    });
    return () => {
      if (done) return;
      done = true;
      this.#release(sub);
    };
  }

  /**
   * An app channel (strategies:<id>, ai-decisions, alerts, agent-status, app:<name>). onMessage gets its
   * `event` messages (each id once), `reset` (the resume point was too old: refetch what the app shows),
   * `subscribed`, `unsubscribed` and `error` (e.g. unauthorized). After a reconnect the channel resumes after
   * the last event id seen; `since` starts it after a known one. Returns the unsubscribe function.
   */
  channel(name, onMessage, { since = null } = {}) {
    let entry = this.#channels.get(name);
    if (!entry) {
      entry = { count: 0, status: 'offline', lastId: since, subs: new Set() };
      this.#channels.set(name, entry);
    }
    const sub = { onMessage };
    entry.subs.add(sub);
    entry.count++;
    if (entry.count === 1 && this.connected && this.#privateReady) this.#sendChannel(name, entry);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      entry.subs.delete(sub);
      if (--entry.count > 0) return;
      this.#channels.delete(name);
      this.#recent.clear(`c|${name}|`);
      if (this.connected && entry.status !== 'rejected') this.send({ action: 'unsubscribe', channel: name });
    };
  }

  /**
   * The private orders stream: onMessage gets `orders_snapshot` (one per account), `orders_reset`,
   * `order_update` (each journal id once) and `position_update`. It opens once the token is accepted and
   * resumes after the last event seen. Returns the unsubscribe function.
   */
  orders(onMessage) {
    const sub = { onMessage };
    this.#orders.subs.add(sub);
    if (this.#orders.subs.size === 1 && this.connected && this.#privateReady && this.#mayOpenOrders()) {
      this.#subscribeOrders();
    }
    let done = false;
    queueMicrotask(() => {
      const { snapshots, positions, updates } = this.#orders;
      for (const message of [...snapshots.values(), ...positions.values(), ...updates]) {
        if (!done) call(sub.onMessage, message);
      }
    });
    return () => {
      if (done) return;
      done = true;
      this.#orders.subs.delete(sub);
      if (this.#orders.subs.size) return;
      this.#forgetOrders();
      if (!this.#orders.onWire) return;
      this.#orders.onWire = false;
      this.send({ action: 'unsubscribe', channel: 'orders' });
    };
  }

  /** A new token (null forgets it: the orders stream is closed). Sent at once when the socket is up. */
  setToken(token) {
    const next = cleanToken(token);
    if (next !== this.#token) {
      this.#recent.clear('o|');
      this.#forgetOrders();
    }
    this.#token = next;
    if (!next && !this.#getToken && !this.#cookie) {
      clearTimeout(this.#authTimer);
      if (this.#orders.onWire && this.connected) this.send({ action: 'unsubscribe', channel: 'orders' });
      this.#orders.onWire = false;
      this.#setAuth('none');
      return;
    }
    if (this.connected) this.#authenticate();
    else this.#setAuth('waiting');
  }

  // --- connection -------------------------------------------------------------------------------------------

  #onState(report) {
    const connected = report.state === 'live';
    const error = connected ? this.#authError() : (report.reason ?? null);
    const wasConnected = this.#report.connected;
    this.#report = { ...report, connected, error };
    if (wasConnected && !connected) this.#goOffline(); // before the first welcome everything is offline already
    this.#emit('state', this.#report);
  }

  #goOffline() {
    this.#privateReady = false;
    this.#orders.onWire = false;
    this.#authRound++;
    clearTimeout(this.#refreshTimer);
    for (const [symbol, held] of this.#symbols) {
      const changed = [];
      for (const [channel, entry] of held) {
        clearTimeout(entry.timer);
        if (entry.status !== 'rejected' && entry.status !== 'offline') changed.push(channel);
      }
      if (changed.length) this.#setSymbolStatus(symbol, changed, 'offline', 'offline');
    }
    for (const entry of this.#channels.values()) if (entry.status !== 'rejected') entry.status = 'offline';
    const settled = ['rejected', 'displaced', 'waiting'].includes(this.#auth.state);
    if (this.#hasCredentials() && !settled) this.#setAuth('waiting');
  }

  #onWelcome() {
    if (this.#batch) this.send({ action: 'options', batch: true });
    for (const [symbol, held] of this.#symbols) {
      const again = [...held].filter(([, entry]) => entry.status !== 'rejected').map(([channel]) => channel);
      for (const channel of again) held.get(channel).retries = 0;
      if (again.length) this.#sendSymbol(symbol, again);
    }
    if (this.#auth.state === 'displaced') {
      this.#settlePrivate(); // public channels only, until setToken
    } else if (this.#token || this.#getToken) {
      this.#authenticate();
    } else if (this.#cookie) {
      // The relay checks the handshake's cookie and answers right after the welcome: orders wait for its
      // `authenticated`; channels can go now, as the relay has decided before it reads them.
      this.#setAuth('pending');
      this.#settlePrivate();
    } else {
      this.#settlePrivate();
    }
  }

  #onMessage(message) {
    const claimed = this.#route(message);
    if (message.type === 'welcome') this.#emit('welcome', message);
    if (claimed !== 'drop') this.#emit('message', message);
    if (message.type === 'error' && !claimed) this.#emit('error', message);
  }

  /** Handles a message for the subscriptions; true when one of them claimed it, 'drop' for a repeat. */
  #route(message) {
    const { type } = message;
    if (type === 'welcome') {
      this.#onWelcome();
      return true;
    }
    if (Object.hasOwn(CHANNEL_OF, type)) return this.#marketMessage(message);
    if (ORDER_TYPES.has(type)) return this.#orderMessage(message);
    switch (type) {
      case 'event':
      case 'reset':
        return this.#channelMessage(message);
      case 'subscribed':
      case 'unsubscribed':
        return this.#confirmation(message);
      case 'authenticated':
        this.#onAuthenticated();
        return true;
      case 'error':
        return this.#error(message);
      case 'warning':
        if (message.code !== 'connection_limit') return false;
        this.#orders.onWire = false; // the relay ends this connection's private subscriptions and closes it
        clearTimeout(this.#refreshTimer);
        this.#setAuth('displaced', message.message ?? '');
        return true;
      default:
        return false;
    }
  }

  // --- market data ------------------------------------------------------------------------------------------

  #sendSymbol(symbol, channels) {
    const news = channels.filter((c) => c === 'news');
    const market = channels.filter((c) => c !== 'news');
    // One message per symbol: the relay rolls back a whole request that goes over a limit, so a symbol
    // never takes others down with it.
    if (market.length) this.send({ action: 'subscribe', symbols: [symbol], channels: market });
    if (news.length) this.send({ action: 'subscribe', channel: 'news', symbols: [symbol] });
    this.#setSymbolStatus(symbol, channels, 'pending', 'subscribing…');
  }

  #release(sub) {
    for (const symbol of sub.symbols) {
      const subs = this.#symbolSubs.get(symbol);
      subs?.delete(sub);
      if (subs && !subs.size) this.#symbolSubs.delete(symbol);
      const held = this.#symbols.get(symbol);
      if (!held) continue;
      const gone = [];
      for (const channel of sub.channels) {
        const entry = held.get(channel);
        if (!entry || --entry.count > 0) continue;
        clearTimeout(entry.timer);
        held.delete(channel);
        if (entry.status === 'pending' || entry.status === 'subscribed') gone.push(channel); // held by the relay
      }
      if (!held.size) {
        this.#symbols.delete(symbol);
        this.#latest.delete(symbol);
      }
      if (!gone.length || !this.connected) continue;
      const market = gone.filter((c) => c !== 'news');
      if (market.length) this.send({ action: 'unsubscribe', symbols: [symbol], channels: market });
      if (gone.includes('news')) this.send({ action: 'unsubscribe', channel: 'news', symbols: [symbol] });
    }
  }

  #marketMessage(message) {
    const channel = CHANNEL_OF[message.type];
    const symbols = message.type === 'news' ? [...(message.data?.symbols ?? []), '*'] : [message.symbol];
    if (REPLAYED.has(message.type) && this.#symbols.has(message.symbol)) {
      if (!this.#latest.has(message.symbol)) this.#latest.set(message.symbol, {});
      this.#latest.get(message.symbol)[message.type] = message;
    }
    const reached = new Set();
    for (const symbol of symbols) {
      for (const sub of this.#symbolSubs.get(symbol) ?? []) {
        if (!sub.channels.has(channel) || reached.has(sub)) continue;
        reached.add(sub);
        call(sub.onMessage, message);
      }
    }
    return reached.size > 0;
  }

  #setSymbolStatus(symbol, channels, status, detail) {
    const held = this.#symbols.get(symbol);
    if (!held) return;
    for (const channel of channels) {
      const entry = held.get(channel);
      if (entry) Object.assign(entry, { status, detail });
    }
    const touched = new Set(channels);
    for (const sub of this.#symbolSubs.get(symbol) ?? []) {
      if (![...sub.channels].some((c) => touched.has(c))) continue;
      const now = this.#symbolStatus(symbol, sub.channels);
      call(sub.onStatus, symbol, now.status, now.detail);
    }
  }

  /** What a subscriber of `channels` sees: the least settled of its channels' states. */
  #symbolStatus(symbol, channels) {
    const order = ['rejected', 'unsubscribed', 'offline', 'retrying', 'pending', 'subscribed'];
    let worst = null;
    for (const channel of channels) {
      const entry = this.#symbols.get(symbol)?.get(channel);
      if (entry && (!worst || order.indexOf(entry.status) < order.indexOf(worst.status))) worst = entry;
    }
    return worst ?? { status: 'offline', detail: 'offline' };
  }

  #confirmation(message) {
    const name = message.channel;
    if (name === 'orders') {
      if (message.type === 'unsubscribed') this.#orders.onWire = false;
      for (const sub of this.#orders.subs) call(sub.onMessage, message);
      return true;
    }
    if (name && name !== 'news' && this.#channels.has(name)) {
      const entry = this.#channels.get(name);
      if (message.type === 'subscribed') entry.status = 'subscribed';
      else if (entry.status === 'subscribed') entry.status = 'rejected'; // ours delete the entry first
      for (const sub of entry.subs) call(sub.onMessage, message);
      return true;
    }
    const symbols = Array.isArray(message.symbols) ? message.symbols : (message.symbol ? [message.symbol] : []);
    const channels = Array.isArray(message.channels) ? message.channels : (name === 'news' ? ['news'] : null);
    let claimed = false;
    for (const symbol of symbols.map((s) => String(s).toUpperCase())) {
      const held = this.#symbols.get(symbol);
      if (!held) continue; // the confirmation of an unsubscribe we sent
      claimed = true;
      const named = (channels ?? [...held.keys()]).filter((c) => held.has(c));
      if (message.type === 'subscribed') {
        const pending = named.filter((c) => held.get(c).status !== 'rejected');
        for (const channel of pending) held.get(channel).retries = 0;
        this.#setSymbolStatus(symbol, pending, 'subscribed', '');
      } else {
        const forced = named.filter((c) => held.get(c).status === 'subscribed');
        this.#setSymbolStatus(symbol, forced, 'unsubscribed', 'unsubscribed by the server');
      }
    }
    return claimed || symbols.length > 0;
  }

  // --- errors -----------------------------------------------------------------------------------------------

  #error(error) {
    if (error.symbol) return this.#symbolError(error);
    const channel = this.#channelOfError(error);
    if (channel) {
      const entry = this.#channels.get(channel);
      // already subscribed: the relay kept it (a public channel across a token's expiry), so it is held
      entry.status = error.code === 'already_subscribed' ? 'subscribed' : 'rejected';
      for (const sub of entry.subs) call(sub.onMessage, { ...error, channel });
      return true;
    }
    if (error.via === 'cookie' && (this.#token || this.#getToken)) return true; // our own token decides
    if (error.code === 'token_expired') {
      // The relay ended the private subscriptions: orders, and the channels that are not public (which ones
      // are is the relay's setting, so every channel is asked for again; the public ones answer
      // already_subscribed).
      this.#orders.onWire = false;
      this.#privateReady = false;
      for (const entry of this.#channels.values()) if (entry.status !== 'rejected') entry.status = 'offline';
      if (this.#getToken) {
        this.#authenticate();
      } else if (this.#cookieOnly()) { // a new handshake carries the cookie the app has refreshed meanwhile
        this.#setAuth('expired', error.message);
        this.#connection?.reconnect('the session cookie expired');
      } else {
        this.#setAuth('expired', error.message);
      }
      return true;
    }
    if (error.code === 'rate_limited' && this.#auth.state === 'pending') {
      const seconds = Number(error.retry_after) > 0 ? Number(error.retry_after) : THROTTLE_RETRY_S;
      this.#setAuth('throttled', error.message, seconds);
      clearTimeout(this.#authTimer);
      this.#authTimer = setTimeout(() => {
        if (this.#auth.state === 'throttled' && this.connected) this.#authenticate();
      }, seconds * 1000);
      this.#settlePrivate();
      return true;
    }
    if (error.code === 'unauthorized') {
      this.#token = null;
      this.#setAuth('rejected', error.message);
      this.#settlePrivate();
      return true;
    }
    return false;
  }

  /** The held channel a channel-subscribe refusal is about: named by the error, or in its message. */
  #channelOfError(error) {
    if (!error.channel || error.channel === 'orders') return null;
    return this.#channels.has(error.channel) ? error.channel : null;
  }


  /** An error about a symbol we asked for: a rate limit is retried a few times, anything else rejects it. */
  #symbolError(error) {
    const symbol = String(error.symbol).toUpperCase();
    const held = this.#symbols.get(symbol);
    const waiting = held ? [...held].filter(([, e]) => e.status === 'pending' || e.status === 'retrying') : [];
    if (!waiting.length) return false;
    const channels = waiting.map(([channel]) => channel);
    const retries = Math.max(...waiting.map(([, e]) => e.retries));
    if (error.code === 'rate_limited' && retries < RATE_LIMIT_RETRIES) {
      this.#setSymbolStatus(symbol, channels, 'retrying', 'rate limited, retrying…');
      for (const [channel, entry] of waiting) {
        entry.retries = retries + 1;
        clearTimeout(entry.timer);
        entry.timer = setTimeout(() => {
          if (this.#symbols.get(symbol)?.get(channel) === entry && entry.status === 'retrying' && this.connected) {
            this.#sendSymbol(symbol, [channel]);
          }
        }, RATE_LIMIT_RETRY_MS);
      }
      return true;
    }
    this.#setSymbolStatus(symbol, channels, 'rejected', error.message || error.code || 'subscription rejected');
    return true;
  }

  // --- auth and orders --------------------------------------------------------------------------------------

  #hasCredentials() {
    return Boolean(this.#token || this.#getToken || this.#cookie);
  }

  #mayOpenOrders() {
    return this.#auth.state === 'authenticated';
  }

  #cookieOnly() {
    return this.#cookie && !this.#token && !this.#getToken;
  }

  async #authenticate() {
    const round = ++this.#authRound;
    clearTimeout(this.#authTimer);
    clearTimeout(this.#refreshTimer);
    let token = this.#token;
    if (this.#getToken) {
      this.#setAuth('pending');
      try {
        token = cleanToken(await this.#getToken());
      } catch (error) {
        if (round !== this.#authRound) return;
        this.#setAuth('rejected', `getToken failed: ${error?.message ?? error}`);
        this.#settlePrivate();
        return;
      }
      if (round !== this.#authRound || !this.connected) return;
      this.#token = token;
    }
    if (!token) {
      this.#setAuth('none');
      this.#settlePrivate();
      return;
    }
    this.#setAuth('pending');
    this.send({ action: 'auth', token });
  }

  #onAuthenticated() {
    this.#setAuth('authenticated');
    this.#scheduleRefresh();
    this.#settlePrivate();
  }

  /** This connection's auth is answered: open the private subscriptions held (those still closed). */
  #settlePrivate() {
    this.#privateReady = true;
    if (this.#orders.subs.size && !this.#orders.onWire && this.#mayOpenOrders()) this.#subscribeOrders();
    for (const [name, entry] of this.#channels) {
      if (entry.status === 'offline' || (entry.status === 'rejected' && this.#auth.state === 'authenticated')) {
        this.#sendChannel(name, entry);
      }
    }
  }

  #subscribeOrders() {
    const since = this.#cursor.get();
    this.#orders.onWire = true;
    this.send({ action: 'subscribe', channel: 'orders', ...(since === null ? {} : { since }) });
  }

  #orderMessage(message) {
    const account = message.account ?? '';
    const { epochs, snapshots, positions, updates } = this.#orders;
    if (message.type === 'orders_snapshot') {
      epochs.set(account, message.epoch ?? null);
      snapshots.set(account, message);
      for (const key of positions.keys()) if (key.startsWith(`${account}|`)) positions.delete(key);
      this.#orders.updates = updates.filter((update) => (update.account ?? '') !== account);
    } else if (message.type === 'orders_reset' && message.epoch) {
      epochs.set(account, message.epoch);
    } else if (message.type === 'position_update') {
      const key = `${account}|${message.symbol}`;
      positions.delete(key); // re-inserted last: the replay keeps the order they came in
      positions.set(key, message);
    } else if (message.type === 'order_update') {
      if (Number.isInteger(message.id)) {
        const epoch = epochs.get(account) ?? null;
        if (!this.#recent.add(`o|${account}|${epoch ?? ''}|${message.id}`)) return 'drop';
        this.#cursor.record(message.id, epoch, account);
      }
      updates.push(message);
      if (updates.length > MAX_REPLAYED_UPDATES) updates.shift();
    }
    for (const sub of this.#orders.subs) call(sub.onMessage, message);
    return true;
  }

  /** Drops what is kept for late orders subscribers (another user's token, or nobody listening). */
  #forgetOrders() {
    const { snapshots, positions } = this.#orders;
    snapshots.clear();
    positions.clear();
    this.#orders.updates = [];
  }

  /** A JWT's refresh, shortly before its exp (only with getToken: a fixed token cannot be renewed). */
  #scheduleRefresh() {
    clearTimeout(this.#refreshTimer);
    const exp = jwtExpiry(this.#token);
    if (!this.#getToken || exp === null || !(this.#refreshAhead > 0)) return;
    const left = exp - Date.now();
    const wait = Math.max(MIN_REFRESH_MS, left > 2 * this.#refreshAhead ? left - this.#refreshAhead : left / 2);
    if (wait > MAX_TIMER_MS) return;
    this.#refreshTimer = setTimeout(() => {
      if (this.connected) this.#authenticate();
    }, wait);
  }

  #setAuth(state, message = '', retryAfter = 0) {
    const changed = state !== this.#auth.state || message !== this.#auth.message;
    this.#auth = { state, message, retryAfter };
    if (!changed) return;
    this.#emit('auth', this.auth);
    const error = this.#report.connected ? this.#authError() : this.#report.error;
    if (error !== this.#report.error) {
      this.#report = { ...this.#report, error };
      this.#emit('state', this.#report);
    }
  }

  #authError() {
    const { state, message } = this.#auth;
    return ['rejected', 'expired', 'throttled', 'displaced'].includes(state) ? (message || state) : null;
  }

  // --- app channels -----------------------------------------------------------------------------------------

  #sendChannel(name, entry) {
    entry.status = 'pending';
    this.send({ action: 'subscribe', channel: name, ...(entry.lastId == null ? {} : { since: String(entry.lastId) }) });
  }

  #channelMessage(message) {
    const entry = this.#channels.get(message.channel);
    if (!entry) return false;
    if (message.type === 'event' && message.id != null) {
      if (!this.#recent.add(`c|${message.channel}|${message.id}`)) return 'drop';
      entry.lastId = message.id;
    }
    for (const sub of entry.subs) call(sub.onMessage, message);
    return true;
  }

  #emit(event, value) {
    for (const listener of this.#listeners.get(event) ?? []) call(listener, value);
  }
}

/** Runs a subscriber's handler; one that throws does not stop the others or the client. */
function call(handler, ...args) {
  try {
    handler(...args);
  } catch (error) {
    console.error('trade-stream: a handler failed', error);
  }
}

function cleanToken(token) {
  const text = typeof token === 'string' ? token.trim() : '';
  return text || null;
}

/** A JWT's exp in milliseconds, or null for a token that is not a JWT (or has none). */
function jwtExpiry(token) {
  const parts = String(token ?? '').split('.');
  if (parts.length !== 3) return null;
  try {
    const payload = JSON.parse(atob(parts[1].replace(/-/g, '+').replace(/_/g, '/')));
    return typeof payload.exp === 'number' ? payload.exp * 1000 : null;
  } catch {
    return null;
  }
}
