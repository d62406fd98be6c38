// One load-client process in Node: hundreds of raw WebSocket clients on one event loop, speaking the browser
// protocol. A drop-in for loadclient.py (same spec file, same stdin/stdout lines, same counting and timing, same
// histogram buckets), for runs where a Python load client would saturate its core and its own queueing would
// dominate the latency it reports.
//
// Raw frames over net sockets rather than a WebSocket library, for the same reason as the Python client: a
// message costs a frame-header walk, a search for "timestamp" and, for the first and last message of a read, a
// cached timestamp parse; nothing else of a market message is decoded.
//
// Usage: node loadclient.mjs SPEC.json   (spec: host, port, batch, concurrency, timeout, clients: [{symbols}])
// stdin  {"cmd": "window", "start_ns": ..., "end_ns": ...} | {"cmd": "report"} | {"cmd": "exit"}; exits when
//        stdin closes. {"cmd": "stall"} is accepted and does nothing: this client refuses stallers at start,
//        because Node cannot shrink a socket's receive buffer (SO_RCVBUF), so a paused Node socket is not the
//        stalled reader the stall scenario needs; the bench runs stallers in the Python client.
// stdout {"event": "ready", ...} once every client is subscribed; {"event": "report", ...} when asked.
// A test hook: `node loadclient.mjs --selftest` reads lines of {"ts": ...} or {"us": [...]} and answers each with
// the parsed [seconds, fraction ns] or the histogram JSON, so the parsing can be compared with Python's.

import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import net from "node:net";
import { performance } from "node:perf_hooks";
import readline from "node:readline";

const STEPS_PER_E = 50; // histogram.py: bucket i >= 1 holds [exp((i-1)/50), exp(i/50)) µs, bucket 0 is < 1 µs
const MAX_BUCKET = 1200;
const TS_KEY = Buffer.from('"timestamp"');
const QUOTE = 0x22;
const READ_BUFFER = Buffer.alloc(256 * 1024);
const POW10 = Array.from({ length: 10 }, (_, k) => 10 ** (9 - k));
const GENERIC_TS = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/;

class Histogram {
  constructor() {
    this.counts = new Array(MAX_BUCKET + 1).fill(0);
    this.maxUs = 0;
  }

  add(us, n) {
    const idx = us >= 1 ? Math.floor(Math.log(us) * STEPS_PER_E) + 1 : 0;
    this.counts[idx < MAX_BUCKET ? idx : MAX_BUCKET] += n;
    if (us > this.maxUs) this.maxUs = us;
  }

  toJSON() {
    return { counts: this.counts, max_us: this.maxUs };
  }
}

// --- timestamps: [whole seconds, fraction in ns], two Numbers, since ns since the epoch exceed 2^53 ---------

const secCache = new Map();
let tsSec = 0; // the last parse's result, kept in module variables so a parse allocates nothing
let tsFrac = 0;

function parseTs(buf, from, to) {
  // RFC 3339 with any fraction length (Go trims trailing zeros, or drops the fraction on a whole second); the
  // whole-second prefix is cached because it changes once a second.
  if (buf[to - 1] !== 0x5a || to - from < 20) return parseGeneric(buf.toString("latin1", from, to));
  const key = buf.toString("latin1", from, from + 19);
  let sec = secCache.get(key);
  if (sec === undefined) {
    if (secCache.size > 4096) secCache.clear();
    sec = Date.parse(key + "Z") / 1000;
    if (!Number.isInteger(sec)) throw new Error(`bad timestamp ${buf.toString("latin1", from, to).slice(0, 40)}`);
    secCache.set(key, sec);
  }
  tsSec = sec;
  tsFrac = 0;
  if (to - from === 20) return;
  let frac = 0;
  for (let i = from + 20; i < to - 1; i++) {
    const d = buf[i] - 0x30;
    if (d < 0 || d > 9) throw new Error(`bad timestamp ${buf.toString("latin1", from, to).slice(0, 40)}`);
    frac = frac * 10 + d;
  }
  const digits = to - 1 - (from + 20);
  if (digits < 1 || digits > 9) throw new Error(`bad timestamp ${buf.toString("latin1", from, to).slice(0, 40)}`);
  tsFrac = frac * POW10[digits];
}

function parseGeneric(text) {
  const m = GENERIC_TS.exec(text);
  if (m === null) throw new Error(`bad timestamp ${text.slice(0, 40)}`);
  const zone = m[3] === "Z" ? "+00:00" : m[3];
  tsSec = Date.parse(m[1] + zone) / 1000;
  tsFrac = Number((m[2] || "0").padEnd(9, "0"));
}

