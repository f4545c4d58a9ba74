"""Continuous evaluation end to end over real loopback HTTP: the daemon evaluating deployments of
the mock fleet that answer by the fleet's quality model, a service following it with ``HealthFeed``.

Two deployments serve the same backend name in turn (two daemon configs, as when a provider
rotates weights behind one endpoint): ``mini-v1`` passes every case (``quality = 1.0``) and
reports the pinned model; ``mini-v2`` passes half of them by the fleet's seeded draws and
reports a newer model id. One call in flight (``jobs = 1``) keeps the draws in order, and the
fleet is reset before each daemon (its draws start again), so the counts are the same on every
run: 10/10, then 5/10.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from specexec import HealthFeed, Runtime, SimulatedBackend
from specexec.bench.eval import wilson
from specexec.bench.fleet import Constant, Deployment, FleetConfig, FleetProcess, start_fleet_process
from specexec.probes import ProbeConfig

from ._prometheus import parse
from ._support import REAL_BACKENDS, eventually, running

pytestmark = pytest.mark.anyio

PROMPTS = tuple(f"Task {i}: answer the question." for i in range(10))
PINNED = "mini-2025-01"


@pytest.fixture(params=REAL_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def quality_fleet() -> Iterator[FleetProcess]:
    def deployment(name: str, model: str, quality: float) -> Deployment:
        return Deployment(
            name=name,
            provider="mini",
            region="us-east",
            model=model,
            latency=Constant(value=0.002),
            output_tokens=4,
            quality={"chat": quality},
        )

    config = FleetConfig(
        seed=7,
        classes={"chat": PROMPTS},
        deployments=(deployment("mini-v1", PINNED, 1.0), deployment("mini-v2", "mini-2025-06", 0.5)),
    ).validated()
    with start_fleet_process(config) as proc:
        yield proc


def write_eval(tmp: Path) -> Path:
    (tmp / "chat.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    path = tmp / "chat-eval.toml"
    path.write_text(
        '[eval]\nname = "chat"\n\n[classes.chat]\ndataset = "chat.jsonl"\n'
        'scorer = { kind = "regex", pattern = "^good" }\nmin_pass_rate = 0.9\nmax_tokens = 16\n'
    )
    return path


def daemon_config(fleet: FleetProcess, deployment: str, evalfile: Path) -> ProbeConfig:
    return ProbeConfig.load(
        f'[[backends]]\nkind = "openai"\nname = "mini"\nbase_url = "{fleet.base_url(deployment)}"\n'
        f'model = "{PINNED}"\ninput_price = 0.15\noutput_price = 0.60\n'
        "[probe]\ninterval = 60.0\njitter = 0.0\ntimeout = 5.0\nport = 0\nmin_samples = 1\n"
        f'[eval]\nfile = "{evalfile}"\ndaily_budget = 0.01\njobs = 1\ntimeout = 10.0\n'
    )


async def test_a_scheduled_eval_publishes_rates_and_a_quality_drop_raises_drift(
    quality_fleet: FleetProcess, tmp_path: Path
) -> None:
    quality_fleet.reset()  # the quality draws start again: the same counts on every run
    evalfile = write_eval(tmp_path)

    async with running(daemon_config(quality_fleet, "mini-v1", evalfile), wall_clock=time.time) as d:
        assert d.eval is not None
        await eventually(lambda: d.eval is not None and d.eval.runs == 1 and not d.eval.running, timeout=30.0)
        async with httpx.AsyncClient(trust_env=False) as client:
            health = (await client.get(f"{d.url}/v1/health")).json()
        result = health["eval"]["results"]["chat"]["mini"]
        assert (result["passed"], result["cases"], result["pass_rate"], result["below_bar"]) == (10, 10, 1.0, False)
        assert [result["low"], result["high"]] == list(wilson(10, 10))
        assert result["model"] == PINNED and not result["model_changed"]
        assert health["backends"]["mini"]["drift"] is False
        assert 0 < health["eval"]["budget"]["spent"] <= 0.01

    quality_fleet.reset()
    async with running(daemon_config(quality_fleet, "mini-v2", evalfile), wall_clock=time.time) as d:
        await eventually(lambda: d.eval is not None and d.eval.runs == 1 and not d.eval.running, timeout=30.0)
        async with httpx.AsyncClient(trust_env=False) as client:
            health = (await client.get(f"{d.url}/v1/health")).json()
            metrics = parse((await client.get(f"{d.url}/metrics")).text)
        result = health["eval"]["results"]["chat"]["mini"]
        assert (result["passed"], result["cases"], result["below_bar"]) == (5, 10, True)  # seed 7's draws at 0.5
        assert [result["low"], result["high"]] == list(wilson(5, 10))
        assert result["model"] == "mini-2025-06" and result["model_changed"]
        backend = health["backends"]["mini"]
        assert backend["drift"] is True
        assert f"eval: chat passed {result['passed']}/10, below its bar 0.9" in backend["drift_reasons"]
        labels = {"task_class": "chat", "backend": "mini"}
        assert ("specexec_eval_below_bar", labels, 1.0) in metrics["specexec_eval_below_bar"]
        assert ("specexec_eval_pass_rate", labels, result["pass_rate"]) in metrics["specexec_eval_pass_rate"]

        # a service following the daemon sees the drop through its feed (information only)
        feed = HealthFeed(d.url or "", timeout=5.0)
        async with Runtime([SimulatedBackend("mini", 0.001)]) as service:
            assert await feed.poll_once(service)
        seen = feed.eval_result("chat", "mini")
        assert seen is not None and seen.below_bar and seen.passed == result["passed"]
        assert seen.bar == 0.9 and seen.model == "mini-2025-06"
        remote = feed.remote("mini")
        assert remote is not None and remote.drift
