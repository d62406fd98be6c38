"""The deployment as the setup guide gives it, on a real systemd and a real Apache.

A Debian container booted with systemd-nspawn (tests/support/nspawn.py) gets a copy of this checkout, and runs
the guide's shell blocks of sections 5 (systemd), 6 (Apache) and 10 (cluster) in it, in the guide's order:
``services/install.sh --apache``, demo mode in the env file, the start, ``trade-stream user add``, then the
same steps by hand over the running install, the script again, and two ``trade-stream@`` nodes on the
container's Redis. Everything is checked from the host: Chromium on the page through Apache, WebSocket and REST
clients, systemd's own view of the service.

The container shares the host's network, so its ports must be free on the host: the guide's ports (8765, 8801,
8802, Redis 6379) are replaced by free ones in each block before it runs, and Apache's ``ports.conf`` gets a
free port before boot (the conf is path-based, so it must work on whatever port Apache listens on).
"""

from __future__ import annotations

import random
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.browser.helpers import BROWSER_LOOP
from tests.support import nspawn
from tests.support.docs import REPO_ROOT, block, blocks
from tests.support.relay import Browser, http_get

pytestmark = [pytest.mark.timeout(900), pytest.mark.skipif(nspawn.unavailable() is not None,
                                                          reason=nspawn.unavailable() or "")]

SETUP = "REALTIME_TRADES_SETUP.md"
SRC = "/usr/src/trade-stream"  # the checkout inside the container
WHEELS = "/var/cache/wheels"
PIP = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": WHEELS}  # through install.sh to pip untouched
UNIT = "market_sentinel_trade_stream"
UI = 15_000  # ms: the page goes through Apache into a container on a shared machine
COPY_IGNORE = shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", ".ruff_cache", "artifacts",
                                     "node_modules", "build", "dist")


