"""The pure parts of email alerts: the SMTP URL, addresses, the message (both parts, everything escaped) and the
per-user rate window."""

from __future__ import annotations

import email
import email.policy

import pytest

from trade_stream.edges.mail import RateWindow, compose, subject_of
from trade_stream.records.smtp_url import parse
from trade_stream.records.users import valid_email

pytestmark = pytest.mark.timeout(30)


def test_smtp_urls_and_what_is_wrong_with_them():
    url = parse("smtp://us%40er:p%3Ass@mail.example.com")
    assert (url.host, url.port, url.username, url.password, url.implicit_tls, url.starttls_required) == (
        "mail.example.com", 587, "us@er", "p:ss", False, False)
    assert url.shown == "smtp://us@er@mail.example.com:587" and "p:ss" not in repr(url)
    assert parse("smtps://mail.example.com").port == 465 and parse("smtps://mail.example.com").implicit_tls
    strict = parse("smtp://mail.example.com:2525?starttls=required&ssl_ca_certs=/etc/ca.pem&timeout=5")
    assert (strict.port, strict.starttls_required, strict.ca_file, strict.timeout) == (2525, True, "/etc/ca.pem", 5)
    for bad, why in [("http://mail.example.com", "not scheme http://"), ("smtp://", "names no host"),
                     ("smtp://h:99999", "port"), ("smtp://h/x", "has a path"), ("smtp://h?tls=1", "unknown option"),
                     ("smtps://h?starttls=required", "is for smtp://"), ("smtp://h?starttls=yes", "must be required"),
                     ("smtp://h?timeout=0", "timeout")]:
        with pytest.raises(ValueError, match=why):
            parse(bad)


def test_an_address_is_one_plain_address():
    assert valid_email("alice@example.com") and valid_email("a.b+tag@mail.example.co.uk")
    for bad in ["alice", "alice@", "@example.com", "Alice <alice@example.com>", "a@b.com, c@d.com",
                "alice@example.com\r\nBcc: eve@example.com", "a b@example.com", "a@example.com" + "m" * 250, 42]:
        assert not valid_email(bad), bad


NOTE = {"type": "order_filled", "message": "Buy 10 <b>AAPL</b> filled at $99.50", "symbol": "AAPL",
        "action": "BUY", "quantity": "10", "fill_price": "99.5", "account": "default",
        "reason": "<script>alert(1)</script>", "timestamp": "2026-12-01T15:00:00Z"}


def test_a_message_has_a_text_and_an_html_part_with_everything_escaped():
    msg = compose("Trade Stream <alerts@example.com>", "alice@example.com", [NOTE], "d-1", 0)
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "Trade Stream: Buy 10 <b>AAPL</b> filled at $99.50"  # a header is text
    assert parsed["Message-ID"] == "<d-1@trade-stream>" and parsed["To"] == "alice@example.com"
    parts = {p.get_content_type(): p.get_content() for p in parsed.walk() if not p.is_multipart()}
    assert set(parts) == {"text/plain", "text/html"}
    assert "Reason: <script>alert(1)</script>" in parts["text/plain"]
    page = parts["text/html"]
    assert "<script>" not in page and "<b>AAPL" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "Buy 10 &lt;b&gt;AAPL&lt;/b&gt;" in page


def test_a_subject_is_one_line_and_a_digest_says_how_many():
    assert subject_of([{**NOTE, "message": "line one\r\nBcc: eve@example.com"}]) == \
        "Trade Stream: line one Bcc: eve@example.com"
    assert subject_of([NOTE, NOTE, NOTE]) == "Trade Stream: 3 notifications (digest)"


def test_the_rate_window_allows_the_limit_per_window_per_user():
    window = RateWindow(2, 60)
    assert window.free_at("a", 0) is None
    window.record("a", 0)
    window.record("a", 10)
    assert window.free_at("a", 20) == 60 and window.free_at("b", 20) is None  # full for a, not for b
    assert window.free_at("a", 60) is None  # the first send left the window
    window.record("a", 60)
    assert window.free_at("a", 61) == 70
    assert window.free_at("a", 200) is None and window._sent == {}  # an idle user is forgotten


def test_the_readme_settings_load_as_written(tmp_path):
    """Each TRADE_STREAM_SMTP_URL line of README's example, with its From, through the configuration's loading."""
    import argparse
    import shlex

    from tests.support.docs import block, commands
    from tests.support.redis_server import make_certificate
    from trade_stream import config

    lines = [shlex.split(c)[0].split("=", 1) for c in commands(block("README.md", "email-env"))]
    froms = [v for k, v in lines if k == "TRADE_STREAM_SMTP_FROM"]
    urls = [v for k, v in lines if k == "TRADE_STREAM_SMTP_URL"]
    assert len(froms) == 1 and len(urls) == 3 and sum("/etc/trade-stream/mail-ca.pem" in u for u in urls) == 1
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    empty = tmp_path / "empty.env"  # a developer's own .env must not leak in
    empty.write_text("")
    ca, _ = make_certificate(tmp_path / "ca")  # the CA file the example names, made here so it loads
    for url in (u.replace("/etc/trade-stream/mail-ca.pem", str(ca)) for u in urls):
        args = parser.parse_args(["--demo", "--env-file", str(empty), "--state-dir", str(tmp_path)])
        cfg = config.load(args, {"TRADE_STREAM_SMTP_URL": url, "TRADE_STREAM_SMTP_FROM": froms[0]}, tmp_path)
        assert cfg.smtp_url == url and cfg.smtp_from == "Trade Stream <alerts@example.com>"
        assert "app-password" not in str(cfg.public_view()) and "pw@" not in str(cfg.public_view())
