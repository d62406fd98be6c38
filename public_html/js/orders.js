// The private orders panel: the token form, the auth state the TradeStream client reports, and the order
// updates and positions of its orders stream (which resumes and drops repeats by itself).
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
  // Not retried by itself (nor by the client): two pages doing that would take each other's place for ever.
  displaced: 'A newer connection with this token took this page\'s place (the daemon allows each user a few '
    + 'connections): order updates stopped here. Enter the token again to have them here.',
  authenticated: 'No orders yet.',
};
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
  #stream;
  #els;
  #positions;
  #token = tokenStore.get();
  #state = 'none';

  /** stream: the TradeStream, made with the stored token (tokenStore) and lastOrderEvent as its cursor. */
  constructor(stream, document) {
    this.#stream = stream;
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
    stream.on('auth', (auth) => this.#showAuth(auth));
    stream.orders((message) => this.#handleMessage(message));
  }

  #showAuth({ state, message, retryAfter }) {
    switch (state) {
      case 'waiting':
        if (this.#token && this.#state !== 'rejected') this.#setState('waiting');
        break;
      case 'pending':
      case 'authenticated':
        this.#setState(state);
        break;
      case 'displaced': // not retried by the client: the token entered again takes the place back
        this.#setState('displaced', message);
        break;
      case 'throttled':
        this.#setState('throttled', message);
        this.#els.empty.textContent = `${EXPLANATION.throttled} Retrying in ${retryAfter} s.`;
        break;
      case 'rejected':
        tokenStore.clear();
        this.#token = null;
        this.#setState('rejected', message);
        break;
      default: // none: the token was forgotten; expired: the page's toast says so
    }
  }

  #handleMessage(message) {
    switch (message.type) {
      case 'orders_snapshot': // one per account the user sees, each naming it
        this.#showSnapshot(message);
        break;
      case 'order_update':
        this.#showUpdate(message);
        break;
      case 'position_update':
        this.#positions.update(message);
        break;
      default: // subscribed, orders_reset: nothing to show
    }
  }

  /** A token typed in, or taken from the page address. */
  useToken(raw) {
    const token = String(raw ?? '').trim();
    if (!token) return;
    this.#els.input.value = '';
    if (token !== this.#token) this.#clearLists();
    this.#token = token;
    tokenStore.set(token);
    this.#stream.setToken(token);
  }

  #forget() {
    tokenStore.clear();
    lastOrderEvent.clear();
    this.#token = null;
    this.#stream.setToken(null);
    this.#clearLists();
    this.#setState('none');
    this.#els.input.focus();
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
    this.#els.list.prepend(orderRow(order, { id, event, data, reconciled, account }));
    while (this.#els.list.children.length > MAX_ORDER_ROWS) this.#els.list.lastElementChild.remove();
    this.#refreshEmpty();
  }

  #clearLists() {
    this.#els.list.replaceChildren();
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
