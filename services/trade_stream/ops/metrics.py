"""Prometheus metrics, read from the relay's plain counters at scrape time (nothing on the hot path)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from trade_stream.core.stats import Stats
from trade_stream.core.upstream_state import LinkState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The market-data stream's states (the Broker API stream's "reconnecting" is not one of them).
STATES = tuple(s.value for s in (LinkState.CONNECTING, LinkState.CONNECTED, LinkState.DISCONNECTED, LinkState.ERROR))


class RelayCollector:
    def __init__(self, stats: Stats, snapshot: Callable[[], dict[str, Any]],
                 restarts: Callable[[], dict[str, int]] | None = None,
                 cluster: Callable[[], dict[str, float]] | None = None) -> None:
        self.stats = stats
        self.cluster = cluster or dict  # the engine's numbers
        self.snapshot = snapshot  # the relay's status() view
        self.restarts = restarts or dict  # the supervisor's restarts per task

    def collect(self) -> Iterator[Metric]:
        s, snap = self.stats, self.snapshot()
        yield GaugeMetricFamily("trade_stream_clients", "Connected WebSocket clients", value=snap["stream_count"])
        yield GaugeMetricFamily("trade_stream_upstream_symbols", "Symbols Alpaca confirms we hold",
                                value=len(snap["active_symbols"]))
        subs = GaugeMetricFamily("trade_stream_subscriptions", "Client holds per channel", labels=["channel"])
        per_channel: dict[str, int] = {}
        per_source: dict[tuple[str, str], int] = {}
        default = next(iter(snap.get("upstreams") or {"": None}))  # the default stock source comes first
        for channels in snap["holders"].values():
            for channel, count in channels.items():
                source, _, bare = channel.rpartition(":")  # "crypto:us:trades"; the default source's are bare
                if not source:
                    per_channel[channel] = per_channel.get(channel, 0) + count
                pair = (source or default, bare)
                per_source[pair] = per_source.get(pair, 0) + count
        for channel, count in sorted(per_channel.items()):
            subs.add_metric([channel], count)
        yield subs
        holds = GaugeMetricFamily("trade_stream_source_subscriptions", "Client holds per upstream source and channel",
                                  labels=["source", "channel"])
        for (source, channel), count in sorted(per_source.items()):
            holds.add_metric([source, channel], count)
        yield holds
        yield from self._sources(snap.get("upstreams") or {})
        for name, doc, value in (
            ("trade_stream_messages_in", "Market-data messages received from Alpaca", s.messages_in),
            ("trade_stream_messages_out", "Messages delivered to client sockets", s.deliveries),
            ("trade_stream_bytes_out", "Bytes written to client sockets", s.bytes_out),
            ("trade_stream_slow_client_cutoffs", "Clients cut off for not reading", s.slow_client_cutoffs),
            ("trade_stream_upstream_reconnects", "Upstream reconnects after the first connect", s.upstream_reconnects),
            ("trade_stream_connections", "Client connections accepted", s.connections_total),
            ("trade_stream_connections_refused", "Client connections refused by limits", s.connections_refused),
            ("trade_stream_client_errors", "Error replies sent to clients", s.client_errors),
            ("trade_stream_order_events", "Order events journaled and relayed", s.order_events),
            ("trade_stream_journal_errors", "Order-journal operations that failed", s.journal_errors),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily("trade_stream_journal_ok", "1 while the order journal works, 0 while faulted",
                                value=s.journal_ok)
        for name, doc, label, table in (
            ("trade_stream_task_restarts", "Supervised tasks restarted after an exception", "task", self.restarts()),
            ("trade_stream_upstream_errors", "Upstream sessions ended by an unexpected exception", "stream",
             s.upstream_errors),
            ("trade_stream_upstream_bad_messages", "Malformed upstream frames or messages skipped", "stream",
             s.bad_messages),
        ):
            family = CounterMetricFamily(name, doc, labels=[label])
            for key, value in sorted(table.items()):
                family.add_metric([key], value)
            yield family
        up = snap["upstream"]
        yield GaugeMetricFamily("trade_stream_upstream_connected", "1 when the Alpaca stream is authenticated",
                                value=1 if snap["alpaca_connected"] else 0)
        state = GaugeMetricFamily("trade_stream_upstream_state", "Upstream state (1 = current)", labels=["state"])
        for name in STATES:
            state.add_metric([name], 1 if up["state"] == name else 0)
        yield state
        cluster = self.cluster()
        for key, name, doc, kind in (
            ("leader", "trade_stream_cluster_leader", "1 while this node holds Alpaca (always 1 on one process)",
             GaugeMetricFamily),
            ("nodes", "trade_stream_cluster_nodes", "Live nodes in the cluster", GaugeMetricFamily),
            ("leader_changes", "trade_stream_cluster_leader_changes", "Leader changes this node saw",
             CounterMetricFamily),
            ("published", "trade_stream_cluster_published", "Messages published to Redis", CounterMetricFamily),
            ("received", "trade_stream_cluster_received", "Market-data messages received from Redis",
             CounterMetricFamily),
            ("rtt_seconds", "trade_stream_cluster_redis_rtt_seconds", "Last Redis round trip (-1 = none yet)",
             GaugeMetricFamily),
            ("channel_published", "trade_stream_channel_published", "App-channel events published on this node",
             CounterMetricFamily),
            ("channel_received", "trade_stream_channel_received", "App-channel events received from Redis",
             CounterMetricFamily),
        ):
            if key in cluster:
                yield kind(name, doc, value=cluster[key])
        age = up["last_message_age"]
        yield GaugeMetricFamily("trade_stream_last_message_age_seconds",
                                "Seconds since the last upstream data message (-1 = none yet)",
                                value=-1 if age is None else age)


    def _sources(self, upstreams: dict[str, dict[str, Any]]) -> Iterator[Metric]:
        """Each upstream connection (stocks per feed, crypto) apart, labelled ``source``."""
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "connected": GaugeMetricFamily("trade_stream_source_connected",
                                           "1 when this Alpaca stream is authenticated", labels=["source"]),
            "open": GaugeMetricFamily("trade_stream_source_open", "1 while this stream is wanted and its connection "
                                      "kept (the default feed always)", labels=["source"]),
            "symbols": GaugeMetricFamily("trade_stream_source_symbols", "Symbols Alpaca confirms this stream holds",
                                         labels=["source"]),
            "age": GaugeMetricFamily("trade_stream_source_last_message_age_seconds",
                                     "Seconds since this stream's last data message (-1 = none yet)",
                                     labels=["source"]),
            "reconnects": CounterMetricFamily("trade_stream_source_reconnects",
                                              "Reconnects of this stream after its first connect", labels=["source"]),
            "messages": CounterMetricFamily("trade_stream_source_messages_in",
                                            "Market-data messages received on this stream", labels=["source"]),
        }
        state = GaugeMetricFamily("trade_stream_source_state", "Stream state (1 = current)", labels=["source", "state"])
        for name, view in upstreams.items():
            families["connected"].add_metric([name], 1 if view["state"] == "connected" else 0)
            families["open"].add_metric([name], 1 if view["open"] else 0)
            families["symbols"].add_metric([name], len(view["symbols"]))
            age = view["last_message_age"]
            families["age"].add_metric([name], -1 if age is None else age)
            families["reconnects"].add_metric([name], view["reconnects"])
            families["messages"].add_metric([name], view["messages_in"])
            for st in STATES:
                state.add_metric([name, st], 1 if view["state"] == st else 0)
        yield from families.values()
        yield state


def build_registry(stats: Stats, snapshot: Callable[[], dict[str, Any]],
                   restarts: Callable[[], dict[str, int]] | None = None,
                   cluster: Callable[[], dict[str, float]] | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RelayCollector(stats, snapshot, restarts, cluster))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