def _free_ports(n: int) -> list[int]:
    """``n`` ports free now, below the kernel's ephemeral range: a port-0 bind anywhere on the machine (the demo
    daemons' own simulators, other tests) cannot take one of them before its service starts."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    candidates = list(range(max(1024, low - 8000), low))
    random.shuffle(candidates)
    ports = []
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == n:
            return ports
    raise AssertionError(f"no {n} free ports below {low}")


class Deployment:
    """The booted container and the ports that stand in for the guide's."""

    def __init__(self, machine: nspawn.Machine, ports: dict[int, int], apache: int) -> None:
        self.machine = machine
        self.ports = ports
        self.apache = apache
        self.port = ports[8765]
        self.tokens: dict[str, str] = {}

    def ported(self, text: str) -> str:
        for guide, ours in self.ports.items():
            text = re.sub(rf"\b{guide}\b", str(ours), text)
        return text

    def run_block(self, text: str, timeout: float = 300.0) -> str:
        """A block of the guide, as one bash script (set -euo pipefail) in the checkout, with our ports."""
        result = self.machine.run(self.ported(text), cwd=SRC, env=PIP, timeout=timeout)
        return result.stdout + result.stderr

    def run(self, command: str, **kw) -> str:
        return self.machine.run(command, **kw).stdout

    def main_pid(self, unit: str = UNIT) -> int:
        return int(self.run(f"systemctl show -p MainPID --value {unit}").strip())

    def wait(self, what: str, cond, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = cond()
            if value:
                return value
            time.sleep(0.3)
        raise AssertionError(f"not within {timeout:.0f} s: {what}")

    def healthy(self, port: int | None = None) -> bool:
        try:
            return http_get(port or self.port, "/healthz")[0] == 200
        except OSError:
            return False

    def through_apache(self, path: str, token: str | None = None) -> tuple[int, dict]:
        return http_get(self.apache, f"/trade-stream{path}", token)

    def serving_new_config(self, path: str, ready: Callable[[dict], bool], timeout: float = 20.0) -> None:
        """Wait out ``systemctl reload apache2``: the reload returns once Apache is signalled, and until its
        children have restarted a request may still meet the old configuration (here a 503 page from the
        proxy it replaced, not JSON)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                status, body = self.through_apache(path)
                if status == 200 and ready(body):
                    return
            except (ValueError, OSError):  # Apache's own error page (not JSON), or a connection it dropped
                status = -1
            assert time.monotonic() < deadline, f"Apache still not serving the new configuration ({status})"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """Booted, installed with the guide's script, in demo mode, started."""
    base = nspawn.debian_root()
    wheels = nspawn.wheels(REPO_ROOT, sys.executable)
    daemon, node1, node2, redis, apache = _free_ports(5)
    ports = {8765: daemon, 8801: node1, 8802: node2, 6379: redis}

    def prepare(root: Path) -> None:
        shutil.copytree(REPO_ROOT, root / SRC.lstrip("/"), ignore=COPY_IGNORE)
        shutil.copytree(wheels, root / WHEELS.lstrip("/"))
        for conf, pattern, value in ((root / "etc/apache2/ports.conf", r"^Listen 80$", f"Listen {apache}"),
                                     (root / "etc/redis/redis.conf", r"^port 6379$", f"port {redis}")):
            text, n = re.subn(pattern, value, conf.read_text(), flags=re.M)
            assert n == 1, f"{conf}: no line {pattern}"
            conf.write_text(text)

    with nspawn.booted(base, tmp_path_factory.mktemp("deploy"), prepare) as machine:
        d = Deployment(machine, ports, apache)
        out = d.run_block(block(SETUP, "install-apache"))
        assert "Syntax OK" in out
        d.run("sed -i 's/^# TRADE_STREAM_DEMO=$/TRADE_STREAM_DEMO=1/' /etc/trade-stream/trade-stream.env")
        d.run_block(block(SETUP, "check"), timeout=120)
        d.run_block(block(SETUP, "start"), timeout=120)
        d.wait("the daemon answers /healthz", d.healthy)
        yield d


def test_the_script_installs_what_the_guide_states(deployed):
    """The venv, the command on PATH, the unit and the Apache conf as the repo's files (the conf with the port),
    the env file from .env_sample with the port, and the modes of /etc/trade-stream."""
    d = deployed
    assert d.run("readlink /usr/local/bin/trade-stream").strip() == "/opt/trade-stream/.venv/bin/trade-stream"
    unit = (REPO_ROOT / "services" / f"{UNIT}.service").read_text()
    assert d.run(f"cat /etc/systemd/system/{UNIT}.service") == unit
    conf = (REPO_ROOT / "services/apache-trade-stream.conf").read_text()
    assert d.run("cat /etc/apache2/conf-enabled/trade-stream.conf") == conf.replace(
        "127.0.0.1:8765", f"127.0.0.1:{d.port}")
    assert d.run(f"systemctl is-enabled {UNIT}").strip() == "enabled"
    modes = d.run("stat -c '%n %U:%G %a' /etc/trade-stream /etc/trade-stream/trade-stream.env "
                  "/etc/trade-stream/users.toml").splitlines()
    assert modes == ["/etc/trade-stream root:trade-stream 750",
                     "/etc/trade-stream/trade-stream.env root:trade-stream 640",
                     "/etc/trade-stream/users.toml root:trade-stream 640"]
    env = d.run("cat /etc/trade-stream/trade-stream.env")
    assert f"\nTRADE_STREAM_PORT={d.port}\n" in env
    assert "\nTRADE_STREAM_USERS_FILE=/etc/trade-stream/users.toml\n" in env


@BROWSER_LOOP  # the shared Chromium's loop (tests/browser/conftest.py)
async def test_the_page_through_apache_shows_live_trades_and_its_history_and_clock_answer_200(deployed, watch):
    page = watch.page
    api: list[tuple[str, int]] = []
    page.on("response", lambda r: api.append((r.url, r.status)) if "/trade-stream/api/" in r.url else None)
    await page.goto(f"http://127.0.0.1:{deployed.apache}/trade-stream/")
    await expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=UI)
    row = page.locator('tr.wl-row[data-symbol="BTC/USD"]')
    await expect(row.locator(".last")).to_have_text(re.compile(r"\d"), timeout=UI)
    await expect(row.locator(".quote")).to_have_text(re.compile(r"\d.*\u00d7.*\d"), timeout=UI)

    def called(path: str) -> list[int]:
        return [status for url, status in api if f"/trade-stream/api/{path}" in url]

    for _ in range(100):
        if called("bars") and called("clock"):
            break
        await page.wait_for_timeout(100)
    assert called("bars") and set(called("bars")) == {200}, api
    assert called("clock") and set(called("clock")) == {200}, api
    assert await page.evaluate("window.TRADE_STREAM_CONFIG.servedBy") == "trade-stream"  # config.js, from the daemon
    # The Web Push worker: JavaScript from the prefix, registered at the prefix's scope (the page's directory).
    worker = await page.request.get(f"http://127.0.0.1:{deployed.apache}/trade-stream/sw.js")
    assert worker.status == 200 and worker.headers["content-type"].startswith("text/javascript")
    scope = await page.evaluate("navigator.serviceWorker.register('sw.js', {scope: './'}).then((r) => r.scope)")
    assert scope == f"http://127.0.0.1:{deployed.apache}/trade-stream/"
    await watch.finish()


