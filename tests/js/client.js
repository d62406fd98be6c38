// One Alpaca JS SDK client (v3 = @alpacahq/alpaca-trade-api 3.x, v4 = the alias alpaca-v4) pointed at a relay URL.
// Prints one JSON line per event: {event:"connected"|"data"|"error"|"state", ...}. Reads JSON lines on stdin:
// {"subscribe": SYMBOL} adds a symbol to the same channel.
// Usage: node client.js v3|v4 stocks|crypto|news|options|trading URL KEY SECRET [SYMBOL]
const readline = require("readline");

const [version, kind, url, keyId, secret, symbol] = process.argv.slice(2);
const say = (msg) => process.stdout.write(JSON.stringify(msg) + "\n");
let subscribe = () => {};

if (version === "v3") {
  const Alpaca = require("@alpacahq/alpaca-trade-api");
  const alpaca = new Alpaca({ keyId, secretKey: secret, feed: "iex", paper: true });
  const data = (s, price) => say({ event: "data", symbol: s, price });
  let stream;
  if (kind === "trading") {
    stream = alpaca.trade_ws;
    stream.session.url = url;
    stream.onConnect(() => { stream.subscribe(["trade_updates"]); say({ event: "connected" }); });
    stream.onOrderUpdate((u) => say({ event: "data", order: u.order.id, kind: u.event }));
  } else {
    stream = { stocks: alpaca.data_stream_v2, crypto: alpaca.crypto_stream_v1beta3, news: alpaca.news_stream,
               options: alpaca.option_stream }[kind];
    stream.session.url = url; // the SDK builds wss://…/{path} from its base URL; the relay under test is ws://
    subscribe = (s) => (kind === "news" ? stream.subscribeForNews([s]) : stream.subscribeForTrades([s]));
    stream.onConnect(() => { subscribe(symbol); say({ event: "connected" }); });
    if (kind === "stocks") stream.onStockTrade((t) => data(t.Symbol, t.Price));
    if (kind === "crypto") stream.onCryptoTrade((t) => data(t.Symbol, t.Price));
    if (kind === "options") stream.onOptionTrade((t) => data(t.Symbol, t.Price));
    if (kind === "news") stream.onNews((n) => say({ event: "data", headline: n.Headline, symbols: n.Symbols }));
  }
  stream.onError((err) => say({ event: "error", error: String(err) }));
  stream.onStateChange((state) => say({ event: "state", state }));
  stream.connect();
} else {
  const { Alpaca } = require("alpaca-v4");
  const alpaca = new Alpaca({ keyId, secret, paper: true });
  const opts = { url, initialReconnectMs: 100, reconnectJitter: 0 };
  let stream;
  if (kind === "trading") {
    stream = alpaca.trading.stream(opts);
    stream.subscribeTradeUpdates();
    stream.onTradeUpdate((u) => say({ event: "data", order: u.order.id, kind: u.event }));
  } else {
    const md = alpaca.marketData;
    stream = { stocks: () => md.stockStream(opts), crypto: () => md.cryptoStream(opts),
               news: () => md.newsStream(opts), options: () => md.optionStream(opts) }[kind]();
    subscribe = (s) => (kind === "news" ? stream.subscribeForNews([s]) : stream.subscribeForTrades([s]));
    subscribe(symbol); // held by the client and sent once authenticated (and again after its own reconnects)
    stream.onTrade((t) => say({ event: "data", symbol: t.symbol, price: t.price }));
    stream.onNews((n) => say({ event: "data", headline: n.headline, symbols: n.symbols }));
  }
  stream.onConnect(() => say({ event: "connected" }));
  stream.onError((err) => say({ event: "error", error: String(err) }));
  stream.onStateChange((state) => say({ event: "state", state }));
  stream.connect();
}

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const cmd = JSON.parse(line);
  if (cmd.subscribe) subscribe(cmd.subscribe);
});
