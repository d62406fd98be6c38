// The watchlist table: one compact row per symbol. Rows are redrawn at most once per animation frame, and only
// the cells whose text changed are written. A price change flashes the last-price cell with an opacity
// animation on a pseudo-element (compositor-only: no layout, no paint of the row), at most twice a second.
import { el } from './dom.js';
import {
  formatAge, formatChange, formatPrice, formatQuantity, formatVolume,
} from './format.js';
import { drawSparkline } from './sparkline.js';
import { streamOf } from './symbols.js';

const GLYPH = { up: '▲', down: '▼', flat: '' };
const STALE_AFTER_MS = 60_000;
const SPARK_EVERY_MS = 1_000; // a sparkline is an hour of minutes: redrawing it more often shows nothing new
const FLASH_EVERY_MS = 500; // a price flashing non-stop under a busy feed is a tint, not a signal

export class Watchlist {
  #rows = new Map();
  #tbody;
  #empty;
  #handlers;

  /** handlers: onSelect(symbol), onRemove(symbol), onReorder(symbols), onAlert(symbol, lastPrice) */
  constructor(table, empty, handlers) {
    this.#tbody = table.tBodies[0];
    this.#empty = empty;
    this.#handlers = handlers;
    this.#bindDrag();
  }

  symbols() {
    return [...this.#tbody.rows].map((r) => r.dataset.symbol);
  }

  has(symbol) {
    return this.#rows.has(symbol);
  }

  add(ticker) {
    const row = new Row(ticker, this.#handlers);
    this.#rows.set(ticker.symbol, row);
    this.#tbody.append(row.element);
    this.#empty.hidden = true;
    return row;
  }

  remove(symbol) {
    const row = this.#rows.get(symbol);
    if (!row) return null;
    const next = row.element.nextElementSibling ?? row.element.previousElementSibling;
    row.element.remove();
    this.#rows.delete(symbol);
    this.#empty.hidden = this.#rows.size > 0;
    return next?.dataset.symbol ?? null;
  }

  row(symbol) {
    return this.#rows.get(symbol);
  }

  select(symbol) {
    for (const [s, row] of this.#rows) row.setSelected(s === symbol);
  }

  /** Moves a row one place up (-1) or down (+1). */
  move(symbol, delta) {
    const row = this.#rows.get(symbol)?.element;
    if (!row) return;
    const sibling = delta < 0 ? row.previousElementSibling : row.nextElementSibling;
    if (!sibling) return;
    if (delta < 0) sibling.before(row);
    else sibling.after(row);
    row.focus();
    this.#handlers.onReorder(this.symbols());
  }

  /** Once per frame: rows whose ticker changed; flashes at most once per row per frame. */
  render(changed) {
    for (const symbol of changed) this.#rows.get(symbol)?.render();
  }

  /** Once a second: the age of each row's last trade (and sparklines whose redraw was held back). */
  tick(now) {
    for (const row of this.#rows.values()) {
      row.showAge(now);
      row.render();
    }
  }

  /** After a theme change: sparklines pick up the new colours. */
  redrawSparklines() {
    for (const row of this.#rows.values()) row.redrawSparkline();
  }

  #bindDrag() {
    let dragged = null;
    this.#tbody.addEventListener('dragstart', (event) => {
      dragged = event.target.closest('tr');
      event.dataTransfer.effectAllowed = 'move';
      event.dataTransfer.setData('text/plain', dragged?.dataset.symbol ?? '');
      dragged?.classList.add('dragging');
    });
    this.#tbody.addEventListener('dragover', (event) => {
      const over = event.target.closest('tr');
      if (!dragged || !over || over === dragged) return;
      event.preventDefault();
      const { top, height } = over.getBoundingClientRect();
      if (event.clientY < top + height / 2) over.before(dragged);
      else over.after(dragged);
    });
    this.#tbody.addEventListener('dragend', () => {
      dragged?.classList.remove('dragging');
      dragged = null;
      this.#handlers.onReorder(this.symbols());
    });
  }
}

/** Bid and ask in a row: whole dollars from $10,000 up (BTC/USD), so the row fits at 1280 px; the spread cell
 * and the cell's title keep the cents. */
function formatQuotePrice(value) {
  return Math.abs(value) >= 10_000 ? Math.round(value).toString() : formatPrice(value);
}

/** Cents for a stock over $1 (as its quotes are), four decimals below. */
function formatSpread(spread, ask) {
  if (!Number.isFinite(spread)) return '—';
  return Math.abs(ask) >= 1 ? spread.toFixed(2) : spread.toFixed(4);
}

class Row {
  element;
  #ticker;
  #cells;
  #text = {};
  #shownLast = null;
  #flip = false;
  #spark;
  #barsVersion = -1;
  #sparkAt = -Infinity;
  #flashAt = -Infinity;

