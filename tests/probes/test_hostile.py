"""The daemon probing a hostile OpenAI-compatible provider over real loopback HTTP (a tiny server in
the test): usage that is not usage, a stream cut after its 200, a model id that echoes the API key
or runs to megabytes. Each test failed before its fix (the security review's findings)."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

from specexec._query import estimate_input_tokens
from specexec.probes import ProbeConfig, ProbeDaemon
from specexec.probes._schedule import worst_case_cost

from ._support import REAL_BACKENDS, eventually, running

pytestmark = pytest.mark.anyio

KEY = "sk-hostile-SECRET0123456789abcdef"
KEY_ENV = "SPECEXEC_PROBE_HOSTILE_TEST_KEY"
CUT_DELTAS = 3
HUGE_MODEL = 300_000  # characters of the model id of mode "hugemodel"


@pytest.fixture(params=REAL_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param  # type: ignore[no-any-return]


def _sse(obj: object) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"


def _chunk(model: str, content: str | None = None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    return _sse({"id": "x", "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def _answer(model: str = "m", usage: str = '{"prompt_tokens":3,"completion_tokens":1}') -> bytes:
    return (
        _chunk(model, "hello")
        + _chunk(model, finish="stop")
        + b'data: {"id":"x","model":"m","choices":[],"usage":'
        + usage.encode()
        + b"}\n\n"
        + _sse(b"[DONE]")
    )


USAGE = {
    "giant": '{"prompt_tokens":1,"completion_tokens":1' + "0" * 400 + "}",  # 10**400
    "giantin": '{"prompt_tokens":1' + "0" * 400 + ',"completion_tokens":1}',
    "negbig": '{"prompt_tokens":-1000000000000,"completion_tokens":1}',  # -10**12
    "negout": '{"prompt_tokens":1,"completion_tokens":-1000000000000}',
    "u64": '{"prompt_tokens":18446744073709551615,"completion_tokens":18446744073709551615}',
}


async def _hostile(stream: anyio.abc.ByteStream) -> None:
    """One connection: answer by the path's first segment (the mode), then close."""
    async with stream:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive()
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        while len(body) < int(headers.get("content-length", "0")):
            body += await stream.receive()
        auth = next(line.split(": ", 1)[1] for line in lines[1:] if line.lower().startswith("authorization: "))
        key = auth.split(" ", 1)[1]
        mode = lines[0].split(" ")[1].strip("/").split("/")[0]
        out = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
        if mode in USAGE:
            out += _answer(usage=USAGE[mode])
        elif mode == "cut":  # a few deltas, then the connection drops: no finish, no usage, no [DONE]
            out += b"".join(_sse({"choices": [{"index": 0, "delta": {"content": "a"}}]}) for _ in range(CUT_DELTAS))
        elif mode == "echomodel":  # a good answer whose model id is the caller's API key
            out += _answer(model=f"model-of {key}")
        elif mode == "hugemodel":
            out += _answer(model="M" * HUGE_MODEL)
        else:
            out += _answer()
        await stream.send(out)


@asynccontextmanager
async def hostile_server() -> AsyncIterator[int]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port: int = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, _hostile)
        try:
            yield port
        finally:
            tg.cancel_scope.cancel()


def config(port: int, *modes: str, probe: str = "") -> ProbeConfig:
    """One openai backend per mode (named after it) at the hostile server, and the ``[probe]`` body."""
    parts = [
        f'[[backends]]\nkind = "openai"\nname = "{mode}"\nbase_url = "http://127.0.0.1:{port}/{mode}"\n'
        f'model = "m"\napi_key_env = "{KEY_ENV}"\ninput_price = 1.0\noutput_price = 1.0\n'
        for mode in modes
    ]
    return ProbeConfig.load(
        "".join(parts) + f"[probe]\ninterval = 1.0\njitter = 0.0\ntimeout = 5.0\nport = 0\nmin_samples = 1\n{probe}"
    )


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


