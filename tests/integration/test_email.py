"""Email alerts over real sockets: the daemon against the Alpaca simulator, mailing a real SMTP server on loopback
(aiosmtpd) with STARTTLS, implicit TLS or none, AUTH, the server down and back, a restart, give-ups, the rate
limit and its digest, who gets what, JWT users' remembered addresses, and a two-node cluster on redis-server."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import urllib.request
from pathlib import Path

import jwt
import pytest

from tests.integration.test_accounts import KEYS, accounts_file, sim2  # noqa: F401  (sim2 is a fixture)
from tests.integration.test_cluster import cluster, leader
from tests.integration.test_ops import TS, assert_one_line, clean_env, empty_env_file, run
from tests.support.redis_server import REDIS_SERVER, RedisServer
from tests.support.relay import FAST, Browser, relay_config, running, wait_until
from tests.support.smtp import PASSWORD, USER, Mail, SmtpServer
from trade_stream.edges.identity import UserRecord, hash_token, new_token, write_users

pytestmark = pytest.mark.timeout(60)
TIMINGS = dataclasses.replace(FAST, webhook_backoff=0.05, webhook_backoff_max=0.2, webhook_wait_min=0.01)
FROM = "Trade Stream <alerts@example.com>"
JWT_SECRET = "jwt-secret-for-tests-0123456789abcdef"


@pytest.fixture
def smtp(tmp_path, request):
    """A server in the mode the test's ``mode`` mark names (default STARTTLS with AUTH)."""
    marker = request.node.get_closest_marker("smtp")
    mode, auth = marker.args if marker else ("starttls", True)
    server = SmtpServer(tmp_path / "smtp", mode, auth).start()
    yield server
    server.stop()


def users_file(tmp_path: Path, users: dict[str, tuple[tuple[str, ...], str]]) -> str:
    """name -> (accounts, email)."""
    path = tmp_path / "users.toml"
    records = []
    for name, (accounts, address) in users.items():
        token_id, token = new_token()
        records.append(UserRecord(name, hash_token(token), accounts, token_id=token_id, email=address))
    write_users(str(path), records)
    return str(path)


def email_config(sim, tmp_path, url: str, **overrides):
    values = {"timings": TIMINGS, "smtp_url": url, "smtp_from": FROM, **overrides}
    if "users_file" not in values:
        values["users_file"] = users_file(tmp_path, {"alice": (("*",), "alice@example.com")})
    return relay_config(sim, tmp_path / "state", **values)


async def up(app):
    await wait_until(lambda: app.relay.sources.default.upstream.connected
                     and all(t.connected for t in app.tradings.values()), what="the streams up")


def status(app) -> dict:
    return app.status()["email"]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


async def fill(sim, qty: int = 10, price: float = 99.5, **kw) -> dict:
    order = sim.submit_order("AAPL", "buy", qty, **kw)
    sim.fill_order(order["id"], price=price)
    return order


async def settled(app, sent: int) -> None:
    """``sent`` accepted by the server as the daemon counts it, and nothing left pending."""
    await wait_until(lambda: status(app)["sent"] == sent and status(app)["pending"] == 0, timeout=20,
                     what=f"{sent} sent, none pending")


def assert_fill_mail(mail: Mail, message: str = "Buy 10 AAPL filled at $99.50") -> None:
    m = mail.message
    assert m["Subject"] == f"Trade Stream: {message}"
    assert m["From"] == FROM and m["To"] == "alice@example.com" and mail.rcpt_tos == ["alice@example.com"]
    assert mail.mail_from == "alerts@example.com"
    assert m["Message-ID"].endswith("@trade-stream>") and m["X-Trade-Stream-Event"] == "order_filled"
    parts = mail.parts()
    assert set(parts) == {"text/plain", "text/html"}
    assert parts["text/plain"].startswith(message) and "Symbol: AAPL" in parts["text/plain"]
    assert f"<h3>{message}</h3>" in parts["text/html"] and "<th align=\"left\">Symbol</th><td>AAPL</td>" in \
        parts["text/html"]


