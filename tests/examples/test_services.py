"""The service examples as real processes: answers, streams, /metrics, and a disconnect that cancels
the race upstream. Each test runs on both examples: FastAPI on uvicorn (uvloop) and hypercorn's trio worker."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from specexec.bench import services as services_module
from specexec.bench.fleet import FleetProcess
from specexec.bench.services import KINDS, Kind, ServiceStartError, start_service, write_configs

from .conftest import CANARY, StartService

pytestmark = pytest.mark.slow
BACKENDS = {"alpha-us", "alpha-eu"}  # the primary, or its hedge where the primary was slow (a loaded machine)


def post(service_url: str, path: str, body: dict[str, Any]) -> httpx.Response:
    with httpx.Client(timeout=30.0, trust_env=False) as client:
        return client.post(f"{service_url}{path}", json=body)


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """``(event, data)`` of every server-sent event in ``text`` (``message`` when unnamed)."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name, data = "message", ""
        for line in block.splitlines():
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data += value
        events.append((name, json.loads(data)))
    return events


def samples(metrics_text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """The samples called ``name`` by their label sets."""
    found = {}
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == name:
                found[frozenset(s.labels.items())] = s.value
    return found


def wait_until(condition: Any, what: str, timeout: float = 15.0) -> None:
    """Poll ``condition()`` until true; fail saying ``what`` after ``timeout`` s (a bound, not a timing)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting until {what}")
        time.sleep(0.02)


@pytest.mark.parametrize("kind", KINDS)
def test_answers_streams_and_counts_runs_in_metrics(kind: Kind, fleet: FleetProcess, services: StartService) -> None:
    service = services(kind, fleet)

    answer = post(service.url, "/v1/chat", {"message": CANARY, "tenant": "acme"})
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["text"] == "4"
    assert doc["backend"] in BACKENDS and doc["route"] == "chat" and doc["cost"] > 0

    lorem = post(service.url, "/v1/chat", {"message": "tell me a story", "max_tokens": 12}).json()["text"]
    streamed = post(service.url, "/v1/chat/stream", {"message": "tell me a story", "max_tokens": 12})
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed.text)
    deltas = [data["delta"] for name, data in events if name == "message"]
    assert len(deltas) == 12  # one per token of the committed attempt
    assert [name for name, _ in events][-1] == "done"
    done = events[-1][1]
    assert "".join(deltas) == done["text"] == lorem
    assert done["backend"] in BACKENDS and done["worker"] == doc["worker"] == str(service.pid)

    metrics = httpx.get(f"{service.url}/metrics", trust_env=False)
    assert metrics.status_code == 200
    runs = samples(metrics.text, "specexec_runs_total")
    assert runs == {frozenset({("mode", "hedge"), ("policy", ""), ("route", "chat"), ("outcome", "ok")}): 3.0}
    ttft = samples(metrics.text, "specexec_attempt_ttft_seconds_count")
    assert sum(ttft.values()) >= 1.0  # the streamed run's first token, on whichever backend committed


@pytest.mark.parametrize("kind", KINDS)
def test_an_error_is_an_http_status_with_the_reason(kind: Kind, fleet: FleetProcess, services: StartService) -> None:
    service = services(kind, fleet, limit_usd=1e-9)  # no run's worst case fits this budget

    refused = post(service.url, "/v1/chat", {"message": "hello", "tenant": "poor"})
    assert refused.status_code == 402
    assert refused.json()["error"] == "BudgetExceeded" and "poor" in refused.json()["detail"]
    streamed = post(service.url, "/v1/chat/stream", {"message": "hello", "tenant": "poor"})
    assert streamed.status_code == 402 and streamed.json()["error"] == "BudgetExceeded"
    invalid = post(service.url, "/v1/chat", {"message": ""})
    assert invalid.status_code == 422


@pytest.mark.parametrize("path", ["/v1/chat/stream", "/v1/chat"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_client_disconnect_cancels_every_upstream_attempt(
    kind: Kind, path: str, stalled_fleet: FleetProcess, services: StartService
) -> None:
    """The fleet's first token takes 120 s; the client leaves while the primary and its hedge wait:
    both upstream requests are closed at once (the fleet counts them as disconnected), streamed or not."""
    service = services(kind, stalled_fleet)
    stalled_fleet.reset()

    def upstream(name: str, key: str) -> int:
        return int(stalled_fleet.deployment_stats(name)[key])

    body = json.dumps({"message": "hello", "max_tokens": 8}).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as client:
        client.sendall(head + body)
        wait_until(
            lambda: upstream("alpha-us", "in_flight") == 1 and upstream("alpha-eu", "in_flight") == 1,
            "the primary and the hedge are both waiting upstream",
        )
    wait_until(
        lambda: upstream("alpha-us", "disconnected") == 1 and upstream("alpha-eu", "disconnected") == 1,
        "both upstream requests are closed after the client left",
    )
    assert upstream("alpha-us", "in_flight") == upstream("alpha-eu", "in_flight") == 0
    assert httpx.get(f"{service.url}/healthz", trust_env=False).status_code == 200


class _Imposter(http.server.BaseHTTPRequestHandler):
    """Another process's service on a port: ``/healthz`` answers 200 for a worker that is not ours."""

    def do_GET(self) -> None:
        body = b'{"status": "ok", "worker": "1"}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def imposter_port() -> Iterator[int]:
    """A loopback port held by ``_Imposter`` (served from a thread, shut down on leaving)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Imposter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize("kind", KINDS)
def test_a_service_never_takes_another_process_on_its_port_for_itself(
    kind: Kind, fleet: FleetProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test workers start services in parallel: a port from ``free_port`` can be taken by another
    worker's service before ours binds. Its ``/healthz`` 200 is not ours: on a port we were given
    that is an error naming the port; on a port we chose, the service moves to another one."""
    env = write_configs(tmp_path, fleet.port)
    with imposter_port() as taken:
        with pytest.raises(ServiceStartError, match=rf"port {taken} .*another process"):
            start_service(kind, env, port=taken)
        offered = iter([taken])
        real_free_port = services_module.free_port
        monkeypatch.setattr(services_module, "free_port", lambda: next(offered, None) or real_free_port())
        with start_service(kind, env) as service:
            assert service.port != taken
            health = httpx.get(f"{service.url}/healthz", trust_env=False).json()
            assert health["worker"] == str(service.pid)
        assert service.process.returncode is not None  # stopped on leaving
