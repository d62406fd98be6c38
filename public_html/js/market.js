// Market data: which symbols are open, their subscriptions, and trades/quotes routed to their panels.
import { FrameQueue } from './frame-queue.js';
import { saveSymbols } from './symbols.js';

const RATE_LIMIT_RETRY_MS = 2_000;
const RATE_LIMIT_RETRIES = 5;

export class Market {
  #grid;
  #connection;
  #queue = new FrameQueue((messages) => this.#render(messages));
  #retries = new Map();

  constructor(grid, connection) {
    this.#grid = grid;
    this.#connection = connection;
  }

  /** Opens panels for new symbols; an already open one is focused (and retried if it was rejected). */
  open(symbols) {
    let last;
    for (const symbol of symbols) {
      last = this.#grid.get(symbol);
      if (!last) {
        last = this.#grid.add(symbol);
        this.#subscribe(last);
      } else if (last.status === 'rejected') {
        this.#subscribe(last);
      }
    }
    this.#save();
    return last;
  }

  close(symbol) {
    const panel = this.#grid.get(symbol);
    if (!panel) return;
    if (panel.status !== 'rejected') this.#connection.send({ action: 'unsubscribe', symbol });
    this.#grid.remove(symbol);
    this.#retries.delete(symbol);
    this.#save();
  }

  /** After the welcome: (re)subscribe every panel that was not rejected. */
  resubscribeAll() {
    for (const panel of this.#grid.all()) {
      if (panel.status !== 'rejected') this.#subscribe(panel);
    }
  }

  markOffline() {
    this.#queue.flush();
    for (const panel of this.#grid.all()) {
      if (panel.status !== 'rejected') panel.setStatus('offline');
    }
  }

  /** True when the message was about market data. */
  handleMessage(message) {
    switch (message.type) {
      case 'trade':
      case 'quote':
        if (this.#grid.get(message.symbol)) this.#queue.push(message);
        return true;
      case 'snapshot':
        if (message.data) this.#grid.get(message.symbol)?.showSnapshot(message.data);
        return true;
      case 'bar':
        return true;
      case 'subscribed':
        for (const symbol of symbolsOf(message)) this.#confirm(symbol);
        return symbolsOf(message).length > 0;
      case 'unsubscribed':
        for (const symbol of symbolsOf(message)) this.#forcedOff(symbol);
        return symbolsOf(message).length > 0;
      default:
        return false;
    }
  }

  /** True when the error answered one of our pending subscribes (the panel then shows it). */
  handleError(error) {
    const panel = error.symbol && this.#grid.get(error.symbol);
    if (!panel || panel.status !== 'pending') return false;
    const retries = this.#retries.get(panel.symbol) ?? 0;
    if (error.code === 'rate_limited' && retries < RATE_LIMIT_RETRIES) {
      this.#retries.set(panel.symbol, retries + 1);
      panel.setStatus('pending', 'rate limited, retrying…');
      setTimeout(() => {
        if (this.#grid.get(panel.symbol) === panel && panel.status === 'pending') this.#subscribe(panel);
      }, RATE_LIMIT_RETRY_MS);
      return true;
    }
    panel.setStatus('rejected', error.message || error.code || 'subscription rejected');
    this.#save();
    return true;
  }

  #subscribe(panel) {
    panel.setStatus(this.#connection.isLive ? 'pending' : 'offline');
    if (this.#connection.isLive) this.#connection.send({ action: 'subscribe', symbol: panel.symbol });
  }

  #confirm(symbol) {
    const panel = this.#grid.get(symbol);
    if (!panel || panel.status === 'rejected') return;
    panel.setStatus('subscribed');
    this.#retries.delete(symbol);
  }

  // An unsubscribe we did not ask for (ours remove the panel first).
  #forcedOff(symbol) {
    const panel = this.#grid.get(symbol);
    if (panel?.status === 'subscribed') panel.setStatus('rejected', 'unsubscribed by the server');
  }

  #save() {
    saveSymbols(this.#grid.all().filter((p) => p.status !== 'rejected').map((p) => p.symbol));
  }

  #render(messages) {
    const trades = new Map();
    const quotes = new Map();
    for (const { type, symbol, data } of messages) {
      if (!data) continue;
      if (type === 'trade') {
        if (!trades.has(symbol)) trades.set(symbol, []);
        trades.get(symbol).push(data);
      } else {
        quotes.set(symbol, data);
      }
    }
    for (const [symbol, list] of trades) this.#grid.get(symbol)?.addTrades(list);
    for (const [symbol, quote] of quotes) this.#grid.get(symbol)?.showQuote(quote);
  }
}

function symbolsOf(message) {
  if (Array.isArray(message.symbols)) return message.symbols;
  return message.symbol ? [message.symbol] : [];
}
