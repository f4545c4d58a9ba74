"""``specexec.metrics.serve``: ``GET /metrics`` over real loopback HTTP, on trio and asyncio (real clock)."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from specexec import Policy, Runtime
from specexec.metrics import CONTENT_TYPE, instrument, serve
from tests.helpers import Scripted

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["trio", "asyncio+uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    # A real clock: the server's idle timeout must not jump ahead while the client's bytes travel.
    return ("trio", {}) if request.param == "trio" else ("asyncio", {"use_uvloop": True})


async def test_metrics_are_served_over_http_and_parse() -> None:
    async with Runtime([Scripted("a", 0.001)]) as rt:
        sink = instrument(rt)
        await rt.run("q", Policy.single("a", name="p"))
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve, sink.registry, 0)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                ok = await client.get("/metrics")
                again = await client.get("/metrics")  # keep-alive: a second request on the connection
                head = await client.head("/metrics")
                missing = await client.get("/nope")
                post = await client.post("/metrics")
            tg.cancel_scope.cancel()
    assert ok.status_code == 200 and ok.headers["content-type"] == CONTENT_TYPE
    families = {f.name: f for f in text_string_to_metric_families(ok.text)}
    runs = [s for s in families["specexec_runs"].samples if s.name == "specexec_runs_total"]
    assert [(s.labels["policy"], s.value) for s in runs] == [("p", 1.0)]
    assert families["specexec_attempt_duration_seconds"].type == "histogram"
    assert families["specexec_breaker_state"].type == "gauge"
    assert again.status_code == 200
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0
    assert missing.status_code == 404
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
