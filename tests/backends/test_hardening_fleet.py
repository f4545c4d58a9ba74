"""Issue 9 (HTTP) over real loopback HTTP to the mock fleet: cut-short streams, context-window
400s, API keys with stray characters, the error chain and connection errors naming the URL."""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import anyio.abc
import pytest

from specexec import (
    AuthError,
    BadResponse,
    ContextWindowExceeded,
    Policy,
    Query,
    Runtime,
    Timeout,
    Unavailable,
)
from specexec.backends import Anthropic, HttpConfig, HttpTimeouts, OpenAICompatible, _http
from specexec.bench._ports import free_port
from specexec.bench.fleet import Constant, Deployment, Faults, FleetConfig, FleetProcess, start_fleet_process

from .conftest import FAKE_KEY
from .test_hardening import assert_no_key

pytestmark = pytest.mark.anyio

KEY_ENV = "SPECEXEC_HARDENING_FLEET_KEY"
QUERY = Query("Say something.", max_tokens=16)


def dep(name: str, api: str = "openai", **kw: Any) -> Deployment:
    kw.setdefault("latency", Constant(value=0.005))
    kw.setdefault("output_tokens", 8)
    return Deployment(name=name, provider="h", region="loop", model="h-model", api=api, **kw)  # type: ignore[arg-type]


CONFIG = FleetConfig(
    deployments=(
        dep("good"),
        dep("a-good", api="anthropic"),
        dep("cut", faults=Faults(cut_short=1.0)),
        dep("a-cut", api="anthropic", faults=Faults(cut_short=1.0)),
        dep("ctx", faults=Faults(context_window=1.0)),
        dep("a-ctx", api="anthropic", faults=Faults(context_window=1.0)),
        dep("keyed", api_key_env=KEY_ENV),
        dep("a-keyed", api="anthropic", api_key_env=KEY_ENV),
        dep("keyed-stall", api_key_env=KEY_ENV, faults=Faults(stall=1.0)),
    )
)


@pytest.fixture(scope="module")
def hfleet() -> Iterator[FleetProcess]:
    with start_fleet_process(CONFIG, env={KEY_ENV: FAKE_KEY}) as process:
        yield process


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)


def make(fleet: FleetProcess, name: str, **kw: Any) -> OpenAICompatible | Anthropic:
    kw.setdefault("timeout", HttpTimeouts(connect=2.0, read=5.0, write=2.0, pool=5.0))
    kw.setdefault("api_key_env", KEY_ENV)
    cls = Anthropic if fleet.config.deployment(name).api == "anthropic" else OpenAICompatible
    return cls(name, base_url=fleet.base_url(name), model="h-model", **kw)


# --------------------------------------------------------------------------- 3/4: cut-short streams


@pytest.mark.parametrize("name", ["cut", "a-cut"])
async def test_a_cut_short_stream_is_a_bad_response_with_its_tokens(hfleet: FleetProcess, name: str) -> None:
    async with Runtime():
        with pytest.raises(BadResponse, match="without a finish_reason") as info:
            await make(hfleet, name, stream=True).complete(QUERY)
    usage = info.value.partial_usage
    assert usage is not None and usage.estimated
    assert usage.output_tokens >= 4  # half of the 8 planned tokens arrived
    assert info.value.status == 200 and info.value.request_id


@pytest.mark.parametrize(("cut", "good"), [("cut", "good"), ("a-cut", "a-good")])
async def test_failover_from_a_cut_short_stream_returns_the_good_answer(
    hfleet: FleetProcess, cut: str, good: str
) -> None:
    backends = [make(hfleet, cut, stream=True), make(hfleet, good, stream=True)]
    async with Runtime(backends) as rt:
        result = await rt.run(QUERY, Policy.failover([cut, good]))
    assert result.backend == good
    assert len(result.response.text.split()) == 8  # the whole answer, not the cut one
    first = result.trace.attempts[0]
    assert first.backend == cut and isinstance(first.error, BadResponse)


# --------------------------------------------------------------------------- 7: context window


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize(("ctx", "good"), [("ctx", "good"), ("a-ctx", "a-good")])
async def test_context_window_400_is_not_fatal(hfleet: FleetProcess, ctx: str, good: str, stream: bool) -> None:
    async with Runtime():
        with pytest.raises(ContextWindowExceeded) as info:
            await make(hfleet, ctx, stream=stream).complete(QUERY)
    assert info.value.status == 400 and not info.value.fatal
    assert info.value.partial_usage is None  # refused before answering: nothing billed
    backends = [make(hfleet, ctx, stream=stream), make(hfleet, good, stream=stream)]
    async with Runtime(backends) as rt:
        result = await rt.run(QUERY, Policy.failover([ctx, good]))
    assert result.backend == good


