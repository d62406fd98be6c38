"""Child processes of the bench: pinned to cores, logged to files, and never left behind.

Three layers make sure nothing outlives a run: every child gets ``PR_SET_PDEATHSIG`` (SIGKILL of the bench still
takes them down), load clients also exit when their stdin closes, and ``Children.stop_all`` (called from a
``finally``) sends SIGTERM, waits, then SIGKILLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import resource
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (inherited by children): 10k connections need 10k FDs a side."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def core_split(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """(relay cores, everything-else cores): the relay alone on the first core, the rest elsewhere."""
    cores = sorted(os.sched_getaffinity(0))
    if not pin or len(cores) < 2:
        return None, None
    return {cores[0]}, set(cores[1:])


def _preexec(cores: set[int] | None) -> Callable[[], None]:
    def setup() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if cores:
            os.sched_setaffinity(0, cores)

    return setup


class Child:
    """One subprocess; stdout is a pipe when the bench talks to it, else it goes to the log file."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.proc = proc
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def readline(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise RuntimeError(f"{self.name}: no answer within {timeout:.0f}s; log tail:\n{self.tail()}") from None
        if not line:
            await asyncio.sleep(0.2)
            raise RuntimeError(f"{self.name} exited (rc={self.proc.returncode}); log tail:\n{self.tail()}")
        return line.decode().strip()

    async def read_json(self, timeout: float) -> dict[str, Any]:
        return json.loads(await self.readline(timeout))

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, grace: float = 3.0) -> None:
        if self.proc.returncode is not None:
            return
        if self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


class Children:
    """Every child of one run, stopped together (clients first, so the relay sees them go)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.all: list[Child] = []

    async def spawn(self, name: str, argv: list[str], cores: set[int] | None, *, talk: bool = False) -> Child:
        log = self.workdir / f"{name}.log"
        out = log.open("ab")
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE if talk else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if talk else out, stderr=out, preexec_fn=_preexec(cores),
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        finally:
            out.close()
        child = Child(name, proc, log)
        self.all.append(child)
        return child

    async def stop_all(self) -> None:
        for child in reversed(self.all):
            with contextlib.suppress(Exception):
                await child.stop()
        self.all.clear()
