"""Operations: the start script, the systemd unit, sd_notify, SIGHUP reload, `trade-stream check`, and the CLI's
configuration errors. The daemon runs as a real subprocess (the repo's .venv/bin/trade-stream) wherever signals or
exit codes matter; nothing here depends on sys.executable."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from trade_stream import config
from trade_stream.simulator import Clock, SimConfig, Simulator

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"
TS = VENV / "bin" / "trade-stream"
SCRIPT = ROOT / "services" / "start_trade_stream.sh"
UNIT = ROOT / "services" / "market_sentinel_trade_stream.service"
LISTENING = re.compile(r"event=listening host=\S+ port=(\d+)")
KEY, SECRET = "CHECKKEY", "CHECKSECRET"


# -- helpers ------------------------------------------------------------------------------------------------


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without any trade-stream, Alpaca or systemd settings, plus a private state dir."""
    drop = ("ALPACA_", "TRADE_STREAM_", "NOTIFY_SOCKET", "WATCHDOG_", "STATE_DIRECTORY", "LISTEN_", "INVOCATION_ID",
            "JOURNAL_STREAM")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(TRADE_STREAM_STATE_DIR=str(tmp_path / "state"), PYTHONUNBUFFERED="1", COLUMNS="200")
    env.update(extra)
    return env


def empty_env_file(tmp_path: Path) -> str:
    """An explicit, empty --env-file: a developer's .env in the repo root must not leak into the tests."""
    path = tmp_path / "empty.env"
    path.write_text("")
    return str(path)


class Proc:
    """A subprocess whose stdout and stderr lines are collected by threads, so tests can wait for a line."""

    def __init__(self, args: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.args = args
        # Its own process group: if a wrapper ever forks instead of exec'ing, teardown still reaches the child.
        self.popen = subprocess.Popen(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, bufsize=1, start_new_session=True)
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._cond = threading.Condition()
        self._readers = [threading.Thread(target=self._read, args=(name, stream), daemon=True)
                         for name, stream in (("stdout", self.popen.stdout), ("stderr", self.popen.stderr))]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self, name: str, stream: Any) -> None:
        for line in stream:
            with self._cond:
                self.lines[name].append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: str | re.Pattern[str], stream: str = "stderr", timeout: float = 20.0,
                 start: int = 0) -> re.Match[str]:
        """The first line (from index ``start``) of ``stream`` matching ``pattern``."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[stream][start:]:
                    found = regex.search(line)
                    if found:
                        return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and not any(r.is_alive() for r in self._readers)):
                    raise AssertionError(f"no line matching {regex.pattern!r} on {stream} within {timeout}s "
                                         f"(exit={self.popen.poll()})\n{self.tail()}")
                self._cond.wait(min(left, 0.2))

    def port(self, timeout: float = 30.0) -> int:
        return int(self.wait_for(LISTENING, timeout=timeout).group(1))

    def tail(self, n: int = 25) -> str:
        with self._cond:
            return "\n".join(["--- stdout:", *self.lines["stdout"][-n:], "--- stderr:", *self.lines["stderr"][-n:]])

    def stop(self, sig: signal.Signals, timeout: float = 5.0) -> tuple[int, float]:
        """Send ``sig``; the exit status and the seconds it took."""
        started = time.monotonic()
        self.popen.send_signal(sig)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{sig.name}: still running after {timeout}s\n{self.tail()}") from None
        return code, time.monotonic() - started

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # the group this Proc created, and only that
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(5)
        for reader in self._readers:
            reader.join(2)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Every Proc a test starts; whatever is still running at the end is killed (by its own pid)."""
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.kill()


def start(procs: list[Proc], args: list[str], *, cwd: Path, env: dict[str, str]) -> Proc:
    proc = Proc(args, cwd=cwd, env=env)
    procs.append(proc)
    return proc


def run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def http_get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.read().decode()


def ws_connect(port: int) -> ClientConnection:
    return connect(f"ws://127.0.0.1:{port}/", open_timeout=10, close_timeout=2, ping_interval=None)