def alice(d: Deployment) -> str:
    """The guide's ``user add alice``, once per deployment; her token (printed last)."""
    if "alice" not in d.tokens:
        d.tokens["alice"] = d.run_block(block(SETUP, "user-add")).strip().splitlines()[-1]
    return d.tokens["alice"]


async def test_a_user_added_with_the_documented_command_authenticates_through_apache_without_a_restart(deployed):
    d = deployed
    pid = d.main_pid()
    token = alice(d)
    assert d.run("stat -c '%U:%G %a' /etc/trade-stream/users.toml").strip() == "root:trade-stream 640"
    assert d.through_apache("/api/notifications/trades")[0] == 401
    assert d.wait("the users file is re-read", lambda: d.through_apache("/api/notifications/trades", token)[0] == 200)
    async with Browser.connect(d.apache, "/trade-stream/") as ws:
        await ws.send({"action": "auth", "token": token})
        assert (await ws.expect("authenticated", timeout=10))["type"] == "authenticated"
    assert d.main_pid() == pid


def test_the_service_user_reads_its_files_and_nothing_else(deployed):
    """As the running daemon's uid, gids and mount namespace (so the unit's sandbox applies): its env and users
    files and its state are readable; the rest of /etc/trade-stream, /etc/shadow and /root are not."""
    d = deployed
    pid = d.main_pid()
    d.run("install -m 0600 /dev/null /etc/trade-stream/other-secret")
    status = d.run(f"cat /proc/{pid}/status")
    uid = re.search(r"^Uid:\s+(\d+)", status, re.M)[1]
    gid = re.search(r"^Gid:\s+(\d+)", status, re.M)[1]
    groups = re.search(r"^Groups:\s*(.*)$", status, re.M)[1].split()
    assert uid != "0" and d.run("getent group trade-stream").split(":")[2] in groups
    as_service = f"nsenter -t {pid} -m setpriv --reuid={uid} --regid={gid} --groups={','.join(groups)} --"

    def readable(path: str) -> bool:
        return d.machine.run(f"{as_service} cat {path}", check=False).returncode == 0

    for path in ("/etc/trade-stream/trade-stream.env", "/etc/trade-stream/users.toml",
                 "/var/lib/trade-stream/page-url"):
        assert readable(path), path
    for path in ("/etc/trade-stream/other-secret", "/etc/shadow", "/root/.bashrc"):
        assert not readable(path), path
    assert d.machine.run(f"{as_service} touch /etc/trade-stream/users.toml", check=False).returncode != 0


def test_systemd_restarts_a_killed_daemon_stops_it_within_5_s_and_the_journal_has_its_start_line(deployed):
    d = deployed
    first = d.main_pid()
    d.run(f"kill -9 {first}")
    d.wait("a new main PID", lambda: d.main_pid() not in (0, first), timeout=30)
    d.wait("active again", lambda: d.run(f"systemctl is-active {UNIT} || true").strip() == "active", timeout=30)
    assert int(d.run(f"systemctl show -p NRestarts --value {UNIT}")) >= 1
    d.wait("the restarted daemon answers", d.healthy)
    started = time.monotonic()
    d.run(f"systemctl stop {UNIT}")
    assert time.monotonic() - started <= 5.0
    result = d.run(f"systemctl show -p ExecMainStatus -p ActiveState {UNIT}")
    assert "ActiveState=inactive" in result and "ExecMainStatus=0" in result
    journal = d.run(f"journalctl -u {UNIT} --no-pager -o cat")
    assert len(re.findall(rf"event=listening host=\S+ port={d.port} demo=True", journal)) >= 2  # both starts
    d.run(f"systemctl start {UNIT}")
    d.wait("started again", d.healthy)


