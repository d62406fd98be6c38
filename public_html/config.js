// Page settings, loaded as a classic script before the app.
//
// When trade-stream serves the page itself, it answers /config.js with a generated file (the page then connects
// back to the same origin, on whatever port), so this copy is only read when another web server (Apache) serves
// public_html. Do not edit this copy in place: reinstalling trade-stream replaces it. Keep your settings in
// /etc/trade-stream/config.js (or any path named by TRADE_STREAM_PAGE_CONFIG) and let the web server answer
// /config.js with that file (REALTIME_TRADES_SETUP.md, "Apache"). Same format as below.
//
// wsUrl: where the page opens its WebSocket to trade-stream.
//   null: the page's own host on port 8765, ws:// for an http:// page and wss:// for an https:// page.
//   Another host:   wsUrl: "wss://markets.example.com:8765/"
//   Reverse proxy (mod_proxy_wstunnel) on the page's own origin, a path is enough: wsUrl: "/trade-stream/ws"
//   An https:// page can only open wss:// URLs.
// A ?ws=... parameter in the page address overrides this setting.
window.TRADE_STREAM_CONFIG = {
  wsUrl: null,
};
