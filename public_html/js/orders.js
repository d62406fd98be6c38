// The private orders panel: token handling, auth and the orders channel, and the order-update list.
import { el } from './dom.js';
import { formatEasternTime, formatPrice, formatQuantity } from './format.js';
import { PositionsTable } from './positions.js';
import { lastOrderEvent, tokenStore } from './token.js';

const MAX_ORDER_ROWS = 200;

const EXPLANATION = {
  none: 'Order updates are private: enter the token printed by trade-stream at start.',
  waiting: 'The token will be sent when the connection is up.',
  pending: 'Checking the token…',
  rejected: 'The token was rejected. Enter the token printed by trade-stream at start.',
  throttled: 'Too many failed token attempts from this address: the daemon will accept a try again shortly.',
  // Not retried by itself: two pages doing that would take each other's place for ever.
  displaced: 'A newer connection with this token took this page\'s place (the daemon allows each user a few '
    + 'connections): order updates stopped here. Enter the token again to have them here.',
  authenticated: 'No orders yet.',
};
const THROTTLE_RETRY_S = 60;
const TOKEN_STATE_TEXT = {
  none: '', waiting: '', pending: 'checking…', rejected: 'token rejected', throttled: 'throttled',
  displaced: 'replaced', authenticated: 'authenticated',
};

// Colour family of an order event, or of an order status for snapshot rows.
const TONES = {
  fill: 'fill', filled: 'fill',
  partial_fill: 'partial', partially_filled: 'partial',
  canceled: 'done', expired: 'done', done_for_day: 'done', replaced: 'done',
  rejected: 'rejected',
  new: 'open', accepted: 'open', pending_new: 'open', accepted_for_bidding: 'open', held: 'open',
};

export class OrdersPanel {
  #connection;
  #els;
  #positions;
  #token = tokenStore.get();
  #state = 'none';
  #seen = new Set();
  #epochs = new Map(); // account -> its order journal's epoch, from orders_snapshot: resume points carry it
  #retryTimer = 0;