@pytest.mark.parametrize("mode", ["starttls", "tls", "plain"])
async def test_a_fill_mails_the_user_one_message_with_both_parts(sim, tmp_path, mode):
    """STARTTLS (the server requires it before MAIL), implicit TLS, or a server that offers no TLS: the same one
    message, authenticated with the URL's user and password; the order's acceptance is not mailed (bell only)."""
    server = SmtpServer(tmp_path / "smtp", mode, auth=True).start()
    try:
        async with running(email_config(sim, tmp_path, server.url(USER, PASSWORD))) as app:
            await up(app)
            await fill(sim)
            await settled(app, 1)
            metrics = await asyncio.to_thread(scrape, app.port)
            assert "trade_stream_email_sent_total 1.0" in metrics and "trade_stream_email_pending 0.0" in metrics
            assert app.status()["channels"]["email"] == {"sent": 1, "failed": 0, "pending": 0, "given_up": 0,
                                                         "last_error": None}
            assert 'trade_stream_channel_sent_total{channel="email"} 1.0' in metrics
            view = status(app)
            assert (view["failed"], view["given_up"], view["server"]) == (
                0, 0, f"{'smtps' if mode == 'tls' else 'smtp'}://{USER}@127.0.0.1:{server.port}")
        (mail,) = server.mailbox.received
        assert_fill_mail(mail)
        assert mail.tls is (mode != "plain") and mail.login == USER
    finally:
        server.stop()


@pytest.mark.smtp("plain", False)
async def test_starttls_required_refuses_a_server_without_it_and_says_so(sim, tmp_path, smtp, caplog):
    caplog.set_level(logging.WARNING, "trade_stream")
    async with running(email_config(sim, tmp_path, smtp.url(query="starttls=required"))) as app:
        await up(app)
        await fill(sim)
        await wait_until(lambda: status(app)["failed"] >= 2, timeout=20, what="attempts refused")
        assert status(app)["pending"] == 1 and "STARTTLS" in status(app)["last_error"]
    assert smtp.mailbox.received == []  # nothing went out in the clear
    assert "email_retry target=alice" in caplog.text and "does not offer STARTTLS" in caplog.text


@pytest.mark.smtp("starttls", True)
async def test_an_untrusted_certificate_is_not_mailed_to(sim, tmp_path, smtp):
    """STARTTLS offered, but the certificate is not one the daemon trusts (no ssl_ca_certs): retried, not sent."""
    url = smtp.url(USER, PASSWORD).split("?")[0]
    async with running(email_config(sim, tmp_path, url)) as app:
        await up(app)
        await fill(sim)
        await wait_until(lambda: status(app)["failed"] >= 2, timeout=20, what="attempts refused")
        assert "CERTIFICATE_VERIFY_FAILED" in status(app)["last_error"]
    assert smtp.mailbox.received == []


@pytest.mark.smtp("starttls", True)
async def test_the_server_down_is_retried_and_the_outbox_survives_a_restart(sim, tmp_path, smtp):
    cfg = email_config(sim, tmp_path, smtp.url(USER, PASSWORD))
    smtp.stop()
    async with running(cfg) as app:
        await up(app)
        await fill(sim)
        await wait_until(lambda: status(app)["failed"] >= 2, timeout=20, what="the server refusing connections")
        smtp.start()  # back, on the same port
        await settled(app, 1)
        assert len(smtp.mailbox.received) == 1
        smtp.stop()
        await fill(sim, 3, 50)
        await wait_until(lambda: status(app)["failed"] >= 4 and status(app)["pending"] == 1, timeout=20,
                         what="the second waiting")
    smtp.start()
    async with running(cfg) as app:  # a new daemon on the same state directory
        await settled(app, 1)
    first, second = smtp.mailbox.received
    assert_fill_mail(first)
    assert_fill_mail(second, "Buy 3 AAPL filled at $50.00")


