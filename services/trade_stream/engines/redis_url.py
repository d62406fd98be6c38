"""How a node reaches Redis: one server, or the master a group of Redis Sentinels names.

``TRADE_STREAM_REDIS_URL`` is either a URL redis-py reads itself (``redis://``, ``rediss://`` for TLS, options
such as ``?ssl_ca_certs=/path/ca.pem`` in the query), or a Sentinel URL, which redis-py has no URL form for:

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?option=value...]

``rediss+sentinel://`` speaks TLS to the sentinels and to the master. The password is the master's (and the
replicas'); ``sentinel_password`` (and ``sentinel_username``) in the query is for the sentinels, when they have
one; every other query option goes to the connections as with ``redis://``. Sentinels default to port 26379.

Through Sentinel, redis-py asks the sentinels for the master's address at every new connection, so after a
failover every loop of the engine, which reconnects on its own, follows the new master. Parsing is pure and
imports nothing from redis: the configuration checks a URL with it before anything connects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme -> TLS
SENTINEL_PORT = 26379
SENTINEL_OPTIONS = ("sentinel_password", "sentinel_username")


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    options: dict[str, str] = field(default_factory=dict)  # connection options (ssl_ca_certs, ...)
    sentinel_auth: dict[str, str] = field(default_factory=dict)  # username/password of the sentinels


def is_sentinel(url: str) -> bool:
    return urlsplit(url).scheme in SENTINEL_SCHEMES


def parse_sentinel(url: str) -> SentinelUrl:
    """The parts of a Sentinel URL; ValueError with a short reason when it is not one."""
    parts = urlsplit(url)
    if parts.scheme not in SENTINEL_SCHEMES:
        raise ValueError("not a redis+sentinel:// URL")
    auth, _, hosts = parts.netloc.rpartition("@")
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        if not host:
            raise ValueError(f"sentinel {item!r} has no host: give host:port[,host:port...]")
        if port and not port.isdigit():
            raise ValueError(f"sentinel {item!r}: the port must be a number")
        sentinels.append((host, int(port) if port else SENTINEL_PORT))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("name the master after the sentinels: redis+sentinel://host:26379/mymaster[/db]")
    username, _, password = auth.partition(":")
    query = dict(parse_qsl(parts.query))
    return SentinelUrl(
        sentinels=sentinels, service=path[0], db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(username) or None, password=unquote(password) or None,
        tls=SENTINEL_SCHEMES[parts.scheme],
        options={k: v for k, v in query.items() if k not in SENTINEL_OPTIONS},
        sentinel_auth={k.removeprefix("sentinel_"): v for k, v in query.items() if k in SENTINEL_OPTIONS})


def _typed(options: dict[str, str]) -> dict[str, Any]:
    """Query options typed as redis-py types them in its own URLs (``socket_timeout`` a float, ...)."""
    from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS

    out: dict[str, Any] = {}
    for key, value in options.items():
        parser = URL_QUERY_ARGUMENT_PARSERS.get(key)
        out[key] = parser(value) if parser else value
    return out


def _tls(options: dict[str, str]) -> dict[str, Any]:
    """The TLS part of a Sentinel URL's options (the sentinels get these, not the others)."""
    return {"ssl": True, **_typed({k: v for k, v in options.items() if k.startswith("ssl_")})}


def sentinel(url: SentinelUrl, **kwargs: Any) -> Any:
    """A redis-py ``Sentinel`` for the URL's sentinels (``kwargs``: socket options for every connection)."""
    from redis.asyncio.sentinel import Sentinel

    on_sentinels = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    if url.tls:
        on_sentinels.update(_tls(url.options))
    on_sentinels.update(url.sentinel_auth)
    return Sentinel(url.sentinels, sentinel_kwargs=on_sentinels, **kwargs)


def client(url: str, **kwargs: Any) -> Any:
    """A ``redis.asyncio.Redis`` for the URL: the server it names, or the master its sentinels name."""
    import redis.asyncio as aioredis

    if not is_sentinel(url):
        return aioredis.Redis.from_url(url, **kwargs)
    parsed = parse_sentinel(url)
    extra = _typed({k: v for k, v in parsed.options.items() if parsed.tls or not k.startswith("ssl_")})
    if parsed.tls:
        extra["ssl"] = True
    return sentinel(parsed, **kwargs).master_for(
        parsed.service, redis_class=aioredis.Redis, db=parsed.db, username=parsed.username,
        password=parsed.password, **extra)


async def sentinel_view(url: str, timeout: float) -> dict[str, Any]:
    """What the sentinels say of the master, for ``trade-stream check``: its address, the replicas, the quorum,
    and how many of the listed sentinels answered. Raises the first sentinel error when none answered."""
    parsed = parse_sentinel(url)
    manager = sentinel(parsed, socket_timeout=timeout, socket_connect_timeout=timeout)
    answered, state, error = 0, None, None
    try:
        for node in manager.sentinels:
            try:
                masters = await node.sentinel_masters()
            except Exception as exc:  # one sentinel down: the others still answer
                error = error or exc
                continue
            answered += 1
            state = state or masters.get(parsed.service)
    finally:
        for node in manager.sentinels:
            await node.aclose()
    if not answered:
        assert error is not None
        raise error
    if state is None:
        return {"service": parsed.service, "known": False, "sentinels": answered, "listed": len(parsed.sentinels)}
    return {"service": parsed.service, "known": True, "master": f"{state['ip']}:{state['port']}",
            "down": bool(state.get("is_sdown") or state.get("is_odown")), "replicas": int(state.get("num-slaves", 0)),
            "quorum": int(state.get("quorum", 0)), "sentinels": answered, "listed": len(parsed.sentinels),
            "other_sentinels": int(state.get("num-other-sentinels", 0))}
