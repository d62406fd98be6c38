// Page settings, loaded as a classic script before the app.
//
// When trade-stream serves the page, on its own port or through the Apache conf of REALTIME_TRADES_SETUP.md
// (section 6, which passes /trade-stream/ to the daemon), it answers /config.js with a generated file (the page
// then connects back to the address it came from), so this copy is only read when another web server serves
// public_html itself. Do not edit this copy in place: reinstalling trade-stream replaces it. Keep your settings
// in /etc/trade-stream/config.js and set TRADE_STREAM_PAGE_CONFIG to it: the daemon then answers /config.js with
// that file. Same format as below.
//
// wsUrl: where the page opens its WebSocket to trade-stream.
//   null: the page's own host on port 8765, ws:// for an http:// page and wss:// for an https:// page.
//   Another host:   wsUrl: "wss://markets.example.com:8765/"
//   A reverse proxy on the page's own origin, a path is enough: wsUrl: "/trade-stream/"
//   An https:// page can only open wss:// URLs.
// A ?ws=... parameter in the page address overrides this setting.
window.TRADE_STREAM_CONFIG = {
  wsUrl: null,
};
