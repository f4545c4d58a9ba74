"""A session-scoped pytest fixture ``fleet``: the test fleet in a subprocess.

Use it from any ``conftest.py``::

    from specexec.bench.fleet.pytest_fixtures import fleet  # noqa: F401

Then a test takes ``fleet`` (a :class:`~benchmarks.fleet.FleetProcess`) and points a
client at ``fleet.base_url("alpha-us")``. The config is :func:`fleet_test_config`: fast,
fixed latencies, and a few deployments that always fail in one way, for failover tests:

============== ========= ======== ======================================================
name           api       region   behaviour
============== ========= ======== ======================================================
alpha-us       openai    us-east  TTFT 5 ms, 0.5 ms/token, 8 tokens, canary answer
alpha-eu       openai    eu-west  TTFT 10 ms, same model as alpha-us
beta-us        openai    us-east  TTFT 20 ms, another model (``beta-large-2025-03-01``)
gamma-eu       anthropic eu-west  TTFT 10 ms (``gamma-haiku-20250101``)
slow-us        openai    us-east  TTFT 500 ms (alpha's model): the one to hedge away from
json-us        openai    us-east  replies ``{"answer": "..."}``
echo-us        openai    us-east  replies with the last user message
keyed-us       openai    us-east  requires ``Authorization: Bearer TEST_API_KEY``
keyed-gamma    anthropic eu-west  requires ``x-api-key: TEST_API_KEY``
down-us        openai    us-east  always 503
stall-us       openai    us-east  never answers (until the client gives up)
============== ========= ======== ======================================================

Every deployment answers ``CANARY_QUESTION`` with ``CANARY_ANSWER``. The fleet is shared
by the whole session: read counters as differences, or call ``fleet.reset()`` first in a
test that needs them zeroed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import pytest

from ._config import Constant, Deployment, Faults, FleetConfig
from ._process import FleetProcess, start_fleet_process

__all__ = ["CANARY_ANSWER", "CANARY_QUESTION", "TEST_API_KEY", "TEST_API_KEY_ENV", "fleet", "fleet_test_config"]

#: The API key the ``keyed-*`` deployments expect.
TEST_API_KEY = "sk-fleet-test-key"
#: The environment variable the fixture sets to :data:`TEST_API_KEY` in the fleet's process.
TEST_API_KEY_ENV = "SPECEXEC_FLEET_TEST_KEY"
#: A question every test deployment answers exactly with :data:`CANARY_ANSWER`.
CANARY_QUESTION = "What is 2 + 2? Answer with a number only."
#: The canary answer.
CANARY_ANSWER = "4"

_ALPHA = "alpha-mini-2025-01-15"
_BETA = "beta-large-2025-03-01"
_GAMMA = "gamma-haiku-20250101"


def fleet_test_config(seed: int = 0) -> FleetConfig:
    """The test fleet's config (see the module docs for its deployments)."""
    answers = {CANARY_QUESTION: CANARY_ANSWER}

    def dep(
        name: str,
        model: str,
        region: str,
        ttft: float,
        *,
        api: Literal["openai", "anthropic"] = "openai",
        reply: Literal["lorem", "echo", "json"] = "lorem",
        api_key_env: str | None = None,
        faults: Faults = Faults(),
    ) -> Deployment:
        return Deployment(
            name=name,
            provider=model.split("-")[0],
            region=region,
            model=model,
            api=api,
            latency=Constant(value=ttft),
            per_token=0.0005,
            output_tokens=8,
            reply=reply,
            answers=answers,
            api_key_env=api_key_env,
            faults=faults,
        )

    return FleetConfig(
        seed=seed,
        deployments=(
            dep("alpha-us", _ALPHA, "us-east", 0.005),
            dep("alpha-eu", _ALPHA, "eu-west", 0.010),
            dep("beta-us", _BETA, "us-east", 0.020),
            dep("gamma-eu", _GAMMA, "eu-west", 0.010, api="anthropic"),
            dep("slow-us", _ALPHA, "us-east", 0.500),
            dep("json-us", _ALPHA, "us-east", 0.005, reply="json"),
            dep("echo-us", _ALPHA, "us-east", 0.005, reply="echo"),
            dep("keyed-us", _ALPHA, "us-east", 0.005, api_key_env=TEST_API_KEY_ENV),
            dep("keyed-gamma", _GAMMA, "eu-west", 0.005, api="anthropic", api_key_env=TEST_API_KEY_ENV),
            dep("down-us", _ALPHA, "us-east", 0.005, faults=Faults(error_503=1.0)),
            dep("stall-us", _ALPHA, "us-east", 0.005, faults=Faults(stall=1.0)),
        ),
    ).validated()


@pytest.fixture(scope="session")
def fleet() -> Iterator[FleetProcess]:
    """The test fleet (:func:`fleet_test_config`) in a subprocess, for the whole session."""
    with start_fleet_process(fleet_test_config(), env={TEST_API_KEY_ENV: TEST_API_KEY}) as proc:
        yield proc
