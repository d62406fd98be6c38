// The positions table and its portfolio total.
import { el } from './dom.js';
import { formatMoney, formatPrice, formatQuantity, formatSignedMoney, signDirection } from './format.js';

export class PositionsTable {
  #table;
  #tbody;
  #rows = new Map();
  #portfolioValue;
  #portfolioPl;

  constructor(table, portfolioValue, portfolioPl) {
    this.#table = table;
    this.#tbody = table.tBodies[0];
    this.#portfolioValue = portfolioValue;
    this.#portfolioPl = portfolioPl;
  }

  /** Replaces every row; positions are Alpaca position objects. */
  replaceAll(positions, portfolio) {
    this.#rows.clear();
    this.#tbody.replaceChildren();
    for (const position of positions) this.#upsert(position);
    this.#showPortfolio(portfolio ?? totalOf(positions));
    this.#table.hidden = false;
  }

  /** A position_update message. */
  update(message) {
    this.#upsert(message);
    if (message.portfolio) this.#showPortfolio(message.portfolio);
    this.#table.hidden = false;
  }

  clear() {
    this.#rows.clear();
    this.#tbody.replaceChildren();
    this.#table.hidden = true;
  }

  #upsert(position) {
    const { symbol } = position;
    if (!symbol) return;
    const existing = this.#rows.get(symbol);
    if (Number(position.qty) === 0) {
      existing?.remove();
      this.#rows.delete(symbol);
      return;
    }
    const row = el('tr', { class: 'position', dataset: { symbol } },
      el('th', { scope: 'row', text: symbol }),
      el('td', { class: 'qty', text: formatQuantity(position.qty) }),
      el('td', { class: 'avg-entry', text: formatPrice(position.avg_entry_price) }),
      el('td', { class: 'current-price', text: formatPrice(position.current_price) }),
      el('td', {
        class: `pl ${signDirection(position.unrealized_pl)}`, text: formatSignedMoney(position.unrealized_pl),
      }));
    if (existing) existing.replaceWith(row);
    else this.#tbody.append(row);
    this.#rows.set(symbol, row);
  }

  #showPortfolio({ unrealized_pl: pl, market_value: value }) {
    this.#portfolioValue.textContent = value === undefined ? '' : `(market value ${formatMoney(value)})`;
    this.#portfolioPl.textContent = formatSignedMoney(pl);
    this.#portfolioPl.className = `pl ${signDirection(pl)}`;
  }
}

function totalOf(positions) {
  const sum = (key) => positions.reduce((total, p) => total + (Number(p[key]) || 0), 0);
  return { unrealized_pl: sum('unrealized_pl'), market_value: sum('market_value') };
}
