"""Application wiring, in one place. ``build`` makes every component from the Config and connects them: who
calls whom, and who receives each event, is read there. ``run`` starts them in dependency order, each stop
registered as its part comes up. ``App`` is the daemon around the two: the demo simulators, signals, systemd, and a
stop that undoes whatever part of the start got done.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from trade_stream.config import Config
from trade_stream.core.accounts import Accounts
from trade_stream.core.addresses import AddressStore
from trade_stream.core.broker import BrokerEvents
from trade_stream.core.delivery_stats import Channels
from trade_stream.core.engine import (
    ChannelBus,
    Engine,
    NodeHandler,
    SharedPushSubscriptions,
    UpstreamSide,
    WebhookSide,
)
from trade_stream.core.hub import Hub
from trade_stream.core.notifier import TradeNotifier
from trade_stream.core.orders import Orders
from trade_stream.core.preferences import Preferences
from trade_stream.core.price_alerts import PriceAlerts
from trade_stream.core.push_subscriptions import PushSubscriptionStore
from trade_stream.core.relay import Relay
from trade_stream.core.stats import Stats
from trade_stream.core.upstream import FeedState
from trade_stream.core.upstream_state import UpstreamState
from trade_stream.edges.alerts_api import PREFIX as ALERTS_PATH
from trade_stream.edges.alerts_api import AlertsApi
from trade_stream.edges.compat import AlpacaEndpoints
from trade_stream.edges.delivery import CHANNEL_NAMES, Deliveries, Sender
from trade_stream.edges.history import History
from trade_stream.edges.http.credentials import RequestCredentials
from trade_stream.edges.http.request import Request
from trade_stream.edges.http.responses import Cors, json, response
from trade_stream.edges.http.routes import Route
from trade_stream.edges.identity import Identity
from trade_stream.edges.mail import Email, EmailSender, Recipients
from trade_stream.edges.notifications_api import PREFIX as NOTIFICATIONS_PATH
from trade_stream.edges.notifications_api import NotificationsApi
from trade_stream.edges.orders_api import PATH as ORDERS_PATH
from trade_stream.edges.orders_api import OrdersApi
from trade_stream.edges.origins import OriginPolicy
from trade_stream.edges.page import PageSupport
from trade_stream.edges.preferences_api import PATH as PREFERENCES_PATH
from trade_stream.edges.preferences_api import PreferencesApi
from trade_stream.edges.publish_api import PATH as PUBLISH_PATH
from trade_stream.edges.publish_api import PublishApi
from trade_stream.edges.push import Push, PushSender
from trade_stream.edges.push_api import PATH as PUSH_PATH
from trade_stream.edges.push_api import PushApi
from trade_stream.edges.sse.server import SseServer
from trade_stream.edges.stream_test import PATH as STREAM_TEST_PATH
from trade_stream.edges.stream_test import StreamTest
from trade_stream.edges.web import StaticFiles, Web
from trade_stream.edges.webhooks import Webhooks, WebhookSender
from trade_stream.edges.ws_server import WsServer
from trade_stream.engines.memory import MemoryEngine
from trade_stream.ops.metrics import CONTENT_TYPE, build_registry, render
from trade_stream.ops.sdnotify import Notifier, keep_alive, under_systemd, watchdog_interval
from trade_stream.ops.status import RelayMarket, StatusReport
from trade_stream.ops.supervisor import Supervisor
from trade_stream.records import smtp_url
from trade_stream.records.accounts import DEFAULT_ACCOUNT, AccountSpec
from trade_stream.upstream.rest import AlpacaRest
from trade_stream.upstream.snapshots import Snapshots
from trade_stream.upstream.sources import Sources
from trade_stream.upstream.trading import TradingUpstream

log = logging.getLogger("trade_stream.app")
NEW_YORK = ZoneInfo("America/New_York")
TOKEN_URL_FILE = "page-url"  # in the state directory: the page URL carrying a generated token (under systemd)


class CannotListen(Exception):
    """A listening port is taken (or the address is not this host's): exit 2 with one line naming the setting."""

    def __init__(self, setting: str, host: str, port: int, exc: OSError) -> None:
        why = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        super().__init__(f"cannot listen on {host}:{port}: {why}; set {setting} or stop the other process")


async def listen(setting: str, host: str, port: int, start: Awaitable[None]) -> None:
    try:
        await start
    except OSError as exc:
        raise CannotListen(setting, host, port, exc) from None


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by this user only (0600, also when the file already existed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Components:
    """Every part of one daemon, built and connected to each other, none of them started."""

    cfg: Config
    supervisor: Supervisor
    relay: Relay[Sources]
    identity: Identity
    accounts: Accounts
    tradings: dict[str, TradingUpstream]  # per account, in account order
    broker: BrokerEvents | None  # Broker API mode (ALPACA_BROKER_API_KEY)
    notifier: TradeNotifier
    deliveries: Deliveries | None  # the outbox worker, when any channel beyond the page is configured
    webhooks: Webhooks | None
    email: Email | None
    alerts: PriceAlerts
    push: Push | None  # Web Push, when the VAPID settings are set
    report: StatusReport  # health, status and the systemd status line
    page: PageSupport
    snapshots: Snapshots
    ws: WsServer
    sse: SseServer | None
    preferences: Preferences  # each user's notification kinds per channel
    channels: Channels  # each sending channel's counts (webhooks, email, push)

    @property
    def engine(self) -> Engine:
        return self.relay.engine


def build(cfg: Config, stats: Stats, supervisor: Supervisor, resources: AsyncExitStack) -> Components:
    """Every component from ``cfg``, connected. Nothing starts: no port listens, no task runs, the engine has not
    reached its store. The order journals, the Broker journal and the notification store register their close on
    ``resources`` as they are opened, so a failure part-way closes what was opened (the webhook outbox is opened
    and closed by its delivery task)."""

    def leadership(leading: bool) -> None:
        """A node that does not hold the trading stream still shows positions: from REST, then from fills; only
        the leader sends webhooks (and every other outbox channel). The engine calls it only once it runs, when
        ``accounts`` and ``deliveries`` below exist."""
        log.info("leadership node=%s leading=%s", cfg.node_id, leading)
        if deliveries is not None:
            deliveries.on_leader(leading)
        if not leading:
            for orders in accounts:
                supervisor.start(f"positions-load-{orders.account}", orders.load_positions)

    relay = Relay(cfg, stats, partial(build_engine, cfg, leadership), partial(build_sources, cfg, stats))
    identity = Identity(cfg.token, [a.name for a in cfg.account_specs()], cfg.users_file, cfg.jwt_secret,
                        cfg.jwt_public_key, cfg.max_connections_per_user, broker=bool(cfg.broker_api_key),
                        jwt_audience=cfg.jwt_audience, jwt_issuer=cfg.jwt_issuer,
                        jwt_max_lifetime=cfg.jwt_max_lifetime, connection_limit_policy=cfg.connection_limit_policy)
    # Each account's order log is opened (registered with the engine) here: the engine's connect loads them.
    built = {spec.name: build_account(cfg, stats, relay, spec) for spec in cfg.account_specs()}
    tradings = {name: trading for name, (_, trading) in built.items()}
    accounts = Accounts({name: orders for name, (orders, _) in built.items()}, identity)
    resources.push_async_callback(accounts.stop)
    broker = None
    if cfg.broker_api_key:
        accounts.broker = broker = build_broker(cfg)
        resources.callback(broker.close)
    # A person's preferences are theirs whatever the data: one store, demo or not; the cluster's in a cluster.
    preferences = Preferences(relay.engine.open_preferences(Path(cfg.state_dir) / "preferences.sqlite3"))
    resources.callback(preferences.close)
    channels = Channels()  # every sending channel's counts: status and metrics
    addresses = None
    if cfg.smtp_url:  # email alerts: where each JWT user's address is remembered; the cluster's in a cluster
        identity.addresses = addresses = relay.engine.open_addresses(Path(cfg.state_dir) / "addresses.sqlite3")
        resources.callback(addresses.close)
    subscriptions = build_push_subscriptions(cfg, relay.engine, resources)
    notifier, deliveries, webhooks, email, push = build_notifications(cfg, accounts, identity, relay.engine,
                                                                      preferences, channels, addresses,
                                                                      subscriptions)
    resources.callback(notifier.close)
    origins = OriginPolicy(cfg.allowed_origins)
    page, history, snapshots = PageSupport(cfg, origins), History(cfg), Snapshots(cfg)
    alerts = build_alerts(cfg, relay, notifier, accounts, snapshots, history)
    resources.callback(alerts.close)
    report = StatusReport(RelayMarket(relay), tradings, supervisor, cfg.health_grace, accounts, notifier, broker,
                          broker.upstreams if broker is not None else (), webhooks, email, channels, alerts,
                          push)
    registry = build_registry(stats, relay.status, supervisor.restarts, relay.engine.metrics)
    registry.register(notifier.collector())
    registry.register(channels.collector())
    if webhooks is not None:
        registry.register(webhooks.collector())
    if email is not None:
        registry.register(email.collector())
    cors = Cors(origins, credentials=bool(cfg.auth_cookie)).headers
    credentials = RequestCredentials(cfg.auth_cookie, origins, cfg.allowed_origins)
    publish = publish_api(cfg, relay.engine, identity, cors)
    # The side-port writes the CORS headers of every answer itself.
    sse_publish = publish_api(cfg, relay.engine, identity, lambda r: {})
    sse = (SseServer(cfg, relay, accounts, origins, stats, status=report.status, snapshots=snapshots, broker=broker,
                     routes=(Route(PUBLISH_PATH, sse_publish, methods=None),), test_auth=sse_publish.authorize)
           if cfg.sse_port else None)
    push_api = PushApi(subscriptions, cfg.vapid.public_key if cfg.vapid else "", identity, credentials, cors)
    # The main port's routes, all of them, before it listens (the SSE side-port declares its own table).
    web = Web(StaticFiles(cfg.public_dir), [
        Route("/healthz", lambda r: json(*report.healthz(), cors(r))),
        Route("/api/stream/status", lambda r: json(200, report.status(), cors(r))),
        Route("/metrics", lambda r: response(200, render(registry), CONTENT_TYPE)),
        Route("/config.js", page.config_js),
        Route("/api/page-info", page.info),
        Route("/api/bars", lambda r: history.bars_route(r, cors(r))),
        Route("/api/clock", lambda r: history.clock_route(r, cors(r))),
        Route(ORDERS_PATH, OrdersApi(accounts, identity, credentials, cors)),
        Route(NOTIFICATIONS_PATH, NotificationsApi(notifier, identity, credentials, cors), methods=None,
              prefix=True),
        Route(PUBLISH_PATH, publish, methods=None),
        Route(STREAM_TEST_PATH, StreamTest(publish.authorize, sse.send_test if sse is not None else None,
                                           lambda: relay.clients, cors), methods=None),
        Route(PREFERENCES_PATH, PreferencesApi(preferences, identity, credentials, cors), methods=None),
        Route(ALERTS_PATH, AlertsApi(alerts, identity, credentials, cors), methods=None, prefix=True),
        Route(PUSH_PATH, push_api, methods=None),
    ])
    compat = AlpacaEndpoints(relay, accounts, cfg.alpaca_prefix, cfg.max_symbols_per_client)
    ws = WsServer(cfg, relay, web, origins, stats, private=accounts, snapshots=snapshots, endpoints=compat.routes(),
                  credentials=credentials, alerts=alerts)
    accounts.hang_up = ws.hang_up  # a connection closed for a newer one of its user (the per-user limit)
    parts = Components(cfg, supervisor, relay, identity, accounts, tradings, broker, notifier, deliveries, webhooks,
                       email, alerts, push, report, page, snapshots, ws, sse, preferences, channels)
    wire_events(parts)
    return parts


def publish_api(cfg: Config, bus: ChannelBus, identity: Identity,
                cors: Callable[[Request], dict[str, str]]) -> PublishApi:
    """``POST /api/publish`` for one port (both ports take it, on every node)."""
    return PublishApi(bus, cfg.publish_key, identity.resolve, cors, cfg.publish_max_bytes)


def build_engine(cfg: Config, on_leader: Callable[[bool], None], handler: NodeHandler) -> Engine:
    """One process (no Redis), or a node of a cluster sharing TRADE_STREAM_REDIS_URL."""
    if not cfg.redis_url:
        return MemoryEngine(handler, cfg.node_id, on_leader=on_leader, channel_history=cfg.channel_history,
                            channel_ttl=cfg.channel_history_ttl, max_channels=cfg.max_channels)
    from trade_stream.engines.redis import RedisEngine  # cluster mode only: one process never imports redis

    return RedisEngine(handler, cfg.redis_url, cfg.node_id, cfg.redis_prefix, lease=cfg.cluster_lease,
                       max_symbols=cfg.max_symbols, retention_days=cfg.journal_retention_days, on_leader=on_leader,
                       channel_history=cfg.channel_history, channel_ttl=cfg.channel_history_ttl)


def build_sources(cfg: Config, stats: Stats, hub: Hub, on_state: FeedState, engine: UpstreamSide) -> Sources:
    """The relay's upstream: one market-data connection per Alpaca source in use, the default feed always."""
    return Sources(cfg, hub, stats, cfg.data_stream_url, on_state, engine)


def build_account(cfg: Config, stats: Stats, relay: Relay[Sources],
                  spec: AccountSpec) -> tuple[Orders, TradingUpstream]:
    """One account: its journal (the ``default`` account keeps the file name from before accounts, so an
    upgrade keeps its history), its REST client and its own trading stream."""
    base = "orders-demo" if cfg.demo else "orders"  # never mix simulated fills with real ones
    name = f"{base}.sqlite3" if spec.name == DEFAULT_ACCOUNT else f"{base}-{spec.name}.sqlite3"
    rest = AlpacaRest(dataclasses.replace(cfg, api_key=spec.key_id, secret_key=spec.secret, base_url=spec.base_url))
    orders = Orders(Path(cfg.state_dir) / name, rest, relay, stats, cfg.journal_retention_days,
                    cfg.timings.journal_retry, account=spec.name,  # a journal fault is reported, not fatal
                    open_log=relay.engine.open_order_log)

    def trading_state(state: UpstreamState) -> None:
        orders.on_state(state.state == "connected")
        log.info("trading_state account=%s state=%s error=%r", spec.name, state.state, state.error)

    trading = TradingUpstream(
        url=spec.trading_stream_url or cfg.trading_stream_url, key=spec.key_id, secret=spec.secret,
        on_event=orders.on_event, on_connected=orders.reconcile, on_state=trading_state,
        timings=cfg.timings, stats=stats,
    )
    return orders, trading


def build_broker(cfg: Config) -> BrokerEvents:
    """Broker API mode: one journal for every Alpaca account of the partner, and one SSE consumer per
    stream switched on (TRADE_STREAM_BROKER_STREAMS)."""
    from trade_stream.upstream.broker_events import BrokerStream  # Broker mode only: httpx-sse

    name = "broker-demo.sqlite3" if cfg.demo else "broker.sqlite3"
    broker = BrokerEvents(Path(cfg.state_dir) / name, cfg.journal_retention_days)
    broker.upstreams = [
        BrokerStream(stream, cfg.broker_base_url, cfg.broker_api_key, cfg.broker_secret_key, broker,
                     silence=cfg.broker_silence, backoff_min=cfg.timings.reconnect_min,
                     backoff_max=cfg.timings.broker_backoff_max, fallback_after=cfg.broker_fallback_after,
                     poll_interval=cfg.broker_poll_interval, open_timeout=cfg.timings.open_timeout)
        for stream in cfg.broker_streams]
    return broker


def build_push_subscriptions(cfg: Config, engine: SharedPushSubscriptions, resources: AsyncExitStack
                             ) -> PushSubscriptionStore | None:
    """The browsers' push subscriptions, when Web Push is configured: a person's, whatever the data (one store,
    demo or not); the cluster's in a cluster."""
    if cfg.vapid is None:
        return None
    subscriptions = engine.open_push_subscriptions(Path(cfg.state_dir) / "push-subscriptions.sqlite3",
                                                   cfg.push_max_subscriptions)
    resources.callback(subscriptions.close)
    return subscriptions


def build_notifications(cfg: Config, accounts: Accounts, identity: Identity, cluster: WebhookSide,
                        preferences: Preferences, channels: Channels, addresses: AddressStore | None,
                        subscriptions: PushSubscriptionStore | None = None
                        ) -> tuple[TradeNotifier, Deliveries | None, Webhooks | None, Email | None, Push | None]:
    """Notifications next to the order journal, and the outbox that is fed from them (sent by the cluster's
    leader) with a sender per configured channel: webhooks, email, push; each channel's counts in ``channels``."""
    suffix = "-demo" if cfg.demo else ""  # as the journal: simulated fills never mix with real ones
    notifier = TradeNotifier(Path(cfg.state_dir) / f"notifications{suffix}.sqlite3", accounts,
                             cfg.journal_retention_days, cfg.timings.journal_retry, preferences=preferences)
    senders: list[Sender] = []
    if cfg.webhooks:
        senders.append(WebhookSender(cfg.webhooks, cfg.timings, notifier))
    mail: EmailSender | None = None
    if cfg.smtp_url and addresses is not None:
        mail = EmailSender(smtp_url.parse(cfg.smtp_url), cfg.smtp_from, Recipients(notifier, identity, addresses),
                           cfg.timings, cfg.email_rate_limit, cfg.email_rate_window)
        senders.append(mail)
    push_sender = None
    if subscriptions is not None:
        push_sender = PushSender(cfg.vapid, subscriptions, notifier, partial(users_file_users, identity), cfg.timings)
        senders.append(push_sender)
    if not senders:
        return notifier, None, None, None, None
    # One outbox file for every channel, named as an existing state directory has it: its pending webhooks go on.
    deliveries = Deliveries(Path(cfg.state_dir) / f"webhooks{suffix}.sqlite3", notifier, cluster, senders,
                            cfg.webhook_max_pending, {"email": cfg.email_max_pending, "push": cfg.push_max_pending},
                            {s.channel: channels.channel(CHANNEL_NAMES[s.channel]) for s in senders})
    webhooks = Webhooks(cfg.webhooks, deliveries) if cfg.webhooks else None
    email = None
    if mail is not None and addresses is not None:
        mail.bind(deliveries)
        email = Email(mail, deliveries, addresses)
    push = Push(push_sender, deliveries) if push_sender is not None else None
    return notifier, deliveries, webhooks, email, push


def users_file_users(identity: Identity) -> list[str]:
    """The users whose accounts the users file says (the TRADE_STREAM_TOKEN user sees every account anyway)."""
    return [u.name for u in identity.users()]


def build_alerts(cfg: Config, relay: Relay[Sources], notifier: TradeNotifier, accounts: Accounts,
                 snapshots: Snapshots, history: History) -> PriceAlerts:
    """Price alerts, kept through the engine (SQLite beside the other stores, or the cluster's Redis), their
    references from the REST snapshot and their session from Alpaca's market clock."""
    suffix = "-demo" if cfg.demo else ""  # alerts on simulated prices never mix with real ones

    async def references(symbols: list[str]) -> dict[str, tuple[float | None, float | None]]:
        out: dict[str, tuple[float | None, float | None]] = {}
        for msg in await snapshots.get(symbols):
            data = msg.get("data") or {}
            last = (data.get("latest_trade") or {}).get("price")
            out[str(msg.get("symbol"))] = (last if isinstance(last, int | float) else None, data.get("prev_close"))
        return out

    async def market_time() -> tuple[float, float | None]:
        return session_of(await history.clock(max_age=cfg.alert_stale_check))

    store = relay.engine.open_alert_store(Path(cfg.state_dir) / f"alerts{suffix}.sqlite3")
    return PriceAlerts(store, relay, relay.engine, notifier, accounts, max_per_user=cfg.alerts_per_user,
                       references=references, market_time=market_time, stale_every=cfg.alert_stale_check,
                       crypto_key=lambda s: relay.sources.browser_keys([s], ("trades",))[0])


def session_of(clock: dict[str, Any]) -> tuple[float, float | None]:
    """Alpaca's market clock as (now, when the regular session opened or None while it is closed): every
    regular session opens at 09:30 New York time (an early close ends it sooner, never starts it later)."""
    now = datetime.fromisoformat(str(clock["timestamp"]).replace("Z", "+00:00"))
    if not clock.get("is_open"):
        return now.timestamp(), None
    local = now.astimezone(NEW_YORK)
    return now.timestamp(), local.replace(hour=9, minute=30, second=0, microsecond=0).timestamp()


def wire_events(parts: Components) -> None:
    """Who receives an order event, in the order they get it; a listener runs in the order it was added.
    Only per-connection subscriptions are made elsewhere, each added and removed with its connection: a
    WebSocket client's (``Orders.subscribers``) and an Alpaca-compatible trading session's (edges/compat)."""
    accounts, notifier, sse, broker = parts.accounts, parts.notifier, parts.sse, parts.broker
    accounts.expiry_listeners.append(parts.relay.channels.logged_out)  # an expired login keeps no app channel
    for orders in accounts:
        # The notification is derived first, then the SSE streams get the event.
        orders.listeners.append(partial(notifier.on_entry, orders=orders))
        if sse is not None:
            assert sse.fanout is not None  # built with the accounts
            orders.listeners.append(partial(sse.fanout.on_order_event, orders=orders))
            orders.position_listeners.append(sse.fanout.on_position)
            orders.reset_listeners.append(partial(sse.fanout.on_orders_reset, orders=orders))
    if broker is not None:  # Broker events become notifications first, as order events do
        broker.listeners.append(lambda entries: notifier.on_broker(entries, broker.epoch))
    if sse is not None:  # the Alpaca-style event streams: the Broker journal in Broker mode, else order events
        if broker is not None:
            broker.listeners.append(sse.events_api.on_broker)
        else:
            for orders in accounts:
                orders.listeners.append(partial(sse.events_api.on_order, account=orders.account))
    # A new notification: wake the outbox, then the SSE alert stream.
    if parts.deliveries is not None:
        notifier.listeners.append(parts.deliveries.wake)
    if sse is not None:
        sse.alerts.serve_from(notifier)
        notifier.listeners.append(sse.alerts.on_alert)
        notifier.read_listeners.append(sse.alerts.on_read)


async def run(parts: Components, running: AsyncExitStack) -> None:
    """Start every part in dependency order, each stop registered on ``running`` as soon as its part exists (the
    stack unwinds in reverse): the engine reaches its store and loads the order logs the accounts opened, the ports
    listen, the engine starts, then the upstreams and background tasks run under the supervisor."""
    cfg, supervisor, engine = parts.cfg, parts.supervisor, parts.engine
    # Stopped whether or not it got to connect; its stop hands the lease over now, not after it runs out, and
    # ends its loops before the supervisor waits for them.
    running.push_async_callback(engine.stop)
    await engine.connect()  # a cluster store that cannot be reached is EngineUnavailable: exit 2
    running.callback(parts.snapshots.close)  # a snapshot batch still waiting: its timer and fetch end here
    running.push_async_callback(partial(close_edges, parts))
    if not (Path(cfg.public_dir) / "index.html").is_file():
        log.warning("no_page public_dir=%s: / will answer 404; set TRADE_STREAM_PUBLIC_DIR to public_html",
                    cfg.public_dir)
    await listen("TRADE_STREAM_PORT", cfg.host, cfg.port, parts.ws.start(supervisor.start))
    parts.ws.instance = parts.page.bind(parts.ws.port)
    if parts.sse is not None:
        await listen("TRADE_STREAM_SSE_PORT", cfg.host, cfg.sse_port, parts.sse.start(supervisor.start))
    await engine.start(supervisor.start)
    supervisor.start("upstream-market-data", parts.relay.sources.run)
    first = next(iter(parts.tradings))  # the first account's stream has the plain name
    for name, trading in parts.tradings.items():  # one trading stream per account, on the node holding Alpaca
        supervisor.start("upstream-trading" if name == first else f"upstream-trading-{name}",
                         partial(engine.while_leader, trading.run, trading))
    for upstream in parts.broker.upstreams if parts.broker is not None else ():
        supervisor.start(f"upstream-broker-{upstream.stream}", upstream.run)
    supervisor.start("journal-retention", partial(prune_journals, parts))
    supervisor.start("price-alerts", parts.alerts.run)
    if parts.deliveries is not None:
        supervisor.start("deliveries", parts.deliveries.run)
    log.info("listening host=%s port=%d demo=%s feed=%s upstream=%s", cfg.host, parts.ws.port, cfg.demo,
             cfg.data_feed, cfg.data_stream_url)
    log.info("config %s", " ".join(f"{k}={v}" for k, v in cfg.public_view().items()))


async def close_edges(parts: Components) -> None:
    """Clients get 1001 and every Alpaca session a proper close (so Alpaca frees the slot), all at once: each
    may wait out its own grace (a frozen upstream, stalled clients), and in a row those waits add up past
    what systemd and Kubernetes give a stopping process."""
    parts.relay.close()
    closing = [parts.ws.close(), *([parts.sse.close()] if parts.sse is not None else []),
               parts.relay.sources.stop(), *(t.stop() for t in parts.tradings.values())]
    for result in await asyncio.gather(*closing, return_exceptions=True):
        if isinstance(result, Exception):
            log.error("shutdown_step_failed error=%r", result)


async def prune_journals(parts: Components) -> None:
    """Hourly: the order journals, the Broker journal and the notification store drop what is past retention."""
    while True:
        removed = parts.accounts.prune() + (parts.broker.prune() if parts.broker is not None else 0)
        if removed:
            log.info("journal_pruned removed=%d", removed)
        parts.notifier.prune()
        await asyncio.sleep(3600)


class App:
    """One daemon: ``start`` builds its ``Components`` (``parts``) and runs them, ``stop`` undoes whatever part
    of that got done. The properties below are the parts tests and tools read most."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.stats = Stats()
        self.supervisor = Supervisor(cfg.timings.reconnect_min, cfg.timings.reconnect_max)
        self.parts: Components | None = None  # once start() has built them
        self.simulator: Any = None  # --demo: simulator/server.Simulator
        self.broker_simulator: Any = None  # --demo --broker: simulator/broker.BrokerSim
        self.demo_customers: dict[str, tuple[str, str]] = {}  # --demo --broker: customer -> (account, JWT)
        # Teardown is registered as each part comes up, on one of two stacks, each unwound in reverse. ``_running``
        # holds what serves and runs (listeners, upstreams, the engine, the supervised tasks); ``_resources``
        # holds what those use (journals, the notification store, the demo simulators). Every running part is
        # gone before any resource closes, whatever order they were built in: a task still running would write
        # to a closed journal or trade against a stopped simulator.
        self._running = AsyncExitStack()
        self._resources = AsyncExitStack()
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        self._running.push_async_callback(self.supervisor.stop)  # last of the running parts: every task it runs
        if self.cfg.demo:
            self.cfg = await self._start_simulator()
        self.parts = build(self.cfg, self.stats, self.supervisor, self._resources)
        await run(self.parts, self._running)
        cfg = self.cfg
        host = "localhost" if cfg.host in ("0.0.0.0", "::", "") else cfg.host
        for name, (account, jwt_token) in self.demo_customers.items():  # --demo --broker: one link per customer
            print(f"trade-stream demo: customer {name} (Broker account {account}): "
                  f"http://{host}:{self.port}/#token={jwt_token}", flush=True)
        if cfg.token_generated:
            self._announce_token()
        else:  # the page's address is the last line printed at start, token or not
            print(f"trade-stream: listening; open http://{host}:{self.port}/ for the page.", flush=True)

    def _announce_token(self) -> None:
        """Tell the operator where the generated token is. In a terminal: print the page URL, as always. Under
        systemd stdout lands in the journal, readable by more people and kept long after the token should be
        gone: write it to a file only the service user can read instead, and log where."""
        cfg = self.cfg
        host = "localhost" if cfg.host in ("0.0.0.0", "::", "") else cfg.host
        url = f"http://{host}:{self.port}/#token={cfg.token}"
        if not under_systemd():
            print(f"trade-stream: no TRADE_STREAM_TOKEN set, generated one for this run. Open {url} to see order "
                  "updates.", flush=True)
            return
        path = Path(cfg.state_dir) / TOKEN_URL_FILE
        try:
            write_private(path, url + "\n")
        except OSError as exc:
            log.error("generated_token_not_saved path=%s error=%s: set TRADE_STREAM_TOKEN to use order updates",
                      path, exc)
            return
        log.warning("generated_token no TRADE_STREAM_TOKEN set, generated one for this run; the page URL with it is "
                    "in %s (mode 0600, this service's user only); set TRADE_STREAM_TOKEN for a fixed token", path)

    async def _start_simulator(self) -> Config:
        from trade_stream import demo  # demo mode only: production never imports the simulator

        self.simulator, cfg = await demo.start(self.cfg)
        simulator = self.simulator
        self._resources.push_async_callback(self._stop_simulators)
        self.supervisor.start("demo-trader", lambda: demo.trader(simulator))
        if cfg.broker_demo:
            self.broker_simulator, cfg, self.demo_customers = await demo.start_broker(cfg)
            bsim = self.broker_simulator
            self.supervisor.start("demo-broker-trader", lambda: demo.broker_trader(bsim, simulator))
        return cfg

    async def _stop_simulators(self) -> None:
        await self.simulator.stop()
        if self.broker_simulator is not None:
            await self.broker_simulator.stop()

    async def stop(self) -> None:
        """Everything that runs, newest first, then everything it used: whatever part of ``start`` got done."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("shutting_down")
        try:
            await self._running.aclose()
        finally:
            await self._resources.aclose()
        log.info("stopped")

    def reload(self, cfg: Config) -> None:
        """SIGHUP: apply the new log level and limits; connections and subscriptions stay."""
        logging.getLogger().setLevel(cfg.log_level)
        if self.parts is not None:
            self.parts.ws.reload_limits(cfg)
            if self.parts.sse is not None:
                self.parts.sse.reload_limits(cfg)
            self.parts.identity.sessions.reload(cfg.max_connections_per_user, cfg.connection_limit_policy)
        log.info("reloaded log_level=%s max_connections=%d max_connections_per_ip=%d max_connections_per_user=%d "
                 "connection_limit_policy=%s", cfg.log_level, cfg.max_connections, cfg.max_connections_per_ip,
                 cfg.max_connections_per_user, cfg.connection_limit_policy)

    async def run_until_signalled(self, reread: Callable[[], Config] | None = None) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if reread is not None:
            loop.add_signal_handler(signal.SIGHUP, lambda: self._on_hup(reread))
        notifier = Notifier.from_env()
        try:
            await self.start()
        except BaseException:
            await self.stop()  # whatever did start (the demo simulator, a listener) goes away cleanly
            raise
        if notifier is not None:
            notifier.send(ready=1, status=self.status_line())
            interval = watchdog_interval()
            if interval:
                self.supervisor.start("watchdog-keep-alive", lambda: keep_alive(notifier, interval, self.status_line))
        try:
            await stop.wait()
        finally:
            if notifier is not None:
                notifier.send(stopping=1, status="shutting down")
            await self.stop()
            if notifier is not None:
                notifier.close()

    def _on_hup(self, reread: Callable[[], Config]) -> None:
        try:
            self.reload(reread())
        except Exception as exc:  # a bad edit must not kill a running daemon
            log.error("reload_failed error=%s (keeping the running configuration)", exc)

    async def __aenter__(self) -> App:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- what a running daemon shows --------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._built().report.health()

    def status(self) -> dict[str, Any]:
        return self._built().report.status()

    def status_line(self) -> str:
        return "starting" if self.parts is None else self.parts.report.line()

    @property
    def port(self) -> int:
        return self._built().ws.port

    @property
    def relay(self) -> Relay[Sources]:
        return self._built().relay

    @property
    def engine(self) -> Engine:
        return self._built().engine

    @property
    def identity(self) -> Identity:
        return self._built().identity

    @property
    def accounts(self) -> Accounts:
        return self._built().accounts

    @property
    def tradings(self) -> dict[str, TradingUpstream]:
        return self._built().tradings

    @property
    def broker(self) -> BrokerEvents | None:
        return self._built().broker

    @property
    def webhooks(self) -> Webhooks | None:
        return self._built().webhooks

    @property
    def deliveries(self) -> Deliveries | None:
        return self._built().deliveries

    @property
    def email(self) -> Email | None:
        return self._built().email

    @property
    def push(self) -> Push | None:
        return self._built().push

    @property
    def ws(self) -> WsServer:
        return self._built().ws

    @property
    def sse(self) -> SseServer | None:
        return self._built().sse

    @property
    def alerts(self) -> PriceAlerts:
        return self._built().alerts

    def _built(self) -> Components:
        assert self.parts is not None, "the App's parts exist once start() has built them"
        return self.parts