  constructor(ticker, { onSelect, onRemove, onAlert }) {
    this.#ticker = ticker;
    const { symbol } = ticker;
    const td = (cls) => el('td', { class: cls });
    this.#cells = {
      last: td('num last'), change: td('num change'), percent: td('num percent'), volume: td('num volume'),
      vwap: td('num vwap'), high: td('num high'), low: td('num low'), quote: td('num quote'),
      spread: td('num spread'), age: td('num age'),
    };
    this.#spark = el('canvas', { class: 'spark', width: '72', height: '20', 'aria-hidden': 'true' });
    this.element = el('tr', {
      class: 'wl-row', tabindex: '0', draggable: 'true',
      dataset: { symbol, status: ticker.status, dir: 'flat', stream: streamOf(symbol) },
      'aria-label': symbol,
      onclick: (event) => { if (!event.target.closest('button')) onSelect(symbol); },
    },
    el('th', { scope: 'row', class: 'sym' },
      el('span', { class: 'sym-name', text: symbol }), el('span', { class: 'row-status' })),
    this.#cells.last, this.#cells.change, this.#cells.percent, this.#cells.volume, this.#cells.vwap,
    this.#cells.high, this.#cells.low, this.#cells.quote, this.#cells.spread,
    el('td', { class: 'trend' }, this.#spark), this.#cells.age,
    el('td', { class: 'actions' }, onAlert ? el('button', {
      class: 'set-alert', type: 'button', title: `Set a price alert for ${symbol}`,
      'aria-label': `Set a price alert for ${symbol}`, text: '🔔', onclick: () => onAlert(symbol, ticker.last),
    }) : '', el('button', {
      class: 'remove', type: 'button', title: `Remove ${symbol} (Delete)`, 'aria-label': `Remove ${symbol}`,
      text: '×', onclick: () => onRemove(symbol),
    })));
    this.render();
  }

  setSelected(selected) {
    this.element.classList.toggle('selected', selected);
    this.element.setAttribute('aria-selected', String(selected));
  }

  render() {
    const t = this.#ticker;
    const row = this.element;
    if (row.dataset.status !== t.status) row.dataset.status = t.status;
    this.#set('status', row.querySelector('.row-status'), t.statusText);
    const change = formatChange(t.last, t.reference);
    const dir = change.direction;
    this.#set('last', this.#cells.last, `${formatPrice(t.last)}`);
    this.#set('change', this.#cells.change, change.absolute === '—' ? '—' : `${GLYPH[dir]}${change.absolute}`);
    this.#set('percent', this.#cells.percent, change.percent);
    this.#cells.change.title = `Change since ${t.referenceLabel}`;
    if (row.dataset.dir !== dir) row.dataset.dir = dir;
    this.#set('volume', this.#cells.volume, formatVolume(t.volume));
    this.#cells.volume.title = formatQuantity(t.volume);
    this.#set('vwap', this.#cells.vwap, formatPrice(t.vwap));
    this.#set('high', this.#cells.high, formatPrice(t.high));
    this.#set('low', this.#cells.low, formatPrice(t.low));
    this.#set('quote', this.#cells.quote,
      Number.isFinite(t.bid) || Number.isFinite(t.ask) ? `${formatQuotePrice(t.bid)} × ${formatQuotePrice(t.ask)}` : '—');
    this.#cells.quote.title = `Bid ${formatPrice(t.bid)} × ask ${formatPrice(t.ask)} · Bid size ${formatQuantity(t.bidSize)} · Ask size ${formatQuantity(t.askSize)}`;
    this.#set('spread', this.#cells.spread, formatSpread(t.spread, t.ask));
    const now = performance.now();
    if (t.barsVersion !== this.#barsVersion && now - this.#sparkAt > SPARK_EVERY_MS) {
      this.#barsVersion = t.barsVersion;
      this.#sparkAt = now;
      drawSparkline(this.#spark, t.sparkline(), t.reference);
    }
    if (this.#shownLast !== null && t.last !== this.#shownLast && Number.isFinite(t.last)
        && now - this.#flashAt >= FLASH_EVERY_MS) {
      this.#flashAt = now;
      // Alternate between two identical animations so a new flash restarts without forcing a style flush.
      this.#flip = !this.#flip;
      row.dataset.flash = `${t.last > this.#shownLast ? 'up' : 'down'}-${this.#flip ? 'a' : 'b'}`;
    }
    if (Number.isFinite(t.last) && this.#flashAt === now) this.#shownLast = t.last;
    else if (this.#shownLast === null && Number.isFinite(t.last)) this.#shownLast = t.last;
  }

  redrawSparkline() {
    this.#barsVersion = -1;
    this.#sparkAt = -Infinity;
    this.render();
  }

  showAge(now) {
    const t = this.#ticker;
    const ms = t.lastTradeAt ? now - t.lastTradeAt : NaN;
    this.#set('age', this.#cells.age, formatAge(ms));
    const old = Number.isFinite(ms) && ms > STALE_AFTER_MS;
    if (this.element.classList.contains('old') !== old) this.element.classList.toggle('old', old);
  }

  #set(key, cell, text) {
    if (this.#text[key] === text) return;
    this.#text[key] = text;
    cell.textContent = text;
  }
}
