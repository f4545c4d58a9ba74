"""``--sim``: the eval file's simulated backends with a quality model (``[quality.BACKEND]``).

For a backend with pass share ``p`` on a class of ``n`` cases, exactly ``round(p * n)`` cases
answer the reference (the ones ranked first by a hash of seed, backend, class and case id) and
the rest answer a wrong text: pass rates are exact and deterministic for a seed.
"""

from __future__ import annotations

import hashlib

from specexec import Backend, Query, SimulatedBackend
from specexec.config import SimulatedConfig

from ._file import EvalSpec

__all__ = ["WRONG", "passing_cases", "sim_backends"]

WRONG = "I am not sure."
"""What a failing case answers."""


def passing_cases(spec: EvalSpec, backend: str) -> set[tuple[str, str]]:
    """The (class, case id) pairs ``backend`` answers right in ``--sim``."""
    out: set[tuple[str, str]] = set()
    shares = spec.file.quality.get(backend, {})
    for cls, cases in spec.cases.items():
        p = shares.get(cls, 1.0)
        ranked = sorted(
            cases,
            key=lambda c: hashlib.sha256(f"{spec.file.eval.seed}|{backend}|{cls}|{c.id}".encode()).digest(),
        )
        out.update((cls, c.id) for c in ranked[: round(p * len(cases))])
    return out


def _reply(spec: EvalSpec, backend: str, default: str):  # type: ignore[no-untyped-def]
    good = passing_cases(spec, backend)
    refs = {(c.cls, c.id): c.reference for cases in spec.cases.values() for c in cases}

    def reply(query: Query) -> str:
        key = (query.metadata.get("task_class", ""), query.metadata.get("eval_case", ""))
        if key not in refs:
            return default  # not an eval case (e.g. a judge prompt)
        ref = refs[key]
        if key in good:
            return ref if ref is not None else default
        return WRONG

    return reply


def sim_backends(spec: EvalSpec) -> list[Backend]:
    """The eval file's backends as ``SimulatedBackend``s answering by the quality model."""
    out: list[Backend] = []
    for c in spec.file.backends:
        if not isinstance(c, SimulatedConfig):
            raise TypeError(c.name)
        out.append(
            SimulatedBackend(
                c.name,
                c.latency,
                seed=c.seed,
                errors=c.errors,
                stall=c.stall,
                reply=_reply(spec, c.name, c.reply),
                output_tokens=c.output_tokens,
                model=c.model,
                reported_model=c.reported_model,
                provider=c.provider or "sim",
                region=c.region,
                input_price=c.input_price,
                output_price=c.output_price,
                limits=c.limits,
                context_window=c.context_window,
                breaker=c.breaker,
            )
        )
    return out
