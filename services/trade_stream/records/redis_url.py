"""The Redis URL setting (``TRADE_STREAM_REDIS_URL``) as a plain record: one server, or a group of Redis Sentinels.

``TRADE_STREAM_REDIS_URL`` is either a URL redis-py reads itself (``redis://``, ``rediss://`` for TLS, options
such as ``?ssl_ca_certs=/path/ca.pem`` in the query), or a Sentinel URL, which redis-py has no URL form for:

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?option=value...]

``rediss+sentinel://`` speaks TLS to the sentinels and to the master. The password is the master's (and the
replicas'); ``sentinel_password`` (and ``sentinel_username``) in the query is for the sentinels, when they have
one; every other query option goes to the connections as with ``redis://``. Sentinels default to port 26379.

Pure and stdlib only, so that the configuration checks a URL with it before anything connects and without the
engines (which turn the record into redis-py clients) below it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