def recv_until(ws: ClientConnection, pred: Any, timeout: float = 10.0) -> dict[str, Any]:
    """The next message satisfying ``pred`` (messages may arrive one by one or batched in a list)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            raw = ws.recv(timeout=left)
        except TimeoutError:
            break
        decoded = orjson.loads(raw)
        for msg in decoded if isinstance(decoded, list) else [decoded]:
            if isinstance(msg, dict) and pred(msg):
                return msg
    raise AssertionError(f"no matching message within {timeout}s")


def assert_one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}:\n{stderr}"
    return lines[0]


# -- 1. the start script --------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_start_script_runs_demo_from_anywhere_and_stops_on_ctrl_c(tmp_path, procs):
    # The demo's stocks follow the market's hours; an open session gives AAPL trades whatever the hour is.
    env = clean_env(tmp_path, TRADE_STREAM_DEMO_SESSION="open")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = tmp_path / "start"  # a symlink to the script, in another directory: the root is found through it
    link.symlink_to(SCRIPT)

    # Warm-up: installs only if .venv is missing or older than pyproject.toml (then it may take a while).
    warm = run([str(SCRIPT), "--version"], cwd=elsewhere, env=env, timeout=100)
    assert warm.returncode == 0, warm.stderr
    stamp = VENV / ".trade-stream-installed"
    assert stamp.is_file(), "the script did not record the installed pyproject.toml"
    stamp_mtime = stamp.stat().st_mtime_ns

    # Fast path: .venv is up to date, so nothing is installed, nothing is printed besides the daemon's own output.
    started = time.monotonic()
    fast = run([str(link), "--version"], cwd=elsewhere, env=env)
    elapsed = time.monotonic() - started
    assert fast.returncode == 0 and fast.stdout.strip() == f"trade-stream {config_version()}", fast
    assert fast.stderr == "", f"fast path printed on stderr: {fast.stderr}"
    assert elapsed < 5.0, f"fast path took {elapsed:.2f}s"

    proc = start(procs, [str(link), "--demo", "--port", "0", "--env-file", empty_env_file(tmp_path)],
                 cwd=elsewhere, env=env)
    port = proc.port()
    token_line = proc.wait_for(r"no TRADE_STREAM_TOKEN set.*http://\S+:(\d+)/#token=\S+", stream="stdout")
    assert int(token_line.group(1)) == port

    # The script exec'd the daemon: the pid we signal is trade-stream itself, not a bash wrapping it.
    argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
    assert any(a.endswith(b"/trade-stream") for a in argv) and not any(b"start_trade_stream" in a for a in argv)
    assert stamp.stat().st_mtime_ns == stamp_mtime, "the demo run reinstalled although .venv was up to date"

    status, page = http_get(f"http://127.0.0.1:{port}/")
    assert status == 200 and "<title>trade-stream</title>" in page

    with ws_connect(port) as ws:
        welcome = recv_until(ws, lambda m: m.get("type") == "welcome")
        assert welcome["demo"] is True
        ws.send(orjson.dumps({"action": "subscribe", "symbol": "AAPL"}).decode())
        trade = recv_until(ws, lambda m: m.get("type") == "trade" and m.get("symbol") == "AAPL", timeout=15)
        assert trade["data"]

        code, took = proc.stop(signal.SIGINT)  # what Ctrl-C sends
        assert code == 0, proc.tail()
        assert took < 5.0
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001, "clients get 1001 going away"
    proc.wait_for(r"event=stopped")


def config_version() -> str:
    from trade_stream import __version__

    return __version__


# -- 2. the systemd unit ----------------------------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            name, value = line.split("=", 1)
            settings.setdefault(name.strip(), []).append(value.strip())
    return settings


@pytest.mark.timeout(60)
def test_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (tests/run.sh installs systemd with apt-get)")
    settings = unit_settings()
    assert settings["ExecStart"] == ["/opt/trade-stream/.venv/bin/trade-stream"]
    for name, value in {"Type": "notify", "Restart": "on-failure", "StateDirectory": "trade-stream",
                        "DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                        "CapabilityBoundingSet": "", "LimitNOFILE": "65536",
                        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX"}.items():
        assert settings.get(name) == [value], f"{name}={settings.get(name)}"
    for name in ("WatchdogSec", "TimeoutStopSec", "RestartSec", "StartLimitIntervalSec", "StartLimitBurst",
                 "EnvironmentFile", "SystemCallFilter", "MemoryDenyWriteExecute"):
        assert name in settings, f"{name} missing"

    # verify needs ExecStart to exist: the same unit with ExecStart pointing at the repo's venv instead of /opt.
    text = re.sub(r"^ExecStart=/opt/trade-stream/\.venv/bin/trade-stream", f"ExecStart={TS}", UNIT.read_text(),
                  flags=re.MULTILINE)
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    verify = run([analyze, "verify", str(unit)], cwd=tmp_path, env=dict(os.environ), timeout=45)
    output = verify.stdout + verify.stderr
    assert verify.returncode == 0, output
    # verify exits 0 even for unknown keys and bad values; it only warns. Any line about our unit is a failure.
    complaints = [line for line in output.splitlines() if UNIT.name in line]
    assert not complaints, "\n".join(complaints)

    security = run([analyze, "security", "--offline=true", "--threshold=25", str(unit)], cwd=tmp_path,
                   env=dict(os.environ), timeout=45)
    if "--offline" not in security.stderr:  # systemd older than 252 lacks --offline; skip that part there
        assert security.returncode == 0, "exposure above 2.5:\n" + security.stdout[-3000:]


MDWE_WRAPPER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
# PR_SET_MDWE (65), PR_MDWE_REFUSE_EXEC_GAIN (1): what MemoryDenyWriteExecute=yes asks of the kernel.
if libc.prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(77)
os.execv(sys.argv[1], sys.argv[1:])
"""


