"""Routing, auth, HTTP/1.1 behaviour, ``/stats`` accounting and ``/reset``, and the in-process server's shutdown."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import httpx
import pytest

from specexec.bench.fleet import Constant, Deployment, Faults, Fleet, FleetConfig, FleetProcess, FleetStartError
from specexec.bench.fleet.pytest_fixtures import TEST_API_KEY

CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def wait_until_idle(fleet: FleetProcess, name: str) -> dict[str, Any]:
    """The deployment's stats once its in-flight count is back to 0 (bounded: 2 s)."""
    for _ in range(200):
        st: dict[str, Any] = fleet.deployment_stats(name)
        if st["in_flight"] == 0:
            return st
        time.sleep(0.01)
    raise AssertionError(f"{name} still has requests in flight: {st}")


# --------------------------------------------------------------------------- routing and errors


def test_healthz_and_control_methods(fleet: FleetProcess, http: httpx.Client) -> None:
    assert fleet.healthz()
    assert http.get(fleet.url + "/healthz").json()["status"] == "ok"
    assert http.get(fleet.url + "/reset").status_code == 405
    assert http.post(fleet.url + "/stats").status_code == 405


def test_unknown_deployment_and_paths_are_404(fleet: FleetProcess, http: httpx.Client) -> None:
    for path in ("/nope/v1/chat/completions", "/", "/alpha-us", "/alpha-us/v2/chat/completions"):
        r = http.post(fleet.url + path, json=CHAT)
        assert r.status_code == 404, path
        assert r.json()["error"]["code"] == "not_found"
    r = http.post(fleet.base_url("alpha-us") + "/completions", json=CHAT)
    assert r.status_code == 404
    r = http.post(fleet.base_url("alpha-us") + "/messages", json=CHAT)  # an OpenAI-style deployment
    assert r.status_code == 404
    r = http.post(fleet.base_url("gamma-eu") + "/chat/completions", json=CHAT)  # an Anthropic-style one
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    assert http.get(fleet.base_url("alpha-us") + "/chat/completions").status_code == 405


