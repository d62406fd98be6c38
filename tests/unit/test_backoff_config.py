"""Backoff policy and configuration loading."""

import argparse
import random
import re

import pytest

from trade_stream import config
from trade_stream.config import ConfigError, Timings
from trade_stream.upstream.backoff import Backoff, Failure


def test_backoff_doubles_with_equal_jitter_and_caps():
    b = Backoff(Timings(reconnect_min=1, reconnect_max=30), random.Random(1))
    caps = [1, 2, 4, 8, 16, 30, 30]
    for cap in caps:
        assert cap / 2 <= b.delay() <= cap
    b.reset()
    assert b.delay() <= 1


def test_backoff_special_failures_wait_longer():
    t = Timings(conn_limit_wait=90, rate_limited_wait=60, config_error_wait=120)
    assert Backoff(t).delay(Failure.CONNECTION_LIMIT) >= 90
    assert Backoff(t).delay(Failure.RATE_LIMITED) >= 60
    assert Backoff(t).delay(Failure.CONFIG) >= 120


def parse(argv, env=None, tmp_path=None):
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return config.load(parser.parse_args(argv), env or {}, cwd=tmp_path)


def test_missing_credentials_mentions_demo(tmp_path):
    with pytest.raises(ConfigError, match="--demo"):
        parse([], {}, tmp_path)


def test_precedence_cli_over_env_over_dotenv(tmp_path):
    (tmp_path / ".env").write_text("ALPACA_API_KEY=filekey\nALPACA_SECRET_KEY=filesecret\nTRADE_STREAM_PORT=1\n"
                                   "TRADE_STREAM_LINGER=9\n")
    cfg = parse(["--port", "3"], {"TRADE_STREAM_PORT": "2", "TRADE_STREAM_LINGER": "7"}, tmp_path)
    assert (cfg.api_key, cfg.port, cfg.linger) == ("filekey", 3, 7.0)


def test_bad_value_names_the_variable_and_masks_secrets(tmp_path):
    with pytest.raises(ConfigError, match="TRADE_STREAM_PORT='http'"):
        parse(["--demo"], {"TRADE_STREAM_PORT": "http"}, tmp_path)
    with pytest.raises(ConfigError, match="ALPACA_DATA_FEED"):
        parse(["--demo"], {"ALPACA_DATA_FEED": "nasdaq"}, tmp_path)


def test_derived_urls_and_generated_token(tmp_path):
    cfg = parse(["--demo"], {"ALPACA_DATA_FEED": "sip", "ALPACA_BASE_URL": "https://api.alpaca.markets"}, tmp_path)
    assert cfg.data_stream_url == "wss://stream.data.alpaca.markets/v2/sip"
    assert cfg.trading_stream_url == "wss://api.alpaca.markets/stream"
    assert cfg.token_generated and len(cfg.token) >= 24


def test_mask_keeps_last_four():
    assert config.mask("PKABCDEFGH1234") == "****1234"
    assert config.mask("short") == "****"
    assert "SECRETVALUE99" not in str(config.Config(secret_key="SECRETVALUE99").public_view())


def test_env_sample_lists_every_variable():
    text = config.env_sample()
    for s in config.SETTINGS:
        assert f"{s.env}=" in text


def test_readme_documents_every_variable_and_flag():
    readme = (config.REPO_ROOT / "README.md").read_text()
    for s in config.SETTINGS:
        assert f"`{s.env}`" in readme and f"`{s.flag}`" in readme, s.env


def test_redis_urls_one_server_or_sentinel_and_their_errors(tmp_path):
    """A Sentinel URL is parsed into its sentinels, master name and db; a broken one is a config error naming the
    setting and what to write; both passwords are masked wherever the URL is shown."""
    from trade_stream.records.redis_url import parse_sentinel

    url = "rediss+sentinel://:pw1@10.0.0.5:26380,10.0.0.6/mymaster/2?sentinel_password=pw2&ssl_ca_certs=/ca.pem"
    cfg = parse(["--demo"], {"TRADE_STREAM_REDIS_URL": url}, tmp_path)
    parsed = parse_sentinel(cfg.redis_url)
    assert parsed.sentinels == [("10.0.0.5", 26380), ("10.0.0.6", 26379)]
    assert (parsed.service, parsed.db, parsed.password, parsed.tls) == ("mymaster", 2, "pw1", True)
    assert parsed.options == {"ssl_ca_certs": "/ca.pem"} and parsed.sentinel_auth == {"password": "pw2"}
    shown = config.mask_url(cfg.redis_url)
    assert "pw1" not in shown and "pw2" not in shown and "10.0.0.6/mymaster/2" in shown
    assert parse(["--demo"], {"TRADE_STREAM_REDIS_URL": "rediss://h:6380/0?ssl_ca_certs=/ca.pem"},
                 tmp_path).redis_url.startswith("rediss://")
    for bad, reason in (("redis+sentinel://10.0.0.5:26379", "name the master"),
                        ("redis+sentinel://10.0.0.5:x/mymaster", "port must be a number"),
                        ("http://10.0.0.5", "redis+sentinel://")):
        with pytest.raises(ConfigError, match=f"TRADE_STREAM_REDIS_URL.*{re.escape(reason)}") as info:
            parse(["--demo"], {"TRADE_STREAM_REDIS_URL": bad}, tmp_path)
        assert "\n" not in str(info.value)



@pytest.mark.timeout(10)
@pytest.mark.parametrize("session", [
    "live", "open", " OPEN ", "2026-12-05T07:00:00-05:00", "2026-12-05T12:00:00Z", "2026-12-05T12:00:00.250+00:00",
    "2026-12-05T07:00:00", "2026-12-05", "tonight", "Z", "2026-13-05T07:00:00-05:00",
])
def test_demo_session_is_accepted_exactly_when_the_simulator_clock_takes_it(tmp_path, session):
    """Configuration writes the session rule itself (it never imports the simulator): it accepts a value exactly
    when ``Clock.for_session`` starts a clock from it, and passes it on as the clock reads it."""
    from trade_stream.simulator.clock import Clock

    word = session.strip().lower()
    value = word if word in ("live", "open") else session.strip()
    try:
        Clock.for_session(value)
    except ValueError:
        with pytest.raises(ConfigError, match=r"--demo-session\b.*must be live, open, or an RFC 3339 time"):
            parse(["--demo", "--demo-session", session], {}, tmp_path)
        return
    assert parse(["--demo", "--demo-session", session], {}, tmp_path).demo_session == value