@pytest.mark.smtp("plain", False)
async def test_a_5xx_is_given_up_at_once_and_a_4xx_after_the_deadline(sim, tmp_path, smtp, caplog):
    smtp.mailbox.script = ["550 5.1.1 no such mailbox"]
    timings = dataclasses.replace(TIMINGS, webhook_give_up=1.0)
    async with running(email_config(sim, tmp_path, smtp.url(), timings=timings)) as app:
        await up(app)
        await fill(sim)
        await wait_until(lambda: status(app)["given_up"] == 1, timeout=20, what="the 550 given up")
        assert smtp.mailbox.refused == ["550 5.1.1 no such mailbox"]  # once: not retried
        smtp.mailbox.script = ["451 4.3.0 try again later"] * 10_000
        await fill(sim, 2, 20)
        await wait_until(lambda: status(app)["given_up"] == 2, timeout=20, what="the 451s given up")
        view = status(app)
        assert view["pending"] == 0 and view["sent"] == 0 and len(smtp.mailbox.refused) >= 3
        assert view["last_error"] == "alice: SMTP 451: 4.3.0 try again later"
        metrics = await asyncio.to_thread(scrape, app.port)
        assert "trade_stream_email_given_up_total 2.0" in metrics
    assert smtp.mailbox.received == []
    assert caplog.text.count("email_failed target=alice") == 2 and "gave up after" in caplog.text


@pytest.mark.smtp("plain", False)
async def test_over_the_rate_limit_the_rest_arrive_as_one_digest(sim, tmp_path, smtp):
    """Two per window: the first two fills one message each, the next three held, then one digest of all three
    once the window has room, and nothing lost or sent twice."""
    cfg = email_config(sim, tmp_path, smtp.url(), email_rate_limit=2, email_rate_window=3)
    async with running(cfg) as app:
        await up(app)
        for i in range(5):
            await fill(sim, i + 1, 10)
        await wait_until(lambda: len(smtp.mailbox.received) == 3, timeout=30, what="two messages and a digest")
        await settled(app, 5)
        view = status(app)
        assert view["digests"] == 1 and view["rate_limited"] >= 1 and view["given_up"] == 0
    one, two, digest = smtp.mailbox.received
    assert [one.message["Subject"], two.message["Subject"]] == ["Trade Stream: Buy 1 AAPL filled at $10.00",
                                                                "Trade Stream: Buy 2 AAPL filled at $10.00"]
    assert digest.message["Subject"] == "Trade Stream: 3 notifications (digest)"
    text, page = digest.parts()["text/plain"], digest.parts()["text/html"]
    lines = [f"Buy {n} AAPL filled at $10.00" for n in (3, 4, 5)]
    assert [text.index(line) for line in lines] == sorted(text.index(line) for line in lines)  # oldest first
    assert all(f"<h3>{line}</h3>" in page for line in lines)


async def test_a_user_who_does_not_see_the_account_gets_nothing(sim2, tmp_path):  # noqa: F811
    """alice sees paper, bob live; carol is a JWT user whose token named paper and carried an email claim, and
    who is offline when the fill comes."""
    server = SmtpServer(tmp_path / "smtp", "plain", False).start()
    try:
        users = users_file(tmp_path, {"alice": (("paper",), "alice@example.com"),
                                      "bob": (("live",), "bob@example.com")})
        cfg = relay_config(sim2, tmp_path / "state", accounts=accounts_file(sim2, tmp_path), users_file=users,
                           jwt_secret=JWT_SECRET, api_key=KEYS["paper"][0], secret_key=KEYS["paper"][1],
                           timings=TIMINGS, smtp_url=server.url(), smtp_from=FROM)
        async with running(cfg) as app:
            await up(app)
            token = jwt.encode({"sub": "carol", "accounts": ["paper"], "email": "carol@example.com",
                                "exp": int(time.time()) + 600}, JWT_SECRET, algorithm="HS256")
            async with Browser.connect(app.port) as browser:
                await browser.send({"action": "auth", "token": token})
                await browser.expect("authenticated")
            await fill(sim2, key=KEYS["paper"][0])
            await settled(app, 2)
            assert status(app)["addresses_remembered"] == 1
        assert sorted(m.rcpt_tos[0] for m in server.mailbox.received) == ["alice@example.com", "carol@example.com"]
        async with running(cfg) as app:  # carol's address was kept: she still gets her alerts after a restart
            await up(app)
            await fill(sim2, 2, key=KEYS["paper"][0])
            await fill(sim2, 3, key=KEYS["live"][0])
            await settled(app, 3)
        later = sorted((m.rcpt_tos[0], m.message["Subject"]) for m in server.mailbox.received[2:])
        assert later == [("alice@example.com", "Trade Stream: Buy 2 AAPL filled at $99.50"),
                         ("bob@example.com", "Trade Stream: Buy 3 AAPL filled at $99.50"),
                         ("carol@example.com", "Trade Stream: Buy 2 AAPL filled at $99.50")]
    finally:
        server.stop()