function stamp(data, at) {
  // The timestamp whose "timestamp" key starts at `at`.
  const q = data.indexOf(QUOTE, at + 11);
  parseTs(data, q + 1, data.indexOf(QUOTE, q + 1));
}

// --- the window every client of the process counts: market messages stamped in [start, end) ------------------

const win = { startSec: 0, startFrac: 0, endSec: 0, endFrac: 0, early: 0, late: 0, hist: new Histogram(), errors: [] };

function error(text) {
  if (win.errors.length < 10) win.errors.push(String(text).slice(0, 300));
}

function side(sec, frac) {
  // 0 before the window, 1 inside, 2 after.
  if (sec < win.startSec || (sec === win.startSec && frac < win.startFrac)) return 0;
  if (sec < win.endSec || (sec === win.endSec && frac < win.endFrac)) return 1;
  return 2;
}

function nsParts(digits) {
  const ns = BigInt(digits);
  return [Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n)];
}

function countOf(buf, from, to) {
  let n = 0;
  for (let at = buf.indexOf(TS_KEY, from); at >= 0 && at + 11 <= to; at = buf.indexOf(TS_KEY, at + 11)) n++;
  return n;
}

function clientFrame(opcode, payload) {
  // A masked client frame (servers must reject unmasked ones).
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x80 | opcode, 0x80 | n]) : Buffer.from([0x80 | opcode, 0xfe, n >> 8, n & 0xff]);
  const key = randomBytes(4);
  const body = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) body[i] = payload[i] ^ key[i & 3];
  return Buffer.concat([head, key, body]);
}

class RelayError extends Error {}

class WsClient {
  // One browser-protocol client: handshake, subscribe, then count and time market messages.
  constructor(index, host, port, symbols, batch) {
    this.index = index; // position in the spec, so the bench can match counts to symbols
    this.host = host;
    this.port = port;
    this.symbols = symbols;
    this.batch = batch;
    this.socket = null;
    this.upgraded = false;
    this.buf = null;
    this.subscribed = 0;
    this.received = 0;
    this.closed = false;
    this.settled = false;
    this.ready = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    this.ready.catch(() => {}); // a failure is awaited by open(); an unawaited one must not crash the process
  }

  settle(err) {
    if (this.settled) return;
    this.settled = true;
    if (err) this.reject(err);
    else this.resolve();
  }

