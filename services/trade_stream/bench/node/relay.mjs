// The Node peer of `trade-stream bench --rounds`: the relay a Node developer would write with the ws package.
//
// One upstream connection to the bench's simulator (Alpaca's protocol: auth, then subscribe/unsubscribe trades),
// symbols reference-counted across clients, and each trade JSON.stringify'd once into a Buffer and ws.send to
// every holder. It speaks the part of trade-stream's browser protocol the bench's load clients use (welcome,
// subscribe/unsubscribe with one reply per symbol, trade messages of the same shape), so the same load clients
// measure both. Like the simple design it stands for, it has no slow-client policy: ws buffers without bound.
//
// Usage: node relay.mjs --port P --upstream ws://127.0.0.1:S/v2/iex --key K --secret S
// Prints "ready <port>" once the upstream session is authenticated; exits 1 if the upstream fails or closes.

import { parseArgs } from "node:util";
import WebSocket, { WebSocketServer } from "ws";

const { values: args } = parseArgs({
  options: {
    port: { type: "string" },
    upstream: { type: "string" },
    key: { type: "string" },
    secret: { type: "string" },
  },
});
for (const name of ["port", "upstream", "key", "secret"]) {
  if (!args[name]) {
    console.error(`relay.mjs: --${name} is required`);
    process.exit(2);
  }
}

const holders = new Map(); // symbol -> Set of client sockets
let upstream = null; // the upstream socket once authenticated

function sendUpstream(action, symbols) {
  if (upstream !== null && symbols.length) upstream.send(JSON.stringify({ action, trades: symbols }));
}

function hold(ws, symbols) {
  const opened = [];
  for (const s of symbols) {
    let set = holders.get(s);
    if (set === undefined) {
      set = new Set();
      holders.set(s, set);
      opened.push(s);
    }
    set.add(ws);
    ws.symbols.add(s);
  }
  sendUpstream("subscribe", opened);
}

function release(ws, symbols) {
  const closed = [];
  for (const s of symbols) {
    const set = holders.get(s);
    ws.symbols.delete(s);
    if (set === undefined || !set.delete(ws) || set.size) continue;
    holders.delete(s);
    closed.push(s);
  }
  sendUpstream("unsubscribe", closed);
}

function onClientMessage(ws, raw) {
  let msg;
  try {
    msg = JSON.parse(raw);
  } catch {
    ws.send(JSON.stringify({ type: "error", code: "bad_message", message: "not JSON" }));
    return;
  }
  const action = msg && msg.action;
  if (action !== "subscribe" && action !== "unsubscribe") {
    ws.send(JSON.stringify({ type: "error", code: "unknown_action", message: "this relay knows subscribe and unsubscribe" }));
    return;
  }
  const symbols = (Array.isArray(msg.symbols) ? msg.symbols : [msg.symbol]).filter((s) => typeof s === "string");
  if (action === "subscribe") hold(ws, symbols);
  else release(ws, symbols);
  for (const symbol of symbols) ws.send(JSON.stringify({ type: `${action}d`, symbol, channels: ["trades"] }));
}

function fanOut(m) {
  const set = holders.get(m.S);
  if (set === undefined) return;
  const buf = Buffer.from(JSON.stringify({
    type: "trade", symbol: m.S,
    data: { timestamp: m.t, price: m.p, size: m.s, exchange: m.x, conditions: m.c || [], id: m.i, tape: m.z },
  }));
  for (const ws of set) ws.send(buf, { binary: false });
}

function connectUpstream(port) {
  const up = new WebSocket(args.upstream, { perMessageDeflate: false });
  up.on("message", (raw) => {
    for (const m of JSON.parse(raw)) {
      if (m.T === "t") fanOut(m);
      else if (m.T === "success" && m.msg === "connected") up.send(JSON.stringify({ action: "auth", key: args.key, secret: args.secret }));
      else if (m.T === "success" && m.msg === "authenticated") {
        upstream = up;
        console.log(`ready ${port}`);
      } else if (m.T === "error") {
        console.error(`relay.mjs: upstream error ${JSON.stringify(m)}`);
        process.exit(1);
      }
    }
  });
  up.on("error", (err) => {
    console.error(`relay.mjs: upstream ${err.message}`);
    process.exit(1);
  });
  up.on("close", () => {
    console.error("relay.mjs: upstream closed");
    process.exit(1);
  });
}

const server = new WebSocketServer({ host: "127.0.0.1", port: Number(args.port), perMessageDeflate: false, clientTracking: false, maxPayload: 64 * 1024 });
server.on("connection", (ws) => {
  ws.symbols = new Set();
  ws.send(JSON.stringify({ type: "welcome", version: "node-ws", channels: ["trades"] }));
  ws.on("message", (raw) => onClientMessage(ws, raw));
  ws.on("close", () => release(ws, [...ws.symbols]));
  ws.on("error", () => ws.terminate());
});
server.on("listening", () => connectUpstream(server.address().port));
server.on("error", (err) => {
  console.error(`relay.mjs: ${err.message}`);
  process.exit(1);
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