@pytest.mark.timeout(60)
def test_daemon_runs_under_memory_deny_write_execute(tmp_path, procs):
    """The unit sets MemoryDenyWriteExecute=yes: CPython + uvloop + the whole import graph must live with it."""
    python = VENV / "bin" / "python"
    args = [str(python), "-c", MDWE_WRAPPER, str(TS), "--demo", "--port", "0", "--env-file",
            empty_env_file(tmp_path)]
    proc = start(procs, args, cwd=tmp_path, env=clean_env(tmp_path, TRADE_STREAM_DEMO_SESSION="open"))  # MSFT trades
    try:
        port = proc.port()
    except AssertionError:
        if proc.popen.wait(5) == 77:
            pytest.skip("this kernel has no prctl(PR_SET_MDWE) (Linux < 6.3)")
        raise
    with ws_connect(port) as ws:
        recv_until(ws, lambda m: m.get("type") == "welcome")
        ws.send(orjson.dumps({"action": "subscribe", "symbol": "MSFT"}).decode())
        recv_until(ws, lambda m: m.get("type") == "trade" and m.get("symbol") == "MSFT", timeout=15)
    code, _ = proc.stop(signal.SIGTERM)
    assert code == 0, proc.tail()


# -- 3. sd_notify -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """Play systemd: a Unix datagram socket the daemon sends READY=1, STATUS=, WATCHDOG=1, STOPPING=1 to."""
    directory = tmp_path if len(str(tmp_path)) < 80 else Path(tempfile.mkdtemp(prefix="tsn-"))  # sun_path: 108
    path = str(directory / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(path)
        yield sock, path
    finally:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)


