"""Plain counters bumped on the hot path; metrics.py turns them into Prometheus text only when scraped."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Stats:
    messages_in: int = 0  # upstream market-data messages
    deliveries: int = 0  # messages handed to a client socket
    bytes_out: int = 0
    slow_client_cutoffs: int = 0
    connections_total: int = 0
    connections_refused: int = 0
    client_errors: int = 0
    upstream_reconnects: int = 0
    order_events: int = 0
    journal_errors: int = 0  # order-journal operations that failed
    journal_ok: int = 1  # a gauge: 0 while the order journal is faulted
    upstream_errors: dict[str, int] = field(default_factory=dict)  # per stream: sessions ended by an exception
    bad_messages: dict[str, int] = field(default_factory=dict)  # per stream: malformed upstream messages skipped
