// Wiring: builds the page's parts on one TradeStream client and routes the messages no subscription takes.
import { AlertsPanel } from './alerts.js';
import { TradeStream } from './client/index.js';
import { Detail } from './detail.js';
import { diagnose } from './diagnose.js';
import { Header } from './header.js';
import { bindKeys } from './keys.js';
import { Market } from './market.js';
import { marketNow, setMarketTime } from './market-clock.js';
import { NotificationBell } from './notifications.js';
import { PushToggle } from './push.js';
import { OrdersPanel } from './orders.js';
import { bindSymbolForm } from './symbol-form.js';
import { takeInitialSymbols } from './symbols.js';
import { bindTheme } from './theme.js';
import { Toasts } from './toasts.js';
import { lastOrderEvent, takeTokenFromFragment, tokenStore } from './token.js';
import { Watchlist } from './watchlist.js';
import { bindWatchlistPicker } from './watchlist-picker.js';
import { Watchlists } from './watchlists.js';
import { httpBase, resolveWsUrl } from './ws-url.js';

const $ = (id) => document.getElementById(id);
// Crypto pairs trade around the clock (the relay routes BASE/QUOTE to Alpaca's crypto stream): live prices at any hour.
const DEMO_SYMBOLS = ['BTC/USD', 'ETH/USD', 'AAPL', 'MSFT', 'NVDA', 'TSLA', 'AMZN', 'SPY'];
const CLOCK_EVERY_MS = 60_000;
const config = window.TRADE_STREAM_CONFIG ?? {};

const fragmentToken = takeTokenFromFragment(window.location, window.history);
const header = new Header(document);
const toasts = new Toasts($('toasts'));

let wsUrl = null;
try {
  wsUrl = resolveWsUrl(window.location, config.wsUrl);
} catch (error) {
  toasts.show(`Cannot connect: ${error.message}`);
}
header.showUrl(wsUrl ?? 'no usable WebSocket URL');
const apiBase = wsUrl ? httpBase(wsUrl) : null;

// Market messages as one JSON array per upstream batch (the client's default): a busy feed then costs the page a
// few dozen WebSocket messages a second instead of one per trade and quote (each is a task on the main thread).
const stream = new TradeStream({ url: wsUrl, token: tokenStore.get(), orderCursor: lastOrderEvent, connect: false });
stream.on('state', showConnectionState);
stream.on('welcome', welcome);
stream.on('message', route);
stream.on('error', (error) => {
  if (!alerts.handleError(error)) toasts.show(describeError(error));
});
stream.on('auth', ({ state, message }) => {
  if (state === 'expired') toasts.show(describeError({ code: 'token_expired', message }));
});
const symbolInput = $('symbol-input');
const lists = new Watchlists();
const detail = new Detail(document);
const watchlist = new Watchlist($('watchlist'), $('panels-empty'), {
  onSelect: (symbol) => market.select(symbol),
  onRemove: (symbol) => removeSymbol(symbol),
  onReorder: (symbols) => market.reorder(symbols),
  onAlert: (symbol, price) => alerts.prepare(symbol, price, 'crosses_above'),
});
const market = new Market({ stream, watchlist, detail, lists, apiBase });
const orders = new OrdersPanel(stream, document);
const bell = new NotificationBell(document, apiBase);
const alerts = new AlertsPanel(stream, document, (all) => detail.setAlerts(all));
// A click on the chart offers an alert at that price: below the last trade a fall through it, else a rise.
detail.onChartClick((symbol, price, last) => {
  alerts.prepare(symbol, price, Number.isFinite(last) && price < last ? 'crosses_below' : 'crosses_above');
});
// A click on one of this page's push notifications focuses this tab: show the list it came from.
const push = new PushToggle(document, apiBase, { onClick: () => bell.show() });
push.start(config);
const theme = bindTheme($('theme-toggle'), () => {
  watchlist.redrawSparklines();
  detail.applyTheme();
});

const symbolForm = bindSymbolForm(
  { form: $('symbol-form'), input: symbolInput, message: $('symbol-error') },
  (symbols) => {
    const last = market.open(symbols);
    market.select(last);
  },
);
bindWatchlistPicker(document, lists, (symbols) => market.replace(symbols));
bindKeys(document, { market, watchlist, symbolInput, theme, removeSymbol });

const { symbols, invalid } = takeInitialSymbols(window.location, window.history, lists.symbols());
market.open(symbols);
if (invalid.length) {
  symbolForm.showError(`Ignored from the address: ${invalid.join(', ')} (not valid symbols).`);
}
if (fragmentToken) orders.useToken(fragmentToken);

setInterval(() => watchlist.tick(marketNow()), 1_000);
watchlist.tick(marketNow());
setInterval(() => refreshClock(), 60_000); // open, closed and a simulated clock's minutes move on

let everLive = false;
let upstreamState = null;
let lastOutage = null; // the stock stream's last failure while it stays down
let diagnosing = false;

if (wsUrl) stream.connect();
else showConnectionState({ state: 'disconnected', reason: 'no usable WebSocket URL' });
refreshClock();
setInterval(refreshClock, CLOCK_EVERY_MS);

function removeSymbol(symbol) {
  const next = market.close(symbol);
  (next ? watchlist.row(next)?.element : symbolInput)?.focus();
}

