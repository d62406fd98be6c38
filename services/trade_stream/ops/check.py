"""``trade-stream check``: validate the configuration, then try the credentials on Alpaca, and say what to fix.

Three checks, each independent of the others, one line each:

1. REST: ``GET /v2/account`` on ALPACA_BASE_URL through alpaca-py (are the keys valid for this endpoint?).
2. Market-data stream: greeting, auth, and (unless ``--data-wait 0``) a few seconds of trades/quotes for one symbol.
3. Trading stream: auth on the ``trade_updates`` stream.

Exit 0 when every check passes (a warning such as "no data, market closed" still passes), 1 when one fails,
2 when the configuration itself is invalid. ``--demo`` runs the same checks against the built-in simulator.
The check opens its own sessions: while a relay with the same keys is running, expect 406 on the market-data
stream, because Alpaca allows one session per endpoint and key.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from trade_stream import config
from trade_stream.engines.redis_url import sentinel_view
from trade_stream.records.redis_url import is_sentinel, parse_sentinel

T = TypeVar("T")

PAPER_URL, LIVE_URL = "https://paper-api.alpaca.markets", "https://api.alpaca.markets"
KEYS_HINT = ("the key/secret pair is wrong for this endpoint: paper keys (usually starting PK) work only with "
             f"ALPACA_BASE_URL={PAPER_URL}, live keys (usually AK) only with {LIVE_URL}; copy both values again "
             "from the Alpaca dashboard (regenerating a key invalidates the old secret) into .env")


@dataclasses.dataclass
class Result:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: str = ""

    def lines(self) -> list[str]:
        out = [f"{'OK  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"]
        if self.warning:
            out.append(f"WARN {self.name}: {self.warning}")
        if self.fix:
            out.append(f"     fix: {self.fix}")
        return out


class Failed(Exception):
    """A check failed: ``detail`` says what happened, ``fix`` what to do about it."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.detail, self.fix = detail, fix


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trade-stream check",
        description="Validate the configuration and try the Alpaca credentials: REST account, market-data stream "
                    "auth, trading stream auth. Takes the same flags, environment and .env as the daemon.",
        epilog="Exit status: 0 all checks passed, 1 a check failed, 2 the configuration is invalid.",
    )
    config.add_arguments(parser)
    parser.add_argument("--symbol", metavar="SYMBOL",
                        help="symbol to watch for data after auth (default AAPL; FAKEPACA on the test feed)")
    parser.add_argument("--data-wait", type=float, default=5.0, metavar="SECONDS",
                        help="seconds to wait for a trade or quote after subscribing; 0 skips it (default 5)")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="timeout for each connection and reply (default 10)")
    return parser


# Starts the in-process simulator for ``--demo`` and returns the config pointed at it, and the simulator to stop.
# The entry point passes it in: the demo sits above ops, and the check imports it only when asked for.
DemoStarter = Callable[[config.Config], Awaitable[tuple[config.Config, Any]]]


