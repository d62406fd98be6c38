"""A Debian machine with a real systemd as PID 1, booted with systemd-nspawn, for the deployment tests.

The host has no systemd of its own, so the unit, the install script and Apache are tried inside a container:
``debootstrap`` builds a Debian root once (cached under ``CACHE``, keyed by suite and package list; about a
minute and 450 MB), each test boots a copy of it, and runs commands inside with ``nsenter`` into the
container's systemd. The container shares the host's network (no ``--private-network``), so the host reaches its
services on 127.0.0.1 and every port it listens on must be free on the host.

``unavailable()`` says why this machine cannot do it (not root, no nspawn or debootstrap), for a skip reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

SUITE = "bookworm"  # Python 3.11, as on the host, so the host's wheels install inside
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "apache2", "curl", "ca-certificates",
            "redis-server")
CACHE = Path(os.environ.get("TRADE_STREAM_TEST_CACHE", "/var/cache/trade-stream-tests"))
BOOT_TIMEOUT = 60.0
# Built on the host besides the project's dependencies: the build backend (the install builds the checkout), and
# what a dependency needs only on the container's older Python (Debian 12: 3.11.2; redis wants async-timeout
# below 3.11.3), which the host's pip leaves out.
EXTRA_WHEELS = ("setuptools>=77", "wheel", "async-timeout>=4.0.3")


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the deployment test needs root (debootstrap, systemd-nspawn)"
    for tool in ("systemd-nspawn", "debootstrap", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (./tests/run.sh installs debootstrap and systemd-container when root)"
    return None


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One builder at a time for a cached item (two test runs at once wait for each other)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def debian_root() -> Path:
    """The cached Debian root for SUITE with PACKAGES, built by debootstrap on first use."""
    key = hashlib.sha256(f"{SUITE} {MIRROR} {','.join(sorted(PACKAGES))}".encode()).hexdigest()[:12]
    root = CACHE / f"debian-{SUITE}-{key}"
    with _locked(root.name):
        if not (root / "usr/lib/systemd/systemd").exists():
            building = CACHE / f"{root.name}.building"
            shutil.rmtree(building, ignore_errors=True)
            subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
                            str(building), MIRROR], check=True, capture_output=True, timeout=1200)
            building.rename(root)
    return root


def wheels_key(pyproject: str) -> str:
    """What the wheels are built from: the project's dependencies, its build backend and EXTRA_WHEELS."""
    project = tomllib.loads(pyproject)
    requirements = [*project["project"]["dependencies"], *project["build-system"]["requires"], *EXTRA_WHEELS]
    return hashlib.sha256(repr(requirements).encode()).hexdigest()[:12]


def wheels(repo: Path, python: str) -> Path:
    """Wheels of the project's dependencies and build backend, built on the host (the container has no index);
    cached per list of requirements, so a change elsewhere in pyproject.toml (lint, type check, the layer
    contract) keeps the half-minute build."""
    out = CACHE / f"wheels-{wheels_key((repo / 'pyproject.toml').read_text())}"
    with _locked(out.name):
        if not (out / ".complete").exists():
            shutil.rmtree(out, ignore_errors=True)
            subprocess.run([python, "-m", "pip", "wheel", "-q", "-w", str(out), str(repo), *EXTRA_WHEELS],
                           check=True, capture_output=True, timeout=900)
            for own in out.glob("trade_stream-*.whl"):  # the install builds the checkout itself
                own.unlink()
            (out / ".complete").touch()
    return out


class Machine:
    """A booted container: ``run`` executes a shell command inside it, as root, and returns the result."""

    def __init__(self, root: Path, name: str, nspawn: subprocess.Popen[bytes]) -> None:
        self.root = root
        self.name = name
        self.nspawn = nspawn
        self.pid = 0  # the container's systemd, as the host sees it

    def run(self, command: str, check: bool = True, timeout: float = 120.0, cwd: str = "/",
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        exports = "".join(f"export {k}={_quote(v)}; " for k, v in (env or {}).items())
        script = f"cd {_quote(cwd)} && {exports}{command}"
        result = subprocess.run(["nsenter", "-t", str(self.pid), "-a", "/bin/bash", "-euo", "pipefail", "-c",
                                 script], capture_output=True, text=True, timeout=timeout,
                                env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                     "LANG": "C.UTF-8"})
        if check and result.returncode != 0:
            raise AssertionError(f"in the container, exit {result.returncode}: {command}\n"
                                 f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}")
        return result

    def _find_systemd(self) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if self.nspawn.poll() is not None:
                raise AssertionError(f"systemd-nspawn exited {self.nspawn.returncode} while booting {self.name}")
            children = subprocess.run(["ps", "-o", "pid=,comm=", "--ppid", str(self.nspawn.pid)],
                                      capture_output=True, text=True).stdout.split()
            if len(children) >= 2 and children[1] == "systemd":
                self.pid = int(children[0])
                return
            time.sleep(0.2)
        raise AssertionError(f"no systemd under systemd-nspawn after {BOOT_TIMEOUT:.0f} s")

    def wait_running(self) -> None:
        """Until the boot is over: ``is-system-running`` says running (or degraded, which names no unit of ours)."""
        deadline = time.monotonic() + BOOT_TIMEOUT
        state = ""
        while time.monotonic() < deadline:
            state = self.run("systemctl is-system-running || true", timeout=30).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.5)
        raise AssertionError(f"the container's systemd is {state!r} after {BOOT_TIMEOUT:.0f} s")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


@contextlib.contextmanager
def booted(base: Path, workdir: Path, prepare=None) -> Iterator[Machine]:
    """A copy of ``base`` in ``workdir``, ``prepare(root)`` applied to it before boot, booted; powered off and
    removed at the end."""
    root = workdir / "root"
    subprocess.run(["cp", "-a", str(base), str(root)], check=True, timeout=600)
    if prepare is not None:
        prepare(root)
    Path("/run/systemd/nspawn/propagate").mkdir(parents=True, exist_ok=True)
    name = f"ts-{uuid.uuid4().hex[:8]}"
    log = open(workdir / "nspawn.log", "wb")
    nspawn = subprocess.Popen(["systemd-nspawn", "-D", str(root), "--boot", "--register=no", "--keep-unit",
                               f"--machine={name}"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    machine = Machine(root, name, nspawn)
    try:
        machine._find_systemd()
        machine.wait_running()
        yield machine
    finally:
        if machine.pid and nspawn.poll() is None:
            subprocess.run(["nsenter", "-t", str(machine.pid), "-a", "systemctl", "poweroff"], capture_output=True,
                           timeout=30)
        try:
            nspawn.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(nspawn.pid, signal.SIGKILL)
            nspawn.wait(timeout=30)
        log.close()
        shutil.rmtree(root, ignore_errors=True)
