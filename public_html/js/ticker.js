// One symbol's live state, from the snapshot, trades, quotes and bars: what a watchlist row, the chart and the
// tape show. Pure data, no DOM: rows and the detail view read it once per animation frame.
import { parseTimestamp } from './format.js';

export const TAPE_LENGTH = 100;
export const SPARK_POINTS = 60;
const MINUTE_MS = 60_000;

export class Ticker {
  symbol;
  status = 'pending';
  statusText = '';
  last = null;
  prevClose = null;
  reference = null; // what change is measured from: the previous close, else the first price seen
  referenceLabel = 'the first trade seen this session';
  open = null;
  high = null;
  low = null;
  volume = null;
  vwap = null;
  bid = null;
  ask = null;
  bidSize = null;
  askSize = null;
  lastTradeAt = 0; // ms since the epoch, from the trade's own timestamp
  direction = 'flat'; // of the latest trade against the one before it (never across a gap)
  tape = []; // newest first: trade rows and gap markers ({ gap: true, at })
  bars = []; // one-minute bars, oldest first: { time (s), open, high, low, close, volume }
  version = 0; // bumped on every change, so views redraw only what changed
  tapeVersion = 0;
  barsVersion = 0;
  barsShape = 0; // bumped when bars are added or replaced (not when the last one grows)
  #tick = null; // the previous live trade's price: each tape row's up/down colour
  #pv = 0; // price x volume for the day's VWAP
  #day = null; // the New York date ('YYYY-MM-DD') the day statistics are of
  #dailyClose = NaN; // the close of the daily bar the statistics started from

  constructor(symbol) {
    this.symbol = symbol;
  }

  get spread() {
    return Number.isFinite(this.bid) && Number.isFinite(this.ask) && this.bid > 0 && this.ask > 0
      ? this.ask - this.bid : null;
  }

  snapshot({ latest_trade: latest, prev_close: prevClose, daily, latest_quote: quote }) {
    const dailyDay = daily ? newYorkDate(parseTimestamp(daily.timestamp)?.getTime()) : null;
    if (daily && dailyDay && this.#day && dailyDay < this.#day) {
      // A bar of an earlier day than the trades already seen (before a session's first trade Alpaca's daily
      // bar is still the last session's): its close is the previous close, its figures are not today's.
      const dailyClose = num(daily.close);
      if (dailyClose > 0) this.#newReference(dailyClose);
      daily = null;
    } else {
      const close = num(prevClose);
      if (close > 0) this.#newReference(close);
      if (dailyDay) this.#day = dailyDay;
    }
    if (daily) {
      this.#dailyClose = num(daily.close);
      this.open = num(daily.open);
      // The daily bar is the whole day up to the snapshot; what the trades added so far is only what arrived
      // since we subscribed (often a few trades before the snapshot): the day's bar wins unless it is smaller.
      const volume = num(daily.volume);
      if (volume > 0 && !(this.volume > volume)) {
        this.volume = volume;
        this.vwap = num(daily.vwap);
        this.#pv = Number.isFinite(this.vwap) ? this.vwap * volume : 0;
      } else if (!(this.volume > 0)) {
        this.volume = volume;
        this.vwap = num(daily.vwap);
      }
      const high = num(daily.high);
      const low = num(daily.low);
      if (Number.isFinite(high)) this.high = Number.isFinite(this.high) ? Math.max(this.high, high) : high;
      if (Number.isFinite(low)) this.low = Number.isFinite(this.low) ? Math.min(this.low, low) : low;
    }
    const price = num(latest?.price);
    if (this.last == null && Number.isFinite(price)) {
      this.last = price;
      this.lastTradeAt = parseTimestamp(latest.timestamp)?.getTime() ?? 0;
    }
    if (quote && this.bid == null) this.quote(quote);
    this.reference ??= this.last;
    this.version++;
  }

