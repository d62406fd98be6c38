"""Email alerts: each notification a user wants by email becomes one message to their address (aiosmtplib).

The email channel of the outbox (delivery.py: durable, retried with backoff, given up, bounded, sent by the
cluster's leader only). A lane per user, one message at a time, in order; so a user whose mailbox refuses
mail, or a rate-limited user, holds up nobody else, and the SMTP server down holds up no other channel. At most
``SESSIONS`` SMTP sessions are open at once, whatever the number of users a notification is for.

Who gets a notification: the users it is for (core/notifier.py ``recipients``: the users file's users who see
its account, or the users it names) who want its kind by email (core/preferences.py), plus the JWT users whose
latest token named its account (core/addresses.py), by the same preferences; each at the address the users
file gives (``email = "…"``), else the ``email`` claim of their latest JWT. A user without an address gets none.

A message has a plain-text and an HTML part (every value escaped), ``Subject: Trade Stream: <the sentence>``,
and a ``Message-ID`` derived from the delivery id, so the copy a new leader sends again after a crash is the
same message to any mail system that deduplicates.

Rate limit and digest: at most ``rate_limit`` messages per user in any ``rate_window`` seconds. A notification
beyond it is held in the outbox (not attempted, not lost), and when the window has room again the user gets one
digest of everything held, oldest first, at most ``DIGEST_MAX`` in one message (the rest in the next one, the
window allowing). The window is kept in memory by the node that sends: a restart or a new leader starts it
empty, so a user may get up to one window's worth more after one; nothing held is lost, since the rows are.

SMTP answers: 2xx is sent. A 5xx (a refused recipient, a refused sender, failed authentication) is given up at
once: sending it again would get the same answer. Everything else (4xx, connection refused, a timeout, TLS that
does not verify, a server without STARTTLS under ``?starttls=required``) is retried with the outbox's backoff.
"""

from __future__ import annotations

import asyncio
import html
import logging
import ssl
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formatdate, parseaddr
from typing import Any

import aiosmtplib
import orjson

from trade_stream.config import Timings
from trade_stream.core.addresses import AddressStore
from trade_stream.core.notifications import kind_of
from trade_stream.edges.delivery import Deliveries, Outcome, Retry, nothing_held
from trade_stream.edges.outbox import Delivery, Row
from trade_stream.records.smtp_url import SmtpUrl

log = logging.getLogger("trade_stream.edges.mail")

EMAIL = "email"
DIGEST_MAX = 50  # notifications in one digest; more wait for the next
SESSIONS = 4  # SMTP sessions open at once, all users together: a fill for a thousand users is no flood
HIDDEN_FIELDS = ("read", "unread", "source", "users")
#: The namespace of email delivery ids: uuid5 of the notification and the user.
DELIVERY_NAMESPACE = uuid.UUID("0b8e7f7c-5d0c-4a51-8c4e-7a0f3f2b9d11")
SHOWN_FIELDS = (("symbol", "Symbol"), ("action", "Side"), ("quantity", "Quantity"), ("fill_price", "Price"),
                ("status", "Status"), ("reason", "Reason"), ("account", "Account"), ("timestamp", "Time"))


def delivery_id_of(note: dict[str, Any], user: str) -> str:
    """The same for the same notification (its ``source``, the same on every node) and user."""
    return str(uuid.uuid5(DELIVERY_NAMESPACE, f"{note.get('account')}/{note['source']}/{EMAIL}/{user}"))


# --- the message: pure ----------------------------------------------------------------------------------------


def subject_of(notes: list[dict[str, Any]]) -> str:
    if len(notes) == 1:
        text = " ".join(str(notes[0].get("message") or notes[0].get("type") or "notification").split())
        return f"Trade Stream: {text[:150]}"
    return f"Trade Stream: {len(notes)} notifications (digest)"


def _details(note: dict[str, Any]) -> list[tuple[str, str]]:
    return [(label, str(note[key])) for key, label in SHOWN_FIELDS if note.get(key) not in (None, "")]


def text_body(notes: list[dict[str, Any]], to: str) -> str:
    lines: list[str] = []
    if len(notes) > 1:
        lines += [f"{len(notes)} notifications arrived faster than the email rate limit allows; here they are "
                  "together, oldest first.", ""]
    for note in notes:
        lines.append(str(note.get("message") or ""))
        lines += [f"  {label}: {value}" for label, value in _details(note)]
        lines.append("")
    lines += ["-- ", f"Sent by trade-stream to {to}. Choose what you get by email in the page's notification "
              "preferences."]
    return "\n".join(lines) + "\n"


