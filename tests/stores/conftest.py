"""A real Redis server for the store tests (see ``benchmarks.redis_server``)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from specexec.bench.redis_server import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)