  connect() {
    // onread: every socket reads into one shared buffer and hands it over synchronously, skipping the stream
    // machinery and a fresh Buffer per read (the leftover of a read is copied out before the next one).
    const sock = (this.socket = net.createConnection({
      host: this.host, port: this.port, noDelay: true,
      onread: { buffer: READ_BUFFER, callback: (nread, buf) => this.onRead(buf.subarray(0, nread)) },
    }));
    sock.on("connect", () => {
      const key = randomBytes(16).toString("base64");
      sock.write(`GET / HTTP/1.1\r\nHost: ${this.host}:${this.port}\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
        "User-Agent: trade-stream-bench\r\n\r\n");
    });
    sock.on("error", (err) => this.lost(err));
    sock.on("close", () => this.lost(null));
  }

  onRead(data) {
    try {
      this.dataReceived(data);
    } catch (exc) {
      this.fail(`bad frame: ${exc.message}`);
    }
  }

  lost(err) {
    this.closed = true;
    if (!this.settled) {
      const e = new Error(`closed before subscribed: ${err ? err.message : "None"}`);
      e.name = "ConnectionError";
      this.settle(e);
    }
  }

  abort() {
    if (this.socket !== null) this.socket.destroy();
  }

  sendJson(msg) {
    if (this.socket !== null && this.socket.writable) this.socket.write(clientFrame(0x1, Buffer.from(JSON.stringify(msg))));
  }

  // --- frames -----------------------------------------------------------------------------------------------

  dataReceived(chunk) {
    let data = chunk;
    if (this.buf !== null) {
      data = Buffer.concat([this.buf, chunk]);
      this.buf = null;
    }
    if (!this.upgraded) {
      const end = data.indexOf("\r\n\r\n");
      if (end < 0) {
        this.buf = Buffer.from(data); // a copy, as below
        return;
      }
      const status = data.toString("latin1", 0, data.indexOf("\r\n"));
      if (!status.includes(" 101 ")) {
        this.fail(`handshake refused: ${status} ${JSON.stringify(data.toString("latin1", end + 4, end + 204))}`);
        return;
      }
      this.upgraded = true;
      data = data.subarray(end + 4);
    }
    const n = data.length;
    let i = 0;
    let firstMarket = -1; // where this read's first market frame starts: its oldest message
    let marketEnd = 0; // where its last complete market frame ends
    let marketMsgs = 0;
    while (i + 2 <= n) {
      let length = data[i + 1] & 0x7f;
      let start = i + 2;
      if (length === 126) {
        if (i + 4 > n) break;
        length = data.readUInt16BE(i + 2);
        start = i + 4;
      } else if (length === 127) {
        if (i + 10 > n) break;
        length = Number(data.readBigUInt64BE(i + 2));
        start = i + 10;
      }
      const end = start + length;
      if (end > n) break;
      const opcode = data[i] & 0x0f;
      if (opcode === 0x1 || opcode === 0x2) {
        const count = countOf(data, start, end);
        if (count) {
          if (firstMarket < 0) firstMarket = start;
          marketEnd = end;
          marketMsgs += count;
        } else {
          this.control(data.subarray(start, end));
        }
      } else {
        this.controlFrame(opcode, data.subarray(start, end));
      }
      i = end;
    }
    if (i < n) this.buf = Buffer.from(data.subarray(i)); // a copy: the read buffer is reused by the next read
    if (marketMsgs) this.market(data, firstMarket, marketEnd, marketMsgs);
  }

  market(data, start, end, count) {
    // Count the `count` market messages of data[start:end] (one read) and time them by the first one: every
    // message of a read arrived at the same instant and the first was stamped earliest, so its latency bounds
    // the rest. Messages arrive in the order they were stamped, so when the first and the last fall on the same
    // side of the window's edges all of them do; only a read across an edge is counted message by message.
    const now = performance.timeOrigin + performance.now(); // wall clock, ms, sub-µs resolution
    stamp(data, data.indexOf(TS_KEY, start));
    const sec = tsSec;
    const frac = tsFrac;
    if (count > 1) {
      const first = side(sec, frac);
      stamp(data, data.lastIndexOf(TS_KEY, end - TS_KEY.length));
      if (side(tsSec, tsFrac) !== first) {
        this.acrossEdges(data, start, end, now);
        return;
      }
    }
    this.count(sec, frac, count, now);
  }

  count(sec, frac, count, now) {
    // `count` messages on the side of the window where (sec, frac) falls, timed by it.
    const where = side(sec, frac);
    if (where === 0) win.early += count;
    else if (where === 2) win.late += count;
    else {
      this.received += count;
      const lat = (now - sec * 1000) * 1000 - frac / 1000;
      win.hist.add(lat > 0 ? lat : 0, count);
    }
  }

  acrossEdges(data, start, end, now) {
    // Each message counted where it was stamped; the ones inside timed by the first of them.
    const sides = [0, 0, 0];
    let timedSec = -1;
    let timedFrac = 0;
    for (let at = data.indexOf(TS_KEY, start); at >= 0 && at + 11 <= end; at = data.indexOf(TS_KEY, at + 11)) {
      stamp(data, at);
      const s = side(tsSec, tsFrac);
      sides[s] += 1;
      if (s === 1 && timedSec < 0) {
        timedSec = tsSec;
        timedFrac = tsFrac;
      }
    }
    win.early += sides[0];
    win.late += sides[2];
    if (sides[1]) this.count(timedSec, timedFrac, sides[1], now);
  }

  control(payload) {
    let msg;
    try {
      msg = JSON.parse(payload.toString("utf8"));
    } catch {
      error(`undecodable frame ${JSON.stringify(payload.toString("latin1", 0, 100))}`);
      return;
    }
    const kind = msg !== null && typeof msg === "object" && !Array.isArray(msg) ? msg.type : undefined;
    if (kind === "welcome") {
      if (this.batch) this.sendJson({ action: "options", batch: true });
      this.sendJson({ action: "subscribe", symbols: this.symbols });
    } else if (kind === "subscribed") {
      this.subscribed += 1;
      if (this.subscribed >= this.symbols.length) this.settle(null);
    } else if (kind === "error") {
      if (this.batch && (msg.code === "unknown_action" || msg.code === "bad_message")) return; // a relay without batch
      error(`relay error: ${payload.toString("utf8", 0, 200)}`);
      this.settle(new RelayError(msg.message ?? "relay error"));
    }
  }

  controlFrame(opcode, payload) {
    if (this.socket === null) return;
    if (opcode === 0x9) this.socket.write(clientFrame(0xa, payload)); // ping -> pong, or the relay's keepalive drops us
    else if (opcode === 0x8) {
      this.socket.write(clientFrame(0x8, payload.subarray(0, 2)));
      this.socket.end();
    }
  }

  fail(text) {
    error(text);
    const e = new Error(text);
    e.name = "ConnectionError";
    this.settle(e);
    this.abort();
  }
}

// --- connecting ------------------------------------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function withTimeout(promise, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => {
      const e = new Error("");
      e.name = "TimeoutError";
      reject(e);
    }, ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function openClient(index, host, port, symbols, batch, timeoutMs) {
  // Connect and subscribe one client, retrying a failed connect (the listen backlog can overflow).
  for (let attempt = 0; attempt < 4; attempt++) {
    const client = new WsClient(index, host, port, symbols, batch);
    try {
      client.connect();
      await withTimeout(client.ready, timeoutMs);
      return client;
    } catch (exc) {
      client.abort();
      if (exc instanceof RelayError) {
        error(`subscribe refused: ${exc.message}`);
        return null;
      }
      if (attempt === 3) {
        error(`connect failed: ${exc.name}: ${exc.message}`);
        return null;
      }
      await sleep(200 * (attempt + 1));
    }
  }
  return null;
}

async function gathered(jobs, concurrency) {
  // Run the thunks `jobs` at most `concurrency` at a time; results in order.
  const out = new Array(jobs.length);
  let next = 0;
  async function worker() {
    while (next < jobs.length) {
      const i = next++;
      out[i] = await jobs[i]();
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, jobs.length)) }, worker));
  return out;
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function report(clients) {
  return {
    event: "report",
    per_client: clients.map((c) => [c.index, c.received]),
    lost: clients.filter((c) => c.closed).length,
    staller_closed: [],
    early: win.early,
    late: win.late,
    hist: win.hist.toJSON(),
    errors: win.errors,
  };
}

function lines(onLine, onClose) {
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  rl.on("line", onLine);
  rl.on("close", onClose);
}

async function run(spec) {
  const stallers = spec.clients.filter((c) => c.stall).length;
  if (stallers) {
    console.error(`loadclient.mjs: the spec has ${stallers} staller(s); Node cannot shrink a socket's receive ` +
      "buffer, so run stallers in the Python load client (trade_stream.bench.loadclient)");
    process.exit(2);
  }
  const host = spec.host;
  const port = Number(spec.port);
  const batch = Boolean(spec.batch);
  const timeoutMs = Number(spec.timeout ?? 30) * 1000;
  const started = performance.now();
  const opened = await gathered(
    spec.clients.map((c, i) => () => openClient(i, host, port, c.symbols, batch, timeoutMs)),
    Number(spec.concurrency ?? 32));
  const clients = opened.filter((c) => c !== null);
  emit({ event: "ready", connected: clients.length, failed: opened.length - clients.length,
    seconds: Math.round((performance.now() - started) / 10) / 100, errors: win.errors });

  const finish = () => {
    for (const c of clients) c.abort();
    process.exit(0);
  };
  lines((line) => {
    if (!line.trim()) return;
    const cmd = JSON.parse(line).cmd;
    if (cmd === "window") {
      // the ns values exceed 2^53: take their digits from the line, not from JSON.parse's Numbers
      [win.startSec, win.startFrac] = nsParts(/"start_ns":\s*(\d+)/.exec(line)[1]);
      [win.endSec, win.endFrac] = nsParts(/"end_ns":\s*(\d+)/.exec(line)[1]);
    } else if (cmd === "report") {
      emit(report(clients));
    } else if (cmd === "exit") {
      finish();
    }
  }, finish);
}

function selftest() {
  lines((line) => {
    const msg = JSON.parse(line);
    if (msg.ts !== undefined) {
      const buf = Buffer.from(msg.ts, "latin1");
      parseTs(buf, 0, buf.length);
      emit([tsSec, tsFrac]);
    } else {
      const hist = new Histogram();
      for (const us of msg.us) hist.add(us, 1);
      emit(hist.toJSON());
    }
  }, () => process.exit(0));
}

if (process.argv[2] === "--selftest") selftest();
else run(JSON.parse(readFileSync(process.argv[2], "utf8")));
