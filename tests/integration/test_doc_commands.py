"""The commands README.md and the setup guide show (§2 to §4) run as written, from a fresh directory.

Each test fetches its block with ``block(doc, id)`` and runs its commands unchanged, with two substitutions that
keep the tests off the machine's real configuration: the daemon's port (8765 in the docs) becomes a free one,
and Alpaca's URLs in ``.env`` point at a simulator on loopback (no machine here reaches Alpaca). The systemd and
Apache sections run inside a booted container in ``tests/deploy``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.integration.test_ops import (
    KEY,
    SECRET,
    clean_env,
    empty_env_file,
    http_get,
    procs,  # noqa: F401  (fixture)
    recv_until,
    run,
    simulator,  # noqa: F401  (fixture)
    start,
    ws_connect,
)
from tests.support.docs import block, commands

ROOT = Path(__file__).resolve().parents[2]
README, SETUP = "README.md", "REALTIME_TRADES_SETUP.md"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def argv(command: str) -> list[str]:
    """A documented command as argv: ``./services/...`` is the repository's, ``trade-stream`` the venv's."""
    words = shlex.split(command)
    if words[0].startswith("./"):
        words[0] = str(ROOT / words[0][2:])
    elif words[0] == "trade-stream":
        words[0] = str(ROOT / ".venv" / "bin" / "trade-stream")
    return words


def one_command(doc: str, block_id: str) -> str:
    cmds = commands(block(doc, block_id))
    assert len(cmds) == 1, f"{doc} block {block_id} shows {len(cmds)} commands: {cmds}"
    return cmds[0]


@pytest.mark.timeout(60)
def test_the_test_command_is_what_ci_runs():
    command = one_command(README, "test-command")
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci, f".ci/run does not call README's test command {command!r}"
    assert os.access(ROOT / command, os.X_OK)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("doc", "block_id"), [(README, "demo"), (SETUP, "first-run")])
def test_the_demo_command_serves_live_crypto_and_stops_on_ctrl_c(tmp_path, procs, doc, block_id):  # noqa: F811
    command = one_command(doc, block_id)
    port = free_port()
    proc = start(procs, argv(command), cwd=tmp_path, env=clean_env(tmp_path, TRADE_STREAM_PORT=str(port)))
    assert proc.port(timeout=100) == port, proc.tail()
    proc.wait_for(rf"no TRADE_STREAM_TOKEN set.*http://\S+:{port}/#token=\S+", stream="stdout")
    status, page = http_get(f"http://127.0.0.1:{port}/")
    assert status == 200 and "<title>trade-stream</title>" in page
    with ws_connect(port) as ws:
        assert recv_until(ws, lambda m: m.get("type") == "welcome")["demo"] is True
        # Crypto trades around the clock, so this holds at any hour.
        ws.send(orjson.dumps({"action": "subscribe", "symbols": ["BTC/USD"], "channels": ["trades"]}).decode())
        trade = recv_until(ws, lambda m: m.get("type") == "trade" and m.get("symbol") == "BTC/USD", timeout=20)
        assert trade["data"]["price"] > 0
    code, _ = proc.stop(signal.SIGINT, timeout=10)
    assert code == 0, proc.tail()
    assert "Traceback" not in proc.tail(200)


@pytest.mark.timeout(120)
def test_check_demo_passes_as_shown():
    command = one_command(SETUP, "check-demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPACA_", "TRADE_STREAM_"))}
    result = subprocess.run(argv(command), cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=100)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout


def fresh_checkout_dir(tmp_path: Path) -> Path:
    """A directory holding what the guide's §3 starts from: a copy of .env_sample and no .env."""
    here = tmp_path / "checkout"
    here.mkdir()
    shutil.copy(ROOT / ".env_sample", here / ".env_sample")
    return here


def make_env_file(tmp_path: Path, sim, port: int) -> Path:
    """Run the guide's ``cp .env_sample .env && chmod 600 .env``, then fill in what §3 says to fill in."""
    here = fresh_checkout_dir(tmp_path)
    result = subprocess.run(block(SETUP, "env-file"), shell=True, cwd=here, capture_output=True, text=True,
                            timeout=10, executable="/bin/sh")
    assert result.returncode == 0, result.stderr
    env_file = here / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert env_file.read_text() == (here / ".env_sample").read_text()
    with env_file.open("a") as f:
        f.write(f"\nALPACA_API_KEY={KEY}\nALPACA_SECRET_KEY={SECRET}\n"
                f"ALPACA_BASE_URL={sim.http_url}\nALPACA_DATA_URL={sim.http_url}\n"
                f"ALPACA_DATA_STREAM_URL={sim.ws_url}/v2/iex\nALPACA_TRADING_STREAM_URL={sim.ws_url}/stream\n"
                f"TRADE_STREAM_PORT={port}\n")
    return here


