"""Trace sinks never block the event loop: a bounded buffer, one writer thread, exact drop counts."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest

import specexec
from specexec import Policy, Runtime
from tests.conftest import Timing
from tests.helpers import Scripted

pytestmark = pytest.mark.anyio

_STUCK = 5.0  # real seconds a blocked write waits for its release (a test failing here fails, not hangs)


class SlowFile(io.RawIOBase):
    """A binary file whose ``write`` blocks until ``release`` is set (a stuck disk)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.data = bytearray()
        self.writes = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.entered.set()
        self.release.wait(_STUCK)
        self.writes += 1
        self.data += b
        return len(b)


async def test_a_slow_file_does_not_delay_run(timing: Timing) -> None:
    file = SlowFile()
    sink = specexec.JsonLinesSink(file)
    try:
        async with Runtime([Scripted("a", 0.1)], sinks=[sink]) as rt:
            first = await rt.run("q", Policy.single("a"))
            second = await rt.run("q", Policy.single("a"))
        assert (first.latency, second.latency) == (timing.approx(0.1), timing.approx(0.1))
        assert file.entered.wait(_STUCK)  # the writer thread is stuck in write...
        assert bytes(file.data) == b""  # ...and both runs returned all the same
    finally:
        file.release.set()
        sink.close()
    lines = [json.loads(line) for line in bytes(file.data).splitlines()]
    assert [line["winner"] for line in lines] == ["a", "a"]
    assert sink.dropped == 0


async def test_records_are_not_lost_on_close() -> None:
    file = SlowFile()
    file.release.set()
    sink = specexec.JsonLinesSink(file)
    async with Runtime([Scripted("a", 0.001)], sinks=[sink]) as rt:
        for _ in range(50):
            await rt.run("q", Policy.single("a"))
    await sink.aclose()
    assert len(bytes(file.data).splitlines()) == 50
    assert sink.dropped == 0


def _trace(n: int) -> specexec.Trace:
    return specexec.Trace(mode="single", policy=f"p{n}")


def test_the_drop_count_is_exact_when_the_buffer_is_full() -> None:
    file = SlowFile()
    with specexec.JsonLinesSink(file, max_pending=3) as sink:
        sink(_trace(0))
        assert file.entered.wait(_STUCK)  # the writer holds record 0 and is stuck writing it
        for n in range(1, 8):  # 3 fit in the buffer, 4 are dropped
            sink(_trace(n))
        assert sink.dropped == 4
        file.release.set()
    assert [json.loads(line)["policy"] for line in bytes(file.data).splitlines()] == ["p0", "p1", "p2", "p3"]
    assert sink.dropped == 4
    sink(_trace(9))  # after close: dropped, counted
    assert sink.dropped == 5


def test_text_files_get_text_and_batches_are_flushed(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "traces.jsonl"  # type: ignore[operator]
    with path.open("w") as f, specexec.JsonLinesSink(f) as sink:
        for n in range(3):
            sink(_trace(n))
        assert sink.flush(_STUCK)
        assert len(path.read_text().splitlines()) == 3  # flushed to the file, not only buffered
    assert [json.loads(line)["policy"] for line in path.read_text().splitlines()] == ["p0", "p1", "p2"]


def test_in_memory_files_are_written_at_once() -> None:
    buffer = io.StringIO()
    sink = specexec.JsonLinesSink(buffer)
    sink(_trace(0))
    assert json.loads(buffer.getvalue())["policy"] == "p0"


def test_a_failing_file_is_logged_and_the_writer_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(SlowFile):
        def write(self, b: bytes) -> int:  # type: ignore[override]
            raise OSError(28, "No space left on device")

    with specexec.JsonLinesSink(Broken()) as sink:
        sink(_trace(0))
        sink.flush(_STUCK)
        sink(_trace(1))
    assert "No space left on device" in caplog.text


class _SlowHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.unblock = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.entered.set()
        self.unblock.wait(_STUCK)
        self.messages.append(record.getMessage())


async def test_a_slow_log_handler_does_not_delay_run_and_loses_nothing_on_close() -> None:
    logger = logging.getLogger("tests.metrics.slow")
    logger.propagate = False
    handler = _SlowHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    sink = specexec.LoggingSink(logger)
    try:
        async with Runtime([Scripted("a", 0.1)], sinks=[sink]) as rt:
            await rt.run("q", Policy.single("a"))
            await rt.run("q", Policy.single("a"))
        assert handler.entered.wait(_STUCK)
        assert handler.messages == []
    finally:
        handler.unblock.set()
        sink.close()
        logger.removeHandler(handler)
    assert [json.loads(m)["winner"] for m in handler.messages] == ["a", "a"]


def test_a_disabled_logger_costs_no_encoding_and_no_thread() -> None:
    sink = specexec.LoggingSink("tests.metrics.off", level=logging.DEBUG)
    logging.getLogger("tests.metrics.off").setLevel(logging.WARNING)
    sink(_trace(0))
    assert sink._writer is not None and sink._writer._thread is None
    sink.close()


def test_max_pending_must_be_a_positive_integer() -> None:
    with pytest.raises(ValueError, match="max_pending must be an integer >= 1, got 0"):
        specexec.JsonLinesSink(SlowFile(), max_pending=0)
