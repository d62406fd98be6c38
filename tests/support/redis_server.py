"""A real ``redis-server`` for the cluster tests, on a free port with its own directory (plain, TLS with a
certificate made here, or a replica), real Sentinels (``redis-server --sentinel``) watching one, and a TCP proxy
the test controls, to cut one node off from Redis while the others still reach it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

from tests.support.relay import free_port

REDIS_SERVER = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists()
                                                 else None)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key: (cert, key) files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "redis.crt", directory / "redis.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def _wait_for_pong(port: int, context: ssl.SSLContext | None = None) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2) as raw:
            s = context.wrap_socket(raw, server_hostname="127.0.0.1") if context else raw
            s.sendall(b"PING\r\n")
            if s.recv(64).startswith((b"+PONG", b"-NOAUTH")):  # NOAUTH: up, and wants the password
                return
        time.sleep(0.05)
    raise AssertionError(f"redis-server on port {port} did not start")


class RedisServer:
    """``redis-server`` with append-only persistence, so a restart keeps the cluster's state (as a real one
    configured for it does); ``persist=False`` for one that comes back empty, ``password`` for ``requirepass``,
    ``tls=True`` for a TLS-only server with a certificate made here (``url`` then names its CA file),
    ``replica_of`` (a port: a server's, or a proxy's in front of it) for a replica."""

    def __init__(self, directory: Path, *, persist: bool = True, password: str | None = None, tls: bool = False,
                 replica_of: int | None = None) -> None:
        assert REDIS_SERVER is not None
        self.dir = directory
        self.port = free_port()
        self.persist = persist
        self.password = password
        self.replica_of = replica_of
        self.cert: tuple[Path, Path] | None = make_certificate(directory / "tls") if tls else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.cert:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.cert[0]}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        listen = ["--port", str(self.port)]
        context = None
        if self.cert:
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.cert[0]),
                      "--tls-key-file", str(self.cert[1]), "--tls-auth-clients", "no"]
            context = ssl.create_default_context(cafile=str(self.cert[0]))
        replica = ["--replicaof", "127.0.0.1", str(self.replica_of)] if self.replica_of else []
        self.proc = subprocess.Popen(
            [REDIS_SERVER, *listen, "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--save", "", "--appendonly", "yes" if self.persist else "no", "--appendfsync", "always",
             "--protected-mode", "no", "--loglevel", "warning", "--repl-diskless-sync-delay", "0", *replica,
             *(["--requirepass", self.password] if self.password else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait_for_pong(self.port, context)
        if self.replica_of:
            self._wait_for_sync()

    def _wait_for_sync(self) -> None:
        """A replica is of use once its first full copy of the master is done."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.create_connection(("127.0.0.1", self.port), 1) as s:
                s.sendall(b"INFO replication\r\n")
                time.sleep(0.05)
                if b"master_link_status:up" in s.recv(4096):
                    return
        raise AssertionError("the replica did not finish its first sync")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last write, no goodbye to replicas or clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        _terminate(self.proc)
        self.proc = None



def _terminate(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL if it has not ended within 10 s."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Sentinel:
    """A real Redis Sentinel (``redis-server --sentinel``, the same program Debian's redis-sentinel runs) watching
    ``master`` as ``service``, with short timeouts so a failover takes a few seconds."""

    def __init__(self, directory: Path, master: RedisServer, service: str = "mymaster", quorum: int = 1) -> None:
        assert REDIS_SERVER is not None
        self.dir = directory
        self.port = free_port()
        self.master, self.service, self.quorum = master, service, quorum
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "sentinel.conf"  # Sentinel rewrites its file as it learns: it must be its own
        conf.write_text(f"port {self.port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.dir}\n"
                        f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} {self.quorum}\n"
                        f"sentinel down-after-milliseconds {self.service} 500\n"
                        f"sentinel failover-timeout {self.service} 5000\n")
        self.proc = subprocess.Popen([REDIS_SERVER, str(conf), "--sentinel", "--loglevel", "warning"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait_for_pong(self.port)

    def stop(self) -> None:
        _terminate(self.proc)
        self.proc = None


class Proxy:
    """A TCP proxy in the test's loop (before Redis, or before a daemon's port). ``cut()`` drops every connection
    and refuses new ones until ``heal()``, as a network outage would; ``hold()`` keeps every byte back (in both
    directions, connections stay open) until ``release()``, to make one node's commands reach Redis after
    another's. ``accepted`` counts the connections it put through."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.accepted = 0
        self.open = True
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    await self._flowing.wait()
                    dst.write(data)
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def cut(self) -> None:
        self.open = False
        self._flowing.set()  # nothing held back stays waiting on a dropped connection
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def heal(self) -> None:
        self.open = True

    def hold(self) -> None:
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