def test_bad_json_and_bad_fields_are_400(fleet: FleetProcess, http: httpx.Client) -> None:
    url = fleet.base_url("alpha-us") + "/chat/completions"
    r = http.post(url, content=b'{"model": "m", "messages": [', headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = http.post(url, json={"model": "m", "messages": [{"role": 1}]})
    assert r.status_code == 400 and "$.messages[0].role" in r.json()["error"]["message"]
    r = http.post(url, json={**CHAT, "max_tokens": 0})
    assert r.status_code == 400


def test_request_model_accepted_unless_strict(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    ok = http.post(fault_fleet.base_url("calm") + "/chat/completions", json={**CHAT, "model": "anything"})
    assert ok.status_code == 200 and ok.json()["model"] == "m-2025-01-01"
    url = fault_fleet.base_url("strict") + "/chat/completions"
    r = http.post(url, json={**CHAT, "model": "anything"})
    assert r.status_code == 404 and "anything" in r.json()["error"]["message"]
    assert http.post(url, json={**CHAT, "model": "m-2025-01-01"}).status_code == 200


def test_auth(fleet: FleetProcess, http: httpx.Client) -> None:
    url = fleet.base_url("keyed-us") + "/chat/completions"
    assert http.post(url, json=CHAT).json()["error"]["message"] == "Missing API key"
    assert http.post(url, json=CHAT, headers={"authorization": "Bearer nope"}).status_code == 401
    assert http.post(url, json=CHAT, headers={"authorization": f"Bearer {TEST_API_KEY}"}).status_code == 200
    assert http.get(fleet.base_url("keyed-us") + "/models").status_code == 401
    # a deployment without api_key_env takes any key, or none
    assert http.post(fleet.base_url("alpha-us") + "/chat/completions", json=CHAT).status_code == 200


def test_keep_alive_and_pipelining(fleet: FleetProcess) -> None:
    body = json.dumps(CHAT).encode()
    req = (
        f"POST /alpha-us/v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", fleet.port), timeout=5) as s:
        s.sendall(req + req)  # two pipelined requests on one connection
        data = b""
        while data.count(b"HTTP/1.1 200 OK") < 2 or not data.endswith(b"}"):
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        s.sendall(req)  # and the connection is still open for a third
        more = s.recv(65536)
        assert more.startswith(b"HTTP/1.1 200 OK")
    assert data.count(b'"object":"chat.completion"') == 2


def test_garbage_request_gets_400(fleet: FleetProcess) -> None:
    with socket.create_connection(("127.0.0.1", fleet.port), timeout=5) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert s.recv(1024).startswith(b"HTTP/1.1 400")


# --------------------------------------------------------------------------- stats


def test_stats_count_requests_and_reset_zeroes(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    fault_fleet.reset()
    for _ in range(3):
        http.post(fault_fleet.base_url("calm") + "/chat/completions", json=CHAT)
    http.post(fault_fleet.base_url("calm") + "/chat/completions", content=b"{")
    http.get(fault_fleet.url + "/nowhere")
    stats = fault_fleet.stats()
    assert set(stats) == {"seed", "clock", "uptime", "in_flight", "deployments", "unrouted"}
    assert stats["seed"] == 7
    calm = stats["deployments"]["calm"]
    assert calm == {
        "provider": "p",
        "region": "us-east",
        "api": "openai",
        "model": "m-2025-01-01",
        "requests": 4,
        "completed": 4,
        "disconnected": 0,
        "in_flight": 0,
        "by_status": {"200": 3, "400": 1},
        "faults": {},
        "events": {},
        "quota_limited": 0,
        "tokens_sent": 12,
    }
    assert stats["unrouted"] == {"requests": 1, "by_status": {"404": 1}}
    fault_fleet.reset()
    stats = fault_fleet.stats()
    assert stats["clock"] < 1.0
    assert stats["unrouted"] == {"requests": 0, "by_status": {}}
    for st in stats["deployments"].values():
        assert (st["requests"], st["completed"], st["disconnected"], st["by_status"], st["faults"]) == (0, 0, 0, {}, {})


def test_client_timeout_on_slow_response_counts_as_disconnected(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    fault_fleet.reset()
    url = fault_fleet.base_url("slow") + "/chat/completions"  # 150 ms to first token
    with pytest.raises(httpx.ReadTimeout):
        http.post(url, json=CHAT, timeout=0.05)
    st = wait_until_idle(fault_fleet, "slow")
    assert (st["requests"], st["completed"], st["disconnected"], st["by_status"]) == (1, 0, 1, {})


def test_client_leaving_mid_stream_counts_as_disconnected(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    fault_fleet.reset()
    url = fault_fleet.base_url("f-slow_drip") + "/chat/completions"  # tokens 100 ms apart
    with http.stream("POST", url, json={**CHAT, "stream": True}) as r:
        first = next(r.iter_lines())
        assert first.startswith("data: ")
    # closing the response mid-stream closes the connection
    st = wait_until_idle(fault_fleet, "f-slow_drip")
    assert (st["requests"], st["completed"], st["disconnected"], st["by_status"]) == (1, 0, 1, {"200": 1})


def test_stall_in_flight_then_disconnected(fault_fleet: FleetProcess) -> None:
    fault_fleet.reset()

    async def main() -> None:
        async with httpx.AsyncClient(trust_env=False) as client:
            task = asyncio.ensure_future(client.post(fault_fleet.base_url("f-stall") + "/chat/completions", json=CHAT))
            async with httpx.AsyncClient(trust_env=False) as probe:
                for _ in range(200):
                    st = (await probe.get(fault_fleet.url + "/stats")).json()["deployments"]["f-stall"]
                    if st["in_flight"] == 1:
                        break
                    await asyncio.sleep(0.01)
                assert st["in_flight"] == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    st = wait_until_idle(fault_fleet, "f-stall")
    assert (st["requests"], st["disconnected"]) == (1, 1)
    assert fault_fleet.stats()["in_flight"] == 0


# --------------------------------------------------------------------------- in-process Fleet


def _small_config() -> FleetConfig:
    return FleetConfig(
        deployments=(
            Deployment(name="a", provider="p", region="r", model="m", latency=Constant(value=0.001)),
            Deployment(name="stall", provider="p", region="r", model="m", faults=Faults(stall=1.0)),
        )
    )


def test_in_process_fleet_shutdown_leaves_no_tasks() -> None:
    async def main() -> None:
        before = asyncio.all_tasks()
        fleet = Fleet(_small_config())
        await fleet.start()
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            r = await client.post(fleet.base_url("a") + "/chat/completions", json=CHAT)
            assert r.status_code == 200
            stalled = asyncio.ensure_future(client.post(fleet.base_url("stall") + "/chat/completions", json=CHAT))
            for _ in range(200):
                if fleet.stats()["in_flight"] == 1:
                    break
                await asyncio.sleep(0.005)
            assert fleet.stats()["in_flight"] == 1
            await fleet.aclose()  # cancels the stalled handler and closes its connection
            with pytest.raises(httpx.RemoteProtocolError):
                await stalled
        assert fleet.stats()["in_flight"] == 0
        assert fleet.stats()["deployments"]["stall"]["disconnected"] == 1
        assert asyncio.all_tasks() - before == set()

    asyncio.run(main())


def test_a_burst_stream_is_one_write_and_paced_tokens_a_write_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no per-token time a stream is one write at its TTFT (one wake-up of the client, not
    one per token); paced tokens keep a write each."""
    from specexec.bench.fleet._http import Exchange

    writes: list[bytes] = []
    write = Exchange._write

    def counted(self: Exchange, *events: Any) -> None:
        writes.append(b"".join(type(e).__name__.encode() + b" " for e in events))
        write(self, *events)

    monkeypatch.setattr(Exchange, "_write", counted)
    config = FleetConfig(
        deployments=(
            Deployment(name="burst", provider="p", region="r", model="m", output_tokens=4),
            Deployment(name="paced", provider="p", region="r", model="m", output_tokens=4, per_token=0.01),
        )
    )

    async def main() -> dict[str, tuple[int, str]]:
        fleet = Fleet(config)
        await fleet.start()
        out = {}
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
                for name in ("burst", "paced"):
                    writes.clear()
                    r = await client.post(fleet.base_url(name) + "/chat/completions", json={**CHAT, "stream": True})
                    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
                    out[name] = (len(writes), writes[-1].decode())
                    assert fleet.stats()["deployments"][name]["tokens_sent"] == 4  # counted once written
        finally:
            await fleet.aclose()
        return out

    seen = asyncio.run(main())
    assert seen["burst"] == (1, "Response Data EndOfMessage ")  # head, every token and the end: one write
    count, last = seen["paced"]
    assert count == 5 and last == "Data EndOfMessage "  # head + token 0, tokens 1-3, then the end with its last event


def test_in_process_fleet_refuses_non_loopback() -> None:
    async def main() -> None:
        with pytest.raises(FleetStartError, match="non-loopback"):
            await Fleet(_small_config()).start("0.0.0.0")

    asyncio.run(main())


def test_missing_api_key_variable_is_a_start_error() -> None:
    cfg = FleetConfig(
        deployments=(Deployment(name="k", provider="p", region="r", model="m", api_key_env="NO_SUCH_VAR_X"),)
    )

    async def main() -> None:
        with pytest.raises(FleetStartError, match="NO_SUCH_VAR_X"):
            await Fleet(cfg, env={}).start()

    asyncio.run(main())
