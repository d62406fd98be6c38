"""A real SMTP server on loopback for the email tests: aiosmtpd's ``Controller`` (its own thread and loop), with
STARTTLS or implicit TLS on a self-signed certificate made for the test, AUTH with a user and password, and a
script of answers to give before accepting."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support.redis_server import make_certificate

USER, PASSWORD = "relay", "s3cret pass"


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool  # the session was encrypted (STARTTLS or implicit TLS)
    login: str | None  # the user it authenticated as

    def parts(self) -> dict[str, str]:
        """content type -> decoded text of each leaf part."""
        return {p.get_content_type(): p.get_content() for p in self.message.walk() if not p.is_multipart()}


class Mailbox:
    """The handler: keeps every accepted message; ``script`` holds answers given to DATA before accepting."""

    def __init__(self) -> None:
        self.received: list[Mail] = []
        self.refused: list[str] = []  # the answers the script gave, in order
        self.script: list[str] = []
        self.lock = threading.Lock()
        self.hold = 0.0  # seconds each DATA is held before its answer, so sessions overlap
        self.active = 0  # sessions between DATA and its answer now, and the most there ever were
        self.most_active = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            if self.hold:
                await asyncio.sleep(self.hold)
            return self._answer(server, session, envelope)
        finally:
            with self.lock:
                self.active -= 1

    def _answer(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            if self.script:
                answer = self.script.pop(0)
                self.refused.append(answer)
                return answer
            message = email.message_from_bytes(envelope.original_content or envelope.content,
                                               policy=email.policy.default)
            login = session.auth_data if isinstance(session.auth_data, str) else None
            self.received.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), message,  # type: ignore[arg-type]
                                      session.ssl is not None or server.transport.get_extra_info("ssl_object")
                                      is not None, login))
        return "250 2.0.0 OK"

    def to(self, address: str) -> list[Mail]:
        with self.lock:
            return [m for m in self.received if address in m.rcpt_tos]


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == USER and \
        auth_data.password.decode() == PASSWORD
    return AuthResult(success=ok, handled=False, auth_data=auth_data.login.decode() if ok else None)


def tls_contexts(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """The server's context on a new self-signed certificate for 127.0.0.1, and the file a client trusts."""
    cert, key = make_certificate(directory)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx, cert


class SmtpServer:
    """``mode``: ``plain`` (no TLS offered), ``starttls`` (offered and required before MAIL) or ``tls`` (implicit).
    ``auth``: require AUTH with USER/PASSWORD. Stop and start again on the same port to take it down and back."""

    def __init__(self, directory: Path, mode: str = "plain", auth: bool = False, port: int = 0) -> None:
        self.mode, self.auth = mode, auth
        self.mailbox = Mailbox()
        self.port = port
        self.server_tls, self.ca_file = tls_contexts(directory) if mode != "plain" else (None, None)
        self.controller: Controller | None = None

    def start(self) -> SmtpServer:
        from tests.support.relay import free_port

        self.port = self.port or free_port()
        kwargs: dict[str, Any] = {}
        if self.mode == "starttls":
            kwargs.update(tls_context=self.server_tls, require_starttls=True)
        elif self.mode == "tls":
            kwargs.update(ssl_context=self.server_tls)
        if self.auth:
            kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=self.mode == "starttls")
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def url(self, user: str | None = None, password: str | None = None, query: str = "") -> str:
        from urllib.parse import quote

        scheme = "smtps" if self.mode == "tls" else "smtp"
        auth = f"{quote(user, safe='')}:{quote(password or '', safe='')}@" if user else ""
        options = [query] if query else []
        if self.ca_file is not None:
            options.append(f"ssl_ca_certs={self.ca_file}")
        return f"{scheme}://{auth}127.0.0.1:{self.port}" + ("?" + "&".join(options) if options else "")