def main(argv: list[str], start_demo: DemoStarter | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config.load(args)
    except config.ConfigError as exc:
        print(f"trade-stream check: {exc}", file=sys.stderr)
        return 2
    symbol = args.symbol or ("FAKEPACA" if cfg.data_feed == "test" else "AAPL")
    try:
        return asyncio.run(run(cfg, symbol.upper(), max(0.0, args.data_wait), max(0.1, args.timeout),
                               start_demo=start_demo))
    except BrokenPipeError:  # `trade-stream check | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


async def run(cfg: config.Config, symbol: str, data_wait: float, timeout: float,
              out: Callable[[str], None] | None = None, start_demo: DemoStarter | None = None) -> int:
    out = out or functools.partial(print, flush=True)
    sim = None
    if cfg.demo:
        if start_demo is None:
            raise ValueError("a --demo check needs the demo starter (trade_stream.cli passes it)")
        cfg, sim = await start_demo(cfg)
    try:
        host = urlsplit(cfg.base_url).hostname or ""
        mode = ("DEMO (built-in simulator)" if cfg.demo else "paper trading" if host.startswith("paper-api.")
                else "LIVE trading" if host == "api.alpaca.markets" else "custom endpoint")
        out(f"OK   configuration: {mode}, key {config.mask(cfg.api_key)}, feed {cfg.data_feed}, "
            f"REST {cfg.base_url}")
        results = []
        checks = [lambda: check_rest(cfg, timeout), lambda: check_data_stream(cfg, symbol, data_wait, timeout),
                  lambda: check_trading_stream(cfg, timeout)]
        if cfg.redis_url and is_sentinel(cfg.redis_url):
            results.append(view := await check_sentinel(cfg, timeout))
            for line in view.lines():
                out(line)
        if cfg.redis_url:
            results.append(cluster := await check_redis(cfg, timeout))
            for line in cluster.lines():
                out(line)
            if cluster.ok and "leader" in cluster.detail and "no leader" not in cluster.detail:
                checks = checks[:1]  # the leader holds both streams: a second session would only meet a 406
        for check in checks:
            results.append(result := await check())
            for line in result.lines():
                out(line)
    finally:
        if sim is not None:
            await sim.stop()
    failed = [r.name for r in results if not r.ok]
    out(f"FAIL {len(failed)} of {len(results)} checks failed: {', '.join(failed)}" if failed
        else f"OK   all {len(results)} checks passed")
    return 1 if failed else 0


# -- 1. REST ------------------------------------------------------------------------------------------------


async def check_sentinel(cfg: config.Config, timeout: float) -> Result:
    """Cluster mode behind Sentinel: what the sentinels say of the master (address, replicas, quorum)."""
    url = parse_sentinel(cfg.redis_url)
    try:
        view = await asyncio.wait_for(sentinel_view(cfg.redis_url, timeout), timeout * (len(url.sentinels) + 1))
    except Exception as exc:
        return Result("sentinel", False, f"no sentinel answered at {config.mask_url(cfg.redis_url)}: "
                      f"{type(exc).__name__}: {exc}", "start the sentinels, or fix the hosts in TRADE_STREAM_REDIS_URL")
    if not view["known"]:
        return Result("sentinel", False, f"the sentinels do not monitor a master named {url.service!r}",
                      "use the name given to 'sentinel monitor' in sentinel.conf after the hosts in the URL")
    warnings = []
    if view["down"]:
        warnings.append("the sentinels see the master down (a failover may be under way)")
    if not view["replicas"]:
        warnings.append("the master has no replica: a failover has nowhere to go")
    if view["sentinels"] < view["listed"]:
        warnings.append(f"only {view['sentinels']} of the {view['listed']} sentinels in the URL answered")
    replicas = f"{view['replicas']} replica{'' if view['replicas'] == 1 else 's'}"
    return Result("sentinel", True, f"master {url.service} at {view['master']}, {replicas}, quorum {view['quorum']}, "
                  f"{view['sentinels']} of {view['listed']} sentinels answered (they know "
                  f"{view['other_sentinels'] + 1} in all)", warning="; ".join(warnings))


async def check_redis(cfg: config.Config, timeout: float) -> Result:
    """Cluster mode: can this node reach Redis, and which node leads (holds the Alpaca sessions)?"""
    from trade_stream.engines.redis import probe  # cluster mode only: a check of one process never imports redis

    try:
        cluster = await probe(cfg.redis_url, cfg.redis_prefix, timeout)
    except Exception as exc:
        return Result("cluster", False, f"cannot reach Redis at {config.mask_url(cfg.redis_url)}: "
                      f"{type(exc).__name__}: {exc}", "start Redis, or fix TRADE_STREAM_REDIS_URL (host, port, "
                      "password, rediss:// for TLS)")
    rtt = cluster.rtt * 1000
    names = ", ".join(cluster.nodes) or "none"
    if cluster.leader:
        return Result("cluster", True, f"Redis reachable ({rtt:.1f} ms); leader {cluster.leader}; nodes: {names}; "
                      "the stream checks are skipped, the leader holds both sessions")
    return Result("cluster", True, f"Redis reachable ({rtt:.1f} ms); no leader yet (no node running); nodes: "
                  f"{names}")


async def check_rest(cfg: config.Config, timeout: float) -> Result:
    name = "REST account"
    url = f"{cfg.base_url}/v2/account"
    try:
        account = await in_thread(functools.partial(get_account, cfg, timeout), timeout + 1)
    except Failed as exc:
        return Result(name, False, exc.detail, exc.fix)
    except Exception as exc:
        failure = network_failure(exc, url, timeout)
        return Result(name, False, failure.detail, failure.fix)
    if not isinstance(account, dict):
        return Result(name, False, f"GET {url}: unexpected reply {str(account)[:100]}",
                      "ALPACA_BASE_URL must be Alpaca's trading API (https://paper-api.alpaca.markets or "
                      "https://api.alpaca.markets), not the data API or a web page")
    status = account.get("status", "?")
    detail = (f"GET {url}: account {account.get('account_number', '?')} status {status}, "
              f"buying power {account.get('buying_power', '?')} {account.get('currency', '')}".rstrip())
    if status != "ACTIVE" or account.get("trading_blocked") or account.get("account_blocked"):
        return Result(name, True, detail, warning="the account is not ACTIVE or is blocked: order updates may "
                      "never come; see the Alpaca dashboard")
    return Result(name, True, detail)


def get_account(cfg: config.Config, timeout: float) -> Any:
    from alpaca.common.exceptions import APIError
    from alpaca.trading.client import TradingClient

    client = TradingClient(cfg.api_key, cfg.secret_key, raw_data=True, url_override=cfg.base_url)
    session = getattr(client, "_session", None)  # alpaca-py sets no timeout: give its requests.Session one
    if session is not None:
        session.request = functools.partial(session.request, timeout=timeout)
    try:
        return client.get_account()
    except APIError as exc:
        raise rest_failure(exc.status_code, str(exc), cfg) from None


def rest_failure(status: int | None, body: str, cfg: config.Config) -> Failed:
    what = f"GET {cfg.base_url}/v2/account: HTTP {status} {body.strip()[:120]}"
    if status in (401, 403):
        return Failed(what, KEYS_HINT + key_kind_hint(cfg))
    if status == 404:
        return Failed(what, "ALPACA_BASE_URL is not Alpaca's trading API: use https://paper-api.alpaca.markets "
                            "(paper) or https://api.alpaca.markets (live), without /v2")
    if status == 429:
        return Failed(what, "rate-limited: too many requests with this key; wait a minute and run the check again")
    return Failed(what, "Alpaca answered with an error; check https://status.alpaca.markets and try again later")


def key_kind_hint(cfg: config.Config) -> str:
    key = cfg.api_key or ""
    paper = "paper" in cfg.base_url
    if paper and key.startswith("AK"):
        return f". This key looks like a live key (AK...) but ALPACA_BASE_URL is {cfg.base_url}"
    if not paper and key.startswith("PK"):
        return f". This key looks like a paper key (PK...) but ALPACA_BASE_URL is {cfg.base_url}"
    return ""


# -- 2. market-data stream -----------------------------------------------------------------------------------


async def check_data_stream(cfg: config.Config, symbol: str, data_wait: float, timeout: float) -> Result:
    name = "market-data stream"
    url = cfg.data_stream_url
    try:
        async with open_ws(url, timeout) as ws:
            greeting = await recv_json(ws, timeout, url)
            first = greeting[0] if isinstance(greeting, list) and greeting else greeting
            if not (isinstance(first, dict) and first.get("T") == "success" and first.get("msg") == "connected"):
                raise Failed(f"{url}: unexpected greeting {str(greeting)[:100]}",
                             "ALPACA_DATA_STREAM_URL must be an Alpaca market-data stream such as "
                             "wss://stream.data.alpaca.markets/v2/iex (or unset it to use the default)")
            await ws.send(orjson.dumps({"action": "auth", "key": cfg.api_key, "secret": cfg.secret_key}).decode())
            reply = await recv_json(ws, timeout, url)
            msg = reply[0] if isinstance(reply, list) and reply else reply
            if not (isinstance(msg, dict) and msg.get("T") == "success" and msg.get("msg") == "authenticated"):
                code = msg.get("code") if isinstance(msg, dict) else None
                text = msg.get("msg", "") if isinstance(msg, dict) else str(msg)[:100]
                raise data_auth_failure(cfg, url, code, text)
            detail = f"{url}: authenticated (feed {cfg.data_feed})"
            if data_wait <= 0:
                return Result(name, True, detail)
            warning = await watch_data(ws, cfg, symbol, data_wait, timeout)
            return Result(name, True, detail if warning else f"{detail}, {symbol} data arriving", warning=warning)
    except Failed as exc:
        return Result(name, False, exc.detail, exc.fix)
    except Exception as exc:
        failure = network_failure(exc, url, timeout)
        return Result(name, False, failure.detail, failure.fix)


def data_auth_failure(cfg: config.Config, url: str, code: Any, text: str) -> Failed:
    what = f"{url}: auth answered {code} {text}".rstrip()
    if code == 402:
        return Failed(what, KEYS_HINT + key_kind_hint(cfg))
    if code == 406:
        return Failed(what, "another session already holds this stream for these keys (a running trade-stream "
                            "relay, a notebook or script, a browser extension, another machine): stop it, or if "
                            "it died without closing, wait about 90 s for Alpaca to reap it, then check again. "
                            "Alpaca allows one market-data session per endpoint and key")
    if code == 409:
        return Failed(what, f"your Alpaca data plan does not include the {cfg.data_feed!r} feed: set "
                            "ALPACA_DATA_FEED=iex (the free Basic plan streams IEX, up to 30 symbols) or upgrade "
                            "the plan for sip")
    if code == 404:
        return Failed(what, "the auth reply took too long (Alpaca wants auth within 10 s): check the network "
                            "latency and try again")
    if code == 411:
        return Failed(what, "this token lacks the market-data scope: use Trading API keys")
    return Failed(what, "unexpected auth reply; check ALPACA_DATA_STREAM_URL and https://status.alpaca.markets")


async def watch_data(ws: ClientConnection, cfg: config.Config, symbol: str, wait: float, timeout: float) -> str:
    """Subscribe to one symbol's trades and quotes; '' when data arrives, else a warning saying what to try."""
    await ws.send(orjson.dumps({"action": "subscribe", "trades": [symbol], "quotes": [symbol]}).decode())
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        try:
            frame = await recv_json(ws, min(left, timeout), cfg.data_stream_url)
        except Failed:
            break
        for msg in frame if isinstance(frame, list) else [frame]:
            if not isinstance(msg, dict):
                continue
            if msg.get("T") in ("t", "q") and msg.get("S") == symbol:
                return ""
            if msg.get("T") == "error":
                code = msg.get("code")
                if code == 405:
                    return (f"subscribing to {symbol} hit the plan's symbol limit (405): the Basic plan allows 30 "
                            "symbols; set TRADE_STREAM_MAX_SYMBOLS=30")
                return f"subscribing to {symbol} answered {code} {msg.get('msg', '')}".rstrip()
    if cfg.data_feed == "test":
        return f"no trades or quotes for {symbol} in {wait:g} s on the test feed (use symbol FAKEPACA there)"
    return (f"auth works, but no trades or quotes for {symbol} in {wait:g} s: the market is probably closed "
            f"(the {cfg.data_feed} feed is live 9:30-16:00 ET on trading days, thinner before and after). "
            "To see data at any hour, try ALPACA_DATA_FEED=test with the symbol FAKEPACA (24/7): "
            "trade-stream check --feed test")


# -- 3. trading stream ---------------------------------------------------------------------------------------


async def check_trading_stream(cfg: config.Config, timeout: float) -> Result:
    name = "trading stream"
    url = cfg.trading_stream_url
    try:
        async with open_ws(url, timeout) as ws:
            await ws.send(orjson.dumps({"action": "auth", "key": cfg.api_key, "secret": cfg.secret_key}).decode())
            reply = await recv_json(ws, timeout, url)
            data = reply.get("data") if isinstance(reply, dict) else None
            status = data.get("status") if isinstance(data, dict) else None
            if reply.get("stream") == "authorization" and status == "authorized":
                return Result(name, True, f"{url}: authorized (order updates will flow)")
            if status == "unauthorized":
                raise Failed(f"{url}: auth answered unauthorized",
                             KEYS_HINT + key_kind_hint(cfg) + ". The trading stream host follows ALPACA_BASE_URL "
                             "unless ALPACA_TRADING_STREAM_URL is set")
            raise Failed(f"{url}: unexpected auth reply {str(reply)[:100]}",
                         "ALPACA_TRADING_STREAM_URL must be Alpaca's trading stream, e.g. "
                         "wss://paper-api.alpaca.markets/stream (or unset it: it follows ALPACA_BASE_URL)")
    except Failed as exc:
        return Result(name, False, exc.detail, exc.fix)
    except Exception as exc:
        failure = network_failure(exc, url, timeout)
        if isinstance(exc, InvalidStatus) and exc.response.status_code == 429:
            failure.fix = ("Alpaca refused the connection with 429: too many connection attempts, or another "
                           "session (a running trade-stream, a script) already holds the one trade_updates stream "
                           "per account; stop it or wait about 90 s, then check again")
        return Result(name, False, failure.detail, failure.fix)


# -- shared -------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_ws(url: str, timeout: float) -> AsyncIterator[ClientConnection]:
    async with connect(url, open_timeout=timeout, close_timeout=2, ping_interval=None, max_size=2**22) as ws:
        yield ws


async def recv_json(ws: ClientConnection, timeout: float, url: str) -> Any:
    """One frame, text or binary (the trading stream sends JSON in binary frames), decoded."""
    try:
        raw = await asyncio.wait_for(ws.recv(), timeout)
    except TimeoutError:
        raise Failed(f"{url}: no reply within {timeout:g} s",
                     "the server accepted the connection but said nothing: check the URL is an Alpaca stream "
                     "and that no proxy is buffering WebSocket traffic") from None
    except ConnectionClosed as exc:
        raise Failed(f"{url}: the server closed the connection ({exc})",
                     "check the URL; if it keeps happening, see https://status.alpaca.markets") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Failed(f"{url}: reply is not JSON: {str(raw)[:100]}",
                     "the URL does not point at an Alpaca stream") from None


def network_failure(exc: BaseException, url: str, timeout: float) -> Failed:
    """What went wrong below the Alpaca protocol (DNS, refused, TLS, timeout, HTTP status), and what to do."""
    host = urlsplit(url).hostname or url
    chain = causes(exc)
    text = " ".join(f"{type(e).__name__} {e}" for e in chain)
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        what = f"{url}: HTTP {status} instead of a WebSocket"
        if status in (401, 403):
            return Failed(what, KEYS_HINT)
        if status == 429:
            return Failed(what, "Alpaca is rate-limiting connection attempts (too many reconnects, or another "
                                "session holds the stream): wait a minute, then check again")
        if status == 404:
            return Failed(what, "no stream at this path: check the URL (e.g. wss://stream.data.alpaca.markets/v2/iex "
                                "and wss://paper-api.alpaca.markets/stream)")
        return Failed(what, "the server refused the WebSocket; check the URL and any proxy in between")
    if isinstance(exc, InvalidURI):
        return Failed(f"{url}: not a valid WebSocket URL", "use a wss:// URL, or unset it to use the default")
    if any(isinstance(e, socket.gaierror) for e in chain) or "NameResolutionError" in text \
            or "Name or service not known" in text or "Temporary failure in name resolution" in text:
        return Failed(f"{url}: cannot resolve {host} (DNS)",
                      f"network: this machine cannot look up {host}; check DNS (/etc/resolv.conf), the hostname "
                      "in the URL, and any required HTTP(S)_PROXY")
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "Connection refused" in text:
        return Failed(f"{url}: connection refused by {host}",
                      "network: nothing is listening at that host and port; check the URL (and the port), or a "
                      "firewall rejecting outbound connections")
    if any(isinstance(e, ssl.SSLError) for e in chain) or "SSLError" in text or "CERTIFICATE" in text:
        return Failed(f"{url}: TLS failed ({chain[-1]})",
                      "network: the TLS handshake failed; update CA certificates (apt-get install ca-certificates) "
                      "or check for a proxy intercepting HTTPS")
    if any(isinstance(e, TimeoutError) for e in chain) or "Timeout" in text or "timed out" in text:
        return Failed(f"{url}: no answer from {host} within {timeout:g} s",
                      "network: a firewall or proxy is probably dropping outbound HTTPS/WSS (port 443); check "
                      "connectivity from this machine (curl -sI https://paper-api.alpaca.markets)")
    if isinstance(exc, InvalidHandshake):
        return Failed(f"{url}: WebSocket handshake failed ({exc})", "check the URL and any proxy in between")
    if isinstance(exc, OSError) or "ConnectionError" in text:
        return Failed(f"{url}: network error ({chain[-1]})", "network: check this machine's connectivity to "
                      f"{host}")
    return Failed(f"{url}: {type(exc).__name__}: {exc}", "unexpected error; run with --timeout 30, and report it")


def causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
        # requests wraps urllib3 errors in args rather than in __cause__
        if current is None and chain[-1].args and isinstance(chain[-1].args[0], BaseException):
            current = chain[-1].args[0]
    return chain


async def in_thread(fn: Callable[[], T], timeout: float) -> T:
    """Run a blocking call in a daemon thread: a hung call can time out without holding the process open."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def target() -> None:
        try:
            result, error = fn(), None
        except BaseException as exc:
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop may be gone after a timeout
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=target, name="check-rest", daemon=True).start()
    return await asyncio.wait_for(future, timeout)