def html_body(notes: list[dict[str, Any]], to: str) -> str:
    e = html.escape
    parts = ['<!doctype html><html><body style="font-family:sans-serif">']
    if len(notes) > 1:
        parts.append(f"<p>{len(notes)} notifications arrived faster than the email rate limit allows; here they "
                     "are together, oldest first.</p>")
    for note in notes:
        rows = "".join(f"<tr><th align=\"left\">{e(label)}</th><td>{e(value)}</td></tr>"
                       for label, value in _details(note))
        parts.append(f"<h3>{e(str(note.get('message') or ''))}</h3><table>{rows}</table>")
    parts.append(f"<p style=\"color:#666\">Sent by trade-stream to {e(to)}. Choose what you get by email in the "
                 "page's notification preferences.</p></body></html>")
    return "".join(parts)


def compose(mail_from: str, to: str, notes: list[dict[str, Any]], delivery_id: str, now: float) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = mail_from
    msg["To"] = to
    msg["Subject"] = subject_of(notes)
    msg["Date"] = formatdate(now, usegmt=True)
    msg["Message-ID"] = f"<{delivery_id}@trade-stream>"
    msg["X-Trade-Stream-Event"] = str(notes[0].get("type") if len(notes) == 1 else "digest")
    msg.set_content(text_body(notes, to))
    msg.add_alternative(html_body(notes, to), subtype="html")
    return msg