def datagrams(sock: socket.socket, until: Any, timeout: float, seen: list[dict[str, str]]) -> dict[str, str]:
    """Receive notify datagrams (parsed into dicts, appended to ``seen``) until one satisfies ``until``."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            break
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        seen.append(fields)
        if until(fields):
            return fields
    raise AssertionError(f"no matching notify datagram within {timeout}s; got {seen[-5:]}")


STATUS = re.compile(r"upstream=(\w+)\b.*\bclients=(\d+)")


@pytest.mark.timeout(60)
def test_sd_notify_ready_status_watchdog_stopping(tmp_path, procs):
    with notify_socket(tmp_path) as (sock, path):
        env = clean_env(tmp_path, NOTIFY_SOCKET=path, WATCHDOG_USEC="200000")
        proc = start(procs, [str(TS), "--demo", "--port", "0", "--env-file", empty_env_file(tmp_path)],
                     cwd=tmp_path, env=env)
        seen: list[dict[str, str]] = []
        ready = datagrams(sock, lambda f: f.get("READY") == "1", 30, seen)
        assert STATUS.search(ready.get("STATUS", "")), f"READY=1 without a useful STATUS: {ready}"

        # READY=1 means serving: the port answers at once.
        port = proc.port(timeout=1)
        assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200

        # WATCHDOG=1 every WATCHDOG_USEC/2 = 0.1 s, each with the current STATUS.
        first = len(seen)
        datagrams(sock, lambda f: sum(x.get("WATCHDOG") == "1" for x in seen[first:]) >= 5, 5, seen)
        datagrams(sock, lambda f: f.get("WATCHDOG") == "1" and "upstream=connected" in f.get("STATUS", ""), 10,
                  seen)

        # STATUS follows the client count.
        with ws_connect(port) as ws:
            recv_until(ws, lambda m: m.get("type") == "welcome")
            status = datagrams(sock, lambda f: (m := STATUS.search(f.get("STATUS", ""))) and m.group(2) == "1",
                               10, seen)
            assert "trading=" in status["STATUS"]

        proc.popen.send_signal(signal.SIGTERM)
        datagrams(sock, lambda f: f.get("STOPPING") == "1", 5, seen)
        assert proc.popen.wait(5) == 0, proc.tail()


# -- 4. SIGHUP -------------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_sighup_reloads_env_file_and_keeps_clients(tmp_path, procs):
    env_file = tmp_path / "trade-stream.env"
    env_file.write_text("TRADE_STREAM_LOG_LEVEL=INFO\nTRADE_STREAM_MAX_CONNECTIONS_PER_IP=200\n")
    # No --log-level / --max-connections-per-ip flags: a flag would win over the file, on reload too.
    proc = start(procs, [str(TS), "--demo", "--port", "0", "--env-file", str(env_file)], cwd=tmp_path,
                 env=clean_env(tmp_path))
    port = proc.port()

    with ws_connect(port) as ws:
        recv_until(ws, lambda m: m.get("type") == "welcome")
        env_file.write_text("TRADE_STREAM_LOG_LEVEL=DEBUG\nTRADE_STREAM_MAX_CONNECTIONS_PER_IP=2\n")
        mark = len(proc.lines["stderr"])
        proc.popen.send_signal(signal.SIGHUP)
        proc.wait_for(r"event=reloaded log_level=DEBUG .*max_connections_per_ip=2\b", start=mark)

        ws.send(orjson.dumps({"action": "ping"}).decode())
        assert recv_until(ws, lambda m: m.get("type") == "pong")["type"] == "pong"

        # The new per-IP limit is live: this client plus one more, and the third is refused with 429.
        with ws_connect(port) as second:
            recv_until(second, lambda m: m.get("type") == "welcome")
            with pytest.raises(InvalidStatus) as refused:
                ws_connect(port).close()
            assert refused.value.response.status_code == 429

        # A bad edit is logged and ignored: the daemon keeps running with what it has.
        env_file.write_text("TRADE_STREAM_LOG_LEVEL=LOUD\n")
        mark = len(proc.lines["stderr"])
        proc.popen.send_signal(signal.SIGHUP)
        proc.wait_for(r"event=reload_failed .*TRADE_STREAM_LOG_LEVEL", start=mark)
        ws.send(orjson.dumps({"action": "ping"}).decode())
        recv_until(ws, lambda m: m.get("type") == "pong")
        assert proc.popen.poll() is None

    code, _ = proc.stop(signal.SIGTERM)
    assert code == 0, proc.tail()


@pytest.mark.timeout(60)
def test_sighup_applies_the_per_user_limit_and_its_policy(tmp_path, procs):
    """Started with 2 per user and refuse: a third private connection is refused. After SIGHUP with 1 and
    close_oldest the connections stay; the next one is let in and closes the user's oldest with the warning."""
    token = "sighup-token-0123456789"
    env_file = tmp_path / "trade-stream.env"
    env_file.write_text(f"TRADE_STREAM_TOKEN={token}\nTRADE_STREAM_MAX_CONNECTIONS_PER_USER=2\n"
                        "TRADE_STREAM_CONNECTION_LIMIT_POLICY=refuse\n")
    proc = start(procs, [str(TS), "--demo", "--port", "0", "--env-file", str(env_file)], cwd=tmp_path,
                 env=clean_env(tmp_path))
    port = proc.port()

    def auth(ws: ClientConnection) -> dict[str, Any]:
        recv_until(ws, lambda m: m.get("type") == "welcome")
        ws.send(orjson.dumps({"action": "auth", "token": token}).decode())
        return recv_until(ws, lambda m: m.get("type") in ("authenticated", "error"))

    with ws_connect(port) as first, ws_connect(port) as second:
        assert auth(first)["type"] == auth(second)["type"] == "authenticated"
        with ws_connect(port) as third:
            assert auth(third).get("code") == "too_many_connections"
        env_file.write_text(f"TRADE_STREAM_TOKEN={token}\nTRADE_STREAM_MAX_CONNECTIONS_PER_USER=1\n"
                            "TRADE_STREAM_CONNECTION_LIMIT_POLICY=close_oldest\n")
        mark = len(proc.lines["stderr"])
        proc.popen.send_signal(signal.SIGHUP)
        proc.wait_for(r"event=reloaded .*max_connections_per_user=1 connection_limit_policy=close_oldest", start=mark)
        for ws in (first, second):  # nobody is closed by the reload itself
            ws.send(orjson.dumps({"action": "ping"}).decode())
            recv_until(ws, lambda m: m.get("type") == "pong")
        with ws_connect(port) as newest:
            assert auth(newest)["type"] == "authenticated"
            for ws in (first, second):  # both: one is the limit now
                warning = recv_until(ws, lambda m: m.get("type") == "warning")
                assert warning["code"] == "connection_limit", warning
                with pytest.raises(ConnectionClosed) as closed:
                    recv_until(ws, lambda m: False)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            proc.wait_for(r"event=user_connection_closed_oldest user=default kind=websocket ip=127\.0\.0\.1 ",
                          start=mark)
            newest.send(orjson.dumps({"action": "ping"}).decode())
            recv_until(newest, lambda m: m.get("type") == "pong")

    code, _ = proc.stop(signal.SIGTERM)
    assert code == 0, proc.tail()


