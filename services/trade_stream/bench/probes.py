"""What the bench reads about a process or a relay: /proc CPU and RSS, HTTP GETs, Prometheus counters."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` (all threads, user + system) in seconds; 0.0 when the process is gone.

    From /proc/<pid>/task/*/schedstat (nanoseconds) rather than utime+stime in /proc/<pid>/stat, whose 10 ms
    ticks would round a short smoke run's few milliseconds to zero. Same quantity, finer grain.
    """
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9 if total else _stat_cpu_seconds(pid)


def _stat_cpu_seconds(pid: int) -> float:
    """utime + stime from /proc/<pid>/stat (kernels without schedstat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(rest[11]) + int(rest[12])) / CLK_TCK  # fields 14 and 15 of proc(5), counted after "comm)"


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` in bytes; 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


async def http_get(url: str, timeout: float = 5.0) -> bytes:
    return await asyncio.to_thread(_get, url, timeout)


async def http_json(url: str, timeout: float = 5.0) -> Any:
    return json.loads(await http_get(url, timeout))


async def try_http_json(url: str, timeout: float = 2.0) -> Any | None:
    try:
        return await http_json(url, timeout)
    except (OSError, urllib.error.URLError, ValueError):
        return None


def prom_value(text: str, name: str) -> float | None:
    """The value of an unlabelled sample ``name`` in Prometheus text exposition."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def write_calls(pid: int) -> int:
    """Write-type system calls ``pid`` has made in all (``syscw`` of /proc/<pid>/io: write, writev and the
    like, which is how uvloop and Node's libuv both send); 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/io") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("syscw:")), 0)
    except (OSError, ValueError, IndexError):
        return 0


def busy_cpu_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat), to tell how busy the machine was overall."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    guest = sum(fields[8:10]) if len(fields) > 9 else 0  # guest time is already inside user time
    return (sum(fields) - idle - guest) / CLK_TCK


def load_average() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])