# --------------------------------------------------------------------------- 15/16: keys


@pytest.mark.parametrize("name", ["keyed", "a-keyed"])
async def test_a_key_with_a_trailing_newline_is_stripped_and_works(
    hfleet: FleetProcess, name: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(_http, "_warned_env", set())
    monkeypatch.setenv(KEY_ENV, FAKE_KEY + "\n")
    async with Runtime():
        response = await make(hfleet, name).complete(QUERY)
    assert response.text
    assert any(KEY_ENV in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert FAKE_KEY not in caplog.text


@pytest.mark.parametrize("name", ["keyed", "a-keyed"])
@pytest.mark.parametrize("bad", ["\r", "\x1b[0m", "é", "\u00a0x"])
async def test_a_key_with_a_control_or_non_ascii_character_is_refused(
    hfleet: FleetProcess, name: str, bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = FAKE_KEY[:10] + bad + FAKE_KEY[10:]
    monkeypatch.setenv(KEY_ENV, key)
    before = hfleet.deployment_stats(name)["requests"]
    async with Runtime():
        with pytest.raises(AuthError, match=KEY_ENV) as info:
            await make(hfleet, name).complete(QUERY)
    assert hfleet.deployment_stats(name)["requests"] == before  # nothing was sent
    assert_no_key(info.value, key, FAKE_KEY[:10], FAKE_KEY[10:])


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_a_timeout_keeps_no_path_to_the_key(hfleet: FleetProcess, stream: bool) -> None:
    async with Runtime():
        with pytest.raises(Timeout) as info:
            await make(hfleet, "keyed-stall", stream=stream, timeout=HttpTimeouts(read=0.1)).complete(QUERY)
    assert "ReadTimeout" in str(info.value)
    assert_no_key(info.value, FAKE_KEY)


# --------------------------------------------------------------------------- 16/17: connection errors


@pytest.mark.parametrize("cls", [OpenAICompatible, Anthropic])
async def test_a_refused_connection_names_the_url_and_keeps_no_key(cls: type[OpenAICompatible | Anthropic]) -> None:
    port = free_port()
    backend = cls(
        "dead",
        base_url=f"http://user:pw@127.0.0.1:{port}/v1?api-key={FAKE_KEY}",
        model="m",
        api_key_env=KEY_ENV,
    )
    async with Runtime():
        with pytest.raises(Unavailable) as info:
            await backend.complete(QUERY)
    path = "/v1/chat/completions" if cls is OpenAICompatible else "/v1/messages"
    text = str(info.value)
    assert f"http://127.0.0.1:{port}" in text and "backend=dead" in text
    assert "pw" not in text and "api-key" not in text
    assert_no_key(info.value, FAKE_KEY)
    assert path.rsplit("/", 1)[1] in text


# --------------------------------------------------------------------------- 12: bounded memory over loopback


@contextlib.asynccontextmanager
async def canned_server(head: bytes, body: Callable[[], AsyncIterator[bytes]]) -> AsyncIterator[str]:
    """A one-route HTTP/1.1 server on 127.0.0.1 answering every request with ``head`` + ``body()``."""

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream):
                received = b""
                while b"\r\n\r\n" not in received:
                    received += await stream.receive()
                await stream.send(head)
                async for piece in body():
                    await stream.send(piece)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        yield f"http://127.0.0.1:{port}/v1"
        tg.cancel_scope.cancel()


async def test_a_gzip_bomb_over_loopback_is_stopped_at_the_bound() -> None:
    packed = gzip.compress(b"\0" * (64 << 20), compresslevel=9)  # 64 MiB inflated, ~64 KiB on the wire
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
    head += b"content-length: %d\r\n\r\n" % len(packed)

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(packed), 16384):
            yield packed[i : i + 16384]

    async with canned_server(head, body) as url:
        backend = OpenAICompatible("bomb", base_url=url, model="m", http=HttpConfig(max_response_bytes=1 << 20))
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            with pytest.raises(BadResponse, match="max_response_bytes") as info:
                await backend.complete(QUERY)
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak} bytes"
    assert info.value.partial_usage is not None and info.value.partial_usage.output_tokens == QUERY.max_tokens