@pytest.mark.timeout(120)
def test_the_keys_steps_check_then_start_then_the_endpoints(tmp_path, simulator, procs):  # noqa: F811
    port = free_port()
    here = make_env_file(tmp_path, simulator, port)
    env = clean_env(tmp_path)

    checked = run(argv(one_command(SETUP, "check-keys")), cwd=here, env=env, timeout=90)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "all 3 checks passed" in checked.stdout

    proc = start(procs, argv(one_command(SETUP, "manual-start")), cwd=here, env=env)
    assert proc.port(timeout=60) == port, proc.tail()
    outputs = {}
    for command in commands(block(SETUP, "endpoints")):
        words = [w.replace("localhost:8765", f"localhost:{port}") for w in shlex.split(command)]
        result = subprocess.run(words, capture_output=True, text=True, timeout=20)
        assert result.returncode == 0, (command, result.stderr)
        outputs[words[-1].split("/", 1)[1]] = result.stdout
    health = orjson.loads(outputs["healthz"])
    assert health["status"] in ("ok", "degraded", "down") and "upstream" in health
    status = orjson.loads(outputs["api/stream/status"])  # upstream state and errors, symbols held, clients, ages
    assert {"upstream", "active_symbols", "stream_count", "last_message_age"} <= status.keys()
    assert status["upstream"]["state"] == "connected"
    assert "trade_stream_" in outputs["metrics"]
    code, _ = proc.stop(signal.SIGTERM, timeout=10)
    assert code == 0, proc.tail()


@pytest.mark.timeout(180)
def test_the_operations_commands(tmp_path, procs):  # noqa: F811
    """README's Operations block: each line runs, and says what it is documented to say."""
    env = clean_env(tmp_path)
    env_file = empty_env_file(tmp_path)
    seen = set()
    for command in commands(block(README, "operations")):
        words = argv(command)
        sub = words[1] if len(words) > 1 else ""
        seen.add(sub)
        if sub == "simulate":
            port = int(words[words.index("--port") + 1])
            proc = start(procs, words, cwd=tmp_path, env=env)
            proc.wait_for(rf"Alpaca simulator on http://\S+:{port}", stream="stdout", timeout=30)
            status, _ = http_get(f"http://127.0.0.1:{port}/_sim/state")
            assert status == 200
            code, _ = proc.stop(signal.SIGTERM, timeout=10)
            assert code == 0, proc.tail()
            continue
        result = run([*words, "--env-file", env_file] if sub == "check" else words, cwd=tmp_path, env=env,
                     timeout=120)
        if sub == "check" and "--demo" not in words:
            # No keys configured: the one line says which setting to fill in.
            assert result.returncode == 2 and "ALPACA_API_KEY" in result.stderr, result.stdout + result.stderr
        else:
            assert result.returncode == 0, (command, result.stdout[-2000:], result.stderr[-2000:])
    assert {"--help", "check", "simulate", "bench"} <= seen


@pytest.mark.timeout(60)
def test_the_guides_users_and_accounts_commands(tmp_path):
    """§7: the accounts file as the guide shows it, the env-file lines it names, then its three commands (the
    env file's path is the test's own); each user's token is printed once and the list names both users."""
    from tests.support.docs import blocks

    accounts_toml = next(b.text for b in blocks(SETUP) if b.lang == "toml" and 'name = "paper"' in b.text)
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(accounts_toml)
    users = tmp_path / "users.toml"
    env_file = tmp_path / "trade-stream.env"
    env_file.write_text(f"TRADE_STREAM_ACCOUNTS_FILE={accounts}\nTRADE_STREAM_USERS_FILE={users}\n"
                        "PAPER_SECRET=ps\nLIVE_SECRET=ls\n")
    outputs = []
    for command in commands(block(SETUP, "users-accounts")):
        assert "/etc/trade-stream/trade-stream.env" in command
        words = argv(command.replace("/etc/trade-stream/trade-stream.env", str(env_file)))
        result = run(words, cwd=tmp_path, env=clean_env(tmp_path), timeout=30)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        outputs.append(result.stdout)
    assert outputs[0].strip().splitlines()[-1].startswith("tsu_") and "alice" in outputs[0]
    assert "bob" in outputs[1]
    listed = dict(line.split("\t", 1) for line in outputs[2].strip().splitlines())
    assert listed["alice"] == "accounts=paper\tadmin=no"
    assert set(listed["bob"].split("\t")[0].removeprefix("accounts=").split(",")) == {"paper", "live"}
    assert "admin=yes" in listed["bob"]