def _daemon(cfg: ProbeConfig, **options: Any) -> Any:
    return running(cfg, wall_clock=time.time, **options)


def _worst(daemon: ProbeDaemon, name: str) -> float:
    target = daemon.targets[name]
    return worst_case_cost(target.backend, target.settings.query)


@pytest.mark.parametrize("mode", sorted(USAGE))
async def test_usage_that_is_not_usage_is_estimated_and_the_daemon_keeps_probing(mode: str) -> None:
    # Before: 10**400 tokens raised OverflowError in probe_cost and ended the daemon (every
    # backend's probes); -10**12 made the probe cost -$1M and the daily budget stop limiting.
    async with hostile_server() as port, _daemon(config(port, "ok", mode, probe="daily_budget = 0.01\n")) as daemon:
        await eventually(lambda: min(s.probes for s in daemon.states.values()) >= 2, timeout=15)
        state, ok = daemon.states[mode], daemon.states["ok"]
        assert state.successes >= 2 and ok.successes >= 2
        # An estimate bounded by the probe's max_tokens: never negative, never above the worst case.
        assert 0 < state.cost <= state.probes * _worst(daemon, mode) + 1e-12
        assert ok.cost == pytest.approx(ok.probes * 4 / 1e6)  # 3 + 1 tokens at $1/M, as reported
        budget = daemon.budget.view(time.time())
        assert math.isfinite(budget.spent) and 0 < budget.spent <= 0.01 and budget.total >= budget.spent


async def test_a_stream_cut_after_its_200_is_charged_its_partial_usage() -> None:
    async with hostile_server() as port, _daemon(config(port, "cut")) as daemon:
        await eventually(lambda: daemon.states["cut"].probes >= 1, timeout=15)
        state = daemon.states["cut"]
        assert state.failures == 1 and state.health.last_error_kind == "bad_response"
        query = daemon.targets["cut"].settings.query
        # The backend's partial usage (before: nothing): the input bound and the output received so far.
        low, high = (estimate_input_tokens(query) + 1) / 1e6, (estimate_input_tokens(query) + CUT_DELTAS) / 1e6
        assert low - 1e-12 <= state.cost <= high + 1e-12
        assert daemon.budget.spent == pytest.approx(state.cost)


async def test_a_reported_model_echoing_the_key_is_redacted_everywhere(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    snapshot = tmp_path / "probes.msgpack"
    async with hostile_server() as port:
        cfg = config(port, "echomodel", probe=f'snapshot = "{snapshot}"\n')
        async with _daemon(cfg) as daemon:
            await eventually(lambda: daemon.states["echomodel"].probes >= 1, timeout=15)
            assert daemon.url is not None
            async with httpx.AsyncClient(base_url=daemon.url, trust_env=False) as client:
                bodies = [(await client.get(path)).content for path in ("/v1/health", "/v1/snapshot", "/metrics")]
            assert daemon.write_snapshot()
            state = daemon.states["echomodel"]
            assert state.reported_model == "model-of [REDACTED]" and state.drift
    bodies.append(snapshot.read_bytes())
    bodies.append("\n".join(r.getMessage() for r in caplog.records).encode())
    assert any(b"drift" in r.getMessage().encode() for r in caplog.records)
    for body in bodies:
        assert KEY.encode() not in body
        assert KEY[:12].encode() not in body


async def test_a_huge_reported_model_is_truncated() -> None:
    async with hostile_server() as port, _daemon(config(port, "hugemodel")) as daemon:
        await eventually(lambda: daemon.states["hugemodel"].probes >= 1, timeout=15)
        state = daemon.states["hugemodel"]
        assert state.successes == 1
        model = state.reported_model
        assert model is not None and model.startswith("M" * 100) and len(model) <= 200 and state.drift
        assert daemon.url is not None
        async with httpx.AsyncClient(base_url=daemon.url, trust_env=False) as client:
            health = await client.get("/v1/health")
            metrics = await client.get("/metrics")
        assert len(health.content) < 20_000 and len(metrics.content) < 100_000