  constructor(connection, document) {
    this.#connection = connection;
    const $ = (id) => document.getElementById(id);
    this.#els = {
      form: $('token-form'), input: $('token-input'), forget: $('token-forget'), state: $('token-state'),
      empty: $('orders-empty'), list: $('orders-list'),
    };
    this.#positions = new PositionsTable($('positions-table'), $('portfolio-value'), $('portfolio-pl'),
      $('portfolio-realized'));
    this.#els.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.useToken(this.#els.input.value);
    });
    this.#els.forget.addEventListener('click', () => this.#forget());
    this.#setState(this.#token ? 'waiting' : 'none');
  }

  /** The connection was welcomed: authenticate if we have a token. */
  onLive() {
    if (!this.#token || this.#state === 'displaced') return;
    this.#setState('pending');
    this.#connection.send({ action: 'auth', token: this.#token });
  }

  markOffline() {
    if (this.#token && this.#state !== 'rejected' && this.#state !== 'displaced') this.#setState('waiting');
  }

  /** True when the message was about orders. */
  handleMessage(message) {
    switch (message.type) {
      case 'authenticated':
        this.#setState('authenticated');
        this.#subscribeOrders();
        return true;
      case 'subscribed':
      case 'unsubscribed':
        return message.channel === 'orders';
      case 'orders_snapshot': // one per account the user sees, each naming it
        this.#epochs.set(message.account ?? '', message.epoch ?? null);
        this.#showSnapshot(message);
        return true;
      case 'orders_reset':
        if (message.epoch) this.#epochs.set(message.account ?? '', message.epoch);
        return true;
      case 'order_update':
        this.#showUpdate(message);
        return true;
      case 'position_update':
        this.#positions.update(message);
        return true;
      case 'warning': // a newer connection of this user took this one's place; the daemon closes this one
        if (message.code !== 'connection_limit') return false;
        this.#setState('displaced', message.message);
        return true;
      default:
        return false;
    }
  }

  /** True when the error was the token being refused (or its check throttled). */
  handleError(error) {
    if (error.code === 'rate_limited' && !error.symbol && this.#state === 'pending') {
      const seconds = Number(error.retry_after) > 0 ? Number(error.retry_after) : THROTTLE_RETRY_S;
      this.#setState('throttled', error.message);
      this.#els.empty.textContent = `${EXPLANATION.throttled} Retrying in ${seconds} s.`;
      clearTimeout(this.#retryTimer);
      this.#retryTimer = setTimeout(() => {
        if (this.#state === 'throttled' && this.#connection.isLive) this.onLive();
      }, seconds * 1000);
      return true;
    }
    if (error.code !== 'unauthorized') return false;
    tokenStore.clear();
    this.#token = null;
    this.#setState('rejected', error.message);
    return true;
  }

  /** A token typed in, or taken from the page address. */
  useToken(raw) {
    const token = String(raw ?? '').trim();
    if (!token) return;
    this.#els.input.value = '';
    if (token !== this.#token) this.#clearLists();
    this.#token = token;
    tokenStore.set(token);
    this.#setState('waiting'); // a displaced page takes its place back: the user asked for it
    if (this.#connection.isLive) this.onLive();
  }

  #forget() {
    if (this.#state === 'authenticated') this.#connection.send({ action: 'unsubscribe', channel: 'orders' });
    tokenStore.clear();
    lastOrderEvent.clear();
    this.#token = null;
    this.#clearLists();
    this.#setState('none');
    this.#els.input.focus();
  }

  #subscribeOrders() {
    const since = lastOrderEvent.get();
    this.#connection.send({ action: 'subscribe', channel: 'orders', ...(since === null ? {} : { since }) });
  }

  #showSnapshot({ orders = [], positions = [], portfolio, account = '' }) {
    for (const row of this.#els.list.querySelectorAll('.order-row[data-event="snapshot"]')) {
      if (row.dataset.account === account) row.remove(); // this account's snapshot replaces its own only
    }
    const newestFirst = [...orders].sort((a, b) => timeOf(b).localeCompare(timeOf(a)));
    this.#els.list.append(...newestFirst.slice(0, MAX_ORDER_ROWS).map((order) => orderRow(order, { account })));
    this.#positions.replaceAll(positions, portfolio, account);
    this.#refreshEmpty();
  }

  #showUpdate({ id, event, data = {}, reconciled, account = '' }) {
    const order = data.order ?? {};
    const key = `${account}:${id}:${order.id}:${event}`;
    if (this.#seen.has(key)) return;
    this.#seen.add(key);
    lastOrderEvent.record(id, this.#epochs.get(account) ?? null, account);
    this.#els.list.prepend(orderRow(order, { id, event, data, reconciled, account }));
    while (this.#els.list.children.length > MAX_ORDER_ROWS) this.#els.list.lastElementChild.remove();
    this.#refreshEmpty();
  }

  #clearLists() {
    this.#els.list.replaceChildren();
    this.#seen.clear();
    this.#positions.clear();
  }

  #setState(state, detail) {
    this.#state = state;
    const { state: badge, forget } = this.#els;
    badge.dataset.state = state;
    badge.textContent = TOKEN_STATE_TEXT[state];
    badge.title = detail ?? '';
    forget.hidden = state === 'none' || state === 'rejected' || state === 'throttled';
    this.#refreshEmpty();
  }

  #refreshEmpty() {
    const { empty, list } = this.#els;
    empty.textContent = EXPLANATION[this.#state];
    empty.dataset.state = this.#state;
    empty.hidden = this.#state === 'authenticated' && list.children.length > 0;
  }
}

function timeOf(order) {
  return order.updated_at ?? order.submitted_at ?? order.created_at ?? '';
}

const words = (text) => String(text ?? '').replace(/_/g, ' ');

/** One order row, from an order_update (id, event, data, reconciled) or, without them, a snapshot order. */
function orderRow(order, { id, event, data = {}, reconciled, account = '' }) {
  const timestamp = data.timestamp ?? timeOf(order);
  const dataset = { event: event ?? 'snapshot', status: order.status ?? '', orderId: order.id ?? '', account };
  if (id !== undefined) dataset.id = id;
  return el('li', { class: `order-row tone-${TONES[event] ?? TONES[order.status] ?? 'other'}`, dataset },
    el('span', { class: 'event' }, words(event ?? order.status),
      account ? el('span', { class: 'account', text: account, title: `account ${account}` }) : ''),
    el('span', { class: 'what', text: orderSummary(order) }),
    el('span', { class: 'detail', text: priceDetail(order, event, data) }),
    el('span', { class: 'status', text: `${words(order.status)} · ${fillProgress(order)}` }),
    el('time', {
      class: 'time', datetime: timestamp || null, title: timestamp, text: formatEasternTime(timestamp),
    }),
    reconciled ? el('span', { class: 'reconciled', text: 'reconciled after a gap in the live stream' }) : '');
}

/** "BUY 10 AAPL" */
function orderSummary(order) {
  return [order.side?.toUpperCase(), formatQuantity(order.qty), order.symbol].filter(Boolean).join(' ');
}

/** "10 @ 175.20" for fills, otherwise the order type and its limit. */
function priceDetail(order, event, data) {
  if (event === 'fill' || event === 'partial_fill') {
    return `${formatQuantity(data.qty)} @ ${formatPrice(data.price)}`;
  }
  const type = words(order.type);
  return order.limit_price ? `${type} ${formatPrice(order.limit_price)}` : type;
}

/** "4/10 filled @ 175.10" */
function fillProgress(order) {
  const progress = `${formatQuantity(order.filled_qty ?? 0)}/${formatQuantity(order.qty)} filled`;
  return Number(order.filled_qty) > 0 ? `${progress} @ ${formatPrice(order.filled_avg_price)}` : progress;
}
