// Market data: which symbols are on the watchlist, their subscriptions (trades, quotes and bars, held through
// the TradeStream client), backfilled bars, and messages routed to their tickers. Rendering happens once per
// animation frame for whatever changed.
import { FrameQueue } from './frame-queue.js';
import { marketNow } from './market-clock.js';
import { Ticker } from './ticker.js';

const CHANNELS = ['trades', 'quotes', 'bars'];
const RENDERED = new Set(['trade', 'quote', 'bar']); // with snapshots; corrections and cancels are not shown
// A row's status and its text for each state of its subscription in the client.
const STATUS = {
  offline: ['offline', 'offline'],
  pending: ['pending', 'subscribing…'],
  retrying: ['pending', 'rate limited, retrying…'],
  subscribed: ['subscribed', ''],
};
// The chart reaches back to the last session before today: over a weekend, a holiday or both (Christmas on a
// Friday: Monday's pre-market follows Thursday's close). The daemon returns the latest 1000 minute bars of the
// window, so a longer reach costs nothing on a normal weekday.
const BACKFILL_DAYS = 6;
// Each row's "1 h" sparkline starts from the last hour of minute bars up to its last trade (when the market is
// closed, the end of its last session): fetched once the row's snapshot says when that was, at most
// SEED_PARALLEL at a time (20 rows must not be 20 simultaneous REST calls through the daemon's shared quota).
const SEED_MINUTES = 60;
const SEED_PARALLEL = 2;
// Rows repaint at most 10 times a second: enough for a price to read as live, and a fraction of the cost of
// repainting on every display frame when dozens of trades a second arrive.
const RENDER_EVERY_MS = 100;

export class Market {
  #tickers = new Map();
  #subscriptions = new Map(); // symbol -> the function that releases its subscription
  #stream;
  #watchlist;
  #detail;
  #lists;
  #apiBase;
  #onChange;
  #queue = new FrameQueue((messages) => this.#apply(messages), { minIntervalMs: RENDER_EVERY_MS });
  #backfilled = new Set();
  #seeded = new Set(); // symbols whose last hour is fetched or queued (the cache: not fetched again on re-add)
  #seedQueue = [];
  #seeding = 0;
  #newsSymbol = null; // the selected stock symbol, whose headlines we ask for ({"channel":"news"})
  #newsRelease = null;

  /** stream: the TradeStream. apiBase: URL of the daemon's HTTP side (for /api/bars), or null. onChange():
   * after each render. */
  constructor({ stream, watchlist, detail, lists, apiBase, onChange }) {
    this.#stream = stream;
    this.#watchlist = watchlist;
    this.#detail = detail;
    this.#lists = lists;
    this.#apiBase = apiBase;
    this.#onChange = onChange ?? (() => {});
  }

  get(symbol) {
    return this.#tickers.get(symbol);
  }

  symbols() {
    return this.#watchlist.symbols();
  }

  /** Adds symbols to the watchlist; returns the last one (already there: it is selected again). */
  open(symbols) {
    let last = null;
    for (const symbol of symbols) {
      let ticker = this.#tickers.get(symbol);
      if (!ticker) {
        ticker = new Ticker(symbol);
        this.#tickers.set(symbol, ticker);
        this.#watchlist.add(ticker);
        this.#subscribe(ticker);
      } else if (ticker.status === 'rejected') {
        this.#subscribe(ticker);
      }
      last = symbol;
    }
    this.#save();
    if (last && !this.#detail.symbol) this.select(last);
    return last;
  }

  close(symbol) {
    const ticker = this.#tickers.get(symbol);
    if (!ticker) return null;
    this.#subscriptions.get(symbol)?.();
    this.#subscriptions.delete(symbol);
    const next = this.#watchlist.remove(symbol);
    this.#tickers.delete(symbol);
    this.#backfilled.delete(symbol);
    this.#seeded.delete(symbol);
    this.#save();
    if (this.#detail.symbol === symbol) this.select(next);
    return next;
  }

  /** Replaces the whole watchlist (switching named lists). */
  replace(symbols) {
    for (const symbol of this.symbols()) if (!symbols.includes(symbol)) this.close(symbol);
    this.open(symbols);
  }

  select(symbol) {
    const ticker = symbol ? this.#tickers.get(symbol) : null;
    this.#watchlist.select(ticker?.symbol ?? null);
    this.#detail.show(ticker ?? null);
    if (ticker) this.#backfill(ticker);
    this.#followNews(ticker && !ticker.symbol.includes('/') ? ticker.symbol : null);
  }

  /** Headlines for the selected stock only: one news subscription at a time, moved along with the selection. */
  #followNews(symbol) {
    if (symbol === this.#newsSymbol) return;
    this.#newsRelease?.();
    this.#newsSymbol = symbol;
    this.#newsRelease = symbol
      ? this.#stream.subscribe([symbol], { channels: ['news'], onMessage: (message) => this.#showNews(message) })
      : null;
  }

  #showNews(message) {
    for (const symbol of message.data?.symbols ?? []) {
      const ticker = this.#tickers.get(symbol);
      if (ticker) ticker.headline = message.data;
    }
    if ((message.data?.symbols ?? []).includes(this.#detail.symbol)) this.#detail.render();
  }

  reorder(symbols) {
    this.#save(symbols);
  }

  /** After the welcome (the client has subscribed every row again): the chart's history is fetched again. */
  onReconnected() {
    this.#backfilled.clear();
    if (this.#detail.symbol) this.#backfill(this.#tickers.get(this.#detail.symbol));
  }

  markOffline() {
    this.#queue.flush();
    for (const ticker of this.#tickers.values()) {
      if (ticker.status !== 'rejected') this.#setStatus(ticker, 'offline', 'offline');
    }
    this.#renderAll();
  }

  /** The data stream was broken (relay or Alpaca reconnected): each tape gets a gap row. */
  markGap(reason) {
    const at = marketNow(); // the trades' time, which a simulated market keeps apart from this computer's
    for (const ticker of this.#tickers.values()) if (ticker.tape.length) ticker.markGap(at, reason);
    this.#renderAll();
  }

  #subscribe(ticker) {
    this.#subscriptions.get(ticker.symbol)?.();
    this.#subscriptions.set(ticker.symbol, this.#stream.subscribe([ticker.symbol], {
      channels: CHANNELS,
      onMessage: (message) => this.#receive(message),
      onStatus: (symbol, status, detail) => this.#showSubscription(ticker, status, detail),
    }));
  }

  #receive(message) {
    const { type } = message;
    const shown = type === 'snapshot' ? message.data : RENDERED.has(type) && this.#tickers.has(message.symbol);
    if (shown) this.#queue.push(message);
  }