function showConnectionState(report) {
  header.showConnection(report);
  document.body.dataset.conn = report.state;
  if (report.state === 'live') {
    refreshStale();
    return;
  }
  header.showUpstream(null);
  upstreamState = null;
  market.markOffline();
  refreshStale();
  if (report.state === 'reconnecting') explainFailure(report);
}

async function explainFailure(report) {
  if (diagnosing) return;
  diagnosing = true;
  try {
    const found = await diagnose(apiBase);
    if (stream.connected) return;
    const retry = report.seconds ? ` Retrying automatically.` : '';
    header.showProblem(`${found.text}${found.kind === 'origin' ? '' : retry}`, found.kind);
  } finally {
    diagnosing = false;
  }
}

/**
 * Marks prices stale while they are not live, and says why in one sentence. The relay down: every price. The
 * stock stream down (the upstream the relay reports): the stock rows only, since crypto pairs come over their
 * own Alpaca connection and keep ticking.
 */
function refreshStale() {
  const relayLive = stream.connected;
  const up = upstreamState;
  const stocksDown = relayLive && up != null && up.state !== 'connected';
  // Each retry passes through "connecting" without an error: the last refusal stays the explanation meanwhile.
  if (!stocksDown) lastOutage = null;
  else if (up.error || up.error_code || !lastOutage) lastOutage = up;
  let reason = null;
  if (!relayLive) reason = 'Not connected to trade-stream: prices below are stale.';
  else if (stocksDown) reason = describeStockOutage(lastOutage);
  document.body.dataset.stale = relayLive ? 'false' : 'true';
  document.body.dataset.staleStocks = stocksDown ? 'true' : 'false';
  const banner = $('stale-banner');
  banner.hidden = !reason;
  banner.textContent = reason ?? '';
  if (reason) header.announce(reason);
}

/** "Alpaca refused a second connection (406 connection limit exceeded): …": what happened, then what to do. */
function describeStockOutage({ state, error, error_code: code }) {
  const detail = String(error ?? '').replace(/^\d{3}\s+/, '').split(':')[0].trim();
  const why = code ? `${code}${detail ? ` ${detail}` : ''}` : detail;
  const said = why ? ` (${why})` : '';
  switch (Number(code)) {
    case 402:
      return `Alpaca refused the API keys${said}: check ALPACA_API_KEY and ALPACA_SECRET_KEY (trade-stream `
        + 'check). Stock prices are stale until then.';
    case 406:
      return `Alpaca refused a second connection${said}: another session uses these keys for stock data; stop it `
        + 'and trade-stream reconnects by itself. Stock prices are stale until then.';
    case 409:
      return `Alpaca refused the stock feed${said}: your plan does not include it; set ALPACA_DATA_FEED=iex. Stock `
        + 'prices are stale until then.';
    default:
      return `Alpaca stock data is ${state}${said}: trade-stream reconnects by itself. Stock prices are stale `
        + 'until then.';
  }
}

async function refreshClock() {
  if (!apiBase) return;
  try {
    const response = await fetch(new URL('api/clock', apiBase), { cache: 'no-store' });
    const clock = response.ok ? await response.json() : null;
    setMarketTime(clock?.timestamp);
    header.showClock(clock);
  } catch {
    header.showClock(null);
  }
}

function welcome(message) {
  header.showProblem(null);
  header.showDemo(message.demo === true);
  if (config.instance && message.instance && config.instance !== message.instance) {
    header.showProblem(`Connected to a different trade-stream daemon (instance ${message.instance}) than the `
      + `one that served this page (${config.instance}): check ?ws= in the address.`, 'other-daemon');
  }
  if (everLive) market.markGap('relay reconnected');
  everLive = true;
  showUpstream(message.upstream ?? null);
  market.onReconnected();
  if (message.demo === true && lists.fresh && !market.symbols().length) {
    lists.fresh = false;
    market.open(DEMO_SYMBOLS);
  }
  refreshClock();
}

function route(message) {
  switch (message.type) {
    case 'status':
      showUpstream(message.upstream ?? null);
      break;
    case 'notification':
    case 'notifications_read':
      bell.handleMessage(message);
      break;
    case 'orders_snapshot': // what was missed while the page was closed
      bell.refresh();
      alerts.refresh();
      break;
    case 'subscribed': // the same for a user of Broker accounts alone, who gets no snapshot
      if (message.broker) {
        bell.refresh();
        alerts.refresh();
      }
      break;
    case 'alert':
    case 'alerts':
      alerts.handleMessage(message);
      break;
    default:
  }
}

function showUpstream(upstream) {
  const was = upstreamState?.state;
  upstreamState = upstream;
  header.showUpstream(upstream);
  document.body.dataset.upstream = upstream?.state ?? 'unknown';
  if (upstream?.state === 'connected' && was && was !== 'connected') market.markGap('Alpaca reconnected');
  refreshStale();
}

function describeError({ code, message, symbol }) {
  const subject = symbol ? `${symbol}: ` : '';
  return `${subject}${message || code || 'error'}${code && message ? ` (${code})` : ''}`;
}

// Phone layout: the watchlist first, the orders panel one tap away.
for (const button of document.querySelectorAll('.phone-tabs [data-show]')) {
  button.addEventListener('click', () => {
    document.body.dataset.view = button.dataset.show;
    $(button.dataset.show === 'orders' ? 'orders-panel' : 'watch-area').scrollIntoView({ block: 'start' });
  });
}
