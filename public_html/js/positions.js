// The positions table: one section per account (a heading row each when the user sees several accounts), and
// the user's portfolio total over all of them in the footer. A fill that reduces or closes a position reports the
// P&L it realized (realized_pl); each row shows the sum of those since the page was opened ("Rlzd"), the footer
// their total, and a closed position stays as a "closed" row with its figure until the page is left or the token
// forgotten: a round trip would otherwise leave no trace in the panel the moment it completes.
import { el } from './dom.js';
import { formatMoney, formatPrice, formatQuantity, formatSignedMoney, signDirection } from './format.js';

export class PositionsTable {
  #table;
  #sections = new Map(); // account ('' when the relay names none) -> { body, head, rows, portfolio }
  #portfolioValue;
  #portfolioPl;
  #portfolioRealized;

  constructor(table, portfolioValue, portfolioPl, portfolioRealized = null) {
    this.#table = table;
    this.#table.tBodies[0]?.remove(); // sections are made per account
    this.#portfolioValue = portfolioValue;
    this.#portfolioPl = portfolioPl;
    this.#portfolioRealized = portfolioRealized;
  }

  /** Replaces one account's rows (an orders_snapshot); positions are Alpaca position objects. What the account
   * realized so far is kept: a snapshot has no realized figures, and closed positions are not in it. */
  replaceAll(positions, portfolio, account = '') {
    const section = this.#section(account);
    section.rows.clear();
    section.body.replaceChildren(section.head);
    for (const position of positions) this.#upsert(section, position);
    for (const symbol of section.realized.keys()) {
      if (!section.rows.has(symbol)) this.#upsert(section, { symbol, qty: '0', account });
    }
    section.portfolio = portfolio ?? totalOf(positions);
    this.#refreshTotals();
    this.#table.hidden = false;
  }

  /** A position_update message; realized_pl (a number, like unrealized_pl) is set when its fill closed or reduced it. */
  update(message) {
    const section = this.#section(message.account ?? '');
    const realized = Number(message.realized_pl);
    if (message.realized_pl !== null && message.realized_pl !== undefined && Number.isFinite(realized)) {
      section.realized.set(message.symbol, (section.realized.get(message.symbol) ?? 0) + realized);
    }
    this.#upsert(section, message);
    if (message.portfolio) section.portfolio = message.portfolio;
    this.#refreshTotals();
    this.#table.hidden = false;
  }

  clear() {
    for (const { body } of this.#sections.values()) body.remove();
    this.#sections.clear();
    this.#table.hidden = true;
  }

  #section(account) {
    let section = this.#sections.get(account);
    if (section) return section;
    const value = el('span', { class: 'muted account-value' });
    const pl = el('td', { class: 'pl account-pl' });
    const head = el('tr', { class: 'account-head' },
      el('th', { scope: 'rowgroup', colspan: '4' }, el('span', { class: 'account-name', text: account }), ' ', value),
      pl);
    const body = el('tbody', { class: 'account-section', dataset: { account } }, head);
    section = { body, head, value, pl, rows: new Map(), realized: new Map(), portfolio: null };
    this.#sections.set(account, section);
    const after = [...this.#sections.keys()].sort().indexOf(account);
    const next = [...this.#sections.keys()].sort()[after + 1];
    this.#table.insertBefore(body, next === undefined ? this.#table.tFoot : this.#sections.get(next).body);
    return section;
  }

  #upsert(section, position) {
    const { symbol } = position;
    if (!symbol) return;
    const existing = section.rows.get(symbol);
    const realized = section.realized.get(symbol);
    const closed = Number(position.qty) === 0;
    if (closed && realized === undefined) {
      existing?.remove();
      section.rows.delete(symbol);
      return;
    }
    const account = position.account ?? '';
    const pl = el('td', {
      class: `pl ${closed ? 'flat' : signDirection(position.unrealized_pl)}`,
      text: closed ? '—' : formatSignedMoney(position.unrealized_pl),
    });
    if (realized !== undefined) {
      pl.append(el('span', {
        class: `realized ${signDirection(realized)}`, text: `Rlzd ${formatSignedMoney(realized)}`,
        title: 'realized by the fills since this page was opened',
      }));
    }
    const row = el('tr', { class: closed ? 'position closed' : 'position', dataset: { symbol, account } },
      el('th', { scope: 'row', text: symbol }),
      el('td', { class: 'qty', text: formatQuantity(closed ? 0 : position.qty) }),
      el('td', { class: 'avg-entry', text: closed ? '—' : formatPrice(position.avg_entry_price) }),
      el('td', { class: 'current-price', text: closed ? 'closed' : formatPrice(position.current_price) }),
      pl);
    if (account) row.title = `account ${account}`;
    if (existing) existing.replaceWith(row);
    else section.body.append(row);
    section.rows.set(symbol, row);
  }

  /** Each account's heading (shown only when there are several) and the user's total over all of them. */
  #refreshTotals() {
    const several = this.#sections.size > 1;
    const total = { unrealized_pl: 0, market_value: 0 };
    let realized = null;
    for (const section of this.#sections.values()) {
      const { unrealized_pl: pl = 0, market_value: value = 0 } = section.portfolio ?? {};
      total.unrealized_pl += Number(pl) || 0;
      total.market_value += Number(value) || 0;
      for (const amount of section.realized.values()) realized = (realized ?? 0) + amount;
      section.head.hidden = !several;
      section.value.textContent = `(market value ${formatMoney(value)})`;
      section.pl.textContent = formatSignedMoney(pl);
      section.pl.className = `pl account-pl ${signDirection(pl)}`;
    }
    this.#portfolioValue.textContent = this.#sections.size ? `(market value ${formatMoney(total.market_value)})` : '';
    this.#portfolioPl.textContent = formatSignedMoney(total.unrealized_pl);
    this.#portfolioPl.className = `pl ${signDirection(total.unrealized_pl)}`;
    if (this.#portfolioRealized) {
      this.#portfolioRealized.hidden = realized === null;
      this.#portfolioRealized.textContent = realized === null ? '' : `realized ${formatSignedMoney(realized)}`;
      this.#portfolioRealized.className = `realized ${signDirection(realized ?? 0)}`;
    }
  }
}

function totalOf(positions) {
  const sum = (key) => positions.reduce((total, p) => total + (Number(p[key]) || 0), 0);
  return { unrealized_pl: sum('unrealized_pl'), market_value: sum('market_value') };
}