  #showSubscription(ticker, status, detail) {
    if (this.#tickers.get(ticker.symbol) !== ticker) return;
    if (status === 'rejected') {
      this.#setStatus(ticker, 'rejected', detail);
      this.#save();
    } else if (status === 'unsubscribed') { // an unsubscribe we did not ask for (ours remove the row first)
      if (ticker.status === 'subscribed') this.#setStatus(ticker, 'rejected', detail);
    } else if (ticker.status !== 'rejected' || status === 'pending') {
      this.#setStatus(ticker, ...STATUS[status]);
    }
  }

  #setStatus(ticker, status, text) {
    ticker.status = status;
    ticker.statusText = text;
    ticker.version++;
    this.#watchlist.row(ticker.symbol)?.render();
  }

  /** Queues the last hour of minute bars for a new row's sparkline; SEED_PARALLEL fetches at a time. */
  #seed(ticker) {
    if (!this.#apiBase || !ticker?.lastTradeAt || this.#seeded.has(ticker.symbol)) return;
    this.#seeded.add(ticker.symbol);
    this.#seedQueue.push(ticker);
    this.#pumpSeeds();
  }

  #pumpSeeds() {
    while (this.#seeding < SEED_PARALLEL && this.#seedQueue.length) {
      const ticker = this.#seedQueue.shift();
      if (this.#tickers.get(ticker.symbol) !== ticker || this.#backfilled.has(ticker.symbol)) continue;
      this.#seeding++;
      const until = Math.min(marketNow(), ticker.lastTradeAt || Infinity);
      this.#fetchBars(ticker, SEED_MINUTES * 60_000, until)
        .catch((error) => {
          this.#seeded.delete(ticker.symbol);
          console.info(`trade-stream: no sparkline history for ${ticker.symbol}: ${error.message}`);
        })
        .finally(() => { this.#seeding--; this.#pumpSeeds(); });
    }
  }

  /** Fetches minute bars from lookbackMs before `until` (default: now in the market's time) into the ticker (if
   * it is still on the list). */
  async #fetchBars(ticker, lookbackMs, until = marketNow()) {
    const start = new Date(until - lookbackMs).toISOString();
    const end = new Date(until).toISOString();
    const url = new URL('api/bars', this.#apiBase);
    url.search = new URLSearchParams({ symbol: ticker.symbol, timeframe: '1Min', start, end }).toString();
    const response = await fetch(url, { cache: 'no-store' });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    if (this.#tickers.get(ticker.symbol) !== ticker) return;
    ticker.backfill(Array.isArray(body.bars) ? body.bars : []);
    this.#renderAll();
  }

  /** The selected row's chart history, once its snapshot or a trade says when it last traded. */
  async #backfill(ticker) {
    if (!ticker?.lastTradeAt || !this.#apiBase || this.#backfilled.has(ticker.symbol)) return;
    this.#backfilled.add(ticker.symbol);
    try {
      await this.#fetchBars(ticker, BACKFILL_DAYS * 86_400_000, Math.min(marketNow(), ticker.lastTradeAt || Infinity));
    } catch (error) {
      this.#backfilled.delete(ticker.symbol);
      console.info(`trade-stream: no backfill for ${ticker.symbol}: ${error.message}`);
    }
  }

  #save(order = this.symbols()) {
    this.#lists.setSymbols(order.filter((s) => this.#tickers.get(s)?.status !== 'rejected'));
  }

  #renderAll() {
    this.#watchlist.render(this.#tickers.keys());
    this.#detail.render();
    this.#onChange();
  }

  #apply(messages) {
    const trades = new Map();
    const changed = new Set();
    for (const { type, symbol, data } of messages) {
      const ticker = this.#tickers.get(symbol);
      if (!ticker || !data) continue;
      changed.add(symbol);
      if (type === 'trade') {
        if (!trades.has(ticker)) trades.set(ticker, []);
        trades.get(ticker).push(data);
      } else if (type === 'quote') ticker.quote(data);
      else if (type === 'bar') ticker.bar(data);
      else if (type === 'snapshot') ticker.snapshot(data);
    }
    for (const [ticker, list] of trades) ticker.trades(list);
    for (const symbol of changed) { // each knows its last trade by now: what "the last hour" ends at
      this.#seed(this.#tickers.get(symbol));
      if (symbol === this.#detail.symbol) this.#backfill(this.#tickers.get(symbol));
    }
    this.#watchlist.render(changed);
    if (changed.has(this.#detail.symbol)) this.#detail.render();
    this.#onChange();
  }
}
