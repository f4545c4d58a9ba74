"""A free loopback port, for the processes the benchmarks and tests start (fleet, services, Redis)."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port() -> int:
    """A port free on 127.0.0.1 now (the OS's choice); another process may take it before it is bound."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