# -- 5. trade-stream check ---------------------------------------------------------------------------------------


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    """The simulator on its own event loop in a thread, accepting KEY/SECRET (control it over /_sim/)."""
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def serve() -> None:
        holder["loop"], holder["stop"] = asyncio.get_running_loop(), asyncio.Event()
        config = SimConfig(host="127.0.0.1", port=0, accounts={KEY: SECRET},
                           clock=Clock.in_session())  # AAPL trades at any real hour
        async with Simulator(config) as sim:
            holder["sim"] = sim
            ready.set()
            await holder["stop"].wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="simulator", daemon=True)
    thread.start()
    assert ready.wait(10), "simulator did not start"
    yield holder["sim"]
    holder["loop"].call_soon_threadsafe(holder["stop"].set)
    thread.join(10)


def check(tmp_path: Path, sim: Simulator | None, *extra: str, port: int | None = None,
          secret: str = SECRET) -> subprocess.CompletedProcess:
    port = sim.port if sim is not None else port
    args = [str(TS), "check", "--env-file", empty_env_file(tmp_path), "--api-key", KEY, "--secret-key", secret,
            "--base-url", f"http://127.0.0.1:{port}", "--data-stream-url", f"ws://127.0.0.1:{port}/v2/iex",
            "--trading-stream-url", f"ws://127.0.0.1:{port}/stream", "--data-wait", "3", "--timeout", "10", *extra]
    return run(args, cwd=tmp_path, env=clean_env(tmp_path), timeout=60)


def line(result: subprocess.CompletedProcess, prefix: str) -> str:
    """The output line for one check (plus its fix line, if any)."""
    lines = result.stdout.splitlines()
    for i, text in enumerate(lines):
        if text.split(":", 1)[0].split(None, 1)[-1] == prefix:
            fix = lines[i + 1] if i + 1 < len(lines) and lines[i + 1].lstrip().startswith("fix:") else ""
            return f"{text}\n{fix}".strip()
    raise AssertionError(f"no line for {prefix!r} in:\n{result.stdout}\n{result.stderr}")


@pytest.mark.timeout(60)
def test_check_passes_against_the_simulator(tmp_path, simulator):
    result = check(tmp_path, simulator)
    assert result.returncode == 0, result.stdout + result.stderr
    assert line(result, "REST account").startswith("OK ")
    assert line(result, "market-data stream").startswith("OK ") and "AAPL data arriving" in result.stdout
    assert line(result, "trading stream").startswith("OK ")
    assert "all 3 checks passed" in result.stdout
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.timeout(60)
def test_check_warns_when_no_data_flows(tmp_path, simulator):
    http_get(f"{simulator.http_url}/_sim/rate?per_symbol=0")  # a closed market: auth works, nothing trades
    result = check(tmp_path, simulator, "--data-wait", "1")
    assert result.returncode == 0, "no data is a warning, not a failure"
    warning = next(text for text in result.stdout.splitlines() if text.startswith("WARN market-data stream"))
    assert "market is probably closed" in warning and "ALPACA_DATA_FEED=test" in warning and "FAKEPACA" in warning


@pytest.mark.timeout(60)
def test_check_explains_wrong_keys(tmp_path, simulator):
    result = check(tmp_path, simulator, secret="WRONGSECRET")
    assert result.returncode == 1, result.stdout + result.stderr
    data = line(result, "market-data stream")
    assert data.startswith("FAIL") and "402" in data
    for words in ("key/secret", "paper", "live", "ALPACA_BASE_URL"):
        assert words in data, f"{words!r} missing from: {data}"
    assert line(result, "REST account").startswith("FAIL")
    assert line(result, "trading stream").startswith("FAIL")
    assert "WRONGSECRET" not in result.stdout + result.stderr


@pytest.mark.timeout(60)
def test_check_explains_a_missing_feed(tmp_path, simulator):
    http_get(f"{simulator.http_url}/_sim/fail_auth?code=409")
    result = check(tmp_path, simulator)
    assert result.returncode == 1
    data = line(result, "market-data stream")
    assert data.startswith("FAIL") and "409" in data and "ALPACA_DATA_FEED=iex" in data
    assert line(result, "REST account").startswith("OK ") and line(result, "trading stream").startswith("OK ")


@pytest.mark.timeout(60)
def test_check_explains_a_held_stream(tmp_path, simulator):
    # Another session (think: a notebook) holds the one market-data slot for this key.
    with connect(f"{simulator.ws_url}/v2/iex", open_timeout=10, ping_interval=None) as held:
        assert orjson.loads(held.recv(timeout=10))[0]["msg"] == "connected"
        held.send(orjson.dumps({"action": "auth", "key": KEY, "secret": SECRET}).decode())
        assert orjson.loads(held.recv(timeout=10))[0]["msg"] == "authenticated"
        result = check(tmp_path, simulator)
    assert result.returncode == 1
    data = line(result, "market-data stream")
    assert data.startswith("FAIL") and "406" in data
    assert "another session" in data and "90 s" in data
    assert line(result, "trading stream").startswith("OK ")