@pytest.mark.smtp("plain", False)
async def test_a_user_who_turned_email_off_for_fills_gets_none(sim, tmp_path, smtp):
    users = users_file(tmp_path, {"alice": (("*",), "alice@example.com"), "dave": (("*",), "dave@example.com")})
    async with running(email_config(sim, tmp_path, smtp.url(), users_file=users)) as app:
        await up(app)
        await app.parts.preferences.update("dave", {"fills": frozenset({"bell"})})  # as the REST PUT does
        order = sim.submit_order("AAPL", "buy", 10, type="limit", limit_price=100)
        sim.reject_order(order["id"])
        await fill(sim)
        await settled(app, 3)  # alice: the rejection and the fill; dave: the rejection only
    got = sorted((m.rcpt_tos[0], m.message["X-Trade-Stream-Event"]) for m in smtp.mailbox.received)
    assert got == [("alice@example.com", "order_filled"), ("alice@example.com", "order_rejected"),
                   ("dave@example.com", "order_rejected")]


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed (tests/run.sh installs it)")
@pytest.mark.smtp("plain", False)
async def test_a_two_node_cluster_sends_one_email_not_two(sim, tmp_path, smtp):
    """alice is in the users file; carol is a JWT user who connected to the follower only: the leader mails each
    of them once (carol's address reached it through Redis), the follower mails nobody."""
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        users = users_file(tmp_path, {"alice": (("*",), "alice@example.com")})
        async with cluster(sim, tmp_path, [redis.url] * 2, timings=TIMINGS, smtp_url=smtp.url(), smtp_from=FROM,
                           users_file=users, jwt_secret=JWT_SECRET) as apps:
            sender = leader(apps)
            assert sender is not None
            other = next(a for a in apps if a is not sender)
            token = jwt.encode({"sub": "carol", "accounts": ["default"], "email": "carol@example.com",
                                "exp": int(time.time()) + 600}, JWT_SECRET, algorithm="HS256")
            async with Browser.connect(other.port) as browser:
                await browser.send({"action": "auth", "token": token})
                await browser.expect("authenticated")
            await wait_until(lambda: status(sender)["addresses_remembered"] == 1, what="carol known to the leader")
            await fill(sim)

            def done(app) -> bool:
                outbox = app.deliveries.outbox
                rows = outbox.db.execute("SELECT state FROM deliveries WHERE channel = 'email'").fetchall() \
                    if outbox is not None else []
                return len(rows) == 2 and all(r[0] != "pending" for r in rows)
            await wait_until(lambda: all(done(a) for a in apps), timeout=20, what="both nodes done with both")
            assert leader(apps) is sender
            assert (status(sender)["sent"], status(other)["sent"]) == (2, 0)
        assert sorted(m.rcpt_tos[0] for m in smtp.mailbox.received) == ["alice@example.com", "carol@example.com"]
        assert_fill_mail(next(m for m in smtp.mailbox.received if m.rcpt_tos == ["alice@example.com"]))
    finally:
        redis.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("env", "why"), [
    ({"TRADE_STREAM_SMTP_URL": "http://u:hunter2pass@mail.example:587"},
     "TRADE_STREAM_SMTP_URL=http://****@mail.example:587: must be an smtp:// (STARTTLS when offered) or smtps://"),
    ({"TRADE_STREAM_SMTP_URL": "smtp://mail.example:587?starttls=maybe"}, "starttls must be required"),
    ({"TRADE_STREAM_SMTP_URL": "smtp://mail.example:587"}, "TRADE_STREAM_SMTP_FROM is not set"),
    ({"TRADE_STREAM_SMTP_URL": "smtps://mail.example?ssl_ca_certs=/nonexistent/ca.pem",
      "TRADE_STREAM_SMTP_FROM": "a@b.example"}, "ssl_ca_certs=/nonexistent/ca.pem cannot be used"),
    ({"TRADE_STREAM_SMTP_URL": "smtp://mail.example", "TRADE_STREAM_SMTP_FROM": "a@b.example, c@d.example"},
     "TRADE_STREAM_SMTP_FROM='a@b.example, c@d.example': must be one address"),
])
def test_bad_email_settings_stop_the_start_with_one_line(tmp_path, env, why):
    result = run([str(TS), "--demo", "--env-file", empty_env_file(tmp_path)], cwd=tmp_path,
                 env=clean_env(tmp_path, **env))
    line = assert_one_line(result.stderr)
    assert result.returncode == 2 and why in line and "hunter2pass" not in line, line


