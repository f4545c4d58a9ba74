"""``--live``: the eval file's simulated backends served by the loopback mock fleet (real HTTP on
127.0.0.1, real clock), each deployment answering by the ``[quality]`` model.

The fleet's ``answers`` table (exact last user message → reply) carries the quality model: a
case a backend passes (the same cases as in ``--sim``, ``_sim.passing_cases``) answers the
reference, the others a wrong text. Latency is the backend's distribution as the fleet's.
"""

from __future__ import annotations

from typing import Any

from specexec import Backend, PolicyError
from specexec import Constant as SimConstant
from specexec import LogNormal as SimLogNormal
from specexec import Uniform as SimUniform
from specexec.backends import HttpConfig, OpenAICompatible
from specexec.bench.fleet import Constant, Deployment, FleetConfig, FleetProcess, LogNormal, Uniform
from specexec.config import SimulatedConfig

from ._file import EvalSpec
from ._sim import WRONG, passing_cases

__all__ = ["fleet_backends", "fleet_for"]

_LOOPBACK = HttpConfig(trust_env=False)  # never through an HTTP(S)_PROXY: the fleet is on 127.0.0.1


def _latency(dist: Any, where: str, source: str) -> Any:
    if isinstance(dist, (int, float)):
        return Constant(value=float(dist))
    if isinstance(dist, SimConstant):
        return Constant(value=dist.value)
    if isinstance(dist, SimLogNormal):
        return LogNormal(median=dist.median, sigma=dist.sigma)
    if isinstance(dist, SimUniform):
        return Uniform(low=dist.low, high=dist.high)
    raise PolicyError(
        f"--live serves constant, lognormal and uniform latencies, got {type(dist).__name__}",
        path=where,
        source=source,
    )


def _last_user(case_query: Any) -> str:
    if case_query.prompt is not None:
        return str(case_query.prompt).strip()
    users = [m.content for m in case_query.messages if m.role == "user"]
    return str(users[-1]).strip() if users else ""


def fleet_for(spec: EvalSpec) -> FleetConfig:
    """The fleet serving the eval's (simulated) backends with its quality model."""
    deployments = []
    for i, b in enumerate(spec.file.backends):
        if not isinstance(b, SimulatedConfig):
            raise PolicyError(
                f"backend {b.name!r} is not simulated: --live serves simulated backends from the loopback fleet; "
                "real endpoints are for --target",
                path=f"$.backends[{i}]",
                source=spec.source,
            )
        good = passing_cases(spec, b.name)
        answers = {}
        for cls, cases in spec.cases.items():
            for c in cases:
                answers[_last_user(c.query)] = (c.reference or b.reply) if (cls, c.id) in good else WRONG
        deployments.append(
            Deployment(
                name=b.name,
                provider=b.provider or "sim",
                region=b.region,
                model=b.model or f"{b.name}-model",
                latency=_latency(b.latency, f"$.backends[{i}].latency", spec.source),
                output_tokens=b.output_tokens,
                answers=answers,
            )
        )
    return FleetConfig(deployments=tuple(deployments), seed=spec.file.eval.seed).validated(source=spec.source)


def fleet_backends(spec: EvalSpec, fleet: FleetProcess) -> list[Backend]:
    """HTTP backends for the fleet's deployments, with the eval file's prices and limits."""
    out: list[Backend] = []
    for b in spec.file.backends:
        assert isinstance(b, SimulatedConfig)
        out.append(
            OpenAICompatible(
                b.name,
                base_url=fleet.base_url(b.name),
                model=b.model or f"{b.name}-model",
                provider=b.provider or "sim",
                region=b.region,
                input_price=b.input_price,
                output_price=b.output_price,
                limits=b.limits,
                http=_LOOPBACK,
            )
        )
    return out