@pytest.mark.timeout(60)
def test_check_explains_network_errors_and_bad_config(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = check(tmp_path, None, port=port)
    assert result.returncode == 1
    for name in ("REST account", "market-data stream", "trading stream"):
        text = line(result, name)
        assert text.startswith("FAIL") and "connection refused" in text and "network" in text

    bad = run([str(TS), "check", "--env-file", empty_env_file(tmp_path)], cwd=tmp_path,
              env=clean_env(tmp_path, TRADE_STREAM_PORT="abc", ALPACA_API_KEY="K", ALPACA_SECRET_KEY="S"))
    assert bad.returncode == 2 and "TRADE_STREAM_PORT" in assert_one_line(bad.stderr)


@pytest.mark.timeout(60)
def test_check_demo_passes(tmp_path):
    result = run([str(TS), "check", "--demo", "--env-file", empty_env_file(tmp_path)], cwd=tmp_path,
                 env=clean_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("\nOK ") >= 3 and "FAIL" not in result.stdout


# -- 6. configuration errors, --help, .env_sample -------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_write_delay_out_of_range_stops_the_daemon_with_one_line_naming_it(tmp_path):
    env_file = empty_env_file(tmp_path)
    for value in ("500", "-1", "soon"):
        bad = run([str(TS), "--demo", "--env-file", env_file], cwd=tmp_path,
                  env=clean_env(tmp_path, TRADE_STREAM_WRITE_DELAY_MS=value))
        assert bad.returncode == 2 and bad.stdout == ""
        line = assert_one_line(bad.stderr)
        assert "TRADE_STREAM_WRITE_DELAY_MS" in line and "between 0 and 100" in line, line


@pytest.mark.timeout(60)
def test_a_cookie_name_that_is_not_an_rfc_6265_token_stops_the_daemon_with_one_line(tmp_path):
    env_file = empty_env_file(tmp_path)
    for args, env in (([], {"TRADE_STREAM_AUTH_COOKIE": "my session"}), (["--auth-cookie", "a;b"], {}),
                      (["--auth-cookie", 'sid"'], {})):
        bad = run([str(TS), "--demo", *args, "--env-file", env_file], cwd=tmp_path, env=clean_env(tmp_path, **env))
        assert bad.returncode == 2 and bad.stdout == ""
        line = assert_one_line(bad.stderr)
        assert ("--auth-cookie" if args else "TRADE_STREAM_AUTH_COOKIE") in line and "RFC 6265" in line, line


@pytest.mark.timeout(60)
def test_missing_credentials_bad_values_help_and_env_sample(tmp_path):
    env_file = empty_env_file(tmp_path)

    missing = run([str(TS), "--env-file", env_file], cwd=tmp_path, env=clean_env(tmp_path))
    assert missing.returncode == 2
    assert "--demo" in assert_one_line(missing.stderr)
    assert missing.stdout == ""

    bad = run([str(TS), "--demo", "--env-file", env_file], cwd=tmp_path,
              env=clean_env(tmp_path, TRADE_STREAM_PORT="abc"))
    assert bad.returncode == 2
    assert "TRADE_STREAM_PORT" in assert_one_line(bad.stderr)

    for args, words in ((["--demo", "--demo-session", "tonight"], "must be live, open, or an RFC 3339 time"),
                        (["--demo-session", "open"], "use it with --demo")):
        session = run([str(TS), *args, "--env-file", env_file], cwd=tmp_path, env=clean_env(tmp_path))
        assert session.returncode == 2 and "--demo-session" in session.stderr
        assert words in assert_one_line(session.stderr)

    helped = run([str(TS), "--help"], cwd=tmp_path, env=clean_env(tmp_path))
    assert helped.returncode == 0
    for setting in config.SETTINGS:
        assert setting.flag in helped.stdout and setting.env in helped.stdout, setting.flag
    assert "--demo" in helped.stdout and "--env-file" in helped.stdout

    assert (ROOT / ".env_sample").read_text() == config.env_sample(), \
        ".env_sample is stale: regenerate it with config.env_sample()"


@pytest.mark.timeout(60)
def test_a_port_in_use_stops_the_daemon_with_a_line_saying_so(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run([str(TS), "--demo", "--host", "127.0.0.1", "--port", str(port), "--log-level", "ERROR",
                      "--env-file", empty_env_file(tmp_path)], cwd=tmp_path, env=clean_env(tmp_path))
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert f"cannot listen on 127.0.0.1:{port}" in last and "TRADE_STREAM_PORT" in last


@pytest.mark.timeout(60)
def test_an_sse_port_in_use_names_that_port_and_its_setting(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run([str(TS), "--demo", "--host", "127.0.0.1", "--port", "0", "--sse-port", str(port),
                      "--log-level", "ERROR", "--env-file", empty_env_file(tmp_path)], cwd=tmp_path,
                     env=clean_env(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert assert_one_line(result.stderr) == (f"trade-stream: cannot listen on 127.0.0.1:{port}: address already in "
                                              "use; set TRADE_STREAM_SSE_PORT or stop the other process")


@pytest.mark.timeout(60)
def test_secrets_never_reach_the_logs(tmp_path, procs):
    secret, key, token = "VERYSECRETVALUE9876", "PKKEYID00001234", "configured-token-5555"
    daemon = start(procs, [str(TS), "--host", "127.0.0.1", "--port", "0", "--env-file", empty_env_file(tmp_path),
                           "--data-stream-url", "ws://127.0.0.1:9/v2/iex", "--trading-stream-url",
                           "ws://127.0.0.1:9/stream", "--base-url", "http://127.0.0.1:9", "--log-level", "DEBUG"],
                   cwd=tmp_path, env=clean_env(tmp_path, ALPACA_API_KEY=key, ALPACA_SECRET_KEY=secret,
                                               TRADE_STREAM_TOKEN=token))
    config_line = daemon.wait_for(r"event=config .*").group(0)
    daemon.wait_for("upstream_retry")  # it tried upstream (and failed) at least once
    daemon.popen.send_signal(signal.SIGTERM)
    daemon.popen.wait(10)
    output = daemon.tail(10_000)
    for raw in (secret, key, token):
        assert raw not in output
    assert "secret_key=****9876" in config_line and "token=****5555" in config_line


@pytest.mark.timeout(60)
def test_an_unusable_state_dir_stops_the_start_with_one_line_naming_the_setting(tmp_path):
    blocker = tmp_path / "a-file"  # a file where the state directory should be: fails for root too
    blocker.write_text("")
    state = blocker / "state"
    result = run([str(TS), "--demo", "--host", "127.0.0.1", "--port", "0", "--env-file", empty_env_file(tmp_path)],
                 cwd=tmp_path, env=clean_env(tmp_path, TRADE_STREAM_STATE_DIR=str(state)))
    line = assert_one_line(result.stderr)
    assert result.returncode == 2 and result.stdout == ""
    assert line.startswith(f"trade-stream: TRADE_STREAM_STATE_DIR={state}: cannot be created or written"), line
    assert "directory this user can write" in line


@pytest.mark.timeout(90)
def test_configured_files_that_are_missing_or_unreadable_stop_the_start_with_one_line(tmp_path):
    """Each file setting, pointed at a path that does not exist and at a directory (unreadable as a file, also
    for root): exit 2, one line naming the setting and saying what is wrong, before anything listens."""
    folder = tmp_path / "a-directory"
    folder.mkdir()
    for env in ("TRADE_STREAM_USERS_FILE", "TRADE_STREAM_ACCOUNTS_FILE", "TRADE_STREAM_WEBHOOKS_FILE",
                "TRADE_STREAM_PAGE_CONFIG", "TRADE_STREAM_JWT_PUBLIC_KEY"):
        for path, why in ((tmp_path / "missing.toml", "no such file"), (folder, "cannot be read")):
            result = run([str(TS), "--demo", "--port", "0", "--env-file", empty_env_file(tmp_path)], cwd=tmp_path,
                         env=clean_env(tmp_path, **{env: str(path)}))
            line = assert_one_line(result.stderr)
            named = line.replace(f"{env}='{path}'", f"{env}={path}")  # the value quoted or not
            assert result.returncode == 2 and named.startswith(f"trade-stream: {env}={path}: ") and why in line, line
            assert "listening" not in result.stdout


@pytest.mark.timeout(60)
def test_an_unknown_connection_limit_policy_stops_the_start_with_one_line_naming_both(tmp_path):
    result = run([str(TS), "--demo", "--port", "0", "--env-file", empty_env_file(tmp_path)], cwd=tmp_path,
                 env=clean_env(tmp_path, TRADE_STREAM_CONNECTION_LIMIT_POLICY="close_newest"))
    assert result.returncode == 2 and "listening" not in result.stdout
    assert assert_one_line(result.stderr) == ("trade-stream: TRADE_STREAM_CONNECTION_LIMIT_POLICY='close_newest': "
                                              "must be one of close_oldest, refuse")


@pytest.mark.timeout(60)
def test_env_file_dev_null_is_an_empty_file_and_a_missing_one_says_no_such_file(tmp_path):
    empty = run([str(TS), "--env-file", "/dev/null", "--port", "abc"], cwd=tmp_path, env=clean_env(tmp_path))
    assert empty.returncode == 2 and assert_one_line(empty.stderr).startswith("trade-stream: --port='abc': ")
    missing = run([str(TS), "--env-file", str(tmp_path / "nope.env")], cwd=tmp_path, env=clean_env(tmp_path))
    assert missing.returncode == 2
    assert assert_one_line(missing.stderr) == (f"trade-stream: --env-file {tmp_path / 'nope.env'}: no such file; "
                                               "give an existing path or drop the flag")


@pytest.mark.timeout(60)
def test_help_lists_the_subcommands_first_and_each_has_its_own_help(tmp_path):
    from trade_stream.cli import SUBCOMMANDS

    helped = run([str(TS), "--help"], cwd=tmp_path, env=clean_env(tmp_path))
    assert helped.returncode == 0
    top = helped.stdout.splitlines()[:15]
    assert top[0] == "usage: trade-stream [SUBCOMMAND] [options]"
    for name in SUBCOMMANDS:
        assert any(line.split()[:1] == [name] for line in top), (name, top)
    common = helped.stdout.index("common options:")
    assert common < helped.stdout.index("--api-key") and common < helped.stdout.index("--demo")
    for name in SUBCOMMANDS:
        sub = run([str(TS), name, "--help"], cwd=tmp_path, env=clean_env(tmp_path))
        assert sub.returncode == 0 and sub.stdout.startswith(f"usage: trade-stream {name}"), (name, sub.stderr)


@pytest.mark.timeout(60)
def test_a_redis_url_with_the_wrong_scheme_is_refused_showing_the_scheme_not_the_password(tmp_path):
    result = run([str(TS), "--demo", "--env-file", empty_env_file(tmp_path)], cwd=tmp_path,
                 env=clean_env(tmp_path, TRADE_STREAM_REDIS_URL="http://:hunter2pass@cache.example:6379/0"))
    line = assert_one_line(result.stderr)
    assert result.returncode == 2 and "hunter2pass" not in line
    assert line == ("trade-stream: TRADE_STREAM_REDIS_URL=http://****@cache.example:6379/0: must be a redis://, "
                    "rediss:// (TLS) or redis+sentinel:// URL such as redis://host:6379/0, not scheme http://"), line


@pytest.mark.timeout(60)
def test_simulate_on_a_port_in_use_says_so_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run([str(TS), "simulate", "--port", str(port)], cwd=tmp_path, env=clean_env(tmp_path))
    assert result.returncode == 2 and result.stdout == ""
    assert assert_one_line(result.stderr) == (f"trade-stream simulate: port {port} is in use (127.0.0.1:{port}); "
                                              "pick another --port or stop the other process")


@pytest.mark.timeout(90)
def test_ctrl_c_on_the_broker_demo_stops_quietly(tmp_path, procs):
    daemon = start(procs, [str(TS), "--demo", "--broker", "--host", "127.0.0.1", "--port", "0", "--env-file",
                           empty_env_file(tmp_path)], cwd=tmp_path, env=clean_env(tmp_path))
    daemon.port()
    seen = 0
    for _ in range(3):  # every Broker event stream open (waiting on the simulator) when the signal comes
        seen = daemon.lines["stderr"].index(daemon.wait_for(r"event=broker_stream_connected", start=seen).string) + 1
    code, _ = daemon.stop(signal.SIGINT, timeout=15)
    stderr = "\n".join(daemon.lines["stderr"])
    assert code == 0 and "Traceback" not in stderr and "CancelledError" not in stderr, daemon.tail(60)
    assert "event=stopped" in daemon.lines["stderr"][-1]


def test_cluster_template_unit_passes_systemd_analyze_verify(tmp_path):
    """services/trade-stream@.service: one cluster node per port, the same hardening as the single unit."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (tests/run.sh installs systemd with apt-get)")
    template = ROOT / "services" / "trade-stream@.service"
    text = template.read_text()
    assert "ExecStart=/opt/trade-stream/.venv/bin/trade-stream --port %i --node-id %H-%i" in text
    single = UNIT.read_text()
    for line in single.splitlines():  # every hardening line of the single unit is in the template too
        if line.startswith(("Protect", "Restrict", "Private", "SystemCall", "MemoryDeny", "NoNewPrivileges")):
            assert line in text.splitlines(), line
    instance = tmp_path / "trade-stream@8801.service"
    instance.write_text(re.sub(r"^ExecStart=/opt/trade-stream/\.venv/bin/trade-stream", f"ExecStart={TS}", text,
                               flags=re.MULTILINE))
    verify = run([analyze, "verify", str(instance)], cwd=tmp_path, env=dict(os.environ), timeout=45)
    output = verify.stdout + verify.stderr
    assert verify.returncode == 0, output
    complaints = [line for line in output.splitlines() if "trade-stream@" in line]
    assert not complaints, "\n".join(complaints)
