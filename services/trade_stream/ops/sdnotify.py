"""systemd's notify protocol (sd_notify(3)) without libsystemd: one datagram per state change on NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger("trade_stream.ops.sdnotify")


SYSTEMD_MARKERS = ("INVOCATION_ID", "JOURNAL_STREAM", "NOTIFY_SOCKET")


def under_systemd(environ: Mapping[str, str] | None = None) -> bool:
    """True when systemd runs us (it sets these for a service): stdout then goes to the journal, kept for weeks."""
    env = environ if environ is not None else os.environ
    return any(env.get(name) for name in SYSTEMD_MARKERS)


class Notifier:
    def __init__(self, address: str) -> None:
        # A leading "@" names a socket in the abstract namespace.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setblocking(False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier | None:
        address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET")
        return cls(address) if address else None

    def send(self, **fields: str | int) -> None:
        payload = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        try:
            self.sock.sendto(payload, self.address)
        except OSError as exc:  # systemd gone or socket full: never let this take the daemon down
            log.warning("sd_notify_failed error=%r", exc)

    def close(self) -> None:
        self.sock.close()


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Half of WATCHDOG_USEC, when the watchdog is meant for this process."""
    env = environ if environ is not None else os.environ
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    with contextlib.suppress(ValueError):
        return max(0.01, int(usec) / 2e6)
    return None


async def keep_alive(notifier: Notifier, interval: float, status: Callable[[], str]) -> None:
    """WATCHDOG=1 from the event loop itself, so a wedged loop stops the pings and systemd restarts us."""
    while True:
        notifier.send(watchdog=1, status=status())
        await asyncio.sleep(interval)
