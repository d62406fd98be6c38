"""Alpaca's crypto REST (``/v1beta3/crypto/{loc}/...``) through alpaca-py, at the configured location.

Pairs (BTC/USD) have no stock snapshot or stock bars: the stock endpoints answer nothing useful for them, so the
snapshot on subscribe and the chart backfill ask the crypto endpoints instead, at the same location the crypto
stream uses (``TRADE_STREAM_CRYPTO_LOCATION``). alpaca-py's ``CryptoFeed`` enum names only ``us``, but its client
only ever reads ``feed.value`` into the path, so the Kraken locations (``us-1``, ``eu-1``) are passed as a value of
that shape rather than forked code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from alpaca.data.enums import CryptoFeed
from alpaca.data.historical import CryptoHistoricalDataClient

from trade_stream.config import Config


@dataclass(frozen=True)
class _Location:
    value: str


def crypto_feed(location: str) -> CryptoFeed:
    """The ``feed`` argument of CryptoHistoricalDataClient's methods for ``location`` (us, us-1, eu-1)."""
    try:
        return CryptoFeed(location)
    except ValueError:
        return cast(CryptoFeed, _Location(location))


def crypto_client(cfg: Config) -> tuple[CryptoHistoricalDataClient, Any]:
    """A raw-data crypto REST client on the configured data URL, and the feed value for its location."""
    client = CryptoHistoricalDataClient(cfg.api_key, cfg.secret_key, raw_data=True, url_override=cfg.data_url)
    return client, crypto_feed(cfg.crypto_location)
