// Price alerts: the form that sets one (filled from a watchlist row's bell or a click on the chart), the list of
// the user's alerts with their state, and remove / re-arm. Everything goes over the WebSocket's `alert` actions
// on the authenticated connection; the relay pushes every change to each of the user's connections, so two
// tabs agree. The chart draws a price line at each armed crossing level of the symbol it shows.
import { el } from './dom.js';
import { formatPrice } from './format.js';

const CODES = new Set(['invalid_alert', 'unknown_alert', 'alert_limit']);
const FIELD = { crosses_above: 'price', crosses_below: 'price', percent_change: 'percent', stale: 'minutes' };

/** "AAPL crosses above $230.00", "MSFT down 3 % from the previous close", "IBM no trade for 10 min". */
export function describeAlert(alert) {
  switch (alert.condition) {
    case 'crosses_above': return `${alert.symbol} crosses above $${formatPrice(alert.price)}`;
    case 'crosses_below': return `${alert.symbol} crosses below $${formatPrice(alert.price)}`;
    case 'percent_change':
      return `${alert.symbol} ${alert.percent < 0 ? 'down' : 'up'} ${Math.abs(alert.percent)} % from the previous close`;
    case 'stale': return `${alert.symbol} no trade for ${alert.minutes} min in the session`;
    default: return `${alert.symbol} ${alert.condition}`;
  }
}

export class AlertsPanel {
  #connection;
  #els;
  #alerts = new Map(); // id -> alert, in the order the relay lists them
  #onChange;
  #pending = false; // a create was sent: a symbol_limit error without a symbol answers it

  /** onChange(alerts): every change, for the chart's price lines. */
  constructor(connection, document, onChange = () => {}) {
    const $ = (id) => document.getElementById(id);
    this.#connection = connection;
    this.#onChange = onChange;
    this.#els = {
      form: $('alert-form'), symbol: $('alert-symbol'), condition: $('alert-condition'), number: $('alert-number'),
      message: $('alert-message'), list: $('alerts-list'), empty: $('alerts-empty'),
    };
    this.#els.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.#submit();
    });
  }

  /** The orders channel is up (so the connection is authenticated): load the user's alerts. */
  refresh() {
    this.#connection.send({ action: 'alert', op: 'list' });
  }

  /** Fill the form for ``symbol`` (a watchlist row's bell, a click on the chart) and focus the number. */
  prepare(symbol, price, condition = null) {
    const { symbol: input, condition: select, number } = this.#els;
    input.value = symbol;
    if (condition) select.value = condition;
    if (Number.isFinite(price) && FIELD[select.value] === 'price') number.value = Number(price).toFixed(2);
    this.#say(null);
    document.getElementById('orders-panel')?.scrollIntoView({ block: 'nearest' });
    number.focus();
    number.select();
  }

  alerts() {
    return [...this.#alerts.values()];
  }

  /** True when the message was about alerts. */
  handleMessage(message) {
    if (message.type === 'alerts') {
      this.#alerts = new Map((message.alerts ?? []).map((a) => [a.id, a]));
    } else if (message.type === 'alert') {
      const { op, alert } = message;
      if (op === 'deleted') this.#alerts.delete(alert.id);
      else this.#alerts.set(alert.id, alert);
      if (op === 'created') this.#say(`Alert set: ${describeAlert(alert)}.`);
    } else {
      return false;
    }
    this.#render();
    return true;
  }

  /** True when the error answered an alert action. */
  handleError(error) {
    if (!CODES.has(error.code) && !(error.code === 'symbol_limit' && !error.symbol && this.#pending)) return false;
    this.#pending = false;
    this.#say(error.message || error.code, true);
    return true;
  }

  #submit() {
    const { symbol, condition, number } = this.#els;
    const value = Number(number.value);
    if (!symbol.value.trim() || number.value === '' || !Number.isFinite(value)) {
      this.#say('Enter a symbol and a number.', true);
      return;
    }
    this.#pending = true;
    this.#connection.send({
      action: 'alert', op: 'create', symbol: symbol.value.trim().toUpperCase(), condition: condition.value,
      [FIELD[condition.value]]: value,
    });
  }

  #say(text, error = false) {
    const { message } = this.#els;
    message.hidden = !text;
    message.textContent = text ?? '';
    message.classList.toggle('error', error);
  }

  #render() {
    const { list, empty } = this.#els;
    const rows = this.alerts().map((alert) => el('li', {
      class: `alert-row ${alert.state}`, dataset: { id: alert.id, symbol: alert.symbol, state: alert.state },
    },
    el('span', { class: 'alert-text', text: describeAlert(alert) }),
    el('span', { class: 'alert-state', text: alert.state === 'triggered' ? 'triggered' : 'armed' }),
    alert.state === 'triggered' && alert.message ? el('span', { class: 'alert-fired muted', text: alert.message }) : '',
    alert.state === 'triggered' ? el('button', {
      type: 'button', class: 'small rearm', text: 'Re-arm', title: `Re-arm: ${describeAlert(alert)}`,
      onclick: () => this.#connection.send({ action: 'alert', op: 'update', id: alert.id, state: 'armed' }),
    }) : '',
    el('button', {
      type: 'button', class: 'ghost small remove-alert', text: '×', 'aria-label': `Remove ${describeAlert(alert)}`,
      onclick: () => this.#connection.send({ action: 'alert', op: 'delete', id: alert.id }),
    })));
    list.replaceChildren(...rows);
    empty.hidden = rows.length > 0;
    this.#onChange(this.alerts());
  }
}
