// Page settings, loaded as a classic script before the app so it can be edited in place on the server.
//
// wsUrl: where the page opens its WebSocket to trade-stream.
//   null: the page's own host on port 8765, ws:// for an http:// page and wss:// for an https:// page.
//         Right when trade-stream serves this page itself, or when Apache serves it from the same host.
//   When Apache (or any web server) serves these files from another host, point the page at the daemon:
//         wsUrl: "wss://markets.example.com:8765/"
//   When Apache reverse-proxies the WebSocket on its own origin (mod_proxy_wstunnel), a path is enough:
//         wsUrl: "/trade-stream/ws"
//   An https:// page can only open wss:// URLs.
// A ?ws=... parameter in the page address overrides this setting.
window.TRADE_STREAM_CONFIG = {
  wsUrl: null,
};
