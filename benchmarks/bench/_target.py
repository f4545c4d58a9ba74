"""``--target CONFIG``: the scenario's workload and policies against the user's own endpoints.

CONFIG is a ``specexec.config`` TOML file (``[[backends]]`` of kind ``openai``/``anthropic``;
API keys come from the environment variables named by ``api_key_env``, never from the
file). The run is bounded — ``DEFAULT_REQUESTS`` requests at ``DEFAULT_RATE``/s per policy
unless told otherwise, never more than ``MAX_REQUESTS`` or ``MAX_RATE`` — and before anything
is sent the worst-case cost is shown and must be confirmed (or ``--yes`` given).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from specexec import Backend, PolicyError, Query, worst_case_cost
from specexec.config import AnthropicConfig, BackendConfig, OpenAIConfig, RuntimeConfig

from ._live import run_policy_live
from ._scenario import Scenario
from ._stats import PolicyStats
from ._workload import requests

__all__ = [
    "DEFAULT_RATE",
    "DEFAULT_REQUESTS",
    "MAX_RATE",
    "MAX_REQUESTS",
    "CostLine",
    "confirm",
    "estimate_cost",
    "load_target",
    "run_target",
]

DEFAULT_REQUESTS = 20
"""Measured requests per policy when ``--requests``/``--duration`` is not given."""
DEFAULT_RATE = 1.0
"""Requests per second when ``--rate`` is not given."""
MAX_REQUESTS = 1000
"""Most requests per policy ``--target`` sends (warm-up included)."""
MAX_RATE = 20.0
"""Highest rate (requests/s) ``--target`` accepts."""

ProgressFn = Callable[[int], None]


def load_target(path: str | Path, scenario: Scenario) -> list[BackendConfig]:
    """The endpoints of a ``specexec.config`` file, checked against the scenario's policies.

    Raises ``PolicyError`` (file + key path) for a bad file, a candidate the file does not
    define, or an API key variable that is not set.
    """
    config = RuntimeConfig.load(Path(path), extra=("*",))
    names = {b.name for b in config.backends}
    for key, policy in scenario.policies.items():
        for i, c in enumerate(policy.candidates):
            if c not in names:
                known = ", ".join(sorted(names)) or "none"
                raise PolicyError(
                    f"policy {key!r} names backend {c!r}, which {path} does not define (it has: {known})",
                    path=f"$.policies.{key}.candidates[{i}]",
                    source=scenario.source,
                )
    missing = sorted(
        {
            b.api_key_env
            for b in config.backends
            if isinstance(b, (OpenAIConfig, AnthropicConfig)) and b.api_key_env and not os.environ.get(b.api_key_env)
        }
    )
    if missing:
        raise PolicyError(
            f"API key variable(s) not set: {', '.join(missing)} (keys come from the environment)",
            path="$.backends",
            source=str(path),
        )
    return list(config.backends)


class CostLine:
    """One policy's cost estimate: ``likely`` (one attempt at the first candidate) and
    ``worst`` (every attempt the policy may launch, capped by its ``max_cost``), in USD, for
    ``requests`` requests of up to ``max_tokens`` output tokens each."""

    __slots__ = ("likely", "policy", "requests", "worst")

    def __init__(self, policy: str, requests: int, likely: float, worst: float) -> None:
        self.policy = policy
        self.requests = requests
        self.likely = likely
        self.worst = worst


def estimate_cost(scenario: Scenario, backends: Sequence[Backend]) -> list[CostLine]:
    """The cost estimate of every policy over the scenario's (bounded) workload."""
    by_name = {b.name: b for b in backends}
    queries = [r.query for r in requests(scenario.workload, scenario.seed)]
    out = []

    def cost(candidate: str | Backend, query: Query) -> float:
        return worst_case_cost(by_name[candidate] if isinstance(candidate, str) else candidate, query)

    for key, policy in scenario.policies.items():
        likely = worst = 0.0
        for q in queries:
            likely += cost(policy.candidates[0], q)
            worst += policy.cost_bound(q, cost)  # retries and a judge's calls included
        out.append(CostLine(key, len(queries), likely, worst))
    return out


def confirm(lines: Sequence[CostLine], *, yes: bool, stdin: TextIO | None = None, stderr: TextIO | None = None) -> bool:
    """Show the estimate on stderr and ask to go on; ``yes`` skips the question. A non-interactive
    stdin without ``yes`` is a no."""
    err = stderr if stderr is not None else sys.stderr
    inp = stdin if stdin is not None else sys.stdin
    err.write("--target sends real requests to your endpoints. Cost estimate (USD, output at max_tokens):\n")
    for line in lines:
        err.write(
            f"  {line.policy:<20} {line.requests:>6,} requests  "
            f"likely ${line.likely:,.4f}  worst case ${line.worst:,.4f}\n"
        )
    total_likely = sum(x.likely for x in lines)
    total_worst = sum(x.worst for x in lines)
    err.write(
        f"  {'total':<20} {sum(x.requests for x in lines):>6,} requests  likely ${total_likely:,.4f}  "
        f"worst case ${total_worst:,.4f}\n"
    )
    if yes:
        return True
    if not (getattr(inp, "isatty", None) and inp.isatty()):
        err.write("not confirmed: stdin is not a terminal (pass --yes to send anyway)\n")
        return False
    err.write("Send them? [y/N] ")
    err.flush()
    answer = inp.readline().strip().lower()
    return answer in {"y", "yes"}


def run_target(
    scenario: Scenario,
    configs: Sequence[BackendConfig],
    *,
    on_progress: ProgressFn | None = None,
    loop: str = "trio",
) -> dict[str, PolicyStats]:
    """Run every policy in turn against fresh backends built from ``configs`` (real clock; the
    client on ``loop``)."""
    out: dict[str, PolicyStats] = {}
    finished = 0
    for name in scenario.policies:
        base = finished

        def bump(done: int, base: int = base) -> None:
            if on_progress is not None:
                on_progress(base + done)

        out[name] = run_policy_live(scenario, name, [c.build() for c in configs], bump, loop=loop)
        finished += out[name].total.requests + scenario.workload.warmup
    return out


def check_bounds(scenario: Scenario) -> None:
    """Raise ``PolicyError`` when the workload exceeds ``MAX_REQUESTS`` or ``MAX_RATE``."""
    w = scenario.workload
    total = w.warmup + w.expected_requests()
    if total > MAX_REQUESTS:
        raise PolicyError(
            f"--target sends at most {MAX_REQUESTS} requests per policy, this run would send {total}", path="--requests"
        )
    if w.rate > MAX_RATE:
        raise PolicyError(f"--target sends at most {MAX_RATE:g} requests/s, got {w.rate:g}", path="--rate")