  /** Live trades, oldest first. */
  trades(list) {
    for (const trade of list) {
      const price = num(trade.price);
      if (!Number.isFinite(price)) continue;
      const size = num(trade.size) || 0;
      const at = parseTimestamp(trade.timestamp)?.getTime() ?? Date.now();
      const day = newYorkDate(at);
      if (day && this.#day && day > this.#day) this.#startDay();
      if (day && !(this.#day > day)) this.#day = day;
      const direction = this.#tick == null ? 'flat' : price > this.#tick ? 'up' : price < this.#tick ? 'down' : 'flat';
      this.tape.unshift({ trade, price, size, direction, at });
      this.#tick = price;
      this.direction = direction;
      this.last = price;
      this.lastTradeAt = Math.max(this.lastTradeAt, at);
      this.reference ??= price;
      this.open ??= price;
      this.high = Number.isFinite(this.high) ? Math.max(this.high, price) : price;
      this.low = Number.isFinite(this.low) ? Math.min(this.low, price) : price;
      this.volume = (this.volume || 0) + size;
      this.#pv += price * size;
      if (this.volume > 0) this.vwap = this.#pv / this.volume;
      this.#intoBar(at, price, size);
    }
    if (this.tape.length > TAPE_LENGTH) this.tape.length = TAPE_LENGTH;
    this.version++;
    this.tapeVersion++;
  }

  quote(q) {
    this.bid = num(q.bid_price);
    this.ask = num(q.ask_price);
    this.bidSize = num(q.bid_size);
    this.askSize = num(q.ask_size);
    this.version++;
  }

  /** A finished one-minute bar from Alpaca: it replaces what the trades built for that minute. */
  bar(b) {
    const at = parseTimestamp(b.timestamp)?.getTime();
    if (!Number.isFinite(at)) return;
    this.#putBar({ time: Math.floor(at / 1000), open: num(b.open), high: num(b.high), low: num(b.low),
      close: num(b.close), volume: num(b.volume) || 0 });
    this.version++;
  }

  /** Backfilled bars (Alpaca's REST shape via /api/bars), oldest first; live bars already here win. */
  backfill(rows) {
    const live = new Map(this.bars.map((b) => [b.time, b]));
    const merged = new Map();
    for (const r of rows) {
      const at = parseTimestamp(r.t)?.getTime();
      if (!Number.isFinite(at)) continue;
      const time = Math.floor(at / 1000);
      merged.set(time, { time, open: num(r.o), high: num(r.h), low: num(r.l), close: num(r.c), volume: num(r.v) || 0 });
    }
    for (const [time, b] of live) merged.set(time, b);
    this.bars = [...merged.values()].sort((a, b) => a.time - b.time).slice(-1000);
    this.barsVersion++;
    this.barsShape++;
    this.version++;
  }

  /** The connection to the data was broken: the next trade is not compared with the one before the gap. */
  markGap(at, reason) {
    if (this.tape[0]?.gap) return;
    this.tape.unshift({ gap: true, at, reason });
    this.#tick = null;
    this.direction = 'flat';
    this.tapeVersion++;
    this.version++;
  }

  /** The last hour of minute closes; with fewer than 10 minutes known, the recent trades instead. */
  sparkline() {
    if (this.bars.length >= 10) return this.bars.slice(-SPARK_POINTS).map((b) => b.close);
    const prices = [];
    for (const entry of this.tape) if (!entry.gap) prices.push(entry.price);
    return prices.slice(0, SPARK_POINTS).reverse();
  }

  #newReference(close) {
    this.prevClose = close;
    this.reference = close;
    this.referenceLabel = 'the previous close';
  }

  /** A trade of a later New York day than the statistics: that day has begun, and it starts from nothing but
   * the previous close (the last day's daily bar close, else its last trade). */
  #startDay() {
    const close = this.#dailyClose > 0 ? this.#dailyClose : this.last;
    if (close > 0) this.#newReference(close);
    this.#dailyClose = NaN;
    this.open = null;
    this.high = null;
    this.low = null;
    this.volume = 0;
    this.vwap = null;
    this.#pv = 0;
  }

  #intoBar(at, price, size) {
    const time = Math.floor(at / MINUTE_MS) * 60;
    const lastBar = this.bars[this.bars.length - 1];
    if (lastBar && lastBar.time === time) {
      lastBar.high = Math.max(lastBar.high, price);
      lastBar.low = Math.min(lastBar.low, price);
      lastBar.close = price;
      lastBar.volume += size;
      this.barsVersion++;
    } else if (!lastBar || time > lastBar.time) {
      this.#putBar({ time, open: price, high: price, low: price, close: price, volume: size });
    }
  }

  #putBar(bar) {
    const i = this.bars.findIndex((b) => b.time >= bar.time);
    if (i === -1) this.bars.push(bar);
    else if (this.bars[i].time === bar.time) this.bars[i] = bar;
    else this.bars.splice(i, 0, bar);
    if (this.bars.length > 1000) this.bars.shift();
    this.barsVersion++;
    this.barsShape++;
  }
}

const NEW_YORK_DATE = new Intl.DateTimeFormat('en-CA', { timeZone: 'America/New_York', year: 'numeric',
  month: '2-digit', day: '2-digit' });

/** 'YYYY-MM-DD' in New York for ms since the epoch (the exchange's day, which Alpaca's daily bars follow). */
export function newYorkDate(ms) {
  return Number.isFinite(ms) ? NEW_YORK_DATE.format(ms) : null;
}

function num(value) {
  if (value === null || value === undefined || value === '') return NaN;
  return Number(value);
}
