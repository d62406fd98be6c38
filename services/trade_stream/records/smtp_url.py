"""The SMTP server setting (``TRADE_STREAM_SMTP_URL``) as a plain record.

    smtp://[user[:password]@]host[:port][?starttls=required][&ssl_ca_certs=/path/ca.pem][&timeout=30]
    smtps://[user[:password]@]host[:port][?ssl_ca_certs=…]

``smtp://`` (port 587 by default) upgrades with STARTTLS whenever the server offers it, and sends in the clear
only to a server that does not; ``?starttls=required`` refuses such a server (each attempt fails, and is
retried, until it offers STARTTLS). ``smtps://`` (port 465 by default) speaks TLS from the first byte. The
server's certificate is always checked, against the system's CAs or the PEM file ``ssl_ca_certs`` names. User
and password are percent-decoded (``%40`` for an ``@`` in a user name).

Pure and stdlib only: the configuration checks a URL with it before anything connects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

PORTS = {"smtp": 587, "smtps": 465}
OPTIONS = ("starttls", "ssl_ca_certs", "timeout")


@dataclass(frozen=True)
class SmtpUrl:
    host: str
    port: int
    implicit_tls: bool  # smtps://
    starttls_required: bool  # smtp://…?starttls=required
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    timeout: float = 30.0

    @property
    def shown(self) -> str:
        """The URL without its password, for status and logs."""
        user = f"{self.username}@" if self.username else ""
        query = "?starttls=required" if self.starttls_required else ""
        return f"{'smtps' if self.implicit_tls else 'smtp'}://{user}{self.host}:{self.port}{query}"


def parse(url: str) -> SmtpUrl:
    """The parts of an SMTP URL; ValueError with a short reason naming what is wrong."""
    parts = urlsplit(url.strip())
    if parts.scheme not in PORTS:
        shown = f"scheme {parts.scheme}://" if parts.scheme else "no scheme"
        raise ValueError(f"must be an smtp:// (STARTTLS when offered) or smtps:// (implicit TLS) URL such as "
                         f"smtp://user:pass@mail.example.com:587, not {shown}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ValueError("has a port that is not a number between 1 and 65535") from None
    if not host:
        raise ValueError("names no host: smtp://user:pass@host:587")
    if parts.path not in ("", "/"):
        raise ValueError(f"has a path ({parts.path}); an SMTP URL is scheme://user:pass@host:port?options")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = [k for k in query if k not in OPTIONS]
    if unknown:
        raise ValueError(f"has an unknown option {unknown[0]!r}; options: {', '.join(OPTIONS)}")
    starttls = query.get("starttls", "")
    if starttls not in ("", "required"):
        raise ValueError("starttls must be required (or left out: STARTTLS whenever the server offers it)")
    if starttls and parts.scheme == "smtps":
        raise ValueError("starttls=required is for smtp://; smtps:// is TLS from the first byte")
    try:
        timeout = float(query.get("timeout", "30"))
    except ValueError:
        timeout = -1.0
    if not 0 < timeout <= 600:
        raise ValueError("timeout must be seconds between 0 and 600")
    return SmtpUrl(host, port or PORTS[parts.scheme], parts.scheme == "smtps", bool(starttls),
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password is not None else None,
                   query.get("ssl_ca_certs") or None, timeout)
