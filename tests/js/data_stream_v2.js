// The JS SDK v3's data_stream_v2 pointed at a relay URL: prints one JSON line per event it sees.
// Usage: node data_stream_v2.js ws://127.0.0.1:PORT/v2/iex KEY SECRET SYMBOL
const Alpaca = require("@alpacahq/alpaca-trade-api");

const [url, keyId, secretKey, symbol] = process.argv.slice(2);
const alpaca = new Alpaca({ keyId, secretKey, feed: "iex", paper: true });
const stream = alpaca.data_stream_v2;
stream.session.url = url; // the SDK builds wss://…/v2/{feed} from dataStreamUrl; the relay under test is ws://
const say = (msg) => process.stdout.write(JSON.stringify(msg) + "\n");

stream.onConnect(() => {
  stream.subscribeForTrades([symbol]);
  say({ event: "connected" });
});
stream.onStockTrade((trade) => say({ event: "trade", symbol: trade.Symbol, price: trade.Price }));
stream.onError((err) => say({ event: "error", error: String(err) }));
stream.onStateChange((state) => say({ event: "state", state }));
stream.connect();
