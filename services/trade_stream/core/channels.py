"""Delivery counts per notification channel (webhooks, email, push): one shape every sender fills.

Each channel that sends notifications out of the daemon owns one ``ChannelStats`` and is the only writer of it:
``sent`` (the receiver took it), ``failed`` (attempts that failed, retried or not), ``given_up`` (deliveries
abandoned: a permanent refusal, past the give-up time, dropped over the outbox bound) and ``pending`` (waiting
now, which the sender sets from its outbox). ``Channels`` only reads them, at the moment status or ``/metrics``
is asked for.

This is how the shape keeps "a channel down never slows another" checkable without coupling the senders: the
counters are plain fields written without a lock or an await, so filling them never waits on anything, and no
channel reads another's. A dead SMTP server shows as email's ``pending`` and ``failed`` climbing while webhooks'
``sent`` keeps moving; if one sender ever held up another, its ``pending`` would climb with no ``failed``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class ChannelStats:
    channel: str
    sent: int = 0
    failed: int = 0  # attempts that failed, retried or not
    given_up: int = 0
    pending: int = 0
    last_error: str | None = None

    def view(self) -> dict[str, Any]:
        return {"sent": self.sent, "failed": self.failed, "pending": self.pending, "given_up": self.given_up,
                "last_error": self.last_error}


class Channels:
    """Every sending channel's ``ChannelStats``, by channel name: ``channels`` in ``/api/stream/status`` and the
    ``trade_stream_channel_*`` metrics."""

    def __init__(self) -> None:
        self.by_name: dict[str, ChannelStats] = {}

    def channel(self, name: str) -> ChannelStats:
        """The stats a sender of ``name`` fills (made on first ask: a channel exists once a sender is built)."""
        stats = self.by_name.get(name)
        if stats is None:
            stats = self.by_name[name] = ChannelStats(name)
        return stats

    def view(self) -> dict[str, dict[str, Any]]:
        return {name: stats.view() for name, stats in sorted(self.by_name.items())}

    def collector(self) -> Any:
        return _Collector(self)


class _Collector:
    """Prometheus families read at scrape time, labelled by channel."""

    def __init__(self, channels: Channels) -> None:
        self.channels = channels

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        families = (
            (CounterMetricFamily, "trade_stream_channel_sent", "Notifications a channel delivered", "sent"),
            (CounterMetricFamily, "trade_stream_channel_failed",
             "Delivery attempts of a channel that failed, retried or not", "failed"),
            (CounterMetricFamily, "trade_stream_channel_given_up", "Deliveries a channel gave up", "given_up"),
            (GaugeMetricFamily, "trade_stream_channel_pending", "Deliveries a channel has waiting", "pending"),
        )
        for kind, name, doc, key in families:
            family = kind(name, doc, labels=["channel"])
            for channel, stats in sorted(self.channels.by_name.items()):
                family.add_metric([channel], getattr(stats, key))
            yield family