def test_user_add_writes_the_address_and_refuses_a_bad_one(tmp_path):
    path = tmp_path / "users.toml"
    env = clean_env(tmp_path, TRADE_STREAM_USERS_FILE=str(path))
    added = run([str(TS), "user", "add", "erin", "--accounts", "*", "--email", "erin@example.com"], cwd=tmp_path,
                env=env)
    assert added.returncode == 0, added.stderr
    assert 'email = "erin@example.com"' in path.read_text()
    listed = run([str(TS), "user", "list"], cwd=tmp_path, env=env)
    assert "erin\taccounts=*\tadmin=no\temail=erin@example.com" in listed.stdout
    bad = run([str(TS), "user", "add", "frank", "--accounts", "*", "--email", "frank@example.com\nBcc: x@y.z"],
              cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "is not one address" in assert_one_line(bad.stderr)
    assert "frank" not in path.read_text()


@pytest.mark.smtp("plain", False)
async def test_the_smtp_server_down_holds_up_no_webhook(sim, tmp_path, smtp):
    """One outbox, separate lanes: with the mail server gone, webhooks are delivered as ever, and email waits."""
    from tests.integration.test_webhooks import targets
    from tests.support.receiver import Receiver

    receiver = await Receiver().start()
    try:
        smtp.stop()
        cfg = email_config(sim, tmp_path, smtp.url(), webhooks=targets(("desk", receiver)))
        async with running(cfg) as app:
            await up(app)
            await fill(sim)
            await wait_until(lambda: app.status()["webhooks"]["desk"]["delivered"] == 2 and status(app)["failed"] >= 3,
                             timeout=20, what="webhooks delivered while email fails")
            channels = app.status()["channels"]
            assert channels["webhooks"]["sent"] == 2 and channels["webhooks"]["pending"] == 0
            assert channels["email"]["sent"] == 0 and channels["email"]["pending"] == 1
            smtp.start()
            await settled(app, 1)
        assert len(smtp.mailbox.received) == 1 and len(receiver.acked()) == 2
    finally:
        await receiver.stop()


@pytest.mark.smtp("plain", False)
async def test_a_fill_for_many_users_opens_at_most_four_smtp_sessions_at_once(sim, tmp_path, smtp):
    smtp.mailbox.hold = 0.3  # each answer waits, so sessions that may overlap do
    users = users_file(tmp_path, {f"u{i}": (("*",), f"u{i}@example.com") for i in range(10)})
    async with running(email_config(sim, tmp_path, smtp.url(), users_file=users)) as app:
        await up(app)
        await fill(sim)
        await settled(app, 10)
    assert sorted(m.rcpt_tos[0] for m in smtp.mailbox.received) == sorted(f"u{i}@example.com" for i in range(10))
    assert 1 < smtp.mailbox.most_active <= 4
