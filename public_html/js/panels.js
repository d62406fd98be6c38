// Symbol panels: the big last price with its change, and the newest-first tape of trades.
import { el } from './dom.js';
import {
  exchangeName, formatChange, formatEasternTime, formatPrice, formatQuantity, priceDirection,
} from './format.js';

export const MAX_ROWS = 100;
// Only rows near the top flash: at hundreds of trades per second, animating every row that is still
// within its flash time would cost more style work than the rest of the page together.
const FLASH_ROWS = 20;

const STATUS_TEXT = { pending: 'subscribing…', subscribed: '', offline: 'offline' };

const ROW_TEMPLATE = el('tr', { class: 'trade' },
  el('td', { class: 'time' }), el('td', { class: 'price' }), el('td', { class: 'size' }),
  el('td', { class: 'exchange' }));

export class Panel {
  symbol;
  status = 'pending';
  element;
  #lastPrice = null; // the headline: the latest trade, live or from the snapshot
  #tickPrice = null; // the previous live trade: each row's up/down colour
  #referencePrice = null;
  #referenceLabel = 'the first trade seen this session';
  #tbody;
  #price;
  #change;
  #quote;
  #statusText;

  constructor(symbol, { onClose }) {
    this.symbol = symbol;
    const titleId = `panel-title-${symbol.replace(/[^A-Z0-9]/g, '_')}`;
    this.#statusText = el('span', { class: 'panel-status' });
    this.#price = el('span', { class: 'last-price flat', text: '—' });
    this.#change = el('span', { class: 'change flat' });
    this.#quote = el('p', { class: 'bid-ask', hidden: true });
    this.#tbody = el('tbody');
    this.element = el('article', {
      class: 'panel', tabindex: '-1', 'aria-labelledby': titleId,
      dataset: { symbol, status: this.status },
    },
    el('header', { class: 'panel-head' },
      el('h2', { class: 'symbol', id: titleId, text: symbol }),
      this.#statusText,
      el('button', {
        class: 'close', type: 'button', title: 'Close and unsubscribe',
        'aria-label': `Close ${symbol}`, text: '×', onclick: () => onClose(symbol),
      })),
    el('div', { class: 'headline' }, this.#price, this.#change),
    this.#quote,
    el('div', { class: 'tape' },
      el('table', { class: 'trades' },
        el('thead', {}, el('tr', {},
          el('th', { scope: 'col', text: 'Time (ET)' }), el('th', { scope: 'col', text: 'Price' }),
          el('th', { scope: 'col', text: 'Size' }), el('th', { scope: 'col', text: 'Exch' }))),
        this.#tbody),
      el('p', { class: 'placeholder', text: 'Waiting for trades…' })));
    this.setStatus('pending');
  }

  /** status: pending | subscribed | offline | rejected; `message` overrides the default text. */
  setStatus(status, message) {
    this.status = status;
    this.element.dataset.status = status;
    this.#statusText.textContent = message ?? STATUS_TEXT[status] ?? '';
  }

  /** New trades for this symbol, oldest first. */
  addTrades(trades) {
    const rows = [];
    for (const trade of trades) {
      const price = Number(trade.price);
      if (!Number.isFinite(price)) continue;
      rows.push(this.#row(trade, price, priceDirection(this.#tickPrice, price)));
      this.#tickPrice = price;
      this.#lastPrice = price;
      this.#referencePrice ??= price;
    }
    if (!rows.length) return;
    const fragment = document.createDocumentFragment();
    fragment.append(...rows.slice(-MAX_ROWS).reverse());
    this.#tbody.prepend(fragment);
    const { rows: all } = this.#tbody;
    while (all.length > MAX_ROWS) this.#tbody.lastElementChild.remove();
    for (let i = FLASH_ROWS; i < Math.min(all.length, FLASH_ROWS + rows.length); i++) {
      all[i].classList.remove('fresh');
    }
    this.element.classList.add('has-trades');
    this.#showHeadline();
  }

  /** Alpaca's snapshot on subscribe: change is measured from the previous close, and the latest trade is
   *  shown until a live one arrives. */
  showSnapshot(snapshot) {
    const close = Number(snapshot.prev_close);
    if (snapshot.prev_close != null && Number.isFinite(close) && close > 0) {
      this.#referencePrice = close;
      this.#referenceLabel = 'the previous close';
    }
    const latest = Number(snapshot.latest_trade?.price);
    if (this.#lastPrice == null && Number.isFinite(latest)) this.#lastPrice = latest;
    if (this.#lastPrice == null) return;
    this.#referencePrice ??= this.#lastPrice;
    this.#showHeadline();
  }

  showQuote(quote) {
    const side = (price, size) => `${formatPrice(price)} × ${formatQuantity(size)}`;
    this.#quote.textContent =
      `Bid ${side(quote.bid_price, quote.bid_size)}  ·  Ask ${side(quote.ask_price, quote.ask_size)}`;
    this.#quote.hidden = false;
  }

  focus() {
    this.element.scrollIntoView({ block: 'nearest' });
    this.element.focus({ preventScroll: true });
    this.element.classList.remove('attention');
    void this.element.offsetWidth; // restart the highlight animation
    this.element.classList.add('attention');
  }

  #row(trade, price, direction) {
    const row = ROW_TEMPLATE.cloneNode(true);
    const [time, priceCell, size, exchange] = row.cells;
    row.classList.add(direction, 'fresh');
    row.dataset.price = String(price);
    row.dataset.size = String(trade.size);
    time.textContent = formatEasternTime(trade.timestamp);
    time.title = trade.timestamp ?? '';
    priceCell.textContent = formatPrice(price);
    size.textContent = formatQuantity(trade.size);
    exchange.textContent = trade.exchange ?? '';
    exchange.title = exchangeName(trade.exchange);
    return row;
  }

  #showHeadline() {
    const change = formatChange(this.#lastPrice, this.#referencePrice);
    this.#price.textContent = formatPrice(this.#lastPrice);
    this.#price.className = `last-price ${change.direction}`;
    this.#change.textContent = `${change.absolute} (${change.percent})`;
    this.#change.className = `change ${change.direction}`;
    this.#change.title = `Change since ${this.#referenceLabel}, at ${formatPrice(this.#referencePrice)}`;
  }
}

/** The grid of panels, in the order they were opened. */
export class PanelGrid {
  #panels = new Map();
  #container;
  #emptyHint;
  #onClose;
  #fallbackFocus;

  /** fallbackFocus: where keyboard focus goes when the last panel closes. */
  constructor(container, emptyHint, { onClose, fallbackFocus }) {
    this.#container = container;
    this.#emptyHint = emptyHint;
    this.#onClose = onClose;
    this.#fallbackFocus = fallbackFocus;
  }

  get(symbol) {
    return this.#panels.get(symbol);
  }

  all() {
    return [...this.#panels.values()];
  }

  add(symbol) {
    const panel = new Panel(symbol, { onClose: this.#onClose });
    this.#panels.set(symbol, panel);
    this.#container.append(panel.element);
    this.#emptyHint.hidden = true;
    return panel;
  }

  remove(symbol) {
    const panel = this.#panels.get(symbol);
    if (!panel) return;
    const next = panel.element.nextElementSibling ?? panel.element.previousElementSibling;
    const hadFocus = panel.element.contains(document.activeElement);
    panel.element.remove();
    this.#panels.delete(symbol);
    this.#emptyHint.hidden = this.#panels.size > 0;
    if (hadFocus) (next?.querySelector('.close') ?? this.#fallbackFocus).focus();
  }
}