class RateWindow:
    """At most ``limit`` sends per user in any ``window`` seconds. Pure: the caller gives the time. Holds only
    the users sent to within the last window, at most ``limit`` times each."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._sent: dict[str, deque[float]] = {}

    def free_at(self, user: str, now: float) -> float | None:
        """None when ``user`` may be sent to now, else when they may be next."""
        stamps = self._sent.get(user)
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        if not stamps:
            self._sent.pop(user, None)
            return None
        return None if len(stamps) < self.limit else stamps[0] + self.window

    def record(self, user: str, now: float) -> None:
        self._sent.setdefault(user, deque(maxlen=self.limit)).append(now)


# --- who gets it ------------------------------------------------------------------------------------------------


class Recipients:
    """The (user, address) pairs a notification goes to by email."""

    def __init__(self, notifier: Any, identity: Any, book: AddressStore) -> None:
        self.notifier = notifier  # core/notifier.py: recipients(note, channel), preferences
        self.identity = identity  # edges/identity.py: users() (the users file, re-read when it changes)
        self.book = book

    def __call__(self, note: dict[str, Any]) -> list[tuple[str, str]]:
        names = list(self.notifier.recipients(note, EMAIL))
        account = note.get("account")
        if note.get("users") is None and account is not None:
            prefs = self.notifier.preferences
            kind = str(note.get("kind") or kind_of(str(note.get("type"))))
            names += [u for u in self.book.seeing(account) if u not in names
                      and (prefs is None or prefs.wants(u, kind, EMAIL))]
        configured = {u.name: u.email for u in self.identity.users()}
        out = []
        for name in names:
            address = configured.get(name) or self.book.address(name)
            if address:
                out.append((name, address))
        return out


# --- the channel ------------------------------------------------------------------------------------------------


class EmailSender:
    """The email channel: a lane per user (opened while it has pending rows), one message at a time."""

    channel = EMAIL
    concurrency = 1
    targets: tuple[str, ...] | None = None

    def __init__(self, url: SmtpUrl, mail_from: str, recipients: Callable[[dict[str, Any]], list[tuple[str, str]]],
                 timings: Timings, rate_limit: int, rate_window: float) -> None:
        self.url = url
        self.mail_from = mail_from
        self.envelope_from = parseaddr(mail_from)[1]
        self.recipients = recipients
        self.retry = Retry(timings.webhook_backoff, timings.webhook_backoff_max, timings.webhook_wait_min,
                           timings.webhook_give_up)
        self.window = RateWindow(rate_limit, rate_window)
        self.held: set[str] = set()  # users with notifications held by the rate limit: their next is a digest
        self.digests = 0
        self.last_error: str | None = None
        self.deliveries: Deliveries | None = None  # set by bind: the outbox a digest gathers its rows from
        self._tls = ssl.create_default_context(cafile=url.ca_file)
        self._sessions = asyncio.Semaphore(SESSIONS)

    def bind(self, deliveries: Deliveries) -> None:
        self.deliveries = deliveries

    def rows(self, note: dict[str, Any]) -> list[Row]:
        body = {k: v for k, v in note.items() if k not in HIDDEN_FIELDS}
        out = []
        for user, address in self.recipients(note):
            out.append(Row(delivery_id_of(note, user), user, user, str(note.get("type") or "order_other"),
                           orjson.dumps({"to": address, "note": body}), EMAIL))
        return out

    def session(self) -> Any:
        return nothing_held()

    def _gathered(self, row: Delivery) -> list[Delivery]:
        """The head and what the rate limit held behind it, up to DIGEST_MAX."""
        outbox = self.deliveries.outbox if self.deliveries is not None else None
        rows = outbox.queued(row.target, row.order_key, DIGEST_MAX, channel=EMAIL) if outbox is not None else []
        return rows if rows and rows[0].id == row.id else [row]

    async def send(self, row: Delivery) -> Outcome:
        user, now = row.target, time.time()
        free_at = self.window.free_at(user, now)
        if free_at is not None:
            self.held.add(user)
            return Outcome.defer(free_at, f"rate limit: {self.window.limit} per {self.window.window:g} s; held "
                                          "for a digest")
        rows = self._gathered(row) if user in self.held else [row]
        bodies = [orjson.loads(r.body) for r in rows]
        to = bodies[0]["to"]
        message = compose(self.mail_from, to, [b["note"] for b in bodies], row.delivery_id, now)
        outcome = await self._deliver(message, to)
        if outcome.delivered:
            self.window.record(user, now)
            if len(rows) < DIGEST_MAX:
                self.held.discard(user)
            if len(rows) > 1:
                self.digests += 1
                log.info("email_digest user=%s notifications=%d", user, len(rows))
            return Outcome.ok(outcome.status, covers=tuple(rows[1:]))
        self.last_error = f"{user}: {outcome.error}"
        return outcome

    async def _deliver(self, message: EmailMessage, to: str) -> Outcome:
        url = self.url
        try:
            async with self._sessions, asyncio.timeout(url.timeout * 2):  # connecting, TLS, the exchange
                _, answer = await aiosmtplib.send(
                    message, sender=self.envelope_from, recipients=[to], hostname=url.host, port=url.port,
                    username=url.username, password=url.password, use_tls=url.implicit_tls,
                    start_tls=False if url.implicit_tls else (True if url.starttls_required else None),
                    tls_context=self._tls, timeout=url.timeout)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [e.code for e in exc.recipients]
            return Outcome.failed(f"recipient refused: {'; '.join(f'{e.code} {e.message}' for e in exc.recipients)}"
                                  [:300], codes[0] if codes else None, not all(500 <= c < 600 for c in codes))
        except aiosmtplib.SMTPResponseException as exc:
            return Outcome.failed(f"SMTP {exc.code}: {exc.message}"[:300], exc.code, not 500 <= exc.code < 600)
        except aiosmtplib.SMTPException as exc:
            if url.starttls_required and "starttls" in str(exc).lower():
                return Outcome.failed("the server does not offer STARTTLS and TRADE_STREAM_SMTP_URL says "
                                      "?starttls=required: nothing sent")
            return Outcome.failed(f"{type(exc).__name__}: {exc}"[:300])
        except (OSError, TimeoutError) as exc:
            return Outcome.failed(f"{type(exc).__name__}: {exc}"[:300] if str(exc) else
                                  f"timeout after {url.timeout * 2:g} s")
        log.debug("email_accepted to=%s answer=%s", to, answer)
        return Outcome.ok(250)


class Email:
    """What the rest of the daemon sees of email: the channel's status and metrics, over the outbox's lanes."""

    def __init__(self, sender: EmailSender, deliveries: Deliveries, book: AddressStore) -> None:
        self.sender = sender
        self.deliveries = deliveries
        self.book = book

    def status(self) -> dict[str, Any]:
        lanes = self.deliveries.stats.get(EMAIL, {}).values()
        pending = self.deliveries.pending(EMAIL)
        last = max((s.last_delivered_at for s in lanes if s.last_delivered_at), default=None)
        return {"server": self.sender.url.shown, "from": self.sender.mail_from,
                "sent": sum(s.delivered for s in lanes), "failed": sum(s.errors for s in lanes),
                "given_up": sum(s.failed for s in lanes), "dropped": sum(s.dropped for s in lanes),
                "pending": sum(pending.values()), "users_pending": len(pending),
                "rate_limited": sum(s.deferred for s in lanes), "digests": self.sender.digests,
                "addresses_remembered": len(self.book),
                "last_error": self.sender.last_error,
                "last_sent_at": None if last is None else format_datetime(datetime.fromtimestamp(last, UTC))}

    def collector(self) -> Any:
        return _Collector(self)


class _Collector:
    """Prometheus families read at scrape time."""

    def __init__(self, email: Email) -> None:
        self.email = email

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        view = self.email.status()
        yield CounterMetricFamily("trade_stream_email_sent", "Email alerts the SMTP server accepted (a digest "
                                  "counts each notification in it)", value=view["sent"])
        yield CounterMetricFamily("trade_stream_email_failed", "Email attempts that failed (retried or not)",
                                  value=view["failed"])
        yield CounterMetricFamily("trade_stream_email_given_up", "Email alerts given up (an SMTP 5xx, past the "
                                  "retry deadline, or dropped over TRADE_STREAM_EMAIL_MAX_PENDING)",
                                  value=view["given_up"])
        yield CounterMetricFamily("trade_stream_email_digests", "Digests sent for users over the rate limit",
                                  value=view["digests"])
        yield GaugeMetricFamily("trade_stream_email_pending", "Email alerts waiting in the outbox (retrying or "
                                "held by the rate limit)", value=view["pending"])