async def test_an_endless_stream_over_loopback_is_stopped_at_the_bound() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    event = b'data: {"choices": [{"index": 0, "delta": {"content": "word "}}]}\n\n' * 50

    async def body() -> AsyncIterator[bytes]:
        while True:  # bounded by the client: it stops reading at max_response_bytes
            yield b"%x\r\n%s\r\n" % (len(event), event)

    async with canned_server(head, body) as url:
        backend = OpenAICompatible(
            "endless", base_url=url, model="m", stream=True, http=HttpConfig(max_response_bytes=1 << 20)
        )
        with pytest.raises(BadResponse, match="max_response_bytes"):
            await backend.complete(QUERY)


# --------------------------------------------------------------------------- 13a: idle over loopback


async def test_keep_alive_pings_alone_end_in_an_idle_timeout_over_loopback() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    role = b'data: {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}\n\n'

    async def body() -> AsyncIterator[bytes]:
        yield b"%x\r\n%s\r\n" % (len(role), role)
        for _ in range(200):  # 10 s of pings at most; the client gives up after 0.3 s
            await anyio.sleep(0.05)
            yield b"8\r\n: ping\n\n\r\n"

    async with canned_server(head, body) as url:
        backend = OpenAICompatible(
            "pings", base_url=url, model="m", stream=True, timeout=HttpTimeouts(read=0.2, idle=0.3)
        )
        start = anyio.current_time()
        with pytest.raises(Timeout, match=r"no content for 0.3s \(HttpTimeouts.idle\)"):
            await backend.complete(QUERY)
        # uvloop's clock counts whole milliseconds (libuv's uv_now): 0.3 s can read as 0.2999...
        assert 0.3 - 1e-3 <= anyio.current_time() - start < 2.0


@pytest.mark.parametrize(("name", "good"), [("keyed", "good"), ("a-keyed", "a-good")])
@pytest.mark.parametrize("bad", ["\n", "\x7f", "é"])
async def test_a_bad_key_stays_out_of_traces_json_lines_and_logs(
    hfleet: FleetProcess,
    name: str,
    good: str,
    bad: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import io

    from specexec import JsonLinesSink, LoggingSink

    caplog.set_level(logging.DEBUG)
    key = FAKE_KEY[:10] + bad + FAKE_KEY[10:]  # inside the key: refused, never stripped
    monkeypatch.setenv(KEY_ENV, key)
    lines = io.BytesIO()
    traces: list[bytes] = []
    backends = [make(hfleet, name), make(hfleet, good, api_key_env=None)]
    sinks = [JsonLinesSink(lines), LoggingSink(), lambda t: traces.append(t.to_json())]
    async with Runtime(backends, sinks=sinks) as rt:
        result = await rt.run(QUERY, Policy.failover([name, good]))
    assert result.backend == good
    assert isinstance(result.trace.attempts[0].error, AuthError)
    for text in [lines.getvalue().decode(), caplog.text, *(t.decode() for t in traces), repr(result)]:
        for part in (key, FAKE_KEY[:10], FAKE_KEY[10:], json.dumps(key)[1:-1]):
            assert part not in text


@pytest.mark.parametrize("stream", [False, None], ids=["json", "default-stream"])
@pytest.mark.parametrize(("idle", "answered"), [(0.1, False), (3.0, True)])
async def test_a_non_streamed_answer_must_start_within_idle(idle: float, answered: bool, stream: bool | None) -> None:
    # stream=None: asked for a stream (the default), the server answers in JSON all the same
    body = b'{"choices": [{"message": {"content": "late"}, "finish_reason": "stop"}]}'
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)

    async def late() -> AsyncIterator[bytes]:
        await anyio.sleep(0.4)
        yield body

    async with canned_server(head, late) as url:
        backend = OpenAICompatible("late", base_url=url, model="m", timeout=HttpTimeouts(idle=idle), stream=stream)
        if answered:
            assert (await backend.complete(QUERY)).text == "late"
        else:
            with pytest.raises(Timeout, match=r"no content for 0.1s \(HttpTimeouts.idle\)") as info:
                await backend.complete(QUERY)
            assert info.value.partial_usage is not None  # the 200 head came: billed the worst case
