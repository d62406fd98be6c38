"""How a node reaches Redis: a redis-py client for the server, or for the master a group of Sentinels names.

The URL's forms and its parsing live in ``trade_stream.records.redis_url``. Through Sentinel, redis-py asks the
sentinels for the master's address at every new connection, so after a failover every loop of the engine, which
reconnects on its own, follows the new master.
"""

from __future__ import annotations

from typing import Any

from trade_stream.records.redis_url import SentinelUrl, is_sentinel, parse_sentinel


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
