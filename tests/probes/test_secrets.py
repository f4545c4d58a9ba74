"""API keys never appear in anything the daemon publishes or logs (in-process; the CLI test greps a subprocess)."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import msgspec
import pytest

from specexec import AuthError, BackendBase, Query, Response
from specexec.probes import encode_snapshot

from ._support import running, sim_config, virtual_time_backend

KEY = "sk-live-TOTALLYSECRET-abcdef123456"
ENV = "SPECEXEC_PROBE_SECRET_TEST_KEY"


class Leaky(BackendBase):
    """A badly written backend whose errors quote its key."""

    api_key_env = ENV

    def __init__(self, name: str, error: Exception) -> None:
        super().__init__(name)
        self.error = error

    async def complete(self, query: Query) -> Response:
        await anyio.sleep(0.01)
        raise self.error


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return virtual_time_backend()


@pytest.mark.anyio
async def test_keys_are_redacted_everywhere(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(ENV, KEY)
    caplog.set_level(logging.DEBUG)
    backends = [
        Leaky("a", RuntimeError(f"request failed with headers {{'authorization': 'Bearer {KEY}'}}")),
        Leaky("b", AuthError(f"key {KEY} refused")),
        Leaky("c", ValueError(f"opaque{KEY}opaque")),
    ]
    async with running(sim_config(probe="interval = 1.0\njitter = 0.0"), backends) as daemon:
        await anyio.sleep_until(3.5)
        outputs = [
            msgspec.json.encode(daemon.health_report()),
            encode_snapshot(daemon.snapshot()),
            daemon.metrics().encode(),
        ]
        last_errors = [daemon.states[n].last_error or "" for n in "abc"]
    outputs.append("\n".join(r.getMessage() for r in caplog.records).encode())
    assert all("[REDACTED]" in e for e in last_errors)
    for output in outputs:
        assert KEY.encode() not in output
