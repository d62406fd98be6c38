// Wiring: builds the page's parts, connects them to the WebSocket and routes its messages.
import { Connection } from './connection.js';
import { Header } from './header.js';
import { Market } from './market.js';
import { OrdersPanel } from './orders.js';
import { PanelGrid } from './panels.js';
import { bindSymbolForm } from './symbol-form.js';
import { takeInitialSymbols } from './symbols.js';
import { Toasts } from './toasts.js';
import { takeTokenFromFragment } from './token.js';
import { resolveWsUrl } from './ws-url.js';

const $ = (id) => document.getElementById(id);

const fragmentToken = takeTokenFromFragment(window.location, window.history);
const header = new Header(document);
const toasts = new Toasts($('toasts'));

let wsUrl = null;
try {
  wsUrl = resolveWsUrl(window.location, window.TRADE_STREAM_CONFIG?.wsUrl);
} catch (error) {
  toasts.show(`Cannot connect: ${error.message}`);
}
header.showUrl(wsUrl ?? 'no usable WebSocket URL');

const connection = new Connection(wsUrl, { onState: showConnectionState, onMessage: route });
const symbolInput = $('symbol-input');
const grid = new PanelGrid($('panels'), $('panels-empty'), {
  onClose: (symbol) => market.close(symbol),
  fallbackFocus: symbolInput,
});
const market = new Market(grid, connection);
const orders = new OrdersPanel(connection, document);

const symbolForm = bindSymbolForm(
  { form: $('symbol-form'), input: symbolInput, message: $('symbol-error') },
  (symbols) => market.open(symbols)?.focus(),
);

const { symbols, invalid } = takeInitialSymbols(window.location, window.history);
market.open(symbols);
if (invalid.length) {
  symbolForm.showError(`Ignored from the address: ${invalid.join(', ')} (not valid symbols).`);
}
if (fragmentToken) orders.useToken(fragmentToken);

if (wsUrl) connection.start();
else showConnectionState({ state: 'disconnected', reason: 'no usable WebSocket URL' });

function showConnectionState(report) {
  header.showConnection(report);
  document.body.dataset.conn = report.state;
  if (report.state !== 'live') {
    header.showUpstream(null);
    market.markOffline();
    orders.markOffline();
  }
}

function route(message) {
  switch (message.type) {
    case 'welcome':
      header.showDemo(message.demo === true);
      header.showUpstream(message.upstream ?? null);
      market.resubscribeAll();
      orders.onLive();
      break;
    case 'status':
      header.showUpstream(message.upstream ?? null);
      break;
    case 'pong':
      break;
    case 'error':
      if (!market.handleError(message) && !orders.handleError(message)) toasts.show(describeError(message));
      break;
    default:
      if (!market.handleMessage(message)) orders.handleMessage(message);
  }
}

function describeError({ code, message, symbol }) {
  const subject = symbol ? `${symbol}: ` : '';
  return `${subject}${message || code || 'error'}${code && message ? ` (${code})` : ''}`;
}
