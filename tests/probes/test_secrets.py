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


class Echoing(BackendBase):
    """A backend whose provider reports the caller's key (or megabytes) as its model id."""

    api_key_env = ENV

    def __init__(self, name: str, model: str) -> None:
        super().__init__(name)
        self.model = "pinned-1"
        self.reported = model

    async def complete(self, query: Query) -> Response:
        await anyio.sleep(0.01)
        return Response("pong", model=self.reported)


@pytest.mark.anyio
async def test_a_reported_model_is_redacted_and_bounded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: the reported model was kept as given: served in /v1/health, /v1/snapshot and
    # /metrics, written to the snapshot file, logged in the drift warning; 1 MB of it, 1 MB each.
    monkeypatch.setenv(ENV, KEY)
    caplog.set_level(logging.DEBUG)
    backends = [Echoing("a", f"model-of {KEY}"), Echoing("b", "M" * (1 << 20)), Echoing("c", f"{'x' * 190}{KEY}")]
    async with running(sim_config(probe="interval = 1.0\njitter = 0.0"), backends) as daemon:
        await anyio.sleep_until(1.5)
        outputs = [
            msgspec.json.encode(daemon.health_report()),
            encode_snapshot(daemon.snapshot()),
            daemon.metrics().encode(),
        ]
        models = {n: daemon.states[n].reported_model for n in "abc"}
        assert all(daemon.states[n].drift for n in "abc")
    outputs.append("\n".join(r.getMessage() for r in caplog.records).encode())
    assert models["a"] == "model-of [REDACTED]"
    assert models["b"] == "M" * 199 + "…"  # as the HTTP backends cut an id (redact_id)
    assert models["c"] == "x" * 190 + "[REDACTED]"  # a key across the cut is redacted before the cut
    assert any("drift" in r.getMessage() for r in caplog.records)
    for output in outputs:
        assert KEY.encode() not in output and KEY[:12].encode() not in output
        assert len(output) < 100_000


@pytest.mark.anyio
async def test_a_model_named_with_sk_inside_a_word_is_kept_as_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: redact()'s key pattern matched "sk-" inside a word, so "task-classifier-v2" was kept
    # as "ta[REDACTED]" and differed from its own pin: a drift alarm for a model that never changed.
    monkeypatch.setenv(ENV, KEY)
    backend = Echoing("a", "task-classifier-v2")
    backend.model = "task-classifier-v2"
    async with running(sim_config(probe="interval = 1.0\njitter = 0.0"), [backend]) as daemon:
        await anyio.sleep_until(1.5)
        assert daemon.states["a"].reported_model == "task-classifier-v2"
        assert not daemon.states["a"].drift


class EchoesKeyInItsAnswer(BackendBase):
    """Answers the canary with a text that quotes its key (a provider's error page as a 200)."""

    api_key_env = ENV

    async def complete(self, query: Query) -> Response:
        await anyio.sleep(0.01)
        return Response(f"Invalid API key opaque{KEY}opaque for this org", model="m-1")


@pytest.mark.anyio
async def test_a_canary_reason_quoting_the_key_is_redacted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: the canary's failure reason quotes the reply, and was published, stored and logged as is.
    monkeypatch.setenv(ENV, KEY)
    caplog.set_level(logging.DEBUG)
    canary = '[probe.canary]\nquery = { prompt = "2+2?", max_tokens = 4 }\nexpect = "4"\nevery = 1\n'
    config = sim_config(probe="interval = 1.0\njitter = 0.0", extra=canary)
    async with running(config, [EchoesKeyInItsAnswer("echo")]) as daemon:
        await anyio.sleep_until(3.5)
        reason = daemon.health_report().backends["echo"].canary_reason
        outputs = [msgspec.json.encode(daemon.health_report()), encode_snapshot(daemon.snapshot())]
    outputs.append("\n".join(r.getMessage() for r in caplog.records).encode())
    assert reason is not None and "[REDACTED]" in reason
    for output in outputs:
        assert KEY.encode() not in output


@pytest.mark.anyio
async def test_a_snapshot_quoting_a_key_is_redacted_when_resumed(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A snapshot written before canary reasons were redacted (here: the key not yet in the
    # environment, so nothing knew it) is published redacted once the daemon knows the key.
    path = tmp_path / "probes.msgpack"
    monkeypatch.delenv(ENV, raising=False)
    canary = '[probe.canary]\nquery = { prompt = "2+2?", max_tokens = 4 }\nexpect = "4"\nevery = 1\n'
    config = sim_config(probe="interval = 1.0\njitter = 0.0", extra=canary)
    async with running(config, [EchoesKeyInItsAnswer("echo")], snapshot=path):
        await anyio.sleep_until(3.5)
    assert KEY.encode() in path.read_bytes()
    monkeypatch.setenv(ENV, KEY)
    async with running(config, [EchoesKeyInItsAnswer("echo")], snapshot=path) as daemon:
        reason = daemon.health_report().backends["echo"].canary_reason  # resumed, before any new probe ends
        assert reason is not None and KEY not in reason and "[REDACTED]" in reason