def test_the_by_hand_steps_then_the_script_again_keep_the_operators_files(deployed):
    """The guide's by-hand steps over the running install, then the script again (an upgrade): the env file and
    the users file are the operator's, the port stays, the page works through Apache and alice's token still
    opens her orders."""
    d = deployed
    token = alice(d)
    d.run("install -m 0600 /dev/null /etc/trade-stream/backup.toml")  # not one of the service's files
    env_before = d.run("cat /etc/trade-stream/trade-stream.env")
    users_before = d.run("cat /etc/trade-stream/users.toml")
    d.run_block(block(SETUP, "manual-venv"))
    d.run_block(block(SETUP, "manual-etc"))
    d.run_block(block(SETUP, "manual-unit"))
    d.run_block(block(SETUP, "manual-apache"))
    # A module an earlier in-tree build left behind in build/ (since deleted from the checkout) is not shipped.
    stale = "trade_stream/stale_module_from_an_old_build.py"
    d.run(f"mkdir -p {SRC}/build/lib/trade_stream && touch {SRC}/build/lib/{stale}")
    d.run_block(block(SETUP, "install-apache"))
    d.run_block(block(SETUP, "install"))
    installed = d.run("/opt/trade-stream/.venv/bin/python -c 'import trade_stream, os; "
                      "print(os.path.dirname(trade_stream.__file__))'").strip()
    assert d.run(f"test -e {installed}/{stale.split('/', 1)[1]} && echo shipped || echo absent").strip() == "absent"
    assert d.run("cat /etc/trade-stream/trade-stream.env") == env_before
    assert d.run("cat /etc/trade-stream/users.toml") == users_before
    assert d.run("stat -c '%U:%G %a' /etc/trade-stream/backup.toml").strip() == "root:root 600"
    d.wait("the restarted daemon answers through Apache", lambda: d.through_apache("/healthz")[0] == 200)
    assert d.through_apache("/api/notifications/trades", token)[0] == 200


def test_two_cluster_nodes_on_the_containers_redis(deployed):
    """Section 10 as written: the template unit, two instances on one Redis, one leader between them."""
    d = deployed
    try:
        out = d.run_block(block(SETUP, "cluster"), timeout=180)
    except AssertionError as exc:
        journal = d.run("journalctl -u 'trade-stream@*' -n 40 --no-pager -o cat || true")
        raise AssertionError(f"{exc}\n--- journal\n{journal}") from None
    assert '"cluster"' in out

    def one_leader() -> bool:
        views = [http_get(d.ports[p], "/api/stream/status")[1]["cluster"] for p in (8801, 8802)]
        ids = {v["node_id"] for v in views}
        return len(ids) == 2 and {v["leader"] for v in views} <= ids and len({v["leader"] for v in views}) == 1 \
            and all(set(v["nodes"]) == ids for v in views)

    d.wait("both nodes see both and agree on one leader", one_leader, timeout=30)
    for port in (8801, 8802):
        assert d.run(f"systemctl is-active trade-stream@{d.ports[port]}").strip() == "active"


def test_the_guide_quotes_the_unit_files_and_the_apache_conf_as_they_are():
    quoted = {b.id: b.text for b in blocks(SETUP) if b.id}
    for block_id, path in (("unit-file", f"services/{UNIT}.service"),
                           ("apache-conf", "services/apache-trade-stream.conf")):
        assert quoted.get(block_id) == (REPO_ROOT / path).read_text(), f"{SETUP} <!-- test: {block_id} --> != {path}"



async def test_the_cluster_behind_apaches_balancer(deployed):
    """Section 10's balancer conf over the two nodes (the guide's machines are this container's two ports):
    requests reach both nodes, and the WebSocket through it authenticates alice."""
    d = deployed
    conf = next(b.text for b in blocks(SETUP) if b.id == "cluster-apache-conf")
    for guide, node in (("10.0.0.11:8801", 8801), ("10.0.0.12:8801", 8802)):
        assert guide in conf
        conf = conf.replace(guide, f"127.0.0.1:{d.ports[node]}")
    d.run(f"cat > /etc/apache2/conf-available/trade-stream-cluster.conf <<'EOF'\n{conf}EOF")
    d.run_block(block(SETUP, "cluster-apache"))
    d.serving_new_config("/api/stream/status", lambda body: "cluster" in body)
    served_by = {d.through_apache("/api/stream/status")[1]["cluster"]["node_id"] for _ in range(6)}
    assert len(served_by) == 2, served_by
    token = alice(d)
    async with Browser.connect(d.apache, "/trade-stream/") as ws:
        await ws.send({"action": "auth", "token": token})
        await ws.expect("authenticated", timeout=10)
